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
//! A wait is an entry keyed by the connection and its end sequence number, never changed,
//! never inserted again once deleted; whoever deletes it ends it, exactly once: the
//! segment, a later write that leaves bytes unsent in turn (the older wait ends then,
//! counted as superseded), or the close (TCP_CLOSE: nothing will be sent any more).
//! `TX_LATEST` names each connection's pending wait for the sock_ops program.
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
    seq::before,
    EventHeader, MeasuredEvent, SentEvent, TxKey, TxWait, TX_PENDING, COUNTER_LOST, COUNTER_TX_SUPERSEDED, COUNTER_TX_WAITS, COUNTER_TX_WAIT_FULL,
    EVENT_MEASURED, EVENT_SENT, FLAG_SUPERSEDED, PORT_SERVER, TX_FAST,
};

use crate::{
    emit::wakeup_flags,
    kernel::read,
    maps::{count, global, EVENTS, SERVER_PORTS, TX_LATEST, TX_WAIT},
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
        Some(v) if *v & PORT_SERVER != 0 => {}
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
    let Some(end) = latest(cookie) else { return };
    // A retransmission starts before snd_nxt: it cannot reach a wait's end unless the
    // unsent rest is shorter than it (then it ends the wait at most one segment early).
    if before(next.wrapping_add(len), end) {
        return;
    }
    // A segment that starts at or past the end: the waited bytes went out before, in a
    // segment built while the wait was being stored (`rp_tx_take` ends it at its write).
    rp_tx_take(cookie, end as u64, unsafe { bpf_ktime_get_ns() }, 0, next as u64);
}

/// The end sequence number of the connection's pending wait, if it has one.
#[inline(always)]
fn latest(cookie: u64) -> Option<u32> {
    let l = unsafe { *TX_LATEST.get(&cookie)? };
    (l & TX_PENDING != 0).then_some(l as u32)
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

/// `next_seq` when it could not be read.
pub const UNKNOWN: u64 = u64::MAX;

/// The socket's `snd_nxt` (the next byte to transmit), or [`UNKNOWN`].
#[inline(always)]
pub fn next_seq(sk: *const u8) -> u64 {
    read::<u32>(sk, global!(OFFSETS.tcp_snd_nxt)).map(u64::from).unwrap_or(UNKNOWN)
}

/// Makes `w` the connection's wait: an older one still pending ends now (superseded).
/// False if it could not be stored (`TX_WAIT` full: the caller ends it at the write,
/// counted). If its bytes went out while it was being stored, it is ended at once. Inlined
/// into the caller, so that the global functions it calls are each one call deep from
/// there (the call chains of the hooks are near the verifier's 512 bytes of stack).
#[inline(always)]
pub fn wait(cookie: u64, sk: *const u8, w: *const TxWait) -> bool {
    if let Some(older) = latest(cookie) {
        rp_tx_take(cookie, older as u64, unsafe { bpf_ktime_get_ns() }, 1, next_seq(sk));
    }
    let end = rp_tx_store(cookie, w);
    if end == UNKNOWN {
        return false;
    }
    // The segment that carried the last byte may have left between the caller's look at
    // the send queue and the wait being visible, with nothing to end then.
    let next = next_seq(sk);
    if next != UNKNOWN && !before(next as u32, end as u32) {
        rp_tx_take(cookie, end, unsafe { bpf_ktime_get_ns() }, 0, next);
    }
    true
}

/// Stores `w` as the connection's pending wait. Returns its end sequence number, or
/// [`UNKNOWN`] if `TX_WAIT` is full (counted).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_tx_store(cookie: u64, w: *const TxWait) -> u64 {
    let Some(w) = (unsafe { w.as_ref() }) else { return UNKNOWN };
    let end = w.end_seq;
    if TX_WAIT.insert(&TxKey { cookie, end_seq: end, _pad: 0 }, w, BPF_NOEXIST as u64).is_err() {
        count(COUNTER_TX_WAIT_FULL);
        return UNKNOWN;
    }
    // Only this hook (the connection's writes, in order) sets its latest wait.
    let pending = TX_PENDING | end as u64;
    match TX_LATEST.get_ptr_mut(&cookie) {
        Some(l) => unsafe { core::ptr::write_volatile(l, pending) },
        None => {
            let _ = TX_LATEST.insert(&cookie, &pending, 0);
        }
    }
    if w.kind == TX_FAST {
        count(COUNTER_TX_WAITS); // the agent counts the responses among its writes
    }
    end as u64
}

