//! The kernel's aggregates (`AGG`: per-CPU histograms keyed by small ids) -> the agent's
//! series. The kernel only adds; the agent keeps each key's totals as it last read them and
//! adds the difference, so that a read at any time, as often as wanted, counts each request
//! once. Slot counts are u32 and wrap: sums and differences are modulo 2^32 (the per-CPU
//! counts add up to the total modulo 2^32), exact while a slot gets fewer than 2^32
//! requests between two reads.
use crate::labels::Service;
use std::collections::HashMap;

use probe_common::{AggKey, AggValue, buckets::Hist};

use super::Metrics;

/// `a += b`.
pub fn add(a: &mut AggValue, b: &AggValue) {
    fn hist<const N: usize>(a: &mut Hist<N>, b: &Hist<N>) {
        a.sum = a.sum.wrapping_add(b.sum);
        for (x, y) in a.counts.iter_mut().zip(b.counts.iter()) {
            *x = x.wrapping_add(*y);
        }
    }
    hist(&mut a.duration, &b.duration);
    hist(&mut a.first_byte, &b.first_byte);
    hist(&mut a.request_body, &b.request_body);
    hist(&mut a.response_body, &b.response_body);
    hist(&mut a.queue, &b.queue);
}

/// `now - before`, modulo 2^32 for the slot counts.
fn since(now: &AggValue, before: &AggValue) -> AggValue {
    fn hist<const N: usize>(a: &Hist<N>, b: &Hist<N>) -> Hist<N> {
        let mut d = Hist { sum: a.sum.wrapping_sub(b.sum), counts: [0; N] };
        for (i, c) in d.counts.iter_mut().enumerate() {
            *c = a.counts[i].wrapping_sub(b.counts[i]);
        }
        d
    }
    AggValue {
        duration: hist(&now.duration, &before.duration),
        first_byte: hist(&now.first_byte, &before.first_byte),
        request_body: hist(&now.request_body, &before.request_body),
        response_body: hist(&now.response_body, &before.response_body),
        queue: hist(&now.queue, &before.queue),
    }
}

/// The totals of every key as last read.
#[derive(Default)]
pub struct KernelTotals {
    last: HashMap<AggKey, AggValue>,
}

impl KernelTotals {
    /// Applies a read of the map (each key's value summed over the CPUs). `service` names
    /// a service id; a key whose service is unknown waits for the next read.
    pub fn apply(
        &mut self,
        metrics: &Metrics,
        read: impl IntoIterator<Item = (AggKey, AggValue)>,
        service: impl Fn(u32) -> Option<Service>,
    ) {
        for (key, now) in read {
            let Some(name) = service(key.service) else {
                continue;
            };
            let before = self.last.get(&key).copied().unwrap_or_default();
            let delta = since(&now, &before);
            if delta.duration.counts.iter().any(|c| *c > 0) {
                metrics.add_kernel(&key, &delta, &name);
            }
            self.last.insert(key, now);
        }
    }

    /// Forgets the keys of forgotten service ids (the agent deletes them from the kernel's
    /// map too).
    pub fn forget(&mut self, service_ids: &std::collections::HashSet<u32>) {
        self.last.retain(|k, _| !service_ids.contains(&k.service));
    }

    pub fn keys(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::{
        labels::{Router, Routes},
        metrics::{Extra, HttpOptions, Naming, scheme::Scheme},
    };

    fn value(n: u32, ns: u64) -> AggValue {
        let mut v = AggValue::default();
        v.duration.counts[0] = n;
        v.duration.sum = ns;
        v.first_byte.counts[0] = n;
        v.request_body.counts[0] = n;
        v.response_body.counts[1] = n;
        v.response_body.sum = 100 * n as u64;
        v
    }

    /// Reading twice counts once; growth is added; an unknown service waits.
    #[test]
    fn deltas_count_each_request_once() {
        let mut prom = Registry::default();
        let options = HttpOptions { extra: Extra::ALL, ..HttpOptions::default() };
        let metrics = Metrics::with_options(
            &mut prom,
            Naming::Otel,
            Routes::new(Router::default(), 10),
            Scheme::default_time(),
            options,
        );
        let svc: Service = "nginx".into();
        let (route, _) = metrics.routes().route_key(1, &svc, 7, b"/hello");
        let key = AggKey { service: 1, route, status: 200, method: 1, version: 1, family: 2, kind: 0 };
        let mut totals = KernelTotals::default();
        let names = |id: u32| (id == 1).then(|| svc.clone());
        totals.apply(&metrics, [(key, value(3, 3_000_000))], names);
        totals.apply(&metrics, [(key, value(3, 3_000_000))], names);
        totals.apply(&metrics, [(key, value(5, 4_000_000))], names);
        let other = AggKey { service: 2, ..key };
        totals.apply(&metrics, [(other, value(9, 1))], names);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
        let line = |name: &str| {
            text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{text}")).to_string()
        };
        assert!(line("http_server_request_duration_seconds_count").ends_with(" 5"), "{text}");
        assert!(line("http_server_request_duration_seconds_count").contains("http_route=\"/hello\""), "{text}");
        assert!(line("http_server_request_duration_seconds_sum").ends_with(" 0.004"), "{text}");
        assert!(line("http_server_response_body_size_bytes_sum").ends_with(" 500.0"), "{text}");
        assert!(text.contains("redprobe_requests_paired_total{pairer=\"kernel\",reason=\"\"} 5"), "{text}");
        assert_eq!(totals.keys(), 1);
    }

    /// A slot count that wrapped since the last read still gives the right difference.
    #[test]
    fn a_wrapped_count_is_a_difference_modulo_2_32() {
        let before = value(u32::MAX - 1, 10);
        let now = value(2, 20);
        let d = since(&now, &before);
        assert_eq!((d.duration.counts[0], d.duration.count(), d.duration.sum), (4, 4, 10));
    }

    #[test]
    fn per_cpu_values_add_up() {
        let mut a = value(1, 10);
        add(&mut a, &value(2, 20));
        assert_eq!(a, value(3, 30));
    }
}
