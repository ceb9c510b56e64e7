//! The shared path of the send and receive hooks: filter, classify, capture, emit.
use aya_ebpf::helpers::{
    bpf_ktime_get_ns, bpf_probe_read_user,
    generated::{self as helpers, bpf_get_socket_cookie},
};
use probe_common::{
    classify::{Classifier, Verdict},
    syscalls::BufferShape, ConnState, DataEvent, EventHeader, COUNTER_CLIENT_CONNS, COUNTER_FD_MISMATCH,
    COUNTER_FOREIGN_CONTEXT, COUNTER_LOST, COUNTER_SERVER_CONNS, EVENT_RECV, EVENT_SEND,
    FLAG_AFTER_LOSS, FLAG_UNCLASSIFIED, HEAD_WINDOW, MAX_IOVECS, MAX_IOVECS_WALKED, ROLE_CLIENT, ROLE_OTHER,
    ROLE_SERVER, ROLE_UNKNOWN, TAIL_WINDOW,
};

use crate::{
    conn,
    context::{own_syscall, Direction, Rejection, SyscallContext},
    emit::wakeup_flags,
    kernel::read,
    maps::{count, global, EVENTS, SCRATCH},
};

pub const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;

/// Where the bytes a syscall moved are in user memory.
#[derive(Clone, Copy)]
enum Source {
    /// One buffer.
    Flat(u64),
    /// An iovec array and its length.
    Vectored { iov: u64, count: u64 },
    /// Not from a user buffer (sendfile, splice) or not attributable (recvmmsg).
    None,
}

/// Called by both hooks once the process is known to be a target and `moved > 0`.
#[inline(always)]
pub fn on_socket_io(sk: *const u8, moved: u32, dir: Direction, tgid: u32) -> u32 {
    let Some(family) = read::<u16>(sk, global!(OFFSETS.sk_family)) else { return 0 };
    if family != AF_INET && family != AF_INET6 && family != AF_UNIX {
        return 0;
    }
    let Some(sk_type) = read::<u16>(sk, global!(OFFSETS.sk_type)) else { return 0 };
    if sk_type != SOCK_STREAM {
        return 0;
    }
    // A UNIX socket with no address is a socketpair (asyncio's self-pipe, worker pipes)
    // or an unbound client: never a connection accepted from a listener.
    if family == AF_UNIX && read::<u64>(sk, global!(OFFSETS.unix_addr)).unwrap_or(0) == 0 {
        return 0;
    }
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    let state = conn::lookup(cookie);
    let (role, prefix, prefix_len) = match state {
        Some(state) => unsafe { ((*state).role, (*state).prefix, (*state).prefix_len) },
        None => (ROLE_UNKNOWN, 0, 0),
    };
    if role == ROLE_CLIENT || (role == ROLE_OTHER && dir == Direction::Send) {
        return 0;
    }
    let ctx = match own_syscall(sk, dir) {
        Ok(ctx) => ctx,
        Err(Rejection::ForeignContext) => {
            count(COUNTER_FOREIGN_CONTEXT);
            return 0;
        }
        Err(Rejection::FdMismatch) => {
            count(COUNTER_FD_MISMATCH);
            return 0;
        }
    };
    let src = source(&ctx);
    let mut flags = 0;
    if role != ROLE_SERVER {
        // Unknown or non-HTTP connection: decide from its first bytes, by the shape of a
        // request line (probe_common::classify).
        match dir {
            Direction::Recv => {
                // A TCP connection the target already closed or shut down (its close
                // hook forgot it): reads now are a lingering-close drain, not requests.
                if family != AF_UNIX && !open_for_requests(sk) {
                    return 0;
                }
                // A connection that carried another protocol is looked at afresh at each
                // read; an unknown one goes on from the bytes it had so far.
                let mut c = if role == ROLE_OTHER { Classifier::default() } else { Classifier::from_state(prefix, prefix_len) };
                // Unreadable data (recvmmsg) is not a request.
                let verdict = match first_bytes(src, moved) {
                    Some((buf, n)) => c.feed_all(&buf[..n]),
                    None => Verdict::NotRequest,
                };
                match verdict {
                    Verdict::Request => {
                        conn::set_role(cookie, ROLE_SERVER);
                        count(COUNTER_SERVER_CONNS);
                    }
                    _ if role == ROLE_OTHER => return 0,
                    Verdict::Undecided => {
                        // Too few bytes so far (a client writing byte by byte): remember where
                        // the classifier is and pass the data on; the agent holds it until
                        // the connection is classified.
                        conn::set_prefix(state, cookie, c.first4, c.meta());
                    }
                    Verdict::NotRequest => {
                        // Tell the agent once what arrived (TLS, garbage, another protocol).
                        conn::set_role(cookie, ROLE_OTHER);
                        flags |= FLAG_UNCLASSIFIED;
                    }
                }
            }
            Direction::Send => {
                let request = match first_bytes(src, moved) {
                    Some((buf, n)) => Classifier::default().feed_all(&buf[..n]) == Verdict::Request,
                    None => false,
                };
                if request {
                    conn::set_role(cookie, ROLE_CLIENT);
                    count(COUNTER_CLIENT_CONNS);
                }
                // Otherwise a write before any request: a connection opened before we
                // attached, in the middle of a response. Its next request classifies it.
                return 0;
            }
        }
    }
    // A server connection's state is the one looked up above; any other was just
    // (re)written and is looked up again.
    let server_state = if role == ROLE_SERVER { state } else { None };
    emit_data(&Capture { cookie, server_state, src, moved, dir, flags, tgid, family });
    0
}

