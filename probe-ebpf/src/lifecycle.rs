//! The life of a target process, kept in the kernel so that no order of events can lose
//! one: the kernel sets a child's bit at its fork and clears a target's bit at its exit,
//! both with atomic bit operations (the agent sets the bits of the processes it selects in
//! the same words, atomically too). The agent is told of each fork, exec and exit, in the
//! order they happened (one ring buffer), to keep its registry of services.
//!
//! - sched:sched_process_fork(struct task_struct *parent, struct task_struct *child): a
//!   target's child process (a gunicorn or nginx worker) becomes a target at once, before
//!   it can serve a request.
//! - sched:sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *):
//!   a target runs a new program (`sh -c 'exec gunicorn ...'`): its name changes.
//! - sched:sched_process_exit(struct task_struct *p, ...): fires once per exiting thread;
//!   the process is gone when the last one exits (`signal->live` is 0 by then).
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{
    EventHeader, ExecEvent, ExitEvent, ForkEvent, COUNTER_LOST, EVENT_EXEC, EVENT_EXIT, EVENT_FORK,
};

use crate::{
    emit::wakeup_flags,
    kernel::{read, read_ptr},
    maps::{count, global, EVENTS, SERVICES},
    target::{add_target, current_target, remove_target},
};

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    let Some(tgid) = current_target() else { return 0 };
    let child: *const u8 = ctx.arg(1);
    let Some(child_tgid) = read::<i32>(child, global!(OFFSETS.task_tgid)) else { return 0 };
    let child_tgid = child_tgid as u32;
    if child_tgid == tgid {
        return 0; // a new thread of the same process
    }
    add_target(child_tgid);
    // The child serves as its parent's service from its first request (the agent renames
    // it if it executes another program).
    if let Some(service) = unsafe { SERVICES.get(&tgid) } {
        let service = *service;
        let _ = SERVICES.insert(&child_tgid, &service, 0);
    }
    let ev = ForkEvent {
        header: header(EVENT_FORK),
        parent_tgid: tgid,
        child_tgid,
        child_start_ns: read::<u64>(child, global!(OFFSETS.task_start_boottime)).unwrap_or(0),
    };
    if EVENTS.output::<ForkEvent>(&ev, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(_ctx: BtfTracePointContext) -> u32 {
    let Some(tgid) = current_target() else { return 0 };
    // Its service follows the new program's name, which the agent decides.
    let _ = SERVICES.remove(&tgid);
    let ev = ExecEvent { header: header(EVENT_EXEC), tgid, _pad: 0, comm: bpf_get_current_comm().unwrap_or_default() };
    if EVENTS.output::<ExecEvent>(&ev, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let Some(tgid) = current_target() else { return 0 };
    let task: *const u8 = ctx.arg(0);
    let Some(signal) = read_ptr(task, global!(OFFSETS.task_signal)) else { return 0 };
    if read::<i32>(signal, global!(OFFSETS.signal_live)) != Some(0) {
        return 0; // another thread of the process still runs
    }
    remove_target(tgid);
    let _ = SERVICES.remove(&tgid);
    let ev = ExitEvent { header: header(EVENT_EXIT), tgid, _pad: 0 };
    if EVENTS.output::<ExitEvent>(&ev, wakeup_flags()).is_err() {
        count(COUNTER_LOST);
    }
    0
}

#[inline(always)]
fn header(kind: u32) -> EventHeader {
    EventHeader { kind, flags: 0, ts_ns: unsafe { bpf_ktime_get_ns() } }
}
