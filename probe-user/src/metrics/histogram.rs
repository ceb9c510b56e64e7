//! A histogram that takes observations one by one (the requests the agent paired) and
//! whole bucket counts (the kernel's aggregates), served as one Prometheus histogram.
//! prometheus-client's own takes single observations only.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

#[derive(Debug)]
struct Inner {
    /// Upper bounds (the +Inf bucket comes after them).
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum, as f64 bits.
    sum: AtomicU64,
}

#[derive(Clone, Debug)]
pub struct Buckets {
    inner: Arc<Inner>,
}

impl Buckets {
    pub fn new(bounds: &'static [f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Buckets { inner: Arc::new(Inner { bounds, counts, sum: AtomicU64::new(0f64.to_bits()) }) }
    }

    fn add_sum(&self, v: f64) {
        let _ = self.inner.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + v).to_bits()));
    }

    pub fn observe(&self, v: f64) {
        let i = self.inner.bounds.iter().position(|b| v <= *b).unwrap_or(self.inner.bounds.len());
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        self.add_sum(v);
    }

    /// Adds bucket counts (one per bound, then +Inf) and their sum.
    pub fn add(&self, counts: &[u64], sum: f64) {
        for (c, n) in self.inner.counts.iter().zip(counts) {
            if *n > 0 {
                c.fetch_add(*n, Ordering::Relaxed);
            }
        }
        self.add_sum(sum);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Buckets {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Buckets {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let buckets: Vec<(f64, u64)> =
            self.inner.bounds.iter().copied().chain(std::iter::once(f64::MAX)).zip(counts.iter().copied()).collect();
        let sum = f64::from_bits(self.inner.sum.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_and_kernel_counts_add_up() {
        static BOUNDS: [f64; 2] = [1.0, 2.0];
        let h = Buckets::new(&BOUNDS);
        h.observe(0.5);
        h.observe(3.0);
        h.add(&[1, 2, 0], 4.0);
        assert_eq!(h.count(), 5);
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("h", "help", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("h_bucket{le=\"1.0\"} 2"), "{text}");
        assert!(text.contains("h_bucket{le=\"2.0\"} 4"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 5"), "{text}");
        assert!(text.contains("h_sum 7.5"), "{text}");
    }
}