/// The connection closed (TCP_CLOSE): nothing will be sent any more. A pending wait ends
/// now, or at its write if its bytes had gone out (`rp_tx_take`).
#[inline(always)]
pub fn closed(cookie: u64, sk: *const u8, now: u64) {
    if let Some(end) = latest(cookie) {
        rp_tx_take(cookie, end as u64, now, 0, next_seq(sk));
    }
    let _ = TX_LATEST.remove(&cookie);
}

/// Ends the wait of connection `cookie` for the bytes up to `end`, if nobody else ends it
/// (whoever deletes the entry does): a fast-path measurement is sent as a `MeasuredEvent`,
/// an agent's write as a `SentEvent`. It ends at `ts`, unless `next` (the socket's
/// `snd_nxt`, or [`UNKNOWN`]) shows its bytes had gone out already: then they left in a
/// segment built while the wait was being stored, right after the write returned, and it
/// ends at the write. `superseded`: 1 when a later write ends it (counted for a response,
/// flagged to the agent for a write, if its bytes had not gone out). Returns 1 if this
/// call ended it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_tx_take(cookie: u64, end: u64, ts: u64, superseded: u64, next: u64) -> u32 {
    let end = end as u32;
    let key = TxKey { cookie, end_seq: end, _pad: 0 };
    let Some(w) = TX_WAIT.get_ptr(&key) else { return 0 };
    // The entry never changes and its key is never inserted again once deleted: what is
    // read here is the wait's, if this call's delete is the one that succeeds.
    let (kind, written) = unsafe { ((*w).kind, (*w).measured.end_ns) };
    let gone = next != UNKNOWN && !before(next as u32, end);
    let (ts, superseded) = if gone { (written, 0) } else { (ts, superseded) };
    let ended = if kind == TX_FAST {
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
                if TX_WAIT.remove(&key).is_ok() {
                    entry.submit(wakeup_flags());
                    true
                } else {
                    entry.discard(0);
                    false
                }
            }
            None => {
                let ended = TX_WAIT.remove(&key).is_ok();
                if ended {
                    count(COUNTER_LOST);
                }
                ended
            }
        }
    } else {
        // Written in place in the ring buffer: the call chain to here fills the stack.
        let ended = TX_WAIT.remove(&key).is_ok();
        if ended {
            match EVENTS.reserve::<SentEvent>(0) {
                Some(mut entry) => {
                    let ev = entry.as_mut_ptr();
                    let flags = if superseded != 0 { FLAG_SUPERSEDED } else { 0 };
                    unsafe {
                        (*ev).header = EventHeader { kind: EVENT_SENT, flags, ts_ns: ts };
                        (*ev).conn_id = cookie;
                        (*ev).end_seq = end;
                        (*ev)._pad = 0;
                    }
                    entry.submit(wakeup_flags());
                }
                None => count(COUNTER_LOST),
            }
        }
        ended
    };
    if !ended {
        return 0;
    }
    if kind == TX_FAST && superseded != 0 {
        count(COUNTER_TX_SUPERSEDED);
    }
    // No wait pending any more, unless a newer one was stored meanwhile.
    if let Some(l) = TX_LATEST.get_ptr_mut(&cookie) {
        unsafe { atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(l, TX_PENDING | end as u64, 0) };
    }
    1
}
