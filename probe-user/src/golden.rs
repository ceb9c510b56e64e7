//! Golden `/metrics` test: a fixed sequence of raw ring-buffer records goes through
//! decode -> pair -> aggregate -> encode, and the text is compared with the fixtures in
//! `probe-user/tests/fixtures/`. Any change to names, labels or buckets shows in review.
//!
//! Regenerate after an intended change:
//!   REDPROBE_UPDATE_GOLDEN=1 cargo test -p probe-user golden
use std::path::PathBuf;

use probe_common::{
    AggKey, AggValue, EVENT_RECV, EVENT_SEND, FLAG_AFTER_LOSS, FLAG_CLIENT, FLAG_UNCLASSIFIED, FastRequest, MeasuredEvent, Pairing,
    RESP_LENGTH, SLOW_PIPELINE, SwitchEvent,
};
use prometheus_client::registry::Registry as Prometheus;

use crate::{
    exposition::to_prometheus_text,
    labels::{Router, Routes, Template},
    metrics::{Extra, HttpOptions, Metrics, Naming, kernel::KernelTotals, scheme::Scheme},
    pipeline::{Notice, Pipeline},
    proc_root::ProcInfo,
    registry::{Registry, lock},
    wire::{self, AF_INET, AF_UNIX},
};

/// The target process of the recorded sequence.
const TGID: u32 = 100;

fn data(kind: u32, conn: u64, ts_ms: u64, family: u16, flags: u32, bytes: &[u8]) -> Vec<u8> {
    wire::data(kind, conn, TGID, ts_ms * 1_000_000, family, flags, bytes)
}

fn recv(conn: u64, ts_ms: u64, bytes: &[u8]) -> Vec<u8> {
    data(EVENT_RECV, conn, ts_ms, AF_INET, 0, bytes)
}

fn send(conn: u64, ts_ms: u64, bytes: &[u8]) -> Vec<u8> {
    data(EVENT_SEND, conn, ts_ms, AF_INET, 0, bytes)
}

fn close(conn: u64, ts_ms: u64) -> Vec<u8> {
    wire::close(conn, ts_ms * 1_000_000)
}

