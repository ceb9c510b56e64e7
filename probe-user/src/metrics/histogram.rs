//! A histogram counted by slot (`scheme.rs`): it takes observations one by one (the
//! requests the agent paired) and whole slot counts (the kernel's aggregates), and serves
//! them as one Prometheus histogram with classic buckets (every format) and native buckets
//! (the protobuf format). prometheus-client's own takes single observations only.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NativeHistogram, NativeHistogramBuckets, NoLabelSet},
    metrics::{MetricType, TypedMetric, family::MetricConstructor},
};

use super::scheme::{Scheme, spans};

#[derive(Debug)]
struct Inner {
    scheme: Arc<Scheme>,
    counts: Vec<AtomicU64>,
    /// The sum, in the value's unit (ns, bytes).
    sum: AtomicU64,
}

#[derive(Clone, Debug)]
pub struct Buckets {
    inner: Arc<Inner>,
}

impl Buckets {
    pub fn new(scheme: Arc<Scheme>) -> Self {
        let counts = (0..scheme.slots()).map(|_| AtomicU64::new(0)).collect();
        Buckets { inner: Arc::new(Inner { scheme, counts, sum: AtomicU64::new(0) }) }
    }

    /// One value, in the scheme's unit (ns, bytes).
    pub fn observe(&self, v: u64) {
        self.inner.counts[self.inner.scheme.slot(v)].fetch_add(1, Ordering::Relaxed);
        self.inner.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Adds per-slot counts (the kernel's, on the same slots) and their sum.
    pub fn add(&self, counts: &[u32], sum: u64) {
        for (c, n) in self.inner.counts.iter().zip(counts) {
            if *n > 0 {
                c.fetch_add(*n as u64, Ordering::Relaxed);
            }
        }
        self.inner.sum.fetch_add(sum, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Makes the histograms of a family, on one scheme.
#[derive(Clone, Debug)]
pub struct OnScheme(pub Arc<Scheme>);

impl MetricConstructor<Buckets> for OnScheme {
    fn new_metric(&self) -> Buckets {
        Buckets::new(self.0.clone())
    }
}

impl TypedMetric for Buckets {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Buckets {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let scheme = &self.inner.scheme;
        let counts: Vec<u64> = self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let sum = self.inner.sum.load(Ordering::Relaxed) as f64 * scheme.scale;
        let classic = scheme.classic(&counts);
        let (zero_count, native) = scheme.native(&counts);
        let (spans, deltas) = spans(&native);
        let native = NativeHistogram {
            schema: scheme.schema,
            zero_threshold: scheme.zero_threshold,
            zero_count,
            negative: NativeHistogramBuckets { spans: &[], deltas: &[] },
            positive: NativeHistogramBuckets { spans: &spans, deltas: &deltas },
            created: None,
        };
        encoder.encode_histogram_with_native::<NoLabelSet>(sum, counts.iter().sum(), &classic, None, native)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_protobuf;

    use super::*;

    fn registry() -> (prometheus_client::registry::Registry, Buckets) {
        let h = Buckets::new(Scheme::default_time());
        h.observe(500_000); // 0.5 ms
        h.observe(3_000_000_000);
        let kernel = Buckets::new(Scheme::default_time());
        kernel.observe(1_000_000);
        kernel.observe(1_500_000);
        let kernel_counts: Vec<u32> = kernel.inner.counts.iter().map(|c| c.load(Ordering::Relaxed) as u32).collect();
        h.add(&kernel_counts, 2_500_000);
        assert_eq!(h.count(), 4);
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("h", "help", h.clone());
        (reg, h)
    }

    #[test]
    fn text_has_the_classic_buckets() {
        let (reg, _) = registry();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("h_bucket{le=\"0.0001\"} 0\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.0025\"} 3\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"2.5\"} 3\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("h_sum 3.003\n"), "{text}");
        assert_eq!(text.matches("h_bucket").count(), 20, "{text}");
    }

    #[test]
    fn protobuf_has_native_and_classic_buckets() {
        let (reg, _) = registry();
        let families = prometheus_protobuf::encode(&reg).unwrap();
        let h = families[0].metric[0].histogram.as_ref().unwrap();
        assert_eq!((h.sample_count, h.schema), (4, 3));
        assert!((h.sample_sum - 3.003).abs() < 1e-12);
        // 0.5 ms = 2^-10.97: native bucket -87; 1 ms -79; 1.5 ms -75; 3 s 13.
        let mut want = vec![];
        let mut idx = 0;
        for s in &h.positive_span {
            idx += s.offset;
            for _ in 0..s.length {
                want.push(idx);
                idx += 1;
            }
        }
        assert_eq!(want, [-87, -79, -75, 13]);
        assert_eq!(h.positive_delta, [1, 0, 0, 0]);
        // The classic buckets ride along; the last is +Inf, not f64::MAX.
        assert_eq!(h.bucket.len(), 20);
        assert_eq!(h.bucket[19].upper_bound, f64::INFINITY);
        assert_eq!(h.bucket[19].cumulative_count, 4);
    }
}
