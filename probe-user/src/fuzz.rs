//! Property test over arbitrary ring-buffer records: decode -> pair -> aggregate ->
//! expose never panics, and every label it exports stays in its bounded set.
//!
//! Records mix well-formed events built from HTTP fragments (request and response heads,
//! framing headers, chunk markers, quotes, backslashes, NUL, non-UTF-8 bytes) with random
//! bytes of random length, random flags and random connection ids. Failing cases are
//! saved in `probe-user/proptest-regressions/fuzz.txt` (committed: it is the corpus, and
//! it is replayed first on every run). `cargo xtask test` runs it with a bounded number
//! of cases; `PROPTEST_CASES=100000 cargo test -p probe-user fuzz` runs it longer.
use std::collections::BTreeSet;

use probe_common::{DataEvent, EVENT_RECV, EVENT_SEND, EventHeader, FLAG_AFTER_LOSS, FLAG_CLIENT, FLAG_UNCLASSIFIED, HEAD_WINDOW, TAIL_WINDOW};
use proptest::{prelude::*, test_runner::FileFailurePersistence};
use prometheus_client::registry::Registry as Prometheus;

use crate::{
    labels::{Router, Routes, Template},
    metrics::{Metrics, Naming},
    pipeline::Pipeline,
    proc_root::ProcInfo,
    reason::{Inference, Protocol, Reason},
    registry::{Registry, lock},
    wire::{self, raw},
};

const MAX_ROUTES: usize = 6;
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER"];
/// The target whose I/O the records are.
const TGID: u32 = 1;

const FRAGMENTS: &[&[u8]] = &[
    b"GET ", b"POST ", b"HEAD ", b"PURGE ", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"/", b"/users/", b"42", b"/a?b=1",
    b"/static/x.css", b"deadbeef0123", b"\"", b"\\", b"}", b"{", b"\xff\xfe", b"\xc3\xa9", b"\0", b"\x16\x03\x01",
    b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", b"Host: x\r\n", b"Content-Length: 5\r\n", b"Content-Length: 0\r\n",
    b"Content-Length: 99999999999999999999\r\n", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n",
    b"\r\n", b"\r\n\r\n", b"hello", b"5\r\nhello\r\n", b"0\r\n\r\n", b"ffffffffffffffff\r\n", b"HTTP/1.1 ",
    b"HTTP/1.0 ", b"200 OK\r\n", b"404 Not Found\r\n", b"500 Oops\r\n", b"101 Switching\r\n", b"100 Continue\r\n\r\n",
    b"000 Zero\r\n", b"999 Max\r\n", b"204 No\r\n", b"Expect: 100-continue\r\n",
];

#[derive(Clone, Debug)]
enum Record {
    Data { conn: u64, send: bool, flags: u32, bytes: Vec<u8>, extra_len: u32, head_len: u16, tail: Vec<u8> },
    Close { conn: u64, reset: bool },
    Fork { parent: u32, child: u32 },
    Exec { tgid: u32, comm: &'static str },
    Exit { tgid: u32 },
    Raw(Vec<u8>),
}

fn soup(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..max).prop_map(|f| f.concat())
}

/// A request head that is mostly well-formed: a method, a path made of fragments and
/// random bytes, a version, some headers, then a body.
fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "DELETE", "PURGE", "M-SEARCH", "get"]),
        prop::collection::vec(prop_oneof![soup(3), prop::collection::vec(any::<u8>(), 0..6), Just(b"/".to_vec())], 0..6),
        prop::sample::select(vec![" HTTP/1.1\r\n", " HTTP/1.0\r\n", " HTTP/9.9\r\n", "\r\n"]),
        soup(4),
        prop::sample::select(vec!["\r\n", "", "\r\nhello"]),
    )
        .prop_map(|(method, path, version, headers, end)| {
            [method.as_bytes(), b" /", &path.concat(), version.as_bytes(), &headers, end.as_bytes()].concat()
        })
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["HTTP/1.1 ", "HTTP/1.0 ", "HTTP/2 "]),
        prop_oneof![0u16..1000, Just(200), Just(500), Just(101), Just(100)],
        soup(4),
        prop::sample::select(vec!["\r\n", "", "\r\nhello", "\r\n0\r\n\r\n"]),
    )
        .prop_map(|(version, status, headers, end)| {
            [version.as_bytes(), format!("{status:03} X\r\n").as_bytes(), &headers, end.as_bytes()].concat()
        })
}

