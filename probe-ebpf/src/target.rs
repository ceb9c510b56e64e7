//! The target set: a bitmap of TGIDs in the `TARGETS` array, one bit per process.
//! An array lookup is inlined by the verifier, so the bail-out for non-targets costs a
//! few instructions.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::TARGETS;

/// `Some((tgid, tid))` when the current process is a target.
#[inline(always)]
pub fn current_target() -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if is_target(tgid) { Some((tgid, pid_tgid as u32)) } else { None }
}

#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    match TARGETS.get(tgid >> 6) {
        Some(word) => (*word >> (tgid & 63)) & 1 != 0,
        None => false,
    }
}

/// Marks `tgid` as a target (children of targets). Not atomic: the agent rewrites the
/// word from its own target list when it handles the fork event.
#[inline(always)]
pub fn add_target(tgid: u32) {
    if let Some(word) = TARGETS.get_ptr_mut(tgid >> 6) {
        unsafe { *word |= 1u64 << (tgid & 63) };
    }
}
