//! The one bucketing scheme of durations and sizes, for the kernel and the agent alike.
//!
//! A value falls in a *slot*: the first of a sorted table of upper bounds (inclusive) that
//! it does not exceed. The table of durations is the union of Prometheus' native-histogram
//! boundaries (schema [`TIME_SCHEMA`], in seconds) and the classic buckets the agent serves
//! (`--buckets`), so every slot lies inside one native bucket and inside one classic
//! bucket: the same counts serve both histograms exactly. The agent builds that table
//! (`probe_user::metrics::scheme`) and patches it into the kernel at load ([`TimeBounds`]);
//! the table of sizes is fixed ([`SIZE_BOUNDS`]: 0, then powers of two, which are both the
//! native boundaries of schema 0 and the classic powers of four).

/// Slots of a duration histogram (the last bound is always `u64::MAX`).
pub const TIME_SLOTS: usize = 256;
/// Slots of a size histogram.
pub const SIZE_SLOTS: usize = 64;

/// Native histogram schema of durations: 8 buckets per doubling, each 9.05 % wider than
/// the one before.
pub const TIME_SCHEMA: i32 = 3;
/// Native bucket indexes of durations in the table: 2^(-136/8) s = 7.63 µs (at or below:
/// the zero bucket) to 2^(96/8) s = 68 min (above: the last slot).
pub const TIME_NATIVE_FIRST: i32 = -136;
pub const TIME_NATIVE_LAST: i32 = 96;
/// Native histogram schema of sizes: one bucket per doubling.
pub const SIZE_SCHEMA: i32 = 0;

/// The duration table the agent patches into the kernel (`GLOBAL_TIME_BOUNDS`), in ns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBounds {
    pub ns: [u64; TIME_SLOTS],
}

/// Size slots: 0 bytes, then (2^(k-2), 2^(k-1)] for slot k, then the rest.
pub const SIZE_BOUNDS: [u64; SIZE_SLOTS] = size_bounds();

const fn size_bounds() -> [u64; SIZE_SLOTS] {
    let mut b = [u64::MAX; SIZE_SLOTS];
    let mut k = 1;
    while k < SIZE_SLOTS - 1 {
        b[k] = 1u64 << (k - 1);
        k += 1;
    }
    b[0] = 0;
    b
}

/// The slot of `v` in a table of `N` sorted upper bounds whose last is `u64::MAX`, read
/// through `bound` (the kernel reads its patched global with volatile loads). A binary
/// search of log2(N) steps; `N` is a power of two.
#[inline(always)]
pub fn slot<const N: usize>(v: u64, bound: impl Fn(usize) -> u64) -> usize {
    let mut lo = 0usize;
    let mut step = N / 2;
    while step > 0 {
        let mid = (lo + step - 1) & (N - 1);
        if v > bound(mid) {
            lo = mid + 1;
        }
        step /= 2;
    }
    lo & (N - 1)
}

/// The slot of a size.
#[inline(always)]
pub fn size_slot(v: u64) -> usize {
    slot::<SIZE_SLOTS>(v, |i| SIZE_BOUNDS[i])
}

/// A histogram as counts per slot (not cumulative) and a sum. The counts are u32 to halve
/// a per-CPU value: they wrap, and the reader takes differences modulo 2^32, exact as long
/// as it reads a slot before 2^32 more requests land in it (the agent reads every 10 s).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist<const N: usize> {
    pub sum: u64,
    pub counts: [u32; N],
}

impl<const N: usize> Default for Hist<N> {
    fn default() -> Self {
        Hist { sum: 0, counts: [0; N] }
    }
}

impl<const N: usize> Hist<N> {
    /// Adds one value in slot `s` (the kernel's `AGG` update).
    #[inline(always)]
    pub fn add(&mut self, s: usize, v: u64) {
        self.sum = self.sum.wrapping_add(v);
        // The volatile read keeps the mask: LLVM knows the slot functions' range and would
        // drop it, but the verifier sees a global function's result as any number.
        let s = unsafe { core::ptr::read_volatile(&s) } & (N - 1);
        self.counts[s] = self.counts[s].wrapping_add(1);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| *c as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(v: u64, b: &[u64]) -> usize {
        b.iter().position(|x| v <= *x).unwrap()
    }

    #[test]
    fn the_binary_search_is_the_linear_one() {
        let table: [u64; 16] = [0, 1, 5, 9, 10, 100, 101, 1000, 5000, 5001, 1 << 40, u64::MAX - 1, u64::MAX, u64::MAX, u64::MAX, u64::MAX];
        for v in [0, 1, 2, 5, 6, 9, 10, 11, 99, 100, 101, 102, 999, 1000, 1001, 5000, 5001, 5002, 1 << 40, (1 << 40) + 1, u64::MAX - 1, u64::MAX] {
            assert_eq!(slot::<16>(v, |i| table[i]), linear(v, &table), "{v}");
        }
    }

    #[test]
    fn sizes_are_zero_then_powers_of_two() {
        assert_eq!(size_slot(0), 0);
        assert_eq!(size_slot(1), 1);
        assert_eq!(size_slot(2), 2);
        assert_eq!(size_slot(3), 3);
        assert_eq!(size_slot(4), 3);
        assert_eq!(size_slot(64), 7);
        assert_eq!(size_slot(65), 8);
        assert_eq!(size_slot(1 << 30), 31);
        assert_eq!(size_slot(u64::MAX), SIZE_SLOTS - 1);
        for v in [0u64, 1, 7, 8, 9, 1000, 1 << 20, (1 << 61) + 1] {
            assert_eq!(size_slot(v), linear(v, &SIZE_BOUNDS), "{v}");
        }
    }

    #[test]
    fn a_hist_adds_into_its_slot() {
        let mut h = Hist::<4>::default();
        h.add(2, 10);
        h.add(2, 5);
        h.add(6, 1); // masked, never out of bounds
        assert_eq!(h.counts, [0, 0, 3, 0]);
        assert_eq!((h.sum, h.count()), (16, 3));
    }
}
