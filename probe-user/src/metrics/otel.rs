//! OpenTelemetry HTTP server semantic conventions, as Prometheus renders them.
use crate::labels::Service;
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
};

use probe_common::AggValue;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::family::Family,
    registry::{Registry, Unit},
};

use super::{
    HttpOptions, Request, SnapshotGauge,
    histogram::{Buckets, OnScheme},
    scheme::Scheme,
};
use crate::labels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub http_request_method: String,
    /// Empty (absent) when the connection was reset before a status line was sent.
    pub http_response_status_code: String,
    pub http_route: String,
    pub network_protocol_version: String,
    pub network_transport: String,
    /// `http` or `https` (plaintext from a TLS library).
    pub url_scheme: String,
    /// OTel's `error.type`: `connection_reset` for a request the client gave up on, the
    /// status code for 5xx responses, empty (absent) otherwise.
    pub error_type: String,
    #[prometheus(flatten)]
    pub service: Service,
}

/// The queue time is the server's, not a route's: one series per service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    #[prometheus(flatten)]
    pub service: Service,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActiveLabels {
    pub http_request_method: String,
    #[prometheus(flatten)]
    pub service: Service,
}

type HistogramFamily = Family<RequestLabels, Buckets, OnScheme>;

/// The histograms of one label set (and its service's queue time), kept so that a request
/// costs one cheap lookup instead of five label-set lookups (each hashing and comparing seven strings) and seven
/// label allocations. The histograms are shared with the families, which export them.
struct Series {
    labels: RequestLabels,
    /// The request fields the labels were made of, to match requests without formatting.
    status: Option<u16>,
    reset: bool,
    duration: Buckets,
    /// The optional histograms (`--extra-histograms`), where served.
    first_byte: Option<Buckets>,
    request_size: Option<Buckets>,
    response_size: Option<Buckets>,
    /// The service's (shared by all its series).
    queue: Buckets,
}

impl Series {
    fn matches(&self, r: &Request<'_>) -> bool {
        let l = &self.labels;
        self.status == r.status
            && self.reset == r.reset
            && l.http_route == r.route
            && l.service == *r.service
            && l.http_request_method == r.method
            && l.network_protocol_version == r.version
            && l.network_transport == r.transport
            && l.url_scheme == r.scheme
    }
}

/// Hash of the fields that make a request's label set (`error_type` follows the status).
fn series_key(r: &Request<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    (r.status, r.reset, r.route, r.service, r.method, r.version, r.transport, r.scheme).hash(&mut h);
    h.finish()
}

pub struct OtelHttp {
    /// Label-set hash -> the series with that hash (almost always one).
    series: Mutex<HashMap<u64, Vec<Series>>>,
    options: HttpOptions,
    cap: labels::LabelSetCap,
    duration: HistogramFamily,
    first_byte: HistogramFamily,
    request_size: HistogramFamily,
    response_size: HistogramFamily,
    queue: Family<QueueLabels, Buckets, OnScheme>,
    active: SnapshotGauge<ActiveLabels>,
}

impl OtelHttp {
    /// `durations`: the duration scheme (`--buckets`), the kernel's too.
    pub fn register(registry: &mut Registry, durations: Arc<Scheme>, options: HttpOptions) -> Self {
        let sizes = Scheme::size();
        let m = OtelHttp {
            series: Default::default(),
            options,
            cap: labels::LabelSetCap::new(options.max_label_sets),
            duration: Family::new_with_constructor(OnScheme(durations.clone())),
            first_byte: Family::new_with_constructor(OnScheme(durations.clone())),
            queue: Family::new_with_constructor(OnScheme(durations)),
            request_size: Family::new_with_constructor(OnScheme(sizes.clone())),
            response_size: Family::new_with_constructor(OnScheme(sizes)),
            active: SnapshotGauge::default(),
        };
        let extra = options.extra;
        let histograms = [
            (
                true,
                "http_server_request_duration",
                "Duration of HTTP server requests: from the arrival of the request's first byte at the socket (else its read) to the transmission of the response's last byte (else the write of it)",
                Unit::Seconds,
                &m.duration,
            ),
            (
                extra.ttfb,
                "redprobe_http_server_time_to_first_byte",
                "From the arrival of the request's first byte at the socket (else its read) to the write of the response's first byte (redprobe's own metric)",
                Unit::Seconds,
                &m.first_byte,
            ),
            (
                extra.request_size,
                "http_server_request_body_size",
                "Size of HTTP request bodies as transferred (chunk framing included), without headers",
                Unit::Bytes,
                &m.request_size,
            ),
            (
                extra.response_size,
                "http_server_response_body_size",
                "Size of HTTP response bodies as transferred (chunk framing included), without headers",
                Unit::Bytes,
                &m.response_size,
            ),
        ];
        for (on, name, help, unit, family) in histograms {
            if on {
                registry.register_with_unit(name, help, unit, family.clone());
            }
        }
        registry.register_with_unit(
            "redprobe_http_server_queue_time",
            "Time requests waited in the accept and receive queues: from the arrival of a request's first byte at the socket to the server's read of it (0 where the arrival is not known: UNIX sockets, pipelined requests)",
            Unit::Seconds,
            m.queue.clone(),
        );
        registry.register(
            "http_server_active_requests",
            "HTTP requests read and not yet answered",
            m.active.family.clone(),
        );
        m
    }

