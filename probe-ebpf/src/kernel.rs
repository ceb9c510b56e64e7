//! Reading kernel memory at offsets taken from BTF (see `probe_common::KernelOffsets`):
//! through the helper ([`read`]), or with a plain load from a pointer the verifier knows
//! the type of ([`field`]).
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

/// A field of a kernel struct the verifier knows the type of (a `struct sock` a tp_btf hook
/// was given as its argument, a `struct tcp_sock` from `bpf_skc_to_tcp_sock`), at an offset
/// from `OFFSETS` (read-only data: the verifier knows its value and checks the access
/// against the kernel's BTF), with a plain load instead of a helper call. Only for such
/// pointers: anything else is refused at load.
#[inline(always)]
pub unsafe fn field<T: Copy>(base: *const u8, offset: u32) -> T {
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize) as *const T) }
}
