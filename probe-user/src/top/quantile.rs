//! Quantiles of a distribution of durations: from native buckets where there are any (each
//! about 9 % wide at schema 3), else from classic buckets, interpolated within the bucket the
//! rank falls in as Prometheus' `histogram_quantile` does.
use std::collections::BTreeMap;

use super::page::Native;

/// What some requests took: classic buckets (upper bound, cumulative count) and native
/// ones, summed over series and differenced over an interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dist {
    pub count: f64,
    pub sum: f64,
    pub classic: Vec<(f64, f64)>,
    pub native: Option<Native>,
    /// Series added.
    pub series: u32,
}

impl Dist {
    /// Adds a series' buckets. Native buckets stay only while every series added has them,
    /// on one schema.
    pub fn add(&mut self, count: f64, sum: f64, classic: &[(f64, f64)], native: Option<&Native>) {
        let first = self.series == 0;
        self.series += 1;
        self.count += count;
        self.sum += sum;
        for (le, c) in classic {
            match self.classic.iter_mut().find(|(l, _)| l == le) {
                Some(b) => b.1 += c,
                None => self.classic.push((*le, *c)),
            }
        }
        self.classic.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.native = match (first, self.native.take(), native) {
            (true, _, Some(n)) => Some(n.clone()),
            (false, Some(mut mine), Some(n)) if mine.schema == n.schema && mine.zero_threshold == n.zero_threshold => {
                mine.zero_count += n.zero_count;
                for (i, c) in &n.buckets {
                    *mine.buckets.entry(*i).or_insert(0.0) += c;
                }
                Some(mine)
            }
            _ => None,
        };
    }

    /// What was added since `before` (a later reading of the same counters). A count that
    /// went down (the agent restarted) is taken from zero.
    pub fn since(&self, before: &Dist) -> Dist {
        if self.count < before.count {
            return self.clone();
        }
        let classic = self
            .classic
            .iter()
            .map(|(le, c)| {
                let b = before.classic.iter().find(|(l, _)| l == le).map(|b| b.1).unwrap_or(0.0);
                (*le, (c - b).max(0.0))
            })
            .collect();
        let native = match (&self.native, &before.native) {
            (Some(now), Some(then)) if now.schema == then.schema => {
                let mut buckets = BTreeMap::new();
                for (i, c) in &now.buckets {
                    let d = c - then.buckets.get(i).copied().unwrap_or(0.0);
                    if d > 0.0 {
                        buckets.insert(*i, d);
                    }
                }
                Some(Native { buckets, zero_count: (now.zero_count - then.zero_count).max(0.0), ..now.clone() })
            }
            (Some(now), None) if before.count == 0.0 => Some(now.clone()),
            _ => None,
        };
        Dist { count: self.count - before.count, sum: (self.sum - before.sum).max(0.0), classic, native, series: self.series }
    }

    /// The `q` quantile (0..=1), in the unit of the buckets; None with no observation.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        match &self.native {
            Some(n) if n.zero_count + n.buckets.values().sum::<f64>() > 0.0 => native_quantile(n, q),
            _ => classic_quantile(&self.classic, q),
        }
    }
}

fn classic_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, c) in buckets {
        if c >= rank && c > below {
            if le.is_infinite() {
                // Above the highest finite bound: that bound, as histogram_quantile says.
                return Some(lower);
            }
            return Some(lower + (le - lower) * (rank - below) / (c - below));
        }
        (lower, below) = (le, c);
    }
    Some(lower)
}

fn native_quantile(n: &Native, q: f64) -> Option<f64> {
    let total = n.zero_count + n.buckets.values().sum::<f64>();
    let rank = q * total;
    if rank <= n.zero_count && n.zero_count > 0.0 {
        return Some(n.zero_threshold * rank / n.zero_count);
    }
    let base = 2f64.powf(2f64.powi(-n.schema));
    let mut below = n.zero_count;
    let mut last = None;
    for (&i, &c) in &n.buckets {
        let (lo, hi) = (base.powi(i - 1).max(n.zero_threshold), base.powi(i));
        if below + c >= rank {
            // Exponential interpolation: the buckets are exponential.
            let f = ((rank - below) / c).clamp(0.0, 1.0);
            return Some(if lo > 0.0 { lo * (hi / lo).powf(f) } else { hi * f });
        }
        below += c;
        last = Some(hi);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classic(b: &[(f64, f64)]) -> Dist {
        Dist { count: b.last().unwrap().1, classic: b.to_vec(), ..Default::default() }
    }

    #[test]
    fn classic_like_histogram_quantile() {
        let inf = f64::INFINITY;
        let d = classic(&[(0.1, 50.0), (0.2, 100.0), (inf, 100.0)]);
        assert_eq!(d.quantile(0.5), Some(0.1));
        assert!((d.quantile(0.75).unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(classic(&[(0.1, 0.0), (inf, 10.0)]).quantile(0.99), Some(0.1));
        assert_eq!(classic(&[(0.1, 10.0), (inf, 10.0)]).quantile(0.5), Some(0.05));
        assert_eq!(classic(&[(0.1, 0.0), (inf, 0.0)]).quantile(0.5), None);
    }

    #[test]
    fn native_buckets_win_and_interpolate_exponentially() {
        // Schema 0: bucket 1 is (1, 2], bucket 2 is (2, 4].
        let native = Native { schema: 0, zero_threshold: 0.0, zero_count: 0.0, buckets: [(1, 10.0), (2, 10.0)].into() };
        let d = Dist { count: 20.0, native: Some(native), classic: vec![(f64::INFINITY, 20.0)], ..Default::default() };
        assert_eq!(d.quantile(0.5), Some(2.0));
        assert!((d.quantile(0.75).unwrap() - 8f64.sqrt()).abs() < 1e-9);
        assert_eq!(d.quantile(1.0), Some(4.0));
    }

    #[test]
    fn deltas_and_sums() {
        let inf = f64::INFINITY;
        let n = |b: &[(i32, f64)]| Some(Native { schema: 3, buckets: b.iter().copied().collect(), ..Default::default() });
        let mut before = Dist::default();
        before.add(10.0, 1.0, &[(0.1, 10.0), (inf, 10.0)], n(&[(1, 10.0)]).as_ref());
        let mut now = Dist::default();
        now.add(12.0, 1.5, &[(0.1, 10.0), (inf, 12.0)], n(&[(1, 10.0), (30, 2.0)]).as_ref());
        now.add(3.0, 0.3, &[(0.1, 3.0), (inf, 3.0)], n(&[(1, 3.0)]).as_ref());
        let d = now.since(&before);
        assert_eq!((d.count, d.classic.clone()), (5.0, vec![(0.1, 3.0), (inf, 5.0)]));
        assert_eq!(d.native.as_ref().unwrap().buckets, [(1, 3.0), (30, 2.0)].into());
        assert!((d.sum - 0.8).abs() < 1e-12);
        // A series without native buckets drops them from the sum; a restart counts from 0.
        now.add(1.0, 0.1, &[(0.1, 1.0), (inf, 1.0)], None);
        assert!(now.native.is_none());
        assert_eq!(before.since(&now).count, 10.0);
    }
}
