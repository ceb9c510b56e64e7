//! The last byte sent: a response ends when its last byte leaves the host, not when the
//! server's last write returns. A write returns once its bytes are in the socket's send
//! queue; they stay there while the client's window is full (a slow reader: up to a send
//! buffer, seconds of transfer), while Nagle's algorithm holds a small segment until the
//! client acknowledges the one before (its delayed ACK: 40 ms), or while the socket is
//! corked.
//!
//! - At a write's return, [`unsent`] tells whether bytes wait in the send queue
//!   (`write_seq` after `snd_nxt`): then the measurement of a response ending there (the
//!   fast path), or the write itself (the agent's connections), waits in `TX_WAIT` for the
//!   transmission of the sequence number its last byte ends ([`wait`]).
//! - [`tx_sock_ops`] (sock_ops, on the root cgroup v2) turns on the header-option
//!   callback of each connection accepted on a port a target serves on (`SERVER_PORTS`),
//!   at PASSIVE_ESTABLISHED; it never adds an option. TCP then calls it as it builds each
//!   segment it transmits; for a new segment, `snd_nxt` is its first byte (the kernel
//!   moves `snd_nxt` past it after the transmission). A connection with a wait ends it
//!   when a segment reaches the wait's end ([`take`]).
//! - A connection without that callback (accepted before the agent knew its port) never
//!   waits: its responses end when the write returns, as they did before.
//!
//! Whoever wins the wait's `taken` flag ends it, exactly once: the segment, a later write
//! that leaves bytes unsent in turn (the older wait ends then, counted as superseded), or
//! the close (TCP_CLOSE: nothing will be sent any more).
//!
//! Processes that are not targets pay one port lookup per accepted TCP connection, and
//! nothing per packet.
use core::intrinsics::{atomic_cxchg, AtomicOrdering};

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_SOCK_OPS_HDR_OPT_LEN_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG,
    },
    helpers::{bpf_ktime_get_ns, generated::{bpf_get_socket_cookie, bpf_probe_read_kernel}},
    macros::sock_ops,
    programs::SockOpsContext,
};
use probe_common::{
    EventHeader, MeasuredEvent, SentEvent, TxWait, COUNTER_LOST, COUNTER_TX_SUPERSEDED, COUNTER_TX_WAITS, COUNTER_TX_WAIT_FULL,
    EVENT_MEASURED, EVENT_SENT, FLAG_SUPERSEDED, TX_FAST,
};

use crate::{
    emit::wakeup_flags,
    kernel::read,
    maps::{count, global, EVENTS, SERVER_PORTS, TX_WAIT},
};

#[sock_ops]
pub fn tx_sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_HDR_OPT_LEN_CB => on_segment(&ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_accepted(&ctx),
        _ => {}
    }
    1
}

/// A connection accepted on a port a target serves on gets the per-segment callback.
#[inline(always)]
fn on_accepted(ctx: &SockOpsContext) {
    match SERVER_PORTS.get(ctx.local_port()) {
        Some(1) => {}
        _ => return,
    }
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG) as i32);
}

/// TCP is building a segment of `skb_len` bytes (0: no segment, or one without data).
#[inline(always)]
fn on_segment(ctx: &SockOpsContext) {
    let (len, next) = unsafe { ((*ctx.ops).skb_len, (*ctx.ops).snd_nxt) };
    if len == 0 {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut _) };
    let Some(w) = (unsafe { TX_WAIT.get(&cookie) }) else { return };
    // A retransmission starts before snd_nxt: it cannot reach a wait's end unless the
    // unsent rest is shorter than it (then it ends the wait at most one segment early).
    if before(next.wrapping_add(len), w.end_seq) {
        return;
    }
    rp_tx_take(cookie, unsafe { bpf_ktime_get_ns() }, 0);
}

