//! A tracked connection that closes ends a close-delimited response, and what was still
//! waiting on it. The close is found by the socket, not by the task: a client's reset moves
//! the server's socket to CLOSE in the client's context or in softirq, and a target that is
//! killed closes its sockets after its exit hook ran.
//! TCP: sock:inet_sock_set_state(const struct sock *sk, int oldstate, int newstate). The
//! same hook sees a target start to listen (`arrival::mark_port`).
//! UNIX sockets have no such tracepoint; there, the peer reading end-of-file (a 0-byte
//! sock_recv_length, see `recv.rs`) tells that the target closed.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{
    CloseEvent, ConnState, EventHeader, CONN_TLS, CONN_TLS_OPEN, CONN_TLS_PROBED, COUNTER_LOST, EVENT_CLOSE, FAMILY_TLS,
    FLAG_RESET, FLAG_PEER_CLOSED, ROLE_CLIENT, FLAG_TLS_OPEN, FLAG_TLS_PLAIN_PORT, FLAG_TLS_PROBED, FLAG_TLS_UNMEASURED, MODE_FAST, ROLE_H2, ROLE_SERVER, ROLE_UNKNOWN,
};

use crate::{
    capture::AF_UNIX,
    conn,
    emit::wakeup_flags,
    kernel::{read, read_ptr},
    fast,
    maps::{count, global, CLOSE_WORK, EVENTS},
    target::current_target,
    tx,
};

const TCP_ESTABLISHED: u32 = 1;
const TCP_FIN_WAIT1: u32 = 4;
const TCP_CLOSE: u32 = 7;
const TCP_CLOSE_WAIT: u32 = 8;
const TCP_LAST_ACK: u32 = 9;
const TCP_LISTEN: u32 = 10;

/// How the connection closed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The first step out of the open states (FIN sent, or a reset).
    First { reset: bool },
    /// The first step out of the open states after the peer's FIN (CLOSE_WAIT to LAST_ACK):
    /// the peer closed first.
    AfterPeer,
    /// A later step of a close already seen.
    Later,
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    // The state is an argument (a register compare): most transitions stop here.
    let new_state = ctx.arg::<u64>(2) as u32;
    if new_state == TCP_LISTEN {
        // A target that starts listening: its port's requests get arrival stamps from the
        // first connection on (`arrival`).
        if current_target().is_some() {
            crate::arrival::mark_port(ctx.arg(0));
        }
        return 0;
    }
    if new_state != TCP_FIN_WAIT1 && new_state != TCP_LAST_ACK && new_state != TCP_CLOSE {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    // A socket we tracked has its cookie already; reading it (instead of asking for it)
    // does not create cookies for every socket that closes. Sockets without one (almost
    // every socket of a process that is not a target) stop here.
    let Some(cookie) = conn::existing_cookie(sk) else { return 0 };
    if new_state == TCP_CLOSE {
        // Nothing will be sent or received any more: bytes still waited for end now
        // (`tx`), and the arrival stamp goes.
        tx::closed(cookie, sk, unsafe { bpf_ktime_get_ns() });
        crate::arrival::forget(cookie);
    }
    let old_state = ctx.arg::<u64>(1) as u32;
    let open = old_state == TCP_ESTABLISHED || old_state == TCP_CLOSE_WAIT;
    // Straight from an open state to CLOSE: a reset (received, or sent by an abortive close).
    let closing = if !open {
        Closing::Later
    } else if old_state == TCP_CLOSE_WAIT && new_state == TCP_LAST_ACK {
        Closing::AfterPeer
    } else {
        Closing::First { reset: new_state == TCP_CLOSE }
    };
    let family = read::<u16>(sk, global!(OFFSETS.sk_family)).unwrap_or(0);
    forget(cookie, closing, family, sk);
    0
}

