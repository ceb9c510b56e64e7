//! The agent's side of the bucketing scheme (`probe_common::buckets`): the table of slots,
//! and for each slot the classic bucket and the native bucket it lies in. The duration
//! table is built here from the classic boundaries (`--buckets`) and patched into the
//! kernel, so the kernel's counts and the agent's are the same slots.
use std::sync::Arc;

use probe_common::buckets::{
    SIZE_BOUNDS, SIZE_SCHEMA, SIZE_SLOTS, TIME_NATIVE_FIRST, TIME_NATIVE_LAST, TIME_SCHEMA, TIME_SLOTS, TimeBounds, slot,
};

/// OpenTelemetry's default duration boundaries, below them 100 µs to 2.5 ms, so that a
/// route answering in 100 µs has a p50 on classic histograms too. Every OTel boundary is
/// still one, so dashboards and alerts written against them line up.
pub const DEFAULT_DURATION_BUCKETS: [f64; 19] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// `--buckets` takes at most this many boundaries (each costs a series per label set and
/// duration histogram on classic scrapes).
pub const MAX_CLASSIC_BUCKETS: usize = 20;
/// Body size boundaries: powers of 4 from 64 B to 1 GiB (each a native boundary too).
pub const SIZE_BUCKETS: [f64; 13] = [
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
    268435456.0, 1073741824.0,
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BucketsError {
    #[error("--buckets needs at least one boundary")]
    Empty,
    #[error("--buckets takes at most {MAX_CLASSIC_BUCKETS} boundaries (got {0}); each one is a series per label set")]
    TooMany(usize),
    #[error("--buckets: {0} is not a duration in seconds above 1 ns")]
    NotPositive(f64),
    #[error("--buckets must rise: {0} comes after {1}")]
    NotRising(f64, f64),
}

/// Slots and what they mean, for one kind of value (durations in ns, or sizes in bytes).
#[derive(Debug, PartialEq)]
pub struct Scheme {
    /// Upper bound (inclusive) of each slot, in the value's unit; the last is `u64::MAX`.
    bounds: Vec<u64>,
    /// Classic upper bounds in the exported unit (seconds, bytes); `+Inf` comes after.
    classic: Vec<f64>,
    /// The classic bucket of each slot (`classic.len()`: `+Inf`).
    classic_of: Vec<usize>,
    /// The native bucket of each slot (None: the zero bucket).
    native_of: Vec<Option<i32>>,
    pub schema: i32,
    /// Native histograms' zero bucket: values at or below it, in the exported unit.
    pub zero_threshold: f64,
    /// Exported unit per value unit (1e-9 for ns to seconds).
    pub scale: f64,
}

impl Scheme {
    /// Durations, with `classic` boundaries in seconds.
    pub fn time(classic: &[f64]) -> Result<Arc<Scheme>, BucketsError> {
        if classic.is_empty() {
            return Err(BucketsError::Empty);
        }
        if classic.len() > MAX_CLASSIC_BUCKETS {
            return Err(BucketsError::TooMany(classic.len()));
        }
        let mut classic_ns = Vec::with_capacity(classic.len());
        for (i, s) in classic.iter().enumerate() {
            let ns = s * 1e9;
            if !ns.is_finite() || ns < 1.0 || ns > u64::MAX as f64 / 2.0 {
                return Err(BucketsError::NotPositive(*s));
            }
            let ns = ns.round() as u64;
            if i > 0 && (classic[i - 1] >= *s || classic_ns[i - 1] >= ns) {
                return Err(BucketsError::NotRising(*s, classic[i - 1]));
            }
            classic_ns.push(ns);
        }
        // Native bucket i holds (2^((i-1)/8), 2^(i/8)] seconds: in integer ns, v <= b
        // exactly when v <= floor(b).
        let native_bound = |i: i32| (1e9 * (i as f64 / (1 << TIME_SCHEMA) as f64).exp2()).floor() as u64;
        let native: Vec<(i32, u64)> = (TIME_NATIVE_FIRST + 1..=TIME_NATIVE_LAST).map(|i| (i, native_bound(i))).collect();
        let zero = native_bound(TIME_NATIVE_FIRST);
        let zero_threshold = (TIME_NATIVE_FIRST as f64 / (1 << TIME_SCHEMA) as f64).exp2();
        Ok(Arc::new(Scheme::build(TIME_SLOTS, &classic_ns, classic.to_vec(), &native, (zero, zero_threshold), TIME_SCHEMA, 1e-9)))
    }

    /// Body sizes in bytes: the fixed table of `probe_common::buckets::SIZE_BOUNDS`.
    pub fn size() -> Arc<Scheme> {
        let classic_bytes: Vec<u64> = SIZE_BUCKETS.iter().map(|b| *b as u64).collect();
        let native: Vec<(i32, u64)> = (0..SIZE_SLOTS as i32 - 2).map(|i| (i, 1u64 << i)).collect();
        let s = Scheme::build(SIZE_SLOTS, &classic_bytes, SIZE_BUCKETS.to_vec(), &native, (0, 0.0), SIZE_SCHEMA, 1.0);
        debug_assert_eq!(s.bounds, SIZE_BOUNDS);
        Arc::new(s)
    }

    /// The slots are the zero bucket's bound, the native bounds and the classic bounds, in
    /// order, then `u64::MAX` up to `slots`. `zero`: the zero bucket's bound in the value's
    /// unit and in the exported one.
    fn build(slots: usize, classic_units: &[u64], classic: Vec<f64>, native: &[(i32, u64)], zero: (u64, f64), schema: i32, scale: f64) -> Scheme {
        let (zero, zero_threshold) = zero;
        let mut bounds: Vec<u64> = std::iter::once(zero).chain(native.iter().map(|n| n.1)).chain(classic_units.iter().copied()).collect();
        bounds.sort_unstable();
        bounds.dedup();
        assert!(bounds.len() < slots, "{} bounds do not fit {slots} slots", bounds.len());
        bounds.resize(slots, u64::MAX);
        let classic_of = bounds.iter().map(|b| classic_units.iter().position(|c| b <= c).unwrap_or(classic_units.len())).collect();
        let last = native.last().map_or(0, |n| n.0) + 1;
        let native_of = bounds
            .iter()
            .map(|b| (*b > zero).then(|| native.iter().find(|n| *b <= n.1).map_or(last, |n| n.0)))
            .collect();
        Scheme { bounds, classic, classic_of, native_of, schema, zero_threshold, scale }
    }

    pub fn default_time() -> Arc<Scheme> {
        Scheme::time(&DEFAULT_DURATION_BUCKETS).expect("the default buckets are valid")
    }

    pub fn slots(&self) -> usize {
        self.bounds.len()
    }

    /// The slot of `v` (the kernel's own search, on the same table).
    pub fn slot(&self, v: u64) -> usize {
        match self.bounds.len() {
            TIME_SLOTS => slot::<TIME_SLOTS>(v, |i| self.bounds[i]),
            SIZE_SLOTS => slot::<SIZE_SLOTS>(v, |i| self.bounds[i]),
            n => unreachable!("a scheme has {TIME_SLOTS} or {SIZE_SLOTS} slots, not {n}"),
        }
    }

    /// The table the kernel searches (durations only).
    pub fn kernel_table(&self) -> TimeBounds {
        let mut t = TimeBounds { ns: [u64::MAX; TIME_SLOTS] };
        t.ns.copy_from_slice(&self.bounds);
        t
    }

    /// Per-slot counts -> classic buckets: (upper bound, count) with `+Inf` last.
    pub fn classic(&self, counts: &[u64]) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = self.classic.iter().copied().chain([f64::INFINITY]).map(|b| (b, 0)).collect();
        for (c, n) in self.classic_of.iter().zip(counts) {
            out[*c].1 += n;
        }
        out
    }

    /// Per-slot counts -> native buckets: the zero bucket's count, and (index, count) for
    /// each populated bucket in rising order.
    pub fn native(&self, counts: &[u64]) -> (u64, Vec<(i32, u64)>) {
        let mut zero = 0;
        let mut buckets: Vec<(i32, u64)> = Vec::new();
        for (b, n) in self.native_of.iter().zip(counts).filter(|(_, n)| **n > 0) {
            match (b, buckets.last_mut()) {
                (None, _) => zero += n,
                (Some(i), Some(last)) if last.0 == *i => last.1 += n,
                (Some(i), _) => buckets.push((*i, *n)),
            }
        }
        (zero, buckets)
    }
}

