//! Side-by-side measurement: interleaved rounds, medians and spreads.
//!
//! Every ratio in the bench comes from here. A round runs each side once; the order of
//! the sides rotates from round to round (A B, B A, A B ...) so that a slow drift of the
//! machine does not favour one side. One warm-up round runs first and is not counted.
//! A side's value is the median of its rounds; the spread is the range (min..max) of the
//! per-round ratios (or differences), so a ratio is never computed from single runs.
use anyhow::Result;

/// The median (the mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// (min, max), ignoring non-finite values.
pub fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// One quantity measured on a baseline side and on a compared side, round by round.
#[derive(Clone, Debug, Default)]
pub struct Paired {
    pub base: Vec<f64>,
    pub with: Vec<f64>,
}

impl Paired {
    pub fn new(base: Vec<f64>, with: Vec<f64>) -> Self {
        Paired { base, with }
    }

    pub fn base_median(&self) -> f64 {
        median(&self.base)
    }

    pub fn with_median(&self) -> f64 {
        median(&self.with)
    }

    /// median(with) / median(base).
    pub fn ratio(&self) -> f64 {
        self.with_median() / self.base_median()
    }

    /// median(with) - median(base).
    pub fn added(&self) -> f64 {
        self.with_median() - self.base_median()
    }

    /// Range of the per-round ratios with/base.
    pub fn ratio_spread(&self) -> (f64, f64) {
        range(&self.base.iter().zip(&self.with).map(|(a, b)| b / a).collect::<Vec<_>>())
    }

    /// Range of the per-round differences with - base.
    pub fn added_spread(&self) -> (f64, f64) {
        range(&self.base.iter().zip(&self.with).map(|(a, b)| b - a).collect::<Vec<_>>())
    }
}

/// Runs `rounds` counted rounds of `sides` sides (after one uncounted warm-up round),
/// rotating the order of the sides each round. `run(side)` measures one side once.
/// Returns the samples as `[side][round]`.
pub fn interleave<T>(
    what: &str,
    sides: &[&str],
    rounds: usize,
    mut run: impl FnMut(usize) -> Result<T>,
) -> Result<Vec<Vec<T>>> {
    let n = sides.len();
    let mut out: Vec<Vec<T>> = (0..n).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..=rounds {
        let label = if round == 0 { "warm-up".to_string() } else { format!("round {round}/{rounds}") };
        let order: Vec<usize> = (0..n).map(|i| (i + round) % n).collect();
        eprintln!(
            "bench: {what}: {label} ({})",
            order.iter().map(|&s| sides[s]).collect::<Vec<_>>().join(", ")
        );
        for side in order {
            let sample = run(side)?;
            if round > 0 {
                out[side].push(sample);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(range(&[2.0, f64::NAN, -1.0, 5.0]), (-1.0, 5.0));
    }

    #[test]
    fn paired_ratios() {
        let p = Paired::new(vec![100.0, 200.0, 100.0], vec![90.0, 190.0, 100.0]);
        assert_eq!(p.ratio(), 1.0);
        assert_eq!(p.added(), 0.0);
        let (lo, hi) = p.ratio_spread();
        assert!((lo - 0.9).abs() < 1e-12 && hi == 1.0);
        assert_eq!(p.added_spread(), (-10.0, 0.0));
    }

    #[test]
    fn rotates_sides_and_skips_the_warm_up() {
        let mut calls = vec![];
        let out = interleave("t", &["a", "b"], 2, |s| {
            calls.push(s);
            Ok(calls.len())
        })
        .unwrap();
        assert_eq!(calls, vec![0, 1, 1, 0, 0, 1]);
        assert_eq!(out, vec![vec![4, 5], vec![3, 6]]);
    }
}