/// A process (any: the peer is usually not a target) read end-of-file on `sk`. If `sk` is
/// a UNIX socket whose peer is a tracked server connection, the target closed it. The
/// peer's cookie is read from the socket (it was generated when the target's side was
/// classified; 0 means the socket was never seen).
#[inline(always)]
pub fn on_unix_eof(sk: *const u8) -> u32 {
    if read::<u16>(sk, global!(OFFSETS.sk_family)) != Some(AF_UNIX) {
        return 0;
    }
    // The target itself read end-of-file: the client closed first, and only the target's
    // close remains, which UNIX sockets do not announce. A fast connection with nothing
    // waiting is done (a half-closed client still waiting for its answer is not).
    if let Some(own) = conn::existing_cookie(sk)
        && let Some(state) = conn::lookup(own)
        && unsafe { (*state).role == ROLE_SERVER && (*state).mode == MODE_FAST }
        && fast::idle(state)
    {
        conn::remove(own);
        return 0;
    }
    let Some(peer) = read_ptr(sk, global!(OFFSETS.unix_peer)) else { return 0 };
    let Some(cookie) = conn::existing_cookie(peer) else { return 0 };
    // A peer may read end-of-file more than once: only a connection still in the map is
    // reported (the agent forgets one the map lost after its idle timeout).
    if conn::lookup(cookie).is_some() {
        forget(cookie, Closing::First { reset: false }, AF_UNIX, peer);
    }
    0
}

/// The connection is closed: drop its entry, and tell the agent if it served requests. A
/// tracked socket with no entry any more (the LRU map dropped it while full) is reported
/// at its first closing step too: the agent may still hold it (and ignores the close if not).
#[inline(always)]
fn forget(cookie: u64, closing: Closing, family: u16, sk: *const u8) {
    let mut flags = 0;
    let report = match conn::lookup(cookie) {
        Some(state) => {
            let (role, mode, conn_flags) = unsafe { ((*state).role, (*state).mode, (*state).flags) };
            // A fast connection: the kernel finishes what ends with the close; only what
            // still waits goes to the agent (a switch event, then the close).
            let reset = closing == Closing::First { reset: true };
            let family = if conn_flags & CONN_TLS != 0 { family | FAMILY_TLS } else { family };
            let mut report = role == ROLE_H2
                || (role == ROLE_CLIENT
                    && global!(CONFIG.client_metrics) != 0
                    && (mode != MODE_FAST || fast_close(state, cookie, family, sk, false) != fast::DONE))
                || (role == ROLE_SERVER && (mode != MODE_FAST || fast_close(state, cookie, family, sk, !reset) != fast::DONE));
            // A TLS connection that never carried a request's plaintext: the agent counts
            // why (a handshake that failed or was abandoned, a library not probed...).
            if role == ROLE_UNKNOWN && conn_flags & CONN_TLS != 0 {
                report = true;
                flags = FLAG_TLS_UNMEASURED
                    | if conn_flags & CONN_TLS_PROBED != 0 { FLAG_TLS_PROBED } else { 0 }
                    | if conn_flags & CONN_TLS_OPEN != 0 { FLAG_TLS_OPEN } else { 0 }
                    | if crate::tls::is_tls_port(sk) { 0 } else { FLAG_TLS_PLAIN_PORT };
            }
            if role == ROLE_H2 {
                crate::h2::forget(cookie);
            }
            conn::remove(cookie);
            report
        }
        None => closing != Closing::Later,
    };
    if closing == Closing::AfterPeer {
        flags |= FLAG_PEER_CLOSED;
    }
    if report {
        emit_close(cookie, closing == Closing::First { reset: true }, flags);
    }
}

#[inline(always)]
fn fast_close(state: *mut ConnState, cookie: u64, family: u16, sk: *const u8, tx_ok: bool) -> u32 {
    let Some(w) = CLOSE_WORK.get_ptr_mut(0) else { return fast::SLOW };
    unsafe {
        (*w).sk = sk as u64;
        (*w).tx_ok = tx_ok as u64;
        (*w).ts = bpf_ktime_get_ns();
        (*w).cookie = cookie;
        (*w).family = family as u64;
        (*w).tgid = 0;
        (*w).arrival = 0;
        (*w).client = ((*state).role == ROLE_CLIENT) as u64;
    }
    fast::rp_fast_close(w, state)
}

#[inline(always)]
fn emit_close(cookie: u64, reset: bool, flags: u32) {
    let ev = CloseEvent {
        header: EventHeader {
            kind: EVENT_CLOSE,
            flags: flags | if reset { FLAG_RESET } else { 0 },
            ts_ns: unsafe { bpf_ktime_get_ns() },
        },
        conn_id: cookie,
    };
    if EVENTS.output::<CloseEvent>(&ev, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
}