/// What one data event is made of.
struct Capture {
    cookie: u64,
    /// The connection's entry when it is a server connection already.
    server_state: Option<*mut ConnState>,
    src: Source,
    moved: u32,
    dir: Direction,
    flags: u32,
    tgid: u32,
    family: u16,
}

/// ESTABLISHED, or CLOSE_WAIT (the client half-closed after its request).
#[inline(always)]
fn open_for_requests(sk: *const u8) -> bool {
    const TCP_ESTABLISHED: u8 = 1;
    const TCP_CLOSE_WAIT: u8 = 8;
    matches!(read::<u8>(sk, global!(OFFSETS.sk_state)), Some(TCP_ESTABLISHED) | Some(TCP_CLOSE_WAIT))
}

/// Bytes gathered for classification: a power of two above `CLASSIFY_BYTES`.
const FIRST: usize = 32;

/// The data's first bytes, up to [`FIRST`], across its first iovecs if they are tiny (a
/// 2-byte first iovec, say). `None` if the data cannot be read (recvmmsg). The buffer is
/// twice [`FIRST`], so that every copy at an offset below `FIRST` is in bounds.
#[inline(always)]
fn first_bytes(src: Source, moved: u32) -> Option<([u8; 2 * FIRST], usize)> {
    let mut buf = [0u8; 2 * FIRST];
    let (iov, count) = match src {
        Source::Flat(ptr) => {
            let n = (moved as u64).min(FIRST as u64);
            if !read_user_upto(buf.as_mut_ptr(), ptr, n, FIRST as u64) {
                return None;
            }
            return Some((buf, n as usize));
        }
        Source::Vectored { iov, count } => (iov, count),
        Source::None => return None,
    };
    let (mut have, mut left) = (0u64, moved as u64);
    let mut i = 0u64;
    while i < 4 {
        if i >= count || left == 0 || have >= FIRST as u64 {
            break;
        }
        let v: [u64; 2] = read_user(iov + i * 16)?;
        let n = v[1].min(left).min(FIRST as u64 - have);
        let dst = unsafe { buf.as_mut_ptr().add(bounded(have, FIRST as u64 - 1) as usize) };
        if !read_user_upto(dst, v[0], n, FIRST as u64) {
            return None;
        }
        have += n;
        left -= v[1].min(left);
        i += 1;
    }
    Some((buf, (have as usize).min(FIRST)))
}

/// Where the bytes are, from the syscall's registers.
#[inline(always)]
fn source(ctx: &SyscallContext) -> Source {
    match ctx.shape {
        BufferShape::None => Source::None,
        BufferShape::Flat => Source::Flat(ctx.buf_arg),
        BufferShape::Iovec => Source::Vectored { iov: ctx.buf_arg, count: ctx.len_arg },
        // struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov;
        //                      size_t msg_iovlen; ... } (UAPI)
        BufferShape::Msghdr => match (read_user::<u64>(ctx.buf_arg + 16), read_user::<u64>(ctx.buf_arg + 24)) {
            (Some(iov), Some(count)) => Source::Vectored { iov, count },
            _ => Source::None,
        },
    }
}

#[inline(always)]
fn emit_data(c: &Capture) {
    let wakeup = wakeup_flags();
    let Some(mut entry) = EVENTS.reserve::<DataEvent>(0) else {
        count(COUNTER_LOST);
        match c.server_state {
            Some(state) => conn::mark_lost_at(state),
            None => conn::mark_lost(c.cookie),
        }
        return;
    };
    let ev = entry.as_mut_ptr();
    let lost = match c.server_state {
        Some(state) => conn::take_lost_at(state),
        None => conn::take_lost(c.cookie),
    };
    let flags = if lost { c.flags | FLAG_AFTER_LOSS } else { c.flags };
    let moved = c.moved as u64;
    let (head_len, tail_len) = unsafe {
        match c.src {
            Source::Flat(ptr) => capture_flat(&mut *ev, ptr, moved),
            Source::Vectored { iov, count } => capture_vectored(&mut *ev, iov, count, moved),
            Source::None => (0, 0),
        }
    };
    unsafe {
        (*ev).header = EventHeader {
            kind: if c.dir == Direction::Recv { EVENT_RECV } else { EVENT_SEND },
            flags,
            ts_ns: bpf_ktime_get_ns(),
        };
        (*ev).conn_id = c.cookie;
        (*ev).tgid = c.tgid;
        (*ev).len = c.moved;
        (*ev).family = c.family;
        (*ev).head_len = head_len;
        (*ev).tail_len = tail_len;
        (*ev)._pad = 0;
    }
    entry.submit(wakeup);
}

