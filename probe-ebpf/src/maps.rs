//! Maps and globals. Sizes here are placeholders: the agent sets the real ones at load
//! time (`EbpfLoader::map_max_entries`) from its flags and from the kernel's pid_max.
use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use probe_common::{ConnState, KernelOffsets, ProbeConfig, COUNTER_SLOTS, HEAD_WINDOW};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
pub static TARGETS: Array<u64> = Array::with_max_entries(1, aya_ebpf::bindings::BPF_F_MMAPABLE);

#[map]
pub static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(1, 0);

/// Per-CPU scratch for gathering a vectored head window: twice the window, so that a copy
/// of at most one window at an offset below one window is always in bounds.
#[map]
pub static SCRATCH: PerCpuArray<[u8; 2 * HEAD_WINDOW]> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_flags: 0,
    task_tgid: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    sk_family: 0,
    sk_num: 0,
    sk_type: 0,
    regs_syscall: 0,
    regs_arg1: 0,
    regs_arg2: 0,
    regs_arg3: 0,
    task_start_boottime: 0,
    task_signal: 0,
    signal_live: 0,
    valid: 0,
    unix_addr: 0,
    unix_peer: 0,
    sk_cookie: 0,
    sk_state: 0,
};

#[unsafe(no_mangle)]
pub static CONFIG: ProbeConfig = ProbeConfig { wakeup_bytes: 0, target_words: 0 };

/// Reads one field of a global the agent patched in at load time. The volatile read keeps
/// the compiler from folding the placeholder value.
macro_rules! global {
    ($g:ident . $f:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::maps::$g.$f) }
    };
}
pub(crate) use global;

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        unsafe { *p += 1 };
    }
}
