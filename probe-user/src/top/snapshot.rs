//! One reading of an agent's page, summed the way `top` shows it: one row per (service,
//! route, method) over the other labels (status, protocol, container and pod), with its
//! 5xx and 4xx counts, and the agent's health.
use std::collections::BTreeMap;

use thiserror::Error;

use super::{page::Page, quantile::Dist};

pub const DURATION: &str = "http_server_request_duration_seconds";
pub const ACTIVE: &str = "http_server_active_requests";
pub const CLIENT_DURATION: &str = "http_client_request_duration_seconds";
pub const EVENTS_LOST: &str = "redprobe_events_lost_total";
pub const UNPARSED: &str = "redprobe_requests_unparsed_total";
pub const TARGETS: &str = "redprobe_targets";

/// A row of the view.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub service: String,
    pub route: String,
    pub method: String,
}

/// A row's counters since the agent started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowCounts {
    pub all: Dist,
    pub err5: f64,
    pub err4: f64,
}

/// The agent's own counters that say what it could not see.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub events_lost: f64,
    /// Requests not measured, by reason (only reasons above 0).
    pub unparsed: BTreeMap<String, f64>,
    /// Processes measured now.
    pub targets: Option<f64>,
    /// Outgoing calls the targets made (`http_client_*`).
    pub client_calls: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub rows: BTreeMap<RowKey, RowCounts>,
    /// Requests read and not answered yet, by service (the agent's gauge, per service and
    /// method: it has no route).
    pub active: BTreeMap<String, f64>,
    pub health: Health,
}

/// A page that answers but is not what `top` reads.
#[derive(Debug, Error, PartialEq)]
pub enum NotRedprobe {
    #[error(
        "the agent serves django-prometheus names (--naming django-prometheus); top reads the OpenTelemetry ones: run an agent without --naming, or `redprobe top --pid ...`"
    )]
    DjangoNaming,
    #[error("metrics, but not redprobe's: no {EVENTS_LOST} or {DURATION} on the page")]
    Foreign,
}

impl Snapshot {
    pub fn of(page: &Page) -> Result<Snapshot, NotRedprobe> {
        let has_duration = page.histograms(DURATION).next().is_some();
        if page.sum(EVENTS_LOST).is_none() && !has_duration {
            return Err(NotRedprobe::Foreign);
        }
        if !has_duration && page.histograms.iter().any(|h| h.name.starts_with("django_http_")) {
            return Err(NotRedprobe::DjangoNaming);
        }
        let mut snap = Snapshot::default();
        for h in page.histograms(DURATION) {
            let label = |k: &str| h.labels.get(k).cloned().unwrap_or_default();
            let key = RowKey {
                service: label("service_name"),
                route: label("http_route"),
                method: label("http_request_method"),
            };
            let row = snap.rows.entry(key).or_default();
            row.all.add(h.count, h.sum, &h.classic, h.native.as_ref());
            match h.labels.get("http_response_status_code").map(|s| s.as_bytes().first()) {
                Some(Some(b'5')) => row.err5 += h.count,
                Some(Some(b'4')) => row.err4 += h.count,
                _ => {}
            }
        }
        for s in page.scalars(ACTIVE) {
            *snap.active.entry(s.labels.get("service_name").cloned().unwrap_or_default()).or_default() += s.value;
        }
        snap.health = Health {
            events_lost: page.sum(EVENTS_LOST).unwrap_or(0.0),
            unparsed: page
                .scalars(UNPARSED)
                .filter(|s| s.value > 0.0)
                .map(|s| (s.labels.get("reason").cloned().unwrap_or_default(), s.value))
                .fold(BTreeMap::new(), |mut m, (r, v)| {
                    *m.entry(r).or_default() += v;
                    m
                }),
            targets: page.sum(TARGETS),
            client_calls: page.histograms(CLIENT_DURATION).map(|h| h.count).sum(),
        };
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::page::parse_text;

    #[test]
    fn rows_sum_over_status_and_placement() {
        let page = parse_text(
            "# TYPE http_server_request_duration_seconds histogram\n\
             http_server_request_duration_seconds_bucket{service_name=\"shop\",http_route=\"/a\",http_request_method=\"GET\",http_response_status_code=\"200\",k8s_pod_name=\"p1\",le=\"+Inf\"} 7\n\
             http_server_request_duration_seconds_count{service_name=\"shop\",http_route=\"/a\",http_request_method=\"GET\",http_response_status_code=\"200\",k8s_pod_name=\"p1\"} 7\n\
             http_server_request_duration_seconds_bucket{service_name=\"shop\",http_route=\"/a\",http_request_method=\"GET\",http_response_status_code=\"503\",k8s_pod_name=\"p2\",le=\"+Inf\"} 2\n\
             http_server_request_duration_seconds_count{service_name=\"shop\",http_route=\"/a\",http_request_method=\"GET\",http_response_status_code=\"503\",k8s_pod_name=\"p2\"} 2\n\
             http_server_request_duration_seconds_bucket{service_name=\"shop\",http_route=\"/a\",http_request_method=\"GET\",http_response_status_code=\"404\",k8s_pod_name=\"p2\",le=\"+Inf\"} 1\n\
             http_server_request_duration_seconds_count{service_name=\"shop\",http_route=\"/a\",http_request_method=\"GET\",http_response_status_code=\"404\",k8s_pod_name=\"p2\"} 1\n\
             http_server_active_requests{service_name=\"shop\",http_request_method=\"GET\"} 2\n\
             http_server_active_requests{service_name=\"shop\",http_request_method=\"POST\"} 1\n\
             redprobe_events_lost_total 4\nredprobe_requests_unparsed_total{reason=\"no_response\"} 3\n\
             redprobe_requests_unparsed_total{reason=\"binary\"} 0\nredprobe_targets 5\n",
        )
        .unwrap();
        let s = Snapshot::of(&page).unwrap();
        let key = RowKey { service: "shop".into(), route: "/a".into(), method: "GET".into() };
        let row = &s.rows[&key];
        assert_eq!((row.all.count, row.err5, row.err4), (10.0, 2.0, 1.0));
        assert_eq!(s.active["shop"], 3.0);
        assert_eq!(s.health.events_lost, 4.0);
        assert_eq!(s.health.unparsed, [("no_response".to_string(), 3.0)].into());
        assert_eq!(s.health.targets, Some(5.0));
    }

    #[test]
    fn pages_that_are_not_redprobe() {
        assert_eq!(Snapshot::of(&parse_text("node_load1 0.5\n").unwrap()), Err(NotRedprobe::Foreign));
        let django = "# TYPE django_http_requests_latency_seconds_by_view_method histogram\n\
                      django_http_requests_latency_seconds_by_view_method_bucket{le=\"+Inf\"} 1\nredprobe_events_lost_total 0\n";
        assert_eq!(Snapshot::of(&parse_text(django).unwrap()), Err(NotRedprobe::DjangoNaming));
        assert!(Snapshot::of(&parse_text("redprobe_events_lost_total 0\n").unwrap()).unwrap().rows.is_empty());
    }
}
