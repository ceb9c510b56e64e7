//! `--naming django-prometheus`: the same measurements under django-prometheus's metric
//! names and labels, so that dashboards built for its middleware keep working once the
//! middleware is removed. The route takes the place of the view name.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use super::Request;
use crate::labels;

/// django-prometheus's default latency buckets.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 25.0, 50.0, 75.0];

/// django-prometheus's body buckets: 0 and the powers of two up to 2^29.
fn body_buckets() -> impl Iterator<Item = f64> {
    std::iter::once(0.0).chain((0..30).map(|i| (1u64 << i) as f64))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewMethod {
    pub view: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewTransportMethod {
    pub view: String,
    pub transport: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusViewMethod {
    pub status: String,
    pub view: String,
    pub method: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub struct DjangoHttp {
    latency_by_view_method: Family<ViewMethod, Histogram, fn() -> Histogram>,
    latency_including_middlewares: Histogram,
    requests_before: Counter,
    responses_before: Counter,
    by_method: Family<MethodLabel, Counter>,
    by_transport: Family<TransportLabel, Counter>,
    by_view_transport_method: Family<ViewTransportMethod, Counter>,
    by_status: Family<StatusLabel, Counter>,
    by_status_view_method: Family<StatusViewMethod, Counter>,
    request_body: Histogram,
    response_body: Histogram,
}

impl DjangoHttp {
    pub fn register(registry: &mut Registry) -> Self {
        let m = DjangoHttp {
            latency_by_view_method: Family::new_with_constructor(latency_histogram),
            latency_including_middlewares: latency_histogram(),
            requests_before: Counter::default(),
            responses_before: Counter::default(),
            by_method: Family::default(),
            by_transport: Family::default(),
            by_view_transport_method: Family::default(),
            by_status: Family::default(),
            by_status_view_method: Family::default(),
            request_body: Histogram::new(body_buckets()),
            response_body: Histogram::new(body_buckets()),
        };
        let r = registry;
        r.register("django_http_requests_latency_seconds_by_view_method", "Histogram of request processing time labelled by view (the route)", m.latency_by_view_method.clone());
        r.register("django_http_requests_latency_including_middlewares_seconds", "Histogram of requests processing time", m.latency_including_middlewares.clone());
        r.register("django_http_requests_before_middlewares", "Total count of requests", m.requests_before.clone());
        r.register("django_http_responses_before_middlewares", "Total count of responses", m.responses_before.clone());
        r.register("django_http_requests_total_by_method", "Count of requests by method", m.by_method.clone());
        r.register("django_http_requests_total_by_transport", "Count of requests by transport", m.by_transport.clone());
        r.register("django_http_requests_total_by_view_transport_method", "Count of requests by view (the route), transport, method", m.by_view_transport_method.clone());
        r.register("django_http_responses_total_by_status", "Count of responses by status", m.by_status.clone());
        r.register("django_http_responses_total_by_status_view_method", "Count of responses by status, view (the route), method", m.by_status_view_method.clone());
        r.register("django_http_requests_body_total_bytes", "Histogram of requests by body size", m.request_body.clone());
        r.register("django_http_responses_body_total_bytes", "Histogram of responses by body size", m.response_body.clone());
        m
    }

    pub fn observe(&self, r: &Request<'_>) {
        let method = labels::django_method(r.method).to_string();
        let view = r.route.to_string();
        let seconds = r.duration_ns as f64 / 1e9;
        self.latency_by_view_method.get_or_create(&ViewMethod { view: view.clone(), method: method.clone() }).observe(seconds);
        self.latency_including_middlewares.observe(seconds);
        self.requests_before.inc();
        self.by_method.get_or_create(&MethodLabel { method: method.clone() }).inc();
        self.by_transport.get_or_create(&TransportLabel { transport: labels::DJANGO_TRANSPORT.into() }).inc();
        self.by_view_transport_method
            .get_or_create(&ViewTransportMethod {
                view: view.clone(),
                transport: labels::DJANGO_TRANSPORT.into(),
                method: method.clone(),
            })
            .inc();
        self.request_body.observe(r.request_body as f64);
        // A request the client gave up on before a status line has no response to count.
        let Some(status) = r.status else { return };
        let status = status.to_string();
        self.responses_before.inc();
        self.by_status.get_or_create(&StatusLabel { status: status.clone() }).inc();
        self.by_status_view_method.get_or_create(&StatusViewMethod { status, view, method }).inc();
        self.response_body.observe(r.response_body as f64);
    }
}