/// Is sequence number `a` before `b`, modulo 2^32?
#[inline(always)]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Does TCP socket `sk` have the per-segment callback (so that the transmission of its
/// bytes will be seen)? The fast path asks once per connection (`CONN_TX_WATCHED`).
#[inline(always)]
pub fn watched(sk: *const u8) -> bool {
    matches!(read::<u8>(sk, global!(OFFSETS.tcp_cb_flags)), Some(f) if f as u32 & BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG != 0)
}

/// At a write's return on a watched TCP socket `sk`: the sequence number after its last
/// byte, if bytes of the send queue are still unsent; None otherwise. (A write does not
/// return bytes on a closed socket; at a reset, the close hook does not ask.)
#[inline(always)]
pub fn unsent(sk: *const u8) -> Option<u32> {
    let end = read::<u32>(sk, global!(OFFSETS.tcp_write_seq))?;
    let next = read::<u32>(sk, global!(OFFSETS.tcp_snd_nxt))?;
    before(next, end).then_some(end)
}

/// Makes `w` the connection's wait: an older one still there ends now (superseded). False
/// if it could not be stored (the caller then ends it now itself, counted): `TX_WAIT` is
/// full, or an older wait taken meanwhile is not deleted yet. If the bytes went out while
/// it was being stored, it is ended at once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_tx_wait(cookie: u64, sk: u64, w: *const TxWait) -> u32 {
    let Some(w) = (unsafe { w.as_ref() }) else { return 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    rp_tx_take(cookie, now, 1);
    if TX_WAIT.insert(&cookie, w, BPF_NOEXIST as u64).is_err() {
        count(COUNTER_TX_WAIT_FULL);
        return 0;
    }
    count(COUNTER_TX_WAITS);
    // The segment that carried the last byte may have left between the caller's look at
    // the send queue and the insert, with nothing to end then.
    let sent = read::<u32>(sk as *const u8, global!(OFFSETS.tcp_snd_nxt));
    if let Some(next) = sent
        && !before(next, w.end_seq)
    {
        rp_tx_take(cookie, unsafe { bpf_ktime_get_ns() }, 0);
    }
    1
}

/// Ends the connection's wait at `ts`, if it has one and nobody else ends it: a fast-path
/// measurement is sent as a `MeasuredEvent` ending at `ts`, an agent's write as a
/// `SentEvent`. `superseded`: 1 when a later write ends it before its bytes went out
/// (counted for a response; flagged to the agent for a write). Returns 1 if this call
/// ended it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_tx_take(cookie: u64, ts: u64, superseded: u64) -> u32 {
    let Some(w) = TX_WAIT.get_ptr_mut(&cookie) else { return 0 };
    let (_, won) = unsafe { atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(&mut (*w).taken, 0, 1) };
    if !won {
        return 0;
    }
    // Only the winner deletes, after reading: the entry cannot be replaced meanwhile (a
    // new wait is inserted only where none is).
    let (kind, end_seq) = unsafe { ((*w).kind, (*w).end_seq) };
    if kind == TX_FAST {
        if superseded != 0 {
            count(COUNTER_TX_SUPERSEDED);
        }
        match EVENTS.reserve::<MeasuredEvent>(0) {
            Some(mut entry) => {
                let ev = entry.as_mut_ptr();
                unsafe {
                    bpf_probe_read_kernel(
                        ev as *mut _,
                        size_of::<MeasuredEvent>() as u32,
                        &(*w).measured as *const MeasuredEvent as *const _,
                    );
                    (*ev).header = EventHeader { kind: EVENT_MEASURED, flags: 0, ts_ns: ts };
                    (*ev).end_ns = ts;
                }
                entry.submit(wakeup_flags());
            }
            None => count(COUNTER_LOST),
        }
    } else {
        let flags = if superseded != 0 { FLAG_SUPERSEDED } else { 0 };
        let ev = SentEvent { header: EventHeader { kind: EVENT_SENT, flags, ts_ns: ts }, conn_id: cookie, end_seq, _pad: 0 };
        if EVENTS.output::<SentEvent>(&ev, wakeup_flags()).is_err() {
            count(COUNTER_LOST);
        }
    }
    let _ = TX_WAIT.remove(&cookie);
    1
}