/// Native buckets -> Prometheus' sparse form: spans (offset from the end of the previous
/// span, length) and count deltas. An empty histogram gets one empty span, so that the
/// scraper still reads it as native.
pub fn spans(buckets: &[(i32, u64)]) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let (mut next, mut prev) = (0i32, 0i64);
    for (i, n) in buckets {
        match spans.last_mut() {
            Some(s) if *i == next => s.1 += 1,
            Some(_) => spans.push((*i - next, 1)),
            None => spans.push((*i, 1)),
        }
        next = i + 1;
        deltas.push(*n as i64 - prev);
        prev = *n as i64;
    }
    if spans.is_empty() {
        spans.push((0, 0));
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_classic_and_native_boundary_is_a_slot_boundary() {
        let s = Scheme::default_time();
        assert_eq!(s.slots(), TIME_SLOTS);
        for c in DEFAULT_DURATION_BUCKETS {
            let ns = (c * 1e9).round() as u64;
            // A value at a boundary and one just above fall in different classic buckets.
            let (at, above) = (s.slot(ns), s.slot(ns + 1));
            assert_eq!(s.classic_of[at] + 1, s.classic_of[above], "{c}");
        }
        // 2^-10 s (976.56 µs) is native boundary -80.
        let ns = 976_562;
        assert_eq!(s.native_of[s.slot(ns)], Some(-80));
        assert_eq!(s.native_of[s.slot(ns + 1)], Some(-79));
        // At or below 2^-17 s: the zero bucket.
        assert_eq!(s.native_of[s.slot(7_629)], None);
        assert_eq!(s.native_of[s.slot(7_630)], Some(TIME_NATIVE_FIRST + 1));
        assert_eq!(s.native_of[s.slot(u64::MAX)], Some(TIME_NATIVE_LAST + 1));
        assert_eq!(s.zero_threshold, 2f64.powi(-17));
    }

    /// The slots' native index is Prometheus' own: ceil(log2(v) * 8), v in seconds.
    #[test]
    fn native_index_is_prometheus_formula() {
        let s = Scheme::default_time();
        for ns in [10_000u64, 99_999, 100_000, 123_456, 1_000_000, 20_000_000, 21_960_000, 999_999_999, 1_000_000_000, 3_600_000_000_000] {
            let want = ((ns as f64 / 1e9).log2() * 8.0).ceil() as i32;
            assert_eq!(s.native_of[s.slot(ns)], Some(want), "{ns}");
        }
    }

    #[test]
    fn counts_fold_into_classic_and_native_buckets() {
        let s = Scheme::default_time();
        let mut counts = vec![0u64; s.slots()];
        for ns in [50_000u64, 90_000, 100_000, 100_001, 3_000, 2_000_000_000_000] {
            counts[s.slot(ns)] += 1;
        }
        let classic = s.classic(&counts);
        assert_eq!(classic[0], (0.0001, 4)); // 3 µs, 50 µs, 90 µs, 100 µs
        assert_eq!(classic[1], (0.00025, 1));
        assert_eq!(classic.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(classic.iter().map(|c| c.1).sum::<u64>(), 6);
        let (zero, native) = s.native(&counts);
        assert_eq!(zero, 1);
        // 50 µs: ceil(log2(5e-5) * 8) = -114; 90 µs -107; 100 µs and 100.001 µs -106.
        assert_eq!(&native[..3], &[(-114, 1), (-107, 1), (-106, 2)]);
    }

    #[test]
    fn sizes_are_the_kernel_table() {
        let s = Scheme::size();
        assert_eq!(s.bounds, SIZE_BOUNDS);
        let mut counts = vec![0u64; s.slots()];
        for v in [0u64, 0, 64, 65, 1 << 30] {
            counts[s.slot(v)] += 1;
        }
        let classic = s.classic(&counts);
        assert_eq!(classic[0], (64.0, 3));
        assert_eq!(classic[1], (256.0, 1));
        assert_eq!(classic[12], (1073741824.0, 1));
        assert_eq!(s.native(&counts), (2, vec![(6, 1), (7, 1), (30, 1)]));
        assert_eq!(s.zero_threshold, 0.0);
    }

    #[test]
    fn spans_and_deltas() {
        assert_eq!(spans(&[]), (vec![(0, 0)], vec![]));
        assert_eq!(spans(&[(-3, 2), (-2, 5), (1, 1), (5, 1)]), (vec![(-3, 2), (2, 1), (3, 1)], vec![2, 3, -4, 0]));
    }

    #[test]
    fn bad_buckets_are_refused_with_the_reason() {
        assert_eq!(Scheme::time(&[]), Err(BucketsError::Empty));
        assert_eq!(Scheme::time(&[0.1, 0.05]), Err(BucketsError::NotRising(0.05, 0.1)));
        assert_eq!(Scheme::time(&[0.0]), Err(BucketsError::NotPositive(0.0)));
        assert_eq!(Scheme::time(&[f64::NAN]).map(|_| ()).unwrap_err().to_string(), "--buckets: NaN is not a duration in seconds above 1 ns");
        assert_eq!(Scheme::time(&[0.001; 21]), Err(BucketsError::TooMany(21)));
        let many: Vec<f64> = (1..=20).map(|i| i as f64 * 0.0123).collect();
        assert_eq!(Scheme::time(&many).unwrap().slots(), TIME_SLOTS);
    }
}
