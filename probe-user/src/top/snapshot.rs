//! One reading of an agent's page, as `top` needs it: every duration series under its row
//! (service, route, method) and its class (an error, a 4xx, neither), and the agent's
//! health. Series stay apart until two readings are compared (`interval`): a series that
//! went away (a pod's, forgotten by the agent) or restarted must not look like a drop or a
//! burst of its whole row.
use std::collections::BTreeMap;

use thiserror::Error;

use super::{
    page::{Labels, Page},
    quantile::Dist,
};

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

/// What a series' requests count as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// An error as the rules count it (`error_type` set): a 5xx, or a request cut short
    /// without a status (`connection_reset`).
    Error,
    /// A 4xx answer (the client's error: not in the error ratio).
    ClientError,
    Ok,
}

impl Class {
    fn of(labels: &Labels) -> Class {
        let status = labels.get("http_response_status_code").map(String::as_str).unwrap_or("");
        let error_type = labels.get("error_type").map(String::as_str).unwrap_or("");
        if status.starts_with('5') || (!error_type.is_empty() && !status.starts_with('4')) {
            Class::Error
        } else if status.starts_with('4') {
            Class::ClientError
        } else {
            Class::Ok
        }
    }
}

/// One duration series: its row, class and counts since the agent started.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub row: RowKey,
    pub class: Class,
    pub dist: Dist,
}

/// The agent's own counters that say what it could not see, by series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub events_lost: f64,
    /// Requests not measured, by reason (only reasons above 0).
    pub unparsed: BTreeMap<String, f64>,
    /// Processes measured now.
    pub targets: Option<f64>,
    /// Outgoing calls the targets made (`http_client_*`), per series.
    pub client_calls: BTreeMap<Labels, f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every duration series, by its whole label set.
    pub series: BTreeMap<Labels, Series>,
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
            let row = RowKey {
                service: label("service_name"),
                route: label("http_route"),
                method: label("http_request_method"),
            };
            let mut dist = Dist::default();
            dist.add(h.count, h.sum, &h.classic, h.native.as_ref());
            snap.series.insert(h.labels.clone(), Series { row, class: Class::of(&h.labels), dist });
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
            client_calls: page.histograms(CLIENT_DURATION).map(|h| (h.labels.clone(), h.count)).collect(),
        };
        Ok(snap)
    }

    /// Requests since the agent started, by row: (all, errors, 4xx).
    pub fn totals(&self) -> BTreeMap<&RowKey, (f64, f64, f64)> {
        let mut rows = BTreeMap::new();
        for s in self.series.values() {
            let t: &mut (f64, f64, f64) = rows.entry(&s.row).or_default();
            t.0 += s.dist.count;
            match s.class {
                Class::Error => t.1 += s.dist.count,
                Class::ClientError => t.2 += s.dist.count,
                Class::Ok => {}
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::page::parse_text;

    #[test]
    fn series_rows_and_classes() {
        let series = |status: &str, error_type: &str, pod: &str, n: u32| {
            let l = format!(
                "service_name=\"shop\",http_route=\"/a\",http_request_method=\"GET\",http_response_status_code=\"{status}\",error_type=\"{error_type}\",k8s_pod_name=\"{pod}\""
            );
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {n}\nhttp_server_request_duration_seconds_count{{{l}}} {n}\n")
        };
        let page = parse_text(&format!(
            "# TYPE http_server_request_duration_seconds histogram\n{}{}{}{}{}\
             http_server_active_requests{{service_name=\"shop\",http_request_method=\"GET\"}} 2\n\
             http_server_active_requests{{service_name=\"shop\",http_request_method=\"POST\"}} 1\n\
             redprobe_events_lost_total 4\nredprobe_requests_unparsed_total{{reason=\"no_response\"}} 3\n\
             redprobe_requests_unparsed_total{{reason=\"binary\"}} 0\nredprobe_targets 5\n",
            series("200", "", "p1", 7),
            series("503", "503", "p2", 2),
            series("404", "", "p2", 1),
            // A request cut short without a status is an error, as the rules count it.
            series("", "connection_reset", "p1", 4),
            series("200", "", "p2", 6),
        ))
        .unwrap();
        let s = Snapshot::of(&page).unwrap();
        assert_eq!(s.series.len(), 5);
        let key = RowKey { service: "shop".into(), route: "/a".into(), method: "GET".into() };
        assert_eq!(s.totals()[&key], (20.0, 6.0, 1.0));
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
        assert!(Snapshot::of(&parse_text("redprobe_events_lost_total 0\n").unwrap()).unwrap().series.is_empty());
    }
}
