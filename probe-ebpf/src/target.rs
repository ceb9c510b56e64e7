//! The target set: a bitmap of TGIDs in the `TARGETS` array, one bit per process. Both
//! sides change it only with atomic bit operations on single bits (the array is mmapped by
//! the agent), so no writer can undo another's bit.
//! An array lookup is inlined by the verifier, so the bail-out for non-targets costs a
//! few instructions.
use core::intrinsics::{AtomicOrdering, atomic_and, atomic_or};

use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::TARGETS;

/// `Some(tgid)` when the current process is a target.
#[inline(always)]
pub fn current_target() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_target(tgid) { Some(tgid) } else { None }
}

#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    match TARGETS.get(tgid >> 6) {
        Some(word) => (*word >> (tgid & 63)) & 1 != 0,
        None => false,
    }
}

/// Marks `tgid` as a target (children of targets), with an atomic OR: the agent sets the
/// bits of the processes it selects in the same words, atomically too.
#[inline(always)]
pub fn add_target(tgid: u32) {
    if let Some(word) = TARGETS.get_ptr_mut(tgid >> 6) {
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(word, 1u64 << (tgid & 63)) };
    }
}

/// Clears `tgid` (an exited target), with an atomic AND.
#[inline(always)]
pub fn remove_target(tgid: u32) {
    if let Some(word) = TARGETS.get_ptr_mut(tgid >> 6) {
        unsafe { atomic_and::<u64, u64, { AtomicOrdering::Relaxed }>(word, !(1u64 << (tgid & 63))) };
    }
}