    fn new_series(&self, r: &Request<'_>) -> Series {
        let labels = RequestLabels {
            http_request_method: r.method.to_string(),
            http_response_status_code: labels::status(r.status),
            http_route: r.route.to_string(),
            network_protocol_version: r.version.to_string(),
            network_transport: r.transport.to_string(),
            url_scheme: r.scheme.to_string(),
            error_type: labels::error_type(r.status, r.reset),
            service: r.service.clone(),
        };
        let extra = self.options.extra;
        let optional = |on: bool, family: &HistogramFamily| on.then(|| family.get_or_create(&labels).clone());
        Series {
            status: r.status,
            reset: r.reset,
            duration: self.duration.get_or_create(&labels).clone(),
            first_byte: optional(extra.ttfb, &self.first_byte),
            request_size: optional(extra.request_size, &self.request_size),
            response_size: optional(extra.response_size, &self.response_size),
            queue: self.queue.get_or_create(&QueueLabels { service: r.service.clone() }).clone(),
            labels,
        }
    }

    /// The series of a request's labels (created on first sight, within the node-wide cap
    /// on label sets), given to `f`. Returns true if the cap folded the request into its
    /// service's `_other` route.
    fn with_series(&self, r: &Request<'_>, f: impl FnOnce(&Series)) -> bool {
        let Ok(mut series) = self.series.lock() else {
            return false;
        };
        let same_hash = series.entry(series_key(r)).or_default();
        if let Some(s) = same_hash.iter().find(|s| s.matches(r)) {
            f(s);
            return false;
        }
        if r.route == self.cap.folded_route() || self.cap.admit() {
            same_hash.push(self.new_series(r));
            f(same_hash.last().expect("just pushed"));
            return false;
        }
        let folded = Request { route: self.cap.folded_route(), ..r.clone() };
        let same_hash = series.entry(series_key(&folded)).or_default();
        match same_hash.iter().find(|s| s.matches(&folded)) {
            Some(s) => f(s),
            None => {
                same_hash.push(self.new_series(&folded));
                f(same_hash.last().expect("just pushed"));
            }
        }
        true
    }

    /// Returns true if the node-wide cap on label sets folded the request (`with_series`).
    pub fn observe(&self, r: &Request<'_>) -> bool {
        self.with_series(r, |s| {
            s.duration.observe(r.duration_ns);
            s.queue.observe(r.queue_ns);
            if let Some(h) = &s.first_byte {
                h.observe(r.first_byte_ns);
            }
            if let Some(h) = &s.request_size {
                h.observe(r.request_body);
            }
            if let Some(h) = &s.response_size {
                h.observe(r.response_body);
            }
        })
    }

    /// Adds what the kernel aggregated for `r`'s labels since the last time (`r`'s values
    /// are not used). Returns true if the node-wide cap on label sets folded them.
    pub fn add_kernel(&self, r: &Request<'_>, delta: &AggValue) -> bool {
        self.with_series(r, |s| {
            s.duration.add(&delta.duration.counts, delta.duration.sum);
            s.queue.add(&delta.queue.counts, delta.queue.sum);
            if let Some(h) = &s.first_byte {
                h.add(&delta.first_byte.counts, delta.first_byte.sum);
            }
            if let Some(h) = &s.request_size {
                h.add(&delta.request_body.counts, delta.request_body.sum);
            }
            if let Some(h) = &s.response_size {
                h.add(&delta.response_body.counts, delta.response_body.sum);
            }
        })
    }

    /// Removes every series of a forgotten service (its containers went away): they leave
    /// the page, and their label sets leave room under the node-wide cap. Returns how many
    /// label sets went.
    pub fn forget(&self, service: &Service) -> usize {
        let Ok(mut series) = self.series.lock() else {
            return 0;
        };
        let mut gone = vec![];
        for same_hash in series.values_mut() {
            let (out, keep): (Vec<Series>, Vec<Series>) =
                std::mem::take(same_hash).into_iter().partition(|s| s.labels.service == *service);
            *same_hash = keep;
            gone.extend(out);
        }
        series.retain(|_, v| !v.is_empty());
        drop(series);
        for s in &gone {
            for family in [&self.duration, &self.first_byte, &self.request_size, &self.response_size] {
                family.remove(&s.labels);
            }
        }
        self.queue.remove(&QueueLabels { service: service.clone() });
        self.active.remove_where(|l| l.service == *service);
        self.cap.release(gone.iter().filter(|s| s.labels.http_route != self.cap.folded_route()).count());
        gone.len()
    }

    pub fn set_active(&self, active: &HashMap<(Service, String), i64>) {
        self.active.set(active.iter().map(|((service, method), n)| {
            let labels =
                ActiveLabels { http_request_method: labels::method(method).to_string(), service: service.clone() };
            (labels, *n)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's histograms have the agent's slots.
    #[test]
    fn kernel_slots_are_the_schemes() {
        let v = AggValue::default();
        assert_eq!(v.duration.counts.len(), Scheme::default_time().slots());
        assert_eq!(v.request_body.counts.len(), Scheme::size().slots());
    }
}
