//! The Prometheus protobuf page (length-delimited `MetricFamily` messages), the one format
//! that carries native histograms, read into a `Page` with prometheus-client's message types.
use std::collections::BTreeMap;

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    Histogram as Proto, LabelPair, MetricFamily, MetricType,
};
use prost::Message;

use super::page::{Histogram, Labels, Native, Page, Scalar};

fn labels(pairs: &[LabelPair]) -> Labels {
    pairs.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

/// Native buckets from spans and deltas; None for a histogram with classic buckets only.
fn native(h: &Proto) -> Option<Native> {
    let zero_count = if h.zero_count_float > 0.0 { h.zero_count_float } else { h.zero_count as f64 };
    if h.positive_span.is_empty() && h.negative_span.is_empty() && zero_count == 0.0 {
        return None;
    }
    let mut buckets = BTreeMap::new();
    let (mut index, mut at, mut count) = (0i32, 0usize, 0i64);
    for span in &h.positive_span {
        index += span.offset;
        for _ in 0..span.length {
            let n = if h.positive_count.is_empty() {
                count += h.positive_delta.get(at).copied().unwrap_or(0);
                count as f64
            } else {
                h.positive_count.get(at).copied().unwrap_or(0.0)
            };
            if n > 0.0 {
                buckets.insert(index, n);
            }
            index += 1;
            at += 1;
        }
    }
    Some(Native { schema: h.schema, zero_threshold: h.zero_threshold, zero_count, buckets })
}

/// Decodes a protobuf page.
pub fn parse(mut body: &[u8]) -> Result<Page, prost::DecodeError> {
    let mut page = Page::default();
    while !body.is_empty() {
        let family = MetricFamily::decode_length_delimited(&mut body)?;
        let kind = MetricType::try_from(family.r#type).unwrap_or(MetricType::Untyped);
        for m in &family.metric {
            let labels = labels(&m.label);
            if let Some(h) = m.histogram.as_ref().filter(|_| kind == MetricType::Histogram) {
                let count = if h.sample_count_float > 0.0 { h.sample_count_float } else { h.sample_count as f64 };
                let classic = h
                    .bucket
                    .iter()
                    .map(|b| {
                        let c = if b.cumulative_count_float > 0.0 { b.cumulative_count_float } else { b.cumulative_count as f64 };
                        (b.upper_bound, c)
                    })
                    .collect();
                page.histograms.push(Histogram {
                    name: family.name.clone(),
                    labels,
                    count,
                    sum: h.sample_sum,
                    classic,
                    native: native(h),
                });
                continue;
            }
            let value = match kind {
                MetricType::Counter => m.counter.as_ref().map(|c| c.value),
                MetricType::Gauge => m.gauge.as_ref().map(|g| g.value),
                _ => m.untyped.as_ref().map(|u| u.value),
            };
            if let Some(value) = value {
                page.scalars.push(Scalar { name: family.name.clone(), labels, value });
            }
        }
    }
    Ok(page)
}
