//! Aggregation: finished exchanges -> metric families, with bounded labels.
//!
//! One naming scheme is active (`--naming`): OpenTelemetry's HTTP semantic conventions
//! as Prometheus renders them (`otel.rs`), or django-prometheus's names (`django.rs`).
//! The agent's own health (`health.rs`), the targets' saturation (`saturation.rs`) and the
//! agent process (`process.rs`) are always exported. The README's metrics reference lists
//! every family.
pub mod django;
pub mod health;
pub mod otel;
pub mod process;
pub mod saturation;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    pairing::{Exchange, Output},
    routes::{Router, method_label},
};

/// A gauge family set from whole snapshots (every second, from the pairing state): a
/// series set by an earlier snapshot and absent from this one goes back to 0, where a
/// plain gauge would keep its last value. Values of label sets that repeat add up.
#[derive(Clone, Debug)]
pub struct SnapshotGauge<L> {
    pub family: Family<L, Gauge>,
    seen: Arc<Mutex<Vec<L>>>,
}

impl<L> Default for SnapshotGauge<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    fn default() -> Self {
        SnapshotGauge { family: Family::default(), seen: Default::default() }
    }
}

impl<L> SnapshotGauge<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    pub fn set(&self, values: impl IntoIterator<Item = (L, i64)>) {
        let Ok(mut seen) = self.seen.lock() else { return };
        for labels in seen.iter() {
            self.family.get_or_create(labels).set(0);
        }
        for (labels, n) in values {
            self.family.get_or_create(&labels).inc_by(n);
            if !seen.contains(&labels) {
                seen.push(labels);
            }
        }
    }
}

/// Route label used once `--max-routes` distinct routes were seen for a service.
pub const OTHER_ROUTE: &str = "_other";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Naming {
    /// OpenTelemetry HTTP semantic conventions (http_server_request_duration_seconds, ...).
    Otel,
    /// django-prometheus's metric names and labels, with the route as the view.
    DjangoPrometheus,
}

/// One finished request, with every label already bounded.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub service: &'a str,
    pub method: &'static str,
    pub route: &'a str,
    pub status: u16,
    pub version: &'static str,
    pub transport: &'static str,
    pub duration: f64,
    pub time_to_first_byte: f64,
    pub request_body: u64,
    pub response_body: u64,
}

/// `network_transport` from the socket family.
pub fn transport(family: u16) -> &'static str {
    if family == libc::AF_UNIX as u16 { "unix" } else { "tcp" }
}

enum Http {
    Otel(otel::OtelHttp),
    Django(django::DjangoHttp),
}

/// Distinct routes per service, capped.
#[derive(Default)]
struct RouteLimiter {
    seen: Mutex<HashMap<Arc<str>, HashSet<String>>>,
}

impl RouteLimiter {
    /// `Some(route)` if kept, `None` if it must be folded to `_other`.
    fn admit(&self, service: &Arc<str>, route: String, max: usize) -> Option<String> {
        let Ok(mut seen) = self.seen.lock() else { return None };
        let routes = seen.entry(service.clone()).or_default();
        if !routes.contains(&route) {
            if routes.len() >= max {
                return None;
            }
            routes.insert(route.clone());
        }
        Some(route)
    }
}

/// Everything the agent exports. Cloning shares the underlying values.
#[derive(Clone)]
pub struct Metrics {
    http: Arc<Http>,
    pub health: health::Health,
    router: Arc<Router>,
    limiter: Arc<RouteLimiter>,
    max_routes: usize,
}

impl Metrics {
    pub fn new(registry: &mut Registry, naming: Naming, router: Router, max_routes: usize) -> Self {
        let http = match naming {
            Naming::Otel => Http::Otel(otel::OtelHttp::register(registry)),
            Naming::DjangoPrometheus => Http::Django(django::DjangoHttp::register(registry)),
        };
        Metrics {
            http: Arc::new(http),
            health: health::Health::register(registry),
            router: Arc::new(router),
            limiter: Default::default(),
            max_routes,
        }
    }

    fn observe_exchange(&self, x: &Exchange) {
        let route = self.router.route(&x.target);
        let route = match self.limiter.admit(&x.service, route, self.max_routes) {
            Some(r) => r,
            None => {
                self.health.routes_folded.inc();
                OTHER_ROUTE.to_string()
            }
        };
        let req = Request {
            service: &x.service,
            method: method_label(&x.method),
            route: &route,
            status: x.status,
            version: x.version.label(),
            transport: transport(x.family),
            duration: x.end_ns.saturating_sub(x.start_ns) as f64 / 1e9,
            time_to_first_byte: x.first_byte_ns.saturating_sub(x.start_ns) as f64 / 1e9,
            request_body: x.request_body_bytes,
            response_body: x.response_body_bytes,
        };
        match self.http.as_ref() {
            Http::Otel(m) => m.observe(&req),
            Http::Django(m) => m.observe(&req),
        }
    }

    pub fn observe(&self, output: &Output) {
        match output {
            Output::Exchange(x) => self.observe_exchange(x),
            Output::Unparsed(reason) => self.health.unparsed(reason),
            Output::Inferred(reason) => self.health.inferred(reason),
        }
    }

    /// Sets the in-flight requests gauge (OTel naming only; django-prometheus has none).
    pub fn set_active_requests(&self, active: &HashMap<(Arc<str>, String), i64>) {
        if let Http::Otel(m) = self.http.as_ref() {
            m.set_active(active);
        }
    }
}

#[cfg(test)]
mod tests;
