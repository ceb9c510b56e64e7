//! sched:sched_process_fork(struct task_struct *parent, struct task_struct *child): a
//! target's child process (a gunicorn or nginx worker) becomes a target at once, before
//! it can serve a request; the agent is told so it can watch the child's exit.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use probe_common::{EventHeader, ForkEvent, COUNTER_LOST, EVENT_FORK};

use crate::{
    emit::wakeup_flags,
    kernel::read,
    maps::{count, global, EVENTS},
    target::{add_target, current_target},
};

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    let Some((tgid, _)) = current_target() else { return 0 };
    let child: *const u8 = ctx.arg(1);
    let Some(child_tgid) = read::<i32>(child, global!(OFFSETS.task_tgid)) else { return 0 };
    let child_tgid = child_tgid as u32;
    if child_tgid == tgid {
        return 0; // a new thread of the same process
    }
    add_target(child_tgid);
    let ev = ForkEvent {
        header: EventHeader { kind: EVENT_FORK, flags: 0, ts_ns: unsafe { bpf_ktime_get_ns() } },
        parent_tgid: tgid,
        child_tgid,
    };
    if EVENTS.output::<ForkEvent>(&ev, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
    0
}