/// One buffer: the head window from its start, the tail window from its end.
#[inline(always)]
fn capture_flat(ev: &mut DataEvent, ptr: u64, len: u64) -> (u16, u16) {
    let head_len = copy_head(&mut ev.head, ptr, len);
    let mut tail_len = 0;
    if len > HEAD_WINDOW as u64 {
        let from = ptr + len - TAIL_WINDOW as u64;
        if let Some(t) = read_user::<[u8; TAIL_WINDOW]>(from) {
            ev.tail = t;
            tail_len = TAIL_WINDOW as u16;
        }
    }
    (head_len, tail_len)
}

/// An iovec array: the head window gathered across the first iovecs (through a per-CPU
/// scratch buffer, so that every copy has a bound the verifier can check), and the tail
/// window from the end of the last iovec the data reaches, if that is among the first
/// `MAX_IOVECS`.
#[inline(always)]
fn capture_vectored(ev: &mut DataEvent, iov: u64, count: u64, moved: u64) -> (u16, u16) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return (0, 0) };
    let scratch = scratch as *mut u8;
    let (mut filled, mut seen) = (0u64, 0u64);
    let (mut last_base, mut last_len) = (0u64, 0u64);
    let mut i = 0u64;
    while i < MAX_IOVECS as u64 {
        if i >= count || seen >= moved {
            break;
        }
        let Some(v) = read_user::<[u64; 2]>(iov + i * 16) else { break };
        let in_data = v[1].min(moved - seen);
        if filled < HEAD_WINDOW as u64 {
            let take = in_data.min(HEAD_WINDOW as u64 - filled);
            // filled < HEAD_WINDOW (the mask only restates it) and take <= HEAD_WINDOW: the
            // scratch buffer holds twice the window.
            let dst = unsafe { scratch.add(bounded(filled, HEAD_WINDOW as u64 - 1) as usize) };
            if !read_user_upto(dst, v[0], take, HEAD_WINDOW as u64) {
                break;
            }
            filled += take;
        }
        seen += in_data;
        if in_data > 0 {
            (last_base, last_len) = (v[0], in_data);
        }
        i += 1;
    }
    // The remaining iovecs are walked only to find the last one the data reaches: its end
    // is the data's end, where a chunked terminator lives (Node writes a stream of
    // res.write() chunks as one writev of size, data and CRLF iovecs).
    while i < MAX_IOVECS_WALKED as u64 {
        if i >= count || seen >= moved {
            break;
        }
        let Some(v) = read_user::<[u64; 2]>(iov + i * 16) else { break };
        let in_data = v[1].min(moved - seen);
        seen += in_data;
        if in_data > 0 {
            (last_base, last_len) = (v[0], in_data);
        }
        i += 1;
    }
    let head_len = filled.min(HEAD_WINDOW as u64);
    unsafe { helpers::bpf_probe_read_kernel(ev.head.as_mut_ptr() as *mut _, HEAD_WINDOW as u32, scratch as *const _) };
    let mut tail_len = 0u64;
    if seen == moved && moved > head_len {
        // The data's last bytes are the end of the last iovec we walked.
        let n = last_len.min(TAIL_WINDOW as u64);
        if read_user_upto(ev.tail.as_mut_ptr(), last_base + last_len - n, n, TAIL_WINDOW as u64) {
            tail_len = n;
        }
    }
    (head_len as u16, tail_len as u16)
}

/// Copies min(len, HEAD_WINDOW) bytes; returns how many are valid.
#[inline(always)]
fn copy_head(dst: &mut [u8; HEAD_WINDOW], src: u64, len: u64) -> u16 {
    let n = len.min(HEAD_WINDOW as u64);
    if read_user_upto(dst.as_mut_ptr(), src, n, HEAD_WINDOW as u64) { n as u16 } else { 0 }
}

/// Copies `n <= window` bytes from user memory; `window` is a constant power of two. A
/// whole window is copied with a constant size, anything shorter with a size masked
/// below the window: either way a bound the verifier can check. True on success.
#[inline(always)]
fn read_user_upto(dst: *mut u8, src: u64, n: u64, window: u64) -> bool {
    let (dst, src) = (dst as *mut core::ffi::c_void, src as *const core::ffi::c_void);
    let rc = if n >= window {
        unsafe { helpers::bpf_probe_read_user(dst, window as u32, src) }
    } else {
        unsafe { helpers::bpf_probe_read_user(dst, bounded(n, window - 1), src) }
    };
    rc == 0
}

/// `value & mask`, with the mask applied to a value the compiler cannot reason about, so
/// that the AND reaches the verifier (which needs it to bound a copy's size or offset)
/// instead of being folded away by an earlier range check on another register.
#[inline(always)]
fn bounded(value: u64, mask: u64) -> u32 {
    (unsafe { core::ptr::read_volatile(&value) } & mask) as u32
}

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T).ok() }
}