/// (is a send, bytes): requests are mostly read, responses mostly written.
fn payload() -> impl Strategy<Value = (bool, Vec<u8>)> {
    prop_oneof![
        4 => request().prop_map(|b| (false, b)),
        4 => response().prop_map(|b| (true, b)),
        2 => (any::<bool>(), soup(24)),
        1 => (any::<bool>(), prop::collection::vec(any::<u8>(), 0..700)),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        12 => (
            prop_oneof![3 => Just(0u64), 1 => 0u64..4],
            prop::sample::select(vec![0, 0, 0, 0, 0, 0, FLAG_AFTER_LOSS, FLAG_UNCLASSIFIED, FLAG_CLIENT, FLAG_CLIENT, u32::MAX]),
            payload(),
            prop_oneof![8 => Just(0u32), 1 => 0u32..100_000],
            prop_oneof![8 => Just(u16::MAX), 1 => any::<u16>()],
            prop::collection::vec(any::<u8>(), 0..=TAIL_WINDOW),
        )
            .prop_map(|(conn, flags, (send, bytes), extra_len, head_len, tail)| Record::Data {
                conn,
                send,
                flags,
                bytes,
                extra_len,
                head_len,
                tail
            }),
        2 => (0u64..4, any::<bool>()).prop_map(|(conn, reset)| Record::Close { conn, reset }),
        1 => (prop_oneof![Just(TGID), any::<u32>()], any::<u32>()).prop_map(|(parent, child)| Record::Fork { parent, child }),
        1 => (prop_oneof![Just(TGID), any::<u32>()], prop::sample::select(vec!["worker", "", "x\"y"]))
            .prop_map(|(tgid, comm)| Record::Exec { tgid, comm }),
        1 => prop_oneof![Just(TGID), any::<u32>()].prop_map(|tgid| Record::Exit { tgid }),
        1 => prop::collection::vec(any::<u8>(), 0..(size_of::<DataEvent>() + 8)).prop_map(Record::Raw),
    ]
}

/// The bytes the ring buffer would hold for `r`.
fn ring_record(r: &Record, ts_ns: u64) -> Vec<u8> {
    match r {
        Record::Data { conn, send, flags, bytes, extra_len, head_len, tail } => {
            let mut head = [0u8; HEAD_WINDOW];
            let n = bytes.len().min(HEAD_WINDOW);
            head[..n].copy_from_slice(&bytes[..n]);
            let mut tail_buf = [0u8; TAIL_WINDOW];
            tail_buf[TAIL_WINDOW - tail.len()..].copy_from_slice(tail);
            let len = bytes.len() as u32 + extra_len;
            let head_len = if *head_len == u16::MAX { n as u16 } else { *head_len };
            raw(&DataEvent {
                header: EventHeader { kind: if *send { EVENT_SEND } else { EVENT_RECV }, flags: *flags, ts_ns },
                conn_id: *conn,
                tgid: TGID,
                len,
                family: if *conn == 3 { wire::AF_UNIX } else { wire::AF_INET },
                head_len,
                tail_len: tail.len() as u16,
                _pad: 0,
                arrival_ns: 0,
                tx_end_seq: 0,
                _pad2: 0,
                head,
                tail: tail_buf,
            })
        }
        Record::Close { conn, reset: false } => wire::close(*conn, ts_ns),
        Record::Close { conn, reset: true } => wire::reset(*conn, ts_ns),
        Record::Fork { parent, child } => wire::fork(*parent, *child, ts_ns),
        Record::Exec { tgid, comm } => wire::exec(*tgid, comm, ts_ns),
        Record::Exit { tgid } => wire::exit(*tgid, ts_ns),
        Record::Raw(bytes) => bytes.clone(),
    }
}

