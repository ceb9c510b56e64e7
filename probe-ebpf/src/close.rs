//! sock:inet_sock_set_state(const struct sock *sk, int oldstate, int newstate): the target
//! closing its side of a tracked TCP connection ends a close-delimited response.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_get_socket_cookie},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{CloseEvent, EventHeader, COUNTER_LOST, EVENT_CLOSE, ROLE_SERVER};

use crate::{
    conn,
    emit::wakeup_flags,
    maps::{count, EVENTS},
    target::current_target,
};

const TCP_FIN_WAIT1: u32 = 4;
const TCP_CLOSE: u32 = 7;
const TCP_LAST_ACK: u32 = 9;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> u32 {
    let Some((tgid, _)) = current_target() else { return 0 };
    let new_state = ctx.arg::<u64>(2) as u32;
    if new_state != TCP_FIN_WAIT1 && new_state != TCP_LAST_ACK && new_state != TCP_CLOSE {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    let role = match conn::lookup(cookie) {
        Some(state) => unsafe { (*state).role },
        None => return 0,
    };
    conn::remove(cookie);
    if role != ROLE_SERVER {
        return 0;
    }
    let ev = CloseEvent {
        header: EventHeader { kind: EVENT_CLOSE, flags: 0, ts_ns: unsafe { bpf_ktime_get_ns() } },
        conn_id: cookie,
        tgid,
        new_state,
    };
    if EVENTS.output::<CloseEvent>(&ev, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
    0
}
