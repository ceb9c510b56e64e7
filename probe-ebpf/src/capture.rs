//! The shared path of the send and receive hooks: filter, classify, capture, emit.
use aya_ebpf::helpers::{
    bpf_ktime_get_ns, bpf_probe_read_user,
    generated::{self as helpers, bpf_get_socket_cookie},
};
use probe_common::{
    syscalls::BufferShape, ConnState, DataEvent, EventHeader, COUNTER_CLIENT_CONNS, COUNTER_FD_MISMATCH,
    COUNTER_FOREIGN_CONTEXT, COUNTER_LOST, COUNTER_SERVER_CONNS, EVENT_RECV, EVENT_SEND,
    FLAG_AFTER_LOSS, FLAG_UNCLASSIFIED, HEAD_WINDOW, MAX_IOVECS, ROLE_CLIENT, ROLE_OTHER,
    ROLE_SERVER, ROLE_UNKNOWN, TAIL_WINDOW,
};

use crate::{
    classify::starts_request,
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
        // Unknown or non-HTTP connection: decide from its first four bytes.
        match dir {
            Direction::Recv => {
                // A TCP connection the target already closed or shut down (its close
                // hook forgot it): reads now are a lingering-close drain, not requests.
                if family != AF_UNIX && !open_for_requests(sk) {
                    return 0;
                }
                // Unreadable data (recvmmsg): decide now, as not a request.
                let (first, have) = first_bytes(src, moved, prefix, prefix_len).unwrap_or((0, 4));
                if have < 4 {
                    if role == ROLE_OTHER {
                        return 0;
                    }
                    // Fewer than four bytes so far: remember them and pass the data on;
                    // the agent holds it until the connection is classified.
                    conn::set_prefix(state, cookie, first, have);
                } else if starts_request(first) {
                    conn::set_role(cookie, ROLE_SERVER);
                    count(COUNTER_SERVER_CONNS);
                } else {
                    if role == ROLE_OTHER {
                        return 0;
                    }
                    // Tell the agent once what arrived (TLS, garbage, another protocol).
                    conn::set_role(cookie, ROLE_OTHER);
                    flags |= FLAG_UNCLASSIFIED;
                }
            }
            Direction::Send => {
                let request = match first_chunk(src, moved) {
                    Some((ptr, len)) if len >= 4 => read_user::<u32>(ptr).is_some_and(starts_request),
                    _ => false,
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

/// The connection's first bytes: what was kept from earlier reads, completed from this
/// one (across its first iovecs if they are tiny), up to four. Returns them
/// (little-endian) and how many there are; `None` if the data cannot be read.
#[inline(always)]
fn first_bytes(src: Source, moved: u32, prefix: u32, prefix_len: u32) -> Option<(u32, u32)> {
    let (mut value, mut have) = (prefix, prefix_len & 3);
    let (iov, count) = match src {
        Source::Flat(ptr) => {
            if have == 0 && moved >= 4 {
                return read_user::<u32>(ptr).map(|first4| (first4, 4));
            }
            take_bytes(ptr, moved as u64, &mut value, &mut have)?;
            return Some((value, have));
        }
        Source::Vectored { iov, count } => (iov, count),
        Source::None => return None,
    };
    // Each non-empty iovec gives at least one byte: four of them are enough.
    let mut left = moved as u64;
    let mut i = 0u64;
    while i < 4 {
        if i >= count || left == 0 || have >= 4 {
            break;
        }
        let v: [u64; 2] = read_user(iov + i * 16)?;
        let n = v[1].min(left);
        if have == 0 && n >= 4 {
            return read_user::<u32>(v[0]).map(|first4| (first4, 4));
        }
        take_bytes(v[0], n, &mut value, &mut have)?;
        left -= n;
        i += 1;
    }
    Some((value, have))
}

/// Appends up to `4 - have` bytes from `ptr` (of `len`) to `value`.
#[inline(always)]
fn take_bytes(ptr: u64, len: u64, value: &mut u32, have: &mut u32) -> Option<()> {
    let mut i = 0u64;
    while i < 4 {
        if *have >= 4 || i >= len {
            break;
        }
        let b = read_user::<u8>(ptr + i)?;
        *value |= (b as u32) << ((*have & 3) * 8);
        *have += 1;
        i += 1;
    }
    Some(())
}

/// The first contiguous piece of the data: (address, bytes of the data in it).
#[inline(always)]
fn first_chunk(src: Source, moved: u32) -> Option<(u64, u64)> {
    match src {
        Source::Flat(ptr) => Some((ptr, moved as u64)),
        Source::Vectored { iov, count } if count > 0 => {
            let first: [u64; 2] = read_user(iov)?;
            Some((first[0], first[1].min(moved as u64)))
        }
        _ => None,
    }
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
        last_base = v[0];
        last_len = in_data;
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