fn check_labels(text: &str) -> Result<(), String> {
    let unparsed: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
    let inferred: Vec<&str> = Inference::ALL.iter().map(|r| r.label()).collect();
    let protocols: Vec<&str> = Protocol::ALL.iter().map(|p| p.label()).collect();
    let mut routes = BTreeSet::new();
    let samples = testkit::scrape::parse(text).map_err(|e| format!("unparseable exposition: {e:#}"))?;
    for sample in samples {
        let (name, labels) = (&sample.name, &sample.labels);
        // Label values never need escaping: `"` and `\` are percent-encoded.
        if let Some(v) = labels.values().find(|v| v.contains(['"', '\\', '\n'])) {
            return Err(format!("label value {v:?} needs escaping"));
        }
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        if name.starts_with("http_server_request_duration_seconds") {
            let method = get("http_request_method");
            let status = get("http_response_status_code");
            let route = get("http_route");
            if !METHODS.contains(&method) {
                return Err(format!("method {method:?} outside the bounded set"));
            }
            let error_type = get("error_type");
            let reset = error_type == "connection_reset";
            // A 3-digit code, or none when the client gave up before a status line.
            let code_ok = status.len() == 3 && (100..=999).contains(&status.parse::<u16>().unwrap_or(0));
            if !(code_ok || (status.is_empty() && reset)) {
                return Err(format!("status {status:?} is not a 3-digit code"));
            }
            let route_ok = (route.starts_with('/') && route.len() <= 132 && route.matches('/').count() <= 9)
                || ["*", "_invalid", "_other", "_unknown"].contains(&route);
            if !route_ok {
                return Err(format!("route {route:?} outside the bounds"));
            }
            routes.insert(route.to_string());
            // The version is unknown for a request measured by its response alone.
            let version_ok = ["1.0", "1.1"].contains(&get("network_protocol_version"))
                || (route == "_unknown" && get("network_protocol_version").is_empty());
            if !version_ok || !["tcp", "unix"].contains(&get("network_transport")) {
                return Err(format!("bad version or transport in {labels:?}"));
            }
            if !(error_type.is_empty() || reset || (error_type == status && status.starts_with('5'))) {
                return Err(format!("error_type {error_type:?} for status {status}"));
            }
            // The root's name, a name an exec gave, or the one for processes never announced.
            if !["svc", "worker", "", "x%22y", "unknown"].contains(&get("service_name")) {
                return Err(format!("service {labels:?}"));
            }
        }
        if name == "redprobe_requests_unparsed_total" && !unparsed.contains(&get("reason")) {
            return Err(format!("unknown unparsed reason {:?}", get("reason")));
        }
        if name == "redprobe_responses_inferred_total" && !inferred.contains(&get("reason")) {
            return Err(format!("unknown inferred reason {:?}", get("reason")));
        }
        if name == "redprobe_connections_other_protocol_total" && !protocols.contains(&get("protocol")) {
            return Err(format!("unknown protocol {:?}", get("protocol")));
        }
    }
    // The cap, plus `_other`, plus the template's route.
    if routes.len() > MAX_ROUTES + 1 {
        return Err(format!("{} routes: {routes:?}", routes.len()));
    }
    Ok(())
}

/// Feeds `records` through the agent's pipeline; returns the /metrics text.
fn run_pipeline(records: &[Record], max_conns: usize) -> String {
    let mut prometheus = Prometheus::default();
    let router = Router::new(vec![Template::parse("/users/{id}").expect("template")]);
    let metrics = Metrics::new(&mut prometheus, Naming::Otel, Routes::new(router, MAX_ROUTES));
    let registry = Registry::new(None).shared();
    lock(&registry).attach_root(&ProcInfo { pid: TGID, ppid: 0, start_time: 1, comm: "svc".into() }, Default::default());
    let mut pipeline = Pipeline::new(metrics, registry, max_conns);
    for (i, r) in records.iter().enumerate() {
        let ts = 1_000 + i as u64 * 1_000;
        pipeline.record(&ring_record(r, ts));
        pipeline.housekeeping(ts, u64::MAX, &[]);
    }
    pipeline.housekeeping(u64::MAX, 0, &[]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prometheus).expect("encoding");
    crate::exposition::to_prometheus_text(&text)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(10_000),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_event_streams_never_panic_and_keep_labels_bounded(
        records in prop::collection::vec(record(), 0..80),
        max_conns in 1usize..5,
    ) {
        let text = run_pipeline(&records, max_conns);
        if let Err(e) = check_labels(&text) {
            prop_assert!(false, "{e}\n{text}");
        }
    }
}

/// Hand-made streams kept as a corpus: the bad inputs of the integration tests.
#[test]
fn corpus_of_bad_inputs() {
    let data = |conn: u64, send: bool, bytes: &[u8]| Record::Data {
        conn,
        send,
        flags: 0,
        bytes: bytes.to_vec(),
        extra_len: 0,
        head_len: u16::MAX,
        tail: vec![],
    };
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let corpus: Vec<Vec<Record>> = vec![
        vec![data(0, false, b"GET /a\"} 1\r\n HTTP/1.1\r\n\r\n"), data(0, true, ok)],
        vec![data(0, false, b"GET /q\"uote\\back HTTP/1.1\r\n\r\n"), data(0, true, ok)],
        vec![data(0, false, &[b"POST".repeat(256), b" / HTTP/1.1\r\n\r\n".to_vec()].concat()), data(0, true, ok)],
        vec![data(0, false, b"GET /caf\xe9\xff HTTP/1.1\r\n\r\n"), data(0, true, ok)],
        vec![data(0, false, b"GET / HTTP/1.1\r\n\r\n"), data(0, true, b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n")],
        vec![data(0, false, &b"GET / HTTP/1.1\r\n\r\n".repeat(100)), data(0, true, &ok.repeat(100))],
    ];
    for records in corpus {
        let text = run_pipeline(&records, 4);
        check_labels(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}
