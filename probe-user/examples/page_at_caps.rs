//! The `/metrics` page at the label caps, for `cargo xtask bench` (measure P): `SERVICES`
//! services, each at the default route cap with one label set per route, as many as the
//! node-wide cap (`--max-label-sets`) admits, the rest folded into each service's `_other`.
//! Two page shapes: the default histograms, and all of them (`--extra-histograms all`).
//! Prints one line per shape and format: `shape format label_sets bytes lines render_ms`
//! (render: the median of 3 encodes of the whole registry). For the default shape, two more
//! lines time what `redprobe top` does with each page at every refresh (`top-read-protobuf`,
//! `top-read-text`): decode it, sum it into rows, and make an interval's rows and quantiles.
use std::time::Instant;

use probe_user::{
    labels::{Placement, PlacementLabels, Service},
    metrics::{Extra, HttpOptions, Request, otel::OtelHttp, scheme::Scheme},
};
use prometheus_client::{
    encoding::{prometheus_protobuf, text},
    registry::Registry,
};

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[1]
}

/// Fills a registry with SERVICES x ROUTES label sets' worth of requests (more than the
/// node-wide cap admits: the rest fold into each service's `_other`), then prints its page.
fn page(services: usize, routes: usize, options: HttpOptions, shape: &str) {
    let mut registry = Registry::default();
    let http = OtelHttp::register(&mut registry, Scheme::default_time(), options);
    // Each service is a pod, with the labels a Kubernetes node gives its series.
    let names: Vec<Service> = (0..services)
        .map(|s| {
            let placement = Placement {
                container_id: Some(format!("{s:064x}")),
                k8s_pod_uid: Some(format!("0f3a8c1e-5b7d-4e2a-9c6f-{s:012x}")),
                k8s_pod_name: Some(format!("service-{s:02}-7d9f8b6c5d-x2x7k")),
                k8s_namespace_name: Some("production".into()),
            };
            Service::of(None, &placement, "gunicorn", PlacementLabels::default())
        })
        .collect();
    let paths: Vec<String> = (0..routes).map(|r| format!("/api/v1/resource-{r:03}/{{id}}")).collect();
    for service in &names {
        for (i, route) in paths.iter().enumerate() {
            for n in 0..20u64 {
                http.observe(&Request {
                    service,
                    method: "GET",
                    route,
                    status: Some(200),
                    reset: false,
                    version: "1.1",
                    transport: "tcp",
                    scheme: "http",
                    duration_ns: 50_000 * (1 + n + i as u64 % 7) * (1 + n % 5),
                    queue_ns: 10_000 * (n % 3),
                    first_byte_ns: 40_000 * (1 + n),
                    request_body: 0,
                    response_body: 100 << (n % 12),
                });
            }
        }
    }
    let sets = (services * routes).min(options.max_label_sets) + services;
    let mut page = String::new();
    let ms = median_ms(|| {
        page.clear();
        text::encode(&mut page, &registry).expect("text encoding");
    });
    println!("{shape} openmetrics-text {sets} {} {} {ms:.1}", page.len(), page.lines().count());
    let mut bytes = vec![];
    let ms = median_ms(|| bytes = prometheus_protobuf::encode_to_vec(&registry).expect("protobuf encoding"));
    println!("{shape} prometheus-protobuf {sets} {} 0 {ms:.1}", bytes.len());
    if shape == "default" {
        use probe_user::top::{interval::Interval, page::parse_text, protobuf, snapshot::Snapshot};
        let before = Snapshot::default();
        let ms = median_ms(|| {
            let now = Snapshot::of(&protobuf::parse(&bytes).expect("protobuf page")).expect("a redprobe page");
            assert!(!Interval::between(&before, &now, 1.0).rows.is_empty());
        });
        println!("{shape} top-read-protobuf {sets} {} 0 {ms:.1}", bytes.len());
        let ms = median_ms(|| {
            let now = Snapshot::of(&parse_text(&page).expect("text page")).expect("a redprobe page");
            assert!(!Interval::between(&before, &now, 1.0).rows.is_empty());
        });
        println!("{shape} top-read-text {sets} {} 0 {ms:.1}", page.len());
    }
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("SERVICES ROUTES"));
    let (services, routes) = (args.next().unwrap_or(50), args.next().unwrap_or(100));
    page(services, routes, HttpOptions::default(), "default");
    page(services, routes, HttpOptions { extra: Extra::ALL, ..HttpOptions::default() }, "all-histograms");
}
