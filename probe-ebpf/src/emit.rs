//! Ring-buffer submission with batched wakeups: the reader is woken only once
//! `CONFIG.wakeup_bytes` are pending (it also drains on a short timer), which cuts the
//! per-event cost for the target by more than half (see the README's overhead table).
use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};

use crate::maps::{global, EVENTS};

#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if pending >= global!(CONFIG.wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
