//! Aggregation tests: bounded labels, buckets, the naming schemes.
use prometheus_client::registry::Registry;

use super::*;
use crate::{
    http::Version,
    labels::{Router, Routes},
    pairing::RequestLine,
};

fn exchange(target: &str, status: u16, ms: u64) -> Exchange {
    Exchange {
        head: Head::Read(RequestLine {
            method: "GET".into(),
            target: target.as_bytes().to_vec(),
            version: Version::Http11,
            host: None,
        }),
        status: Some(status),
        reset: false,
        family: 2,
        service: "svc".into(),
        start_ns: 1_000_000,
        queued_ns: 0,
        first_byte_ns: 2_000_000,
        end_ns: 1_000_000 + ms * 1_000_000,
        request_body_bytes: 0,
        response_body_bytes: 10_000,
        paired_by: crate::pairing::PairedBy::Agent(crate::reason::SlowReason::FastPathOff),
    }
}

fn encode(reg: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, reg).unwrap();
    text
}

fn value(text: &str, prefix: &str, contains: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && contains.iter().all(|c| l.contains(c)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn routes_are_capped_per_service() {
    let mut reg = Registry::default();
    let m = Metrics::new(&mut reg, Naming::Otel, Routes::new(Router::default(), 2));
    for path in ["/a", "/b", "/c", "/d", "/a"] {
        m.observe(&Output::Exchange(exchange(path, 200, 1)));
    }
    let mut other = exchange("/z", 200, 1);
    other.service = "another".into();
    m.observe(&Output::Exchange(other));
    let text = encode(&reg);
    assert_eq!(value(&text, "redprobe_routes_folded_total", &[]), 2.0);
    let series = text.lines().filter(|l| l.starts_with("http_server_request_duration_seconds_count")).count();
    assert_eq!(series, 4, "/a, /b, _other for svc; /z for another:\n{text}");
    assert_eq!(value(&text, "http_server_request_duration_seconds_count", &["http_route=\"_other\""]), 2.0);
}

/// Every histogram (`--extra-histograms all`).
fn with_all_histograms(reg: &mut Registry, routes: Routes) -> Metrics {
    let options = HttpOptions { extra: Extra::ALL, ..HttpOptions::default() };
    Metrics::with_options(reg, Naming::Otel, routes, scheme::Scheme::default_time(), options)
}

#[test]
fn durations_sizes_and_error_type() {
    let mut reg = Registry::default();
    let m = with_all_histograms(&mut reg, Routes::new(Router::default(), 10));
    m.observe(&Output::Exchange(exchange("/s", 200, 60)));
    m.observe(&Output::Exchange(exchange("/e", 503, 1)));
    let text = encode(&reg);
    let bucket =
        |le: &str| value(&text, "http_server_request_duration_seconds_bucket", &["/s", &format!("le=\"{le}\"")]);
    assert_eq!((bucket("0.05"), bucket("0.075")), (0.0, 1.0));
    assert_eq!(value(&text, "redprobe_http_server_time_to_first_byte_seconds_bucket", &["/s", "le=\"0.005\""]), 1.0);
    assert_eq!(value(&text, "http_server_response_body_size_bytes_bucket", &["/s", "le=\"16384.0\""]), 1.0);
    assert_eq!(value(&text, "http_server_response_body_size_bytes_bucket", &["/s", "le=\"4096.0\""]), 0.0);
    assert!(text.contains("le=\"1073741824.0\""), "size buckets reach 1 GiB");
    assert_eq!(value(&text, "http_server_request_duration_seconds_count", &["error_type=\"503\""]), 1.0);
    assert_eq!(value(&text, "http_server_request_duration_seconds_count", &["/s", "error_type=\"\""]), 1.0);
}

#[test]
fn ten_thousand_random_paths_stay_bounded() {
    let mut reg = Registry::default();
    let m = Metrics::new(&mut reg, Naming::Otel, Routes::new(Router::default(), 100));
    let mut state = 7u64;
    let mut word = || {
        // random lowercase words: not identifier-like, so the heuristic keeps them
        (0..2)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (0..6).map(|i| (b'a' + ((state >> (20 + i * 5)) % 26) as u8) as char).collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for _ in 0..10_000 {
        m.observe(&Output::Exchange(exchange(&format!("/{}", word()), 200, 1)));
    }
    let text = encode(&reg);
    let series = text.lines().filter(|l| l.starts_with("http_server_request_duration_seconds_count")).count();
    assert_eq!(series, 101, "100 routes + _other");
    let folded = value(&text, "redprobe_routes_folded_total", &[]);
    let other = value(&text, "http_server_request_duration_seconds_count", &["http_route=\"_other\""]);
    assert_eq!(folded, 9_900.0);
    assert_eq!(other, folded, "the overflow counter equals the folded requests");
}

#[test]
fn django_prometheus_names() {
    let mut reg = Registry::default();
    let m = Metrics::new(&mut reg, Naming::DjangoPrometheus, Routes::new(Router::default(), 10));
    m.observe(&Output::Exchange(exchange("/users/5", 200, 30)));
    let mut bad = exchange("/x", 404, 1);
    if let Head::Read(line) = &mut bad.head {
        line.method = "BREW".into();
    }
    m.observe(&Output::Exchange(bad));
    let text = encode(&reg);
    for (prefix, labels, want) in [
        (
            "django_http_requests_latency_seconds_by_view_method_count",
            vec!["view=\"/users/{id}\"", "method=\"GET\""],
            1.0,
        ),
        ("django_http_requests_total_by_method_total", vec!["method=\"<invalid method>\""], 1.0),
        ("django_http_responses_total_by_status_total", vec!["status=\"404\""], 1.0),
        (
            "django_http_responses_total_by_status_view_method_total",
            vec!["status=\"200\"", "view=\"/users/{id}\""],
            1.0,
        ),
        ("django_http_requests_total_by_view_transport_method_total", vec!["transport=\"http\""], 2.0),
        ("django_http_requests_before_middlewares_total", vec![], 2.0),
        ("django_http_responses_body_total_bytes_count", vec![], 2.0),
        ("django_http_requests_latency_including_middlewares_seconds_count", vec![], 2.0),
    ] {
        assert_eq!(value(&text, prefix, &labels), want, "{prefix} {labels:?}\n{text}");
    }
    assert!(!text.contains("http_server_request_duration"), "only one naming scheme at a time");
}

#[test]
fn snapshot_gauges_drop_series_that_vanished_to_zero() {
    use super::{SnapshotGauge, health::ServiceLabels};
    let g: SnapshotGauge<ServiceLabels> = SnapshotGauge::default();
    let (a, b) = (ServiceLabels { service: "a".into() }, ServiceLabels { service: "b".into() });
    g.set([(a.clone(), 2), (b.clone(), 1), (b.clone(), 1)]);
    assert_eq!((g.family.get_or_create(&a).get(), g.family.get_or_create(&b).get()), (2, 2), "repeated labels add up");
    g.set([(b.clone(), 5)]);
    assert_eq!((g.family.get_or_create(&a).get(), g.family.get_or_create(&b).get()), (0, 5), "a vanished: back to 0");
    g.set([]);
    assert_eq!(g.family.get_or_create(&b).get(), 0);
}

/// The default page serves the duration and queue-time histograms only; TTFB and body
/// sizes are opt-in.
#[test]
fn extra_histograms_are_opt_in() {
    let mut reg = Registry::default();
    let m = Metrics::new(&mut reg, Naming::Otel, Routes::new(Router::default(), 10));
    m.observe(&Output::Exchange(exchange("/s", 200, 60)));
    let text = encode(&reg);
    assert_eq!(value(&text, "http_server_request_duration_seconds_count", &["/s"]), 1.0);
    assert_eq!(value(&text, "redprobe_http_server_queue_time_seconds_count", &[]), 1.0);
    for absent in ["time_to_first_byte", "body_size"] {
        assert!(!text.contains(absent), "{absent} is served by default:\n{text}");
    }
    let mut reg = Registry::default();
    let m = with_all_histograms(&mut reg, Routes::new(Router::default(), 10));
    m.observe(&Output::Exchange(exchange("/s", 200, 60)));
    let text = encode(&reg);
    for present in [
        "redprobe_http_server_time_to_first_byte_seconds_count",
        "http_server_request_body_size_bytes_count",
        "http_server_response_body_size_bytes_count",
    ] {
        assert_eq!(value(&text, present, &["/s"]), 1.0, "{present}");
    }
}

/// Past the node-wide cap on label sets, a new label set is reported under its service's
/// `_other` route (method, status kept), counted as folded; known sets go on.
#[test]
fn the_node_wide_cap_on_label_sets_folds_new_ones_into_other() {
    let mut reg = Registry::default();
    let options = HttpOptions { max_label_sets: 2, ..HttpOptions::default() };
    let m = Metrics::with_options(
        &mut reg,
        Naming::Otel,
        Routes::new(Router::default(), 100),
        scheme::Scheme::default_time(),
        options,
    );
    for route in ["/a", "/b", "/c", "/a", "/d"] {
        m.observe(&Output::Exchange(exchange(route, 200, 1)));
    }
    m.observe(&Output::Exchange(exchange("/e", 503, 1)));
    let text = encode(&reg);
    let count = |labels: &[&str]| value(&text, "http_server_request_duration_seconds_count", labels);
    assert_eq!((count(&["\"/a\""]), count(&["\"/b\""])), (2.0, 1.0));
    assert_eq!(count(&["http_route=\"_other\"", "http_response_status_code=\"200\""]), 2.0);
    assert_eq!(count(&["http_route=\"_other\"", "http_response_status_code=\"503\""]), 1.0);
    assert!(!text.contains("\"/c\"") && !text.contains("\"/e\""), "{text}");
    assert_eq!(value(&text, "redprobe_routes_folded_total", &[]), 3.0);
}

/// A forgotten service's series leave the page, and its label sets leave room under the
/// node-wide cap; the other services' series stay as they were.
#[test]
fn a_forgotten_service_leaves_the_page_and_room_under_the_cap() {
    let mut reg = Registry::default();
    let options = HttpOptions { max_label_sets: 2, ..HttpOptions::default() };
    let m = Metrics::with_options(
        &mut reg,
        Naming::Otel,
        Routes::new(Router::default(), 10),
        scheme::Scheme::default_time(),
        options,
    );
    let of = |service: &str, path: &str| {
        let mut x = exchange(path, 200, 1);
        x.service = service.into();
        Output::Exchange(x)
    };
    m.observe(&of("gone", "/a"));
    m.observe(&of("gone", "/b"));
    m.observe(&of("kept", "/c")); // past the cap: folded
    let text = encode(&reg);
    assert_eq!(
        value(&text, "http_server_request_duration_seconds_count", &["service_name=\"kept\"", "http_route=\"_other\""]),
        1.0
    );
    assert_eq!(m.forget(&"gone".into()), 2);
    let text = encode(&reg);
    assert!(!text.contains("service_name=\"gone\""), "{text}");
    assert_eq!(value(&text, "redprobe_services_forgotten_total", &[]), 1.0);
    m.observe(&of("kept", "/d")); // admitted now
    let text = encode(&reg);
    assert_eq!(
        value(&text, "http_server_request_duration_seconds_count", &["service_name=\"kept\"", "http_route=\"/d\""]),
        1.0
    );
    assert_eq!(value(&text, "http_server_request_duration_seconds_count", &["service_name=\"kept\""]), 2.0);
    assert_eq!(value(&text, "http_server_queue_time_seconds_count", &["service_name=\"gone\""]), 0.0);
    // The gauges too: gone, not at 0.
    let mut active = std::collections::HashMap::new();
    active.insert((Service::from("gone2"), "GET".to_string()), 1);
    m.set_active_requests(&active);
    m.health.open_connections.set([(health::ServiceLabels { service: "gone2".into() }, 3)]);
    m.set_active_requests(&std::collections::HashMap::new());
    m.health.open_connections.set([]);
    m.forget(&"gone2".into());
    let text = encode(&reg);
    assert!(!text.contains("gone2"), "{text}");
}
