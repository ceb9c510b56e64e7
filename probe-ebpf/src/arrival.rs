//! When a request arrived, as opposed to when the server read it: the time it waited in
//! the accept and receive queues of a busy server is part of what its client waits.
//!
//! sock:sk_data_ready(const struct sock *sk) fires when data is queued on a socket (also
//! on a connection still in its listener's accept queue), for every socket of the host, in
//! softirq or in the process that releases the socket's lock. It bails out first for the
//! sockets whose local port no target serves on: one byte of `SERVER_PORTS`, set when a
//! target starts listening (the TCP state hook), when a target's connection turns out to
//! be an HTTP server one (the receive hook), and by the agent for the ports its targets
//! listen on already when it attaches them; the rest stamp the start of each batch of
//! unread bytes in `ARRIVALS`
//! (`probe_common::Arrival`). The fast path takes a request's start from there
//! ([`arrived`]) when the read's first byte opened the batch.
//!
//! TCP only: a UNIX socket has no port and no sequence numbers, and its requests start
//! when they are read.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, generated::{bpf_get_socket_cookie, bpf_skc_to_tcp_sock}},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{seq::before, Arrival, COUNTER_ARRIVALS_FULL, PORT_SERVER};

use crate::{
    kernel::{field, read},
    maps::{count, global, ARRIVALS, SERVER_PORTS},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;

#[btf_tracepoint(function = "sk_data_ready")]
pub fn sk_data_ready(ctx: BtfTracePointContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    // Every socket of the host comes here: the port is read with a plain load (the
    // argument is a BTF-typed `struct sock *`), not a helper call.
    let at = global!(OFFSETS.sk_num);
    let port = unsafe { field::<u16>(sk, at) };
    match SERVER_PORTS.get(port as u32) {
        Some(v) if *v & PORT_SERVER != 0 => {}
        _ => return 0,
    }
    let (family_at, type_at) = (global!(OFFSETS.sk_family), global!(OFFSETS.sk_type));
    let (family, kind) = unsafe { (field::<u16>(sk, family_at), field::<u16>(sk, type_at)) };
    if family != AF_INET && family != AF_INET6 || kind != SOCK_STREAM {
        return 0;
    }
    // The same socket as a `struct tcp_sock` the verifier knows: its fields are plain loads.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut _) } as *const u8;
    if tp.is_null() {
        return 0;
    }
    let (copied_at, next_at) = (global!(OFFSETS.tcp_copied_seq), global!(OFFSETS.tcp_rcv_nxt));
    let (copied, next) = unsafe { (field::<u32>(tp, copied_at), field::<u32>(tp, next_at)) };
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    let now = unsafe { bpf_ktime_get_ns() };
    match ARRIVALS.get_ptr_mut(&cookie) {
        Some(a) => unsafe {
            // Bytes of the batch are still unread: this delivery extends it. Otherwise a
            // new batch starts, written in place (an update that replaces the entry costs
            // several times more); the readers match it by `start_seq`, written last.
            if before(copied, (*a).end_seq) {
                (*a).end_seq = next;
            } else {
                (*a).ts_ns = now;
                (*a).end_seq = next;
                core::ptr::write_volatile(&mut (*a).start_seq, copied);
            }
        },
        None => {
            let a = Arrival { ts_ns: now, start_seq: copied, end_seq: next };
            if ARRIVALS.insert(&cookie, &a, BPF_NOEXIST as u64).is_err() {
                count(COUNTER_ARRIVALS_FULL);
            }
        }
    }
    0
}

/// The socket closed: its stamp goes (`ARRIVALS` is not an LRU map: nothing else drops
/// entries).
#[inline(always)]
pub fn forget(cookie: u64) {
    let _ = ARRIVALS.remove(&cookie);
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
            if *p & PORT_SERVER == 0 {
                *p |= PORT_SERVER;
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
