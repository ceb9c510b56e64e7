//! The slot of a duration or a size (`probe_common::buckets`): the `AGG` update's searches,
//! on the table the agent patched into `maps::TIME_BOUNDS`.
use probe_common::buckets::{size_slot, slot, TIME_SLOTS};

/// The duration slot of `ns`. A global function (probe-ebpf/build.rs), verified once: the
/// search's branches would otherwise multiply with every other search of the caller.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_time_slot(ns: u64) -> u64 {
    slot::<TIME_SLOTS>(ns, |i| unsafe { core::ptr::read_volatile(&crate::maps::TIME_BOUNDS.ns[i & (TIME_SLOTS - 1)]) }) as u64
}

/// The size slot of `bytes` (a global function, as `rp_time_slot`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rp_size_slot(bytes: u64) -> u64 {
    size_slot(bytes) as u64
}
