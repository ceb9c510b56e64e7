//! The shared path of the send and receive hooks: filter, classify, capture, emit.
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_get_socket_cookie};
use probe_common::{
    syscalls::BufferShape, DataEvent, EventHeader, COUNTER_CLIENT_CONNS, COUNTER_FD_MISMATCH,
    COUNTER_FOREIGN_CONTEXT, COUNTER_LOST, COUNTER_SERVER_CONNS, EVENT_RECV, EVENT_SEND,
    FLAG_AFTER_LOSS, FLAG_NO_PAYLOAD, FLAG_UNCLASSIFIED, FLAG_VECTORED, HEAD_WINDOW, ROLE_CLIENT,
    ROLE_OTHER, ROLE_SERVER, TAIL_WINDOW,
};

use crate::{
    classify::starts_request,
    conn,
    context::{own_syscall, Direction, Rejection, SyscallContext},
    emit::wakeup_flags,
    kernel::read,
    maps::{count, global, EVENTS},
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;

/// The part of the user buffer that holds the first bytes moved.
struct Segment {
    ptr: u64,
    /// Bytes of the data that are in this segment.
    len: u64,
    /// The segment holds all the bytes moved (so its end is the data's end).
    whole: bool,
    vectored: bool,
}

/// Called by both hooks once the process is known to be a target and `moved > 0`.
#[inline(always)]
pub fn on_socket_io(sk: *const u8, moved: u32, dir: Direction, tgid: u32, tid: u32) -> u32 {
    let Some(family) = read::<u16>(sk, global!(OFFSETS.sk_family)) else { return 0 };
    if family != AF_INET && family != AF_INET6 && family != AF_UNIX {
        return 0;
    }
    let Some(sk_type) = read::<u16>(sk, global!(OFFSETS.sk_type)) else { return 0 };
    if sk_type != SOCK_STREAM {
        return 0;
    }
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    let role = match conn::lookup(cookie) {
        Some(state) => unsafe { (*state).role },
        None => 0,
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
    let segment = first_segment(&ctx, moved);
    let mut flags = 0;
    if role != ROLE_SERVER {
        // Unknown or non-HTTP connection: decide from its first four bytes.
        let request = match &segment {
            Some(seg) if seg.len >= 4 => match read_user::<u32>(seg.ptr) {
                Some(first4) => starts_request(first4),
                None => false,
            },
            _ => false,
        };
        match (dir, request) {
            (Direction::Recv, true) => {
                conn::set_role(cookie, ROLE_SERVER);
                count(COUNTER_SERVER_CONNS);
            }
            (Direction::Recv, false) => {
                if role == ROLE_OTHER {
                    return 0;
                }
                // Tell the agent once what arrived (TLS, garbage, another protocol).
                conn::set_role(cookie, ROLE_OTHER);
                flags |= FLAG_UNCLASSIFIED;
            }
            (Direction::Send, true) => {
                conn::set_role(cookie, ROLE_CLIENT);
                count(COUNTER_CLIENT_CONNS);
                return 0;
            }
            // A write before any request: a connection opened before we attached, in
            // the middle of a response. Its next request classifies it.
            (Direction::Send, false) => return 0,
        }
    }
    let local_port = read::<u16>(sk, global!(OFFSETS.sk_num)).unwrap_or(0);
    emit_data(cookie, &ctx, segment, moved, dir, flags, tgid, tid, family, local_port);
    0
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn emit_data(
    cookie: u64,
    ctx: &SyscallContext,
    segment: Option<Segment>,
    moved: u32,
    dir: Direction,
    mut flags: u32,
    tgid: u32,
    tid: u32,
    family: u16,
    local_port: u16,
) {
    let wakeup = wakeup_flags();
    let Some(mut entry) = EVENTS.reserve::<DataEvent>(0) else {
        count(COUNTER_LOST);
        conn::mark_lost(cookie);
        return;
    };
    let ev = entry.as_mut_ptr();
    if conn::take_lost(cookie) {
        flags |= FLAG_AFTER_LOSS;
    }
    let (mut head_len, mut tail_len) = (0u16, 0u16);
    unsafe {
        match segment {
            Some(seg) => {
                if seg.vectored {
                    flags |= FLAG_VECTORED;
                }
                head_len = copy_head(&mut (*ev).head, seg.ptr, seg.len);
                if seg.whole && seg.len > HEAD_WINDOW as u64 {
                    let from = seg.ptr + seg.len - TAIL_WINDOW as u64;
                    if bpf_probe_read_user(from as *const [u8; TAIL_WINDOW])
                        .map(|t| (*ev).tail = t)
                        .is_ok()
                    {
                        tail_len = TAIL_WINDOW as u16;
                    }
                }
            }
            None => flags |= FLAG_NO_PAYLOAD,
        }
        (*ev).header = EventHeader {
            kind: if dir == Direction::Recv { EVENT_RECV } else { EVENT_SEND },
            flags,
            ts_ns: bpf_ktime_get_ns(),
        };
        (*ev).conn_id = cookie;
        (*ev).tgid = tgid;
        (*ev).tid = tid;
        (*ev).len = moved;
        (*ev).family = family;
        (*ev).local_port = local_port;
        (*ev).head_len = head_len;
        (*ev).tail_len = tail_len;
        (*ev).syscall = ctx.nr as u32;
    }
    entry.submit(wakeup);
}

/// Copies min(len, HEAD_WINDOW) bytes; returns how many are valid.
#[inline(always)]
fn copy_head(dst: &mut [u8; HEAD_WINDOW], src: u64, len: u64) -> u16 {
    let dst = dst.as_mut_ptr() as *mut core::ffi::c_void;
    let src = src as *const core::ffi::c_void;
    if len >= HEAD_WINDOW as u64 {
        let rc = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(dst, HEAD_WINDOW as u32, src)
        };
        return if rc == 0 { HEAD_WINDOW as u16 } else { 0 };
    }
    // len < HEAD_WINDOW: the mask only tells the verifier the bound it already holds.
    let n = (len as u32) & (HEAD_WINDOW as u32 - 1);
    let rc = unsafe { aya_ebpf::helpers::generated::bpf_probe_read_user(dst, n, src) };
    if rc == 0 { n as u16 } else { 0 }
}

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T).ok() }
}

/// Where the first bytes of the data are, from the syscall's registers.
#[inline(always)]
fn first_segment(ctx: &SyscallContext, moved: u32) -> Option<Segment> {
    let moved = moved as u64;
    let (iov_ptr, iov_count) = match ctx.shape {
        BufferShape::None => return None,
        BufferShape::Flat => {
            return Some(Segment { ptr: ctx.buf_arg, len: moved, whole: true, vectored: false });
        }
        BufferShape::Iovec => (ctx.buf_arg, ctx.len_arg),
        // struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov;
        //                      size_t msg_iovlen; ... } (UAPI)
        BufferShape::Msghdr => (read_user::<u64>(ctx.buf_arg + 16)?, read_user::<u64>(ctx.buf_arg + 24)?),
    };
    // struct iovec { void *iov_base; size_t iov_len; } (UAPI)
    let iov: [u64; 2] = read_user(iov_ptr)?;
    let len = if iov[1] < moved { iov[1] } else { moved };
    Some(Segment { ptr: iov[0], len, whole: iov_count == 1 || iov[1] >= moved, vectored: true })
}
