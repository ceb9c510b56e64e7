//! Ring-buffer submission with batched wakeups: the reader is woken once each time the
//! pending bytes grow past a multiple of `CONFIG.wakeup_bytes` (it also drains on a short
//! timer), which cuts the per-event cost for the target by more than half (see
//! docs/overhead.md).
//!
//! Only the crossing wakes the reader, not every event past it: a wakeup is an irq_work,
//! raised with a self-IPI (an APIC write, a VM exit on a virtual machine), and while the
//! woken agent is not yet running, every further event would raise another one. The
//! agent drains everything once it runs.
use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use probe_common::{DataEvent, H2Event};

use crate::maps::{global, EVENTS};

/// The largest record: a data event or an HTTP/2 chunk, and the ring buffer's 8-byte
/// record header.
const LARGEST_RECORD: u64 = max(core::mem::size_of::<DataEvent>(), core::mem::size_of::<H2Event>()) as u64 + 8;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let every = global!(CONFIG.wakeup_bytes) as u64;
    if every == 0 || pending / every != (pending + LARGEST_RECORD) / every {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
