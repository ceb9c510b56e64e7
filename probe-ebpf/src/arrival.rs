//! When a request arrived, as opposed to when the server read it: the time it waited in
//! the accept and receive queues of a busy server is part of what its client waits.
//!
//! sock:sk_data_ready(const struct sock *sk) fires when data is queued on a socket (also
//! on a connection still in its listener's accept queue), for every socket of the host, in
//! softirq or in the process that releases the socket's lock. It bails out first for the
//! sockets whose local port no target serves on: one byte of `SERVER_PORTS`, set when a
//! target starts listening (the TCP state hook) and when a target's connection turns out
//! to be an HTTP server one (the receive hook: servers that listened before the agent
//! came; their connections that got data before that first request have no stamp); the
//! rest stamp the start of each batch of unread bytes in `ARRIVALS`
//! (`probe_common::Arrival`). The fast path takes a request's start from there
//! ([`arrived`]) when the read's first byte opened the batch.
//!
//! TCP only: a UNIX socket has no port and no sequence numbers, and its requests start
//! when they are read.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_get_socket_cookie},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::Arrival;

use crate::{
    kernel::read,
    maps::{global, ARRIVALS, SERVER_PORTS},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;

#[btf_tracepoint(function = "sk_data_ready")]
pub fn sk_data_ready(ctx: BtfTracePointContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    let Some(port) = read::<u16>(sk, global!(OFFSETS.sk_num)) else { return 0 };
    match SERVER_PORTS.get(port as u32) {
        Some(1) => {}
        _ => return 0,
    }
    let Some(family) = read::<u16>(sk, global!(OFFSETS.sk_family)) else { return 0 };
    if family != AF_INET && family != AF_INET6 || read::<u16>(sk, global!(OFFSETS.sk_type)) != Some(SOCK_STREAM) {
        return 0;
    }
    let (Some(copied), Some(next)) =
        (read::<u32>(sk, global!(OFFSETS.tcp_copied_seq)), read::<u32>(sk, global!(OFFSETS.tcp_rcv_nxt)))
    else {
        return 0;
    };
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    if let Some(a) = ARRIVALS.get_ptr_mut(&cookie) {
        // Bytes of the batch are still unread: this delivery extends it.
        if unread_before(unsafe { (*a).end_seq }, copied) {
            unsafe { (*a).end_seq = next };
            return 0;
        }
    }
    let a = Arrival { ts_ns: unsafe { bpf_ktime_get_ns() }, start_seq: copied, end_seq: next };
    let _ = ARRIVALS.insert(&cookie, &a, 0);
    0
}

/// Is `end` (the batch's end) after `copied` (the next byte a read returns), modulo 2^32?
#[inline(always)]
fn unread_before(end: u32, copied: u32) -> bool {
    (end.wrapping_sub(copied) as i32) > 0
}

/// Remembers that a target serves HTTP on the TCP socket's local port.
#[inline(always)]
pub fn mark_port(sk: *const u8) {
    let Some(port) = read::<u16>(sk, global!(OFFSETS.sk_num)) else { return };
    if port == 0 {
        return;
    }
    if let Some(p) = SERVER_PORTS.get_ptr_mut(port as u32) {
        unsafe {
            if *p == 0 {
                *p = 1;
            }
        }
    }
}

/// When the data a read of `moved` bytes on a TCP socket returned at `read_ns` began to
/// arrive: the batch's stamp if the read's first byte opened the batch, `read_ns` otherwise
/// (a batch that began mid-request, a socket whose port was marked after its data came).
#[inline(always)]
pub fn arrived(sk: *const u8, cookie: u64, moved: u64, read_ns: u64) -> u64 {
    let Some(a) = (unsafe { ARRIVALS.get(&cookie) }) else { return read_ns };
    let (ts, start) = (a.ts_ns, a.start_seq);
    let Some(copied) = read::<u32>(sk, global!(OFFSETS.tcp_copied_seq)) else { return read_ns };
    if copied.wrapping_sub(moved as u32) == start && ts <= read_ns { ts } else { read_ns }
}
