//! Aggregation: finished exchanges and agent health -> prometheus-client families.
//!
//! Names follow OpenTelemetry's HTTP semantic conventions as Prometheus renders them;
//! the agent's own metrics carry the `redprobe_` prefix. The README's metrics reference
//! lists every family defined here.
use std::{
    collections::HashSet,
    sync::Mutex,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::{Registry, Unit},
};

use crate::{
    pairing::{Exchange, Output},
    routes::{method_label, route_of},
};

/// Buckets of `http_server_request_duration_seconds` (OpenTelemetry's defaults).
pub const DURATION_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Route label used once `--max-routes` distinct routes were seen.
pub const OTHER_ROUTE: &str = "_other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub http_request_method: String,
    pub http_response_status_code: u16,
    pub http_route: String,
    pub network_protocol_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every metric the agent exports. Cloning shares the underlying values.
#[derive(Clone)]
pub struct Metrics {
    pub duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub events_received: Counter,
    pub events_lost: Counter,
    pub events_undecodable: Counter,
    pub unparsed: Family<ReasonLabels, Counter>,
    pub inferred: Family<ReasonLabels, Counter>,
    pub kernel_skipped: Family<ReasonLabels, Counter>,
    pub connections_classified: Family<RoleLabels, Counter>,
    pub connections_tracked: Gauge,
    pub targets: Gauge,
    pub target_exits: Counter,
    pub routes_folded: Counter,
    routes: std::sync::Arc<Mutex<HashSet<String>>>,
    max_routes: usize,
}

impl Metrics {
    pub fn new(registry: &mut Registry, max_routes: usize) -> Self {
        let m = Metrics {
            duration: Family::new_with_constructor(duration_histogram),
            events_received: Counter::default(),
            events_lost: Counter::default(),
            events_undecodable: Counter::default(),
            unparsed: Family::default(),
            inferred: Family::default(),
            kernel_skipped: Family::default(),
            connections_classified: Family::default(),
            connections_tracked: Gauge::default(),
            targets: Gauge::default(),
            target_exits: Counter::default(),
            routes_folded: Counter::default(),
            routes: Default::default(),
            max_routes,
        };
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests, from the read of the request's first byte to the write of the response's last byte",
            Unit::Seconds,
            m.duration.clone(),
        );
        let r = registry.sub_registry_with_prefix("redprobe");
        r.register("events_received", "Events read from the kernel ring buffer", m.events_received.clone());
        r.register(
            "events_lost",
            "Events the kernel could not queue because the ring buffer was full (their connections are resynchronised)",
            m.events_lost.clone(),
        );
        r.register("events_undecodable", "Ring buffer records of unknown kind or size", m.events_undecodable.clone());
        r.register(
            "requests_unparsed",
            "Bytes on server connections that could not be measured as requests, by reason",
            m.unparsed.clone(),
        );
        r.register(
            "responses_inferred",
            "Responses whose end was inferred because their framing headers were not captured, by reason",
            m.inferred.clone(),
        );
        r.register(
            "kernel_skipped_io",
            "Socket I/O of targets the kernel did not capture, by reason (foreign_context: io_uring worker or task_work; fd_mismatch)",
            m.kernel_skipped.clone(),
        );
        r.register(
            "connections_classified",
            "Connections of targets classified by their first bytes: server (HTTP requests received) or client (requests sent)",
            m.connections_classified.clone(),
        );
        r.register("connections_tracked", "Connections the agent is pairing requests on", m.connections_tracked.clone());
        r.register("targets", "Processes currently measured (given PIDs and their children)", m.targets.clone());
        r.register("target_exits", "Measured processes that exited", m.target_exits.clone());
        r.register(
            "routes_folded",
            "Requests reported as http_route=\"_other\" because --max-routes distinct routes were already seen",
            m.routes_folded.clone(),
        );
        r.register(
            "build",
            "redprobe build information",
            Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }),
        );
        m
    }

    /// The route label for `target`, applying the distinct-route cap.
    fn bounded_route(&self, target: &[u8]) -> String {
        let route = route_of(target);
        let Ok(mut routes) = self.routes.lock() else { return OTHER_ROUTE.into() };
        if routes.contains(&route) {
            return route;
        }
        if routes.len() < self.max_routes {
            routes.insert(route.clone());
            return route;
        }
        self.routes_folded.inc();
        OTHER_ROUTE.into()
    }

    pub fn observe_exchange(&self, x: &Exchange) {
        let labels = RequestLabels {
            http_request_method: method_label(&x.method).to_string(),
            http_response_status_code: x.status,
            http_route: self.bounded_route(&x.target),
            network_protocol_version: x.version.label().to_string(),
        };
        let seconds = x.end_ns.saturating_sub(x.start_ns) as f64 / 1e9;
        self.duration.get_or_create(&labels).observe(seconds);
    }

    pub fn observe(&self, output: &Output) {
        match output {
            Output::Exchange(x) => self.observe_exchange(x),
            Output::Unparsed(reason) => {
                self.unparsed.get_or_create(&ReasonLabels { reason: (*reason).to_string() }).inc();
            }
            Output::Inferred(reason) => {
                self.inferred.get_or_create(&ReasonLabels { reason: (*reason).to_string() }).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Version;

    fn exchange(target: &str, status: u16, ms: u64) -> Exchange {
        Exchange {
            method: "GET".into(),
            target: target.as_bytes().to_vec(),
            version: Version::Http11,
            status,
            family: 2,
            start_ns: 1_000_000,
            first_byte_ns: 1_000_000,
            end_ns: 1_000_000 + ms * 1_000_000,
            request_body_bytes: 0,
            response_body_bytes: 0,
        }
    }

    #[test]
    fn routes_are_capped() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg, 2);
        for path in ["/a", "/b", "/c", "/d", "/a"] {
            m.observe_exchange(&exchange(path, 200, 1));
        }
        assert_eq!(m.routes_folded.get(), 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("http_server_request_duration_seconds_count")).collect();
        assert_eq!(series.len(), 3, "{series:?}"); // /a, /b, _other
        assert!(text.contains("http_route=\"_other\""));
    }

    #[test]
    fn durations_land_in_buckets() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg, 10);
        m.observe_exchange(&exchange("/s", 200, 60));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let le = |b: &str| {
            text.lines()
                .find(|l| l.starts_with("http_server_request_duration_seconds_bucket") && l.contains(&format!("le=\"{b}\"")))
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.to_string())
                .unwrap()
        };
        assert_eq!(le("0.05"), "0");
        assert_eq!(le("0.075"), "1");
    }
}
