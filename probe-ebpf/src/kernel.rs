//! Reading kernel memory at offsets taken from BTF (see `probe_common::KernelOffsets`).
use aya_ebpf::helpers::bpf_probe_read_kernel;

#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    let p: u64 = read(base, offset)?;
    if p == 0 { None } else { Some(p as *const u8) }
}