/// The recorded sequence: a little of everything the pipeline handles.
fn sequence() -> Vec<Vec<u8>> {
    let big = [b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n".to_vec(), vec![b'x'; 20000]].concat();
    let mut chunked_body = format!("{:x}\r\n", 3000).into_bytes();
    chunked_body.extend(vec![b'c'; 3000]);
    chunked_body.extend(b"\r\n0\r\n\r\n");
    vec![
        // keep-alive connection 1
        recv(1, 0, b"GET /api/items/42?x=1 HTTP/1.1\r\nHost: shop\r\n\r\n"),
        send(1, 3, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        recv(1, 10, b"POST /api/orders HTTP/1.1\r\nContent-Length: 300\r\n\r\n"),
        recv(1, 11, &[b'p'; 300]),
        send(1, 70, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        recv(1, 80, b"GET /static/css/site.css HTTP/1.1\r\n\r\n"),
        send(1, 81, &big[..8192]),
        send(1, 82, &big[8192..]),
        recv(1, 90, b"GET /missing HTTP/1.1\r\n\r\n"),
        send(1, 91, b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"),
        recv(1, 100, b"GET /boom HTTP/1.1\r\n\r\n"),
        send(1, 350, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
        recv(1, 400, b"GET /stream HTTP/1.1\r\n\r\n"),
        send(1, 401, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        send(1, 1300, &chunked_body),
        recv(1, 1400, b"BREW /pot HTTP/1.1\r\n\r\n"),
        send(1, 1401, b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n"),
        // HTTP/1.0, close-delimited, over a UNIX socket
        data(EVENT_RECV, 2, 2000, AF_UNIX, 0, b"GET /api/items/7 HTTP/1.0\r\n\r\n"),
        data(EVENT_SEND, 2, 2002, AF_UNIX, 0, b"HTTP/1.0 200 OK\r\n\r\n"),
        data(EVENT_SEND, 2, 2040, AF_UNIX, 0, b"body until close"),
        close(2, 2041),
        // TLS on the plain port, then a connection that lost events
        data(EVENT_RECV, 3, 3000, AF_INET, FLAG_UNCLASSIFIED, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        recv(4, 4000, b"GET /api/items/1 HTTP/1.1\r\n\r\n"),
        data(EVENT_RECV, 4, 4010, AF_INET, FLAG_AFTER_LOSS, b"GET /api/items/2 HTTP/1.1\r\n\r\n"),
        send(4, 4012, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]
    .into_iter()
    .chain(http2_sequence())
    .chain(client_sequence())
    .collect()
}

/// The target's outgoing calls (conns 8 to 10): a POST answered 201 and a GET answered 503
/// on one keep-alive connection, a GET whose upstream reset the connection, and one whose
/// upstream closed it (its FIN first) without an answer.
fn client_sequence() -> Vec<Vec<u8>> {
    let client = |kind: u32, conn: u64, ts_ms: u64, bytes: &[u8]| data(kind, conn, ts_ms, AF_INET, FLAG_CLIENT, bytes);
    vec![
        client(EVENT_SEND, 8, 5000, b"POST /v1/charges HTTP/1.1\r\nHost: payments.internal:8443\r\nContent-Length: 4\r\n\r\n"),
        client(EVENT_SEND, 8, 5000, b"body"),
        client(EVENT_RECV, 8, 5120, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
        client(EVENT_SEND, 8, 5200, b"GET /v1/rates HTTP/1.1\r\nHost: payments.internal:8443\r\n\r\n"),
        client(EVENT_RECV, 8, 5203, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
        client(EVENT_SEND, 9, 6000, b"GET /geo HTTP/1.1\r\nHost: geo\r\n\r\n"),
        wire::reset(9, 6_250_000_000),
        client(EVENT_SEND, 10, 7000, b"GET /stock HTTP/1.1\r\nHost: inventory:9000\r\n\r\n"),
        wire::raw(&probe_common::CloseEvent {
            header: probe_common::EventHeader {
                kind: probe_common::EVENT_CLOSE,
                flags: probe_common::FLAG_PEER_CLOSED,
                ts_ns: 7_500_000_000,
            },
            conn_id: 10,
        }),
    ]
}

/// An HTTP/2 connection (conn 7): a gRPC call that fails with NOT_FOUND (5) in its trailers,
/// and a GET answered 404, as the kernel sends them (each call's bytes, then its last chunk).
fn http2_sequence() -> Vec<Vec<u8>> {
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = payload.len() as u32;
        let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    };
    let (mut client, mut server) = (loona_hpack::Encoder::new(), loona_hpack::Encoder::new());
    let call = |recv: bool, ts_ms: u64, bytes: &[u8]| {
        let ts = ts_ms * 1_000_000;
        vec![
            wire::h2(7, TGID, ts, recv, bytes.len(), 0, bytes, 0),
            wire::h2(7, TGID, ts, recv, bytes.len(), bytes.len(), b"", probe_common::FLAG_H2_LAST),
        ]
    };
    let grpc: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/shop.Cart/Add"),
        (b"content-type", b"application/grpc"),
    ];
    let opening = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        frame(4, 0, 0, b""),
        frame(1, 4, 1, &client.encode(grpc)),
        frame(0, 1, 1, b"\0\0\0\0\x02hi"),
    ]
    .concat();
    let headers = frame(1, 4, 1, &server.encode(vec![(&b":status"[..], &b"200"[..]), (b"content-type", b"application/grpc")]));
    let trailers = frame(1, 5, 1, &server.encode(vec![(&b"grpc-status"[..], &b"5"[..])]));
    let get = frame(1, 5, 3, &client.encode(vec![(&b":method"[..], &b"GET"[..]), (b":scheme", b"http"), (b":path", b"/api/items/3")]));
    let not_found = frame(1, 5, 3, &server.encode(vec![(&b":status"[..], &b"404"[..])]));
    [call(true, 5000, &opening), call(false, 5012, &headers), call(false, 5030, &trailers), call(true, 5100, &get), call(false, 5104, &not_found)]
        .concat()
}

/// The path key the kernel would send for `/api/items/9` (any value does here).
const ITEMS_KEY: u64 = 0x1234_5678;

/// What the kernel's fast path sends: a new path, a request measured before its route was
/// known, and a connection handed over mid-response (the rest of which the agent follows).
fn kernel_sequence() -> Vec<Vec<u8>> {
    let request = FastRequest {
        start_ns: 5_000_000_000,
        queued_ns: 2_000_000,
        path_key: ITEMS_KEY,
        body_bytes: 0,
        route: 0,
        method: 1,
        version: 1,
        _pad: [0; 2],
    };
    let mut pairing =
        Pairing { len: 1, resp_state: RESP_LENGTH, status: 200, resp_left: 3, resp_bytes: 2, ..Default::default() };
    pairing.pending[0] = FastRequest { start_ns: 6_000_000_000, ..request };
    (pairing.resp_first_ns, pairing.resp_last_ns) = (6_001_000_000, 6_001_000_000);
    vec![
        wire::path(ITEMS_KEY, 1, b"/api/items/9", 5_000_000_000),
        // A client request's Host value (the target's upstream).
        wire::path(HOST_KEY, 1 | probe_common::CLIENT_ROUTES, b"inventory:9000", 5_000_000_000),
        wire::measured(MeasuredEvent {
            conn_id: 5,
            request,
            first_byte_ns: 5_020_000_000,
            end_ns: 5_030_000_000,
            response_bytes: 120,
            service: 1,
            status: 200,
            family: AF_INET,
            ..Default::default()
        }),
        wire::switch(SwitchEvent {
            conn_id: 6,
            tgid: TGID,
            reason: SLOW_PIPELINE,
            service: 1,
            family: AF_INET,
            pairing,
            ..Default::default()
        }),
        send(6, 6_090, b"end"),
    ]
}

/// The Host key the kernel would send for `inventory:9000` (any value does here).
const HOST_KEY: u64 = 0x9abc_def1;

/// What the kernel aggregated: 7 requests on the route of `ITEMS_KEY`, 5 of 2 ms and 2 of
/// 10 ms, first bytes after 1 ms, no request body, 1000-byte responses; and as many calls
/// to the upstream of `HOST_KEY` (`peer`), answered 200.
fn kernel_aggregates(route: u32, peer: u32) -> Vec<(AggKey, AggValue)> {
    let key = AggKey { service: 1, route, status: 200, method: 1, version: 1, family: AF_INET, kind: 0 };
    let client = AggKey { route: peer, kind: probe_common::AGG_CLIENT, ..key };
    let time = crate::metrics::scheme::Scheme::default_time();
    let mut v = AggValue::default();
    (v.duration.counts[time.slot(2_000_000)], v.duration.counts[time.slot(10_000_000)], v.duration.sum) =
        (5, 2, 30_000_000);
    (v.first_byte.counts[time.slot(1_000_000)], v.first_byte.sum) = (7, 7_000_000);
    let (none, kb) = (probe_common::buckets::size_slot(0), probe_common::buckets::size_slot(1000));
    (v.request_body.counts[none], v.response_body.counts[kb], v.response_body.sum) = (7, 7, 7 * 1000);
    vec![(key, v), (client, v)]
}

fn render(naming: Naming) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry_after_the_sequence(naming)).unwrap();
    to_prometheus_text(&text)
}

/// The registry after the fixed sequence (the agent's records, then the kernel's
/// aggregates), with every histogram served (`--extra-histograms all`), so that the
/// fixture pins each family's rendering.
fn registry_after_the_sequence(naming: Naming) -> Prometheus {
    let mut prometheus = Prometheus::default();
    let router = Router::new(vec![Template::parse("/static/{path...}").unwrap()]);
    let options = HttpOptions { extra: Extra::ALL, ..HttpOptions::default() };
    let metrics =
        Metrics::with_options(&mut prometheus, naming, Routes::new(router, 100), Scheme::default_time(), options);
    // Every placement label (--container-labels all), as a node's series can carry them.
    let registry = Registry::with_labels(None, crate::labels::PlacementLabels::ALL).shared();
    lock(&registry).attach_root(
        &ProcInfo { pid: TGID, ppid: 1, start_time: 1, comm: "gunicorn".into() },
        // A Kubernetes pod: every label a node's series can carry.
        crate::labels::Placement {
            container_id: Some("4f2a9c8e1b3d".repeat(5) + "4f2a"),
            k8s_pod_uid: Some("0f3a8c1e-5b7d-4e2a-9c6f-1d2e3f4a5b6c".into()),
            k8s_pod_name: Some("shop-7d9f8b6c5d-x2x7k".into()),
            k8s_namespace_name: Some("production".into()),
        },
    );
    let mut pipeline = Pipeline::new(metrics.clone(), registry.clone(), 100);
    for record in sequence() {
        assert!(pipeline.record(&record).is_none(), "fixture records are data");
    }
    if metrics.kernel_can_aggregate() {
        let (mut route, mut peer) = (0, 0);
        for record in kernel_sequence() {
            match pipeline.record(&record) {
                Some(Notice::Route { service_id, route: r, .. }) if service_id & probe_common::CLIENT_ROUTES != 0 => peer = r,
                Some(Notice::Route { route: r, .. }) => route = r,
                _ => {}
            }
        }
        let r = lock(&registry);
        KernelTotals::default().apply(&metrics, kernel_aggregates(route, peer), |id| r.service_named(id));
    }
    pipeline.housekeeping(0, u64::MAX, &[]);
    prometheus
}

/// Series order inside a family follows a hash map; order them by label set (keeping
/// each series' own line order: sum, count, buckets) so the text is deterministic.
fn normalize(text: &str) -> String {
    let series_key = |line: &str| -> String {
        let labels = line.split_once('{').map(|(_, l)| l).unwrap_or("");
        let labels = labels.rsplit_once('}').map(|(l, _)| l).unwrap_or("");
        labels.split(',').filter(|l| !l.starts_with("le=")).collect::<Vec<_>>().join(",")
    };
    let mut out = String::new();
    let mut samples: Vec<&str> = vec![];
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        samples.sort_by_key(|l| series_key(l));
        for l in samples.drain(..) {
            out.push_str(l);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

fn check(naming: Naming, file: &str) {
    compare(file, &normalize(&render(naming)));
}

/// Compares `got` with the fixture `file` (or writes it, with REDPROBE_UPDATE_GOLDEN set).
fn compare(file: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file);
    if std::env::var_os("REDPROBE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with REDPROBE_UPDATE_GOLDEN=1", path.display()));
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .take(10)
            .map(|(i, (w, g))| format!("line {}:\n  want {w}\n  got  {g}", i + 1))
            .collect();
        panic!(
            "the output differs from {} ({} vs {} lines):\n{}\nIf intended: REDPROBE_UPDATE_GOLDEN=1 cargo test -p probe-user golden",
            path.display(),
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn golden_metrics_otel() {
    check(Naming::Otel, "metrics-otel.txt");
}

/// The protobuf page of the same sequence: every histogram's native buckets hold the same
/// requests as its classic ones (two foldings of the same slots), and carry the schema.
#[test]
fn protobuf_native_and_classic_buckets_agree() {
    let families =
        prometheus_client::encoding::prometheus_protobuf::encode(&registry_after_the_sequence(Naming::Otel)).unwrap();
    let mut histograms = 0;
    for f in &families {
        for m in &f.metric {
            let Some(h) = &m.histogram else { continue };
            histograms += 1;
            let (mut native, mut count) = (h.zero_count, 0i64);
            for d in &h.positive_delta {
                count += d;
                native += count as u64;
            }
            let classic = h.bucket.last().map(|b| b.cumulative_count);
            assert_eq!((native, classic), (h.sample_count, Some(h.sample_count)), "{}", f.name);
            assert_eq!(h.bucket.last().map(|b| b.upper_bound), Some(f64::INFINITY), "{}", f.name);
            let schema = if f.name.ends_with("_seconds") { 3 } else { 0 };
            assert_eq!(h.schema, schema, "{}", f.name);
            assert!(!h.positive_span.is_empty(), "{}: an empty span list would read as classic", f.name);
        }
    }
    assert!(histograms >= 20, "{histograms} histograms");
}

#[test]
fn golden_metrics_django_prometheus() {
    check(Naming::DjangoPrometheus, "metrics-django-prometheus.txt");
}

/// `redprobe top` reads the page as protobuf (native histograms) or as text: both give the
/// same rows, counts and classic buckets, and every duration row has native buckets too.
#[test]
fn golden_top_reads_text_and_protobuf_alike() {
    use crate::top::{page::parse_text, protobuf, snapshot::Snapshot};
    let registry = registry_after_the_sequence(Naming::Otel);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let from_text = Snapshot::of(&parse_text(&text).unwrap()).unwrap();
    let bytes = prometheus_client::encoding::prometheus_protobuf::encode_to_vec(&registry).unwrap();
    let from_proto = Snapshot::of(&protobuf::parse(&bytes).unwrap()).unwrap();
    assert!(from_text.series.len() >= 8, "{:?}", from_text.series.keys());
    assert_eq!(from_text.series.keys().collect::<Vec<_>>(), from_proto.series.keys().collect::<Vec<_>>());
    for (labels, t) in &from_text.series {
        let p = &from_proto.series[labels];
        let (t, p) = (&t.dist, &p.dist);
        assert_eq!((t.count, t.sum, &t.classic), (p.count, p.sum, &p.classic), "{labels:?}");
        assert!(t.native.is_none() && p.native.is_some(), "{labels:?}");
    }
    assert_eq!(from_text.totals(), from_proto.totals());
    assert_eq!((from_text.active, from_text.health), (from_proto.active, from_proto.health));
}

/// The plain table of `redprobe top --once` over the fixed sequence, read as protobuf, as
/// if it all happened in a 2 s interval.
#[test]
fn golden_top_once() {
    use crate::top::{interval::Interval, protobuf, snapshot::Snapshot, table, view::Sort};
    let bytes = prometheus_client::encoding::prometheus_protobuf::encode_to_vec(&registry_after_the_sequence(Naming::Otel)).unwrap();
    let now = Snapshot::of(&protobuf::parse(&bytes).unwrap()).unwrap();
    let iv = Interval::between(&Snapshot::default(), &now, 2.0);
    let mut out = table::render("http://127.0.0.1:9464/metrics", &iv, Sort::Rate, "", 1.0);
    out.push_str("\n-- sorted by p99, filter \"items\":\n");
    out.push_str(&table::render("http://127.0.0.1:9464/metrics", &iv, Sort::P99, "items", 1.0));
    compare("top-once.txt", &out);
}
