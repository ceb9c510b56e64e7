//! Table tests: event sequences in, exchanges out. No kernel involved.
use super::*;
use crate::{
    decode::{Data, Direction},
    reason::Reason,
};

const WINDOW: usize = probe_common::HEAD_WINDOW;
const TAIL: usize = probe_common::TAIL_WINDOW;

/// An event as the probe would capture it: `bytes` is the whole buffer, of which only
/// the head window (and, for large buffers, the tail window) is kept.
fn ev(conn: u64, ts: u64, dir: Direction, bytes: &[u8]) -> Data {
    let head = bytes[..bytes.len().min(WINDOW)].to_vec();
    let tail = if bytes.len() > WINDOW { bytes[bytes.len() - TAIL..].to_vec() } else { vec![] };
    Data {
        conn_id: conn,
        tgid: 1,
        ts_ns: ts,
        arrival_ns: ts,
        direction: dir,
        family: 2,
        len: bytes.len() as u64,
        head,
        tail,
        after_loss: false,
        unclassified: false,
        on_tls_port: false,
        client: false,
        tx_end_seq: None,
    }
}

fn rx(ts: u64, bytes: &[u8]) -> Data {
    ev(1, ts, Direction::Recv, bytes)
}

fn tx(ts: u64, bytes: &[u8]) -> Data {
    ev(1, ts, Direction::Send, bytes)
}

/// A write of `n` bytes of which nothing was captured (sendfile).
fn tx_blind(ts: u64, n: u64) -> Data {
    let mut d = tx(ts, b"");
    d.len = n;
    d
}

fn run(events: &[Data]) -> (Vec<Exchange>, Vec<&'static str>) {
    run_closed(events, false, u64::MAX)
}

/// `run`, the connection closed at `close_ns`, by a reset or a FIN.
fn run_closed(events: &[Data], reset: bool, close_ns: u64) -> (Vec<Exchange>, Vec<&'static str>) {
    run_on(Pairer::new(16), events, reset, close_ns)
}

/// `run_closed` through pairer `p`.
fn run_on(mut p: Pairer, events: &[Data], reset: bool, close_ns: u64) -> (Vec<Exchange>, Vec<&'static str>) {
    let mut out = vec![];
    for e in events {
        p.on_data(e, || "svc".into(), &mut out);
    }
    p.on_close(1, reset, close_ns, &mut out);
    let mut exchanges = vec![];
    let mut other = vec![];
    for o in out {
        match o {
            Output::Exchange(x) => exchanges.push(x),
            Output::Unparsed(r) => other.push(r.label()),
            Output::Inferred(r) => other.push(r.label()),
            Output::OtherProtocol(p) => other.push(p.label()),
            Output::EndAtWrite(r) => other.push(r.label()),
            Output::TlsUnmeasured(r) => other.push(r.label()),
            Output::WaitsForTransmission => other.push("waits_for_transmission"),
            Output::Rpc(_) | Output::H2Undecodable(_) | Output::H2Reset { .. } => unreachable!("HTTP/1 pairing"),
            Output::Client(_) | Output::ClientUnmeasured(_) => unreachable!("made by the pipeline"),
        }
    }
    (exchanges, other)
}

/// (method, target, status, start, end) of each exchange.
fn summary(x: &[Exchange]) -> Vec<(&str, String, u16, u64, u64)> {
    x.iter()
        .map(|e| match &e.head {
            Head::Read(l) => (l.method.as_str(), String::from_utf8_lossy(&l.target).into_owned(), e.status.unwrap_or(0), e.start_ns, e.end_ns),
            Head::Unread(r) => (r.label(), String::new(), e.status.unwrap_or(0), e.start_ns, e.end_ns),
            Head::Kernel(k) => (crate::labels::kernel_ids::method(k.method), format!("key {}", k.path_key), e.status.unwrap_or(0), e.start_ns, e.end_ns),
        })
        .collect()
}

const OK_5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn keep_alive_sequence() {
    let (x, other) = run(&[
        rx(10, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
        tx(20, OK_5),
        rx(30, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
        tx(45, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/a".into(), 200, 10, 20), ("GET", "/b".into(), 404, 30, 45)]);
    assert!(other.is_empty(), "{other:?}");
}

/// A read's arrival stamp starts the request whose head begins the read (its wait in the
/// socket's queues is the difference); a request later in the same read (pipelined) has
/// no arrival of its own: it starts at the read. A head split over reads keeps the first.
#[test]
fn requests_start_at_their_arrival() {
    let mut first = rx(100, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    first.arrival_ns = 40;
    let mut split = rx(300, b"GET /c HT");
    split.arrival_ns = 250;
    let mut rest = rx(310, b"TP/1.1\r\n\r\n");
    rest.arrival_ns = 305;
    let (x, _) = run(&[first, tx(120, OK_5), tx(130, OK_5), split, rest, tx(320, OK_5)]);
    assert_eq!(
        summary(&x),
        vec![("GET", "/a".into(), 200, 40, 120), ("GET", "/b".into(), 200, 100, 130), ("GET", "/c".into(), 200, 250, 320)]
    );
    assert_eq!(x.iter().map(|e| e.queued_ns).collect::<Vec<_>>(), vec![60, 0, 50]);
}

#[test]
fn response_ends_at_its_last_write_not_its_first() {
    let (x, _) = run(&[
        rx(10, b"GET /big HTTP/1.1\r\n\r\n"),
        tx(11, b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"),
        tx(12, &[b'x'; 1000]),
        tx(13, &[b'x'; 1000]),
        tx(99, &[b'x'; 1000]),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/big".into(), 200, 10, 99)]);
    assert_eq!(x[0].first_byte_ns, 11);
    assert_eq!(x[0].response_body_bytes, 3000);
}

#[test]
fn sendfile_body_without_payload() {
    let (x, _) = run(&[
        rx(1, b"GET /file HTTP/1.1\r\n\r\n"),
        tx(2, b"HTTP/1.1 200 OK\r\nContent-Length: 131072\r\n\r\n"),
        tx_blind(3, 65536),
        tx_blind(500, 65536),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/file".into(), 200, 1, 500)]);
}

#[test]
fn request_head_split_over_reads_and_body_over_reads() {
    let (x, other) = run(&[
        rx(5, b"POST /up HTTP/1.1\r\nContent-Le"),
        rx(6, b"ngth: 10\r\n\r\n01234"),
        rx(7, b"56789"),
        tx(9, OK_5),
        rx(10, b"GET /after HTTP/1.1\r\n\r\n"),
        tx(11, OK_5),
    ]);
    assert_eq!(summary(&x), vec![("POST", "/up".into(), 200, 5, 9), ("GET", "/after".into(), 200, 10, 11)]);
    assert_eq!(x[0].request_body_bytes, 10);
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn pipelined_requests_in_one_read() {
    let (x, _) = run(&[
        rx(1, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"),
        tx(2, OK_5),
        tx(3, &[OK_5, OK_5].concat()),
    ]);
    assert_eq!(
        summary(&x),
        vec![("GET", "/1".into(), 200, 1, 2), ("GET", "/2".into(), 200, 1, 3), ("GET", "/3".into(), 200, 1, 3)]
    );
}

#[test]
fn chunked_response_in_separate_writes() {
    let (x, _) = run(&[
        rx(1, b"GET /stream HTTP/1.1\r\n\r\n"),
        tx(2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        tx(3, b"5\r\nhello\r\n"),
        tx(4, b"5\r\nworld\r\n"),
        tx(8, b"0\r\n\r\n"),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/stream".into(), 200, 1, 8)]);
}

#[test]
fn chunked_response_with_chunks_beyond_the_window() {
    // One big chunk, then small chunks inside one write, ending in the tail window.
    let mut body = format!("{:x}\r\n", 3000).into_bytes();
    body.extend(vec![b'y'; 3000]);
    body.extend(b"\r\n3\r\nabc\r\n0\r\n\r\n");
    let (x, other) = run(&[
        rx(1, b"GET /c HTTP/1.1\r\n\r\n"),
        tx(2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        tx(3, &body),
        rx(4, b"GET /next HTTP/1.1\r\n\r\n"),
        tx(5, OK_5),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/c".into(), 200, 1, 3), ("GET", "/next".into(), 200, 4, 5)]);
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn chunked_many_chunks_in_one_large_write_uses_the_tail() {
    let mut body = vec![];
    for _ in 0..100 {
        body.extend(b"a\r\n0123456789\r\n");
    }
    body.extend(b"0\r\n\r\n");
    let (x, _) = run(&[
        rx(1, b"GET /c HTTP/1.1\r\n\r\n"),
        tx(2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        tx(3, &body),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/c".into(), 200, 1, 3)]);
}

#[test]
fn head_and_no_body_statuses() {
    let (x, _) = run(&[
        rx(1, b"HEAD /h HTTP/1.1\r\n\r\n"),
        tx(2, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"),
        rx(3, b"GET /n HTTP/1.1\r\n\r\n"),
        tx(4, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 999\r\n\r\n"),
        rx(5, b"DELETE /d HTTP/1.1\r\n\r\n"),
        tx(6, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ]);
    assert_eq!(
        summary(&x),
        vec![("HEAD", "/h".into(), 200, 1, 2), ("GET", "/n".into(), 304, 3, 4), ("DELETE", "/d".into(), 204, 5, 6)]
    );
}

#[test]
fn expect_continue_interim_response() {
    let (x, _) = run(&[
        rx(1, b"POST /u HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"),
        tx(2, b"HTTP/1.1 100 Continue\r\n\r\n"),
        rx(3, b"data"),
        tx(4, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(summary(&x), vec![("POST", "/u".into(), 201, 1, 4)]);
}

#[test]
fn http10_close_delimited_response_ends_at_last_write() {
    let (x, _) = run(&[
        rx(1, b"GET /old HTTP/1.0\r\n\r\n"),
        tx(2, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n"),
        tx(3, b"part one"),
        tx(7, b"part two"),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/old".into(), 200, 1, 7)]);
    assert!(matches!(&x[0].head, Head::Read(l) if l.version == Version::Http10));
    assert_eq!(x[0].response_body_bytes, 16);
}

#[test]
fn garbage_and_half_requests_are_reported_not_counted() {
    let mut tls = rx(1, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    tls.unclassified = true;
    let (x, other) = run(&[tls]);
    assert!(x.is_empty());
    assert_eq!(other, vec!["tls"]);

    let (x, other) = run(&[rx(1, b"GET /half HTTP/1.1\r\nHost: x\r\n")]);
    assert!(x.is_empty());
    assert_eq!(other, vec!["head_incomplete"], "a half-sent head, then the close");
    // The client shut its side down after half a head, and the server answered it.
    let (x, other) = run(&[rx(1, b"GET /half HTTP/1.1\r\nHost: x\r\n"), tx(2, OK_5)]);
    assert_eq!(summary(&x), vec![("GET", "/half".into(), 200, 1, 2)]);
    assert!(other.is_empty(), "{other:?}");

    let (x, other) = run(&[rx(1, b"GET /never HTTP/1.1\r\n\r\n")]);
    assert!(x.is_empty());
    assert_eq!(other, vec!["no_response"]);

    let (x, other) = run(&[rx(1, b"GET /ok HTTP/1.1\r\n\r\n\x00\x01garbage"), tx(2, OK_5)]);
    assert_eq!(x.len(), 1);
    assert_eq!(other, vec!["binary"]);
}

#[test]
fn oversized_request_head_still_counts_by_its_request_line() {
    let mut head = b"GET /cookies HTTP/1.1\r\nCookie: ".to_vec();
    head.extend(vec![b'c'; 16 * 1024]);
    head.extend(b"\r\n\r\n");
    let (x, other) = run(&[rx(1, &head), tx(2, OK_5), rx(3, b"GET /next HTTP/1.1\r\n\r\n"), tx(4, OK_5)]);
    assert_eq!(summary(&x), vec![("GET", "/cookies".into(), 200, 1, 2), ("GET", "/next".into(), 200, 3, 4)]);
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn oversized_response_head_is_inferred_from_the_next_request() {
    let mut head = b"HTTP/1.1 200 OK\r\nSet-Cookie: ".to_vec();
    head.extend(vec![b'c'; 2000]);
    head.extend(b"\r\nContent-Length: 5\r\n\r\nhello");
    let (x, other) = run(&[
        rx(1, b"GET /a HTTP/1.1\r\n\r\n"),
        tx(2, &head),
        rx(5, b"GET /b HTTP/1.1\r\n\r\n"),
        tx(6, OK_5),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/a".into(), 200, 1, 2), ("GET", "/b".into(), 200, 5, 6)]);
    assert_eq!(other, vec!["response_head_beyond_capture"]);
}

#[test]
fn lost_events_resynchronise_at_the_next_request() {
    let mut after = rx(5, b"GET /b HTTP/1.1\r\n\r\n");
    after.after_loss = true;
    let (x, other) = run(&[rx(1, b"GET /a HTTP/1.1\r\n\r\n"), after, tx(6, OK_5)]);
    assert_eq!(summary(&x), vec![("GET", "/b".into(), 200, 5, 6)]);
    assert_eq!(other, vec!["events_lost"]);
}

#[test]
fn connection_table_is_bounded() {
    let mut p = Pairer::new(2);
    let mut out = vec![];
    for conn in 0..5 {
        p.on_data(&ev(conn, conn, Direction::Recv, b"GET / HTTP/1.1\r\n\r\n"), || "svc".into(), &mut out);
    }
    assert_eq!(p.connections(), 2);
    // Each evicted connection had a request waiting: that request is what is lost.
    assert_eq!(out.iter().filter(|o| **o == Output::Unparsed(Reason::ConnectionTableFull)).count(), 3);
    let active = p.active_requests();
    assert_eq!(active.get(&("svc".into(), "GET".to_string())), Some(&2));
    assert_eq!(p.connections_by_service().get(&"svc".into()), Some(&2));
}

#[test]
fn evicting_an_idle_connection_loses_nothing() {
    let mut p = Pairer::new(2);
    let mut out = vec![];
    // 10 keep-alive connections, each answered, then each asked again: the table holds 2.
    for round in 0..2 {
        for conn in 0..10u64 {
            let ts = round * 100 + conn * 2;
            p.on_data(&ev(conn, ts, Direction::Recv, b"GET / HTTP/1.1\r\n\r\n"), || "svc".into(), &mut out);
            p.on_data(&ev(conn, ts + 1, Direction::Send, OK_5), || "svc".into(), &mut out);
        }
    }
    let exchanges = out.iter().filter(|o| matches!(o, Output::Exchange(_))).count();
    assert_eq!(exchanges, 20, "{out:?}");
    assert_eq!(out.len(), 20, "no loss reported: {out:?}");
    assert_eq!(p.connections(), 2);
}

#[test]
fn a_reset_measures_the_abandoned_requests_up_to_the_reset() {
    // A slow request the client gave up on: no status, reset at 500.
    let (x, other) = run_closed(&[rx(10, b"GET /slow HTTP/1.1\r\n\r\n")], true, 500);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((x.len(), x[0].status, x[0].reset, x[0].start_ns, x[0].end_ns), (1, None, true, 10, 500));
    // A large response cut by the reset: its status is known.
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n".to_vec();
    let (x, other) = run_closed(&[rx(10, b"GET /big HTTP/1.1\r\n\r\n"), tx(20, &[head, vec![b'x'; 100_000]].concat())], true, 900);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((x[0].status, x[0].reset, x[0].first_byte_ns, x[0].end_ns), (Some(200), true, 20, 900));
    // Closed with a FIN instead: never answered, as before.
    let (x, other) = run_closed(&[rx(10, b"GET /slow HTTP/1.1\r\n\r\n")], false, 500);
    assert!(x.is_empty());
    assert_eq!(other, vec!["no_response"]);
}

#[test]
fn stray_bytes_after_a_complete_response_do_not_blind_the_connection() {
    // A server that sends a body with its answer to HEAD, then answers two GETs.
    let (x, other) = run(&[
        rx(1, b"HEAD /a HTTP/1.1\r\n\r\n"),
        tx(2, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        tx(3, b"hello"),
        rx(4, b"GET /a HTTP/1.1\r\n\r\n"),
        tx(5, OK_5),
        rx(6, b"GET /b HTTP/1.1\r\n\r\n"),
        tx(7, OK_5),
    ]);
    assert_eq!(summary(&x), vec![("HEAD", "/a".into(), 200, 1, 2), ("GET", "/a".into(), 200, 4, 5), ("GET", "/b".into(), 200, 6, 7)]);
    assert!(other.is_empty(), "stray bytes are no lost request: {other:?}");
}

#[test]
fn a_chunked_response_whose_end_was_not_captured_ends_before_the_next_request() {
    // The chunk framing falls beyond what was captured (a long writev): the next request
    // tells that the response ended with its last write.
    let mut blind = tx_blind(3, 700);
    blind.head = b"5\r\nhello\r\n".to_vec();
    let (x, other) = run(&[
        rx(1, b"GET /s HTTP/1.1\r\n\r\n"),
        tx(2, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        blind,
        rx(10, b"GET /t HTTP/1.1\r\n\r\n"),
        tx(11, OK_5),
    ]);
    assert_eq!(summary(&x), vec![("GET", "/s".into(), 200, 1, 3), ("GET", "/t".into(), 200, 10, 11)]);
    assert_eq!(other, vec!["chunk_end_beyond_capture"]);
}

#[test]
fn a_body_read_after_an_early_answer_counts_whole() {
    let (x, other) = run(&[
        rx(1, b"POST /up HTTP/1.1\r\nContent-Length: 3000\r\n\r\n"),
        tx(2, b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"),
        rx(3, &[b'u'; 3000]),
        rx(4, b"GET /next HTTP/1.1\r\n\r\n"),
        tx(5, OK_5),
    ]);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(summary(&x), vec![("POST", "/up".into(), 413, 1, 2), ("GET", "/next".into(), 200, 4, 5)]);
    assert_eq!(x[0].request_body_bytes, 3000);
}

/// `n` requests of `GET /p HTTP/1.1` in one read, and their `n` responses.
fn pipelined(n: usize) -> Vec<Data> {
    let one = b"GET /p HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut events = vec![rx(1, &one.repeat(n))];
    events.extend((0..n).map(|i| tx(2 + i as u64, OK_5)));
    events
}

#[test]
fn pipelined_requests_beyond_the_window_are_each_measured_once() {
    let (x, other) = run(&pipelined(100));
    // 36-byte requests: 14 whole ones fit the 512-byte window, the 15th is cut in its
    // request line; the other 86 are measured by their responses (status and duration),
    // with their head unread.
    assert_eq!(x.len(), 100);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(x.iter().map(|e| e.end_ns).collect::<Vec<_>>(), (2..102).collect::<Vec<_>>());
    assert!(x[..14].iter().all(|e| matches!(&e.head, Head::Read(l) if l.target == b"/p")));
    assert!(x[14..].iter().all(|e| e.head == Head::Unread(Reason::OutsideCaptureWindow) && e.status == Some(200)));
}

#[test]
fn a_request_that_cannot_be_read_is_one_count_with_its_response() {
    // A request line longer than the window, answered 414: one count, no
    // response_without_request, and the next request is measured.
    let mut long = b"GET /".to_vec();
    long.extend(vec![b'a'; 70_000]);
    long.extend(b" HTTP/1.1\r\n\r\n");
    let (x, other) = run(&[rx(1, &long), tx(2, b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\n\r\n"), rx(3, b"GET /next HTTP/1.1\r\n\r\n"), tx(4, OK_5)]);
    assert_eq!(summary(&x), vec![("GET", "/next".into(), 200, 3, 4)]);
    assert_eq!(other, vec!["head_too_large"]);
    // A malformed request line (NUL in the target) on a connection the kernel took for HTTP.
    let (x, other) = run(&[rx(1, b"GET /a\x00b HTTP/1.1\r\n\r\n"), tx(2, b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n")]);
    assert!(x.is_empty());
    assert_eq!(other, vec!["malformed_request"]);
}

#[test]
fn a_response_cut_by_the_close_is_response_incomplete() {
    let (x, other) = run(&[rx(1, b"GET /a HTTP/1.1\r\n\r\n"), tx(2, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")]);
    assert!(x.is_empty());
    assert_eq!(other, vec!["response_incomplete"]);
}

#[test]
fn pending_requests_are_bounded() {
    let one = b"GET /p HTTP/1.1\r\n\r\n";
    let events: Vec<Data> = (0..MAX_PENDING as u64 + 10).map(|i| rx(i, one)).collect();
    let (x, other) = run(&events);
    assert!(x.is_empty());
    assert_eq!(other.iter().filter(|r| **r == "pipeline_too_deep").count(), 10);
    assert_eq!(other.iter().filter(|r| **r == "no_response").count(), MAX_PENDING);
}

/// The kernel's state when it hands a connection over: `pending` (start, method id, path
/// key) waiting, a response of `status` with `left` body bytes to go after `sent`.
fn switch(pending: &[(u64, u8, u64)], resp: Option<(u16, u64, u64, u64)>) -> SwitchEvent {
    let mut sw = SwitchEvent { conn_id: 1, family: 2, service: 3, ..Default::default() };
    let k = &mut sw.pairing;
    k.first = 3; // the FIFO wraps
    for (i, (start, method, key)) in pending.iter().enumerate() {
        let slot = (3 + i) % probe_common::FAST_DEPTH;
        k.pending[slot] = probe_common::FastRequest { start_ns: *start, path_key: *key, method: *method, version: 1, ..Default::default() };
    }
    k.len = pending.len() as u8;
    if let Some((status, first, sent, left)) = resp {
        k.resp_state = probe_common::RESP_LENGTH;
        (k.status, k.resp_first_ns, k.resp_last_ns, k.resp_bytes, k.resp_left) = (status, first, first, sent, left);
    }
    sw
}

/// The agent goes on where the kernel stopped: the response half sent, a pipelined
/// request waiting, then more writes and a new request.
#[test]
fn a_connection_handed_over_mid_response_goes_on_from_the_kernels_state() {
    let mut p = Pairer::new(16);
    let mut out = vec![];
    let sw = switch(&[(10, 1, 77), (12, 2, 78)], Some((200, 15, 4, 6)));
    p.adopt(&sw, "svc".into(), SlowReason::Pipelined, &mut out);
    assert_eq!(p.active_requests().values().sum::<i64>(), 2);
    for e in [tx(20, b"world!"), tx(30, b"HTTP/1.1 204 No Content\r\n\r\n"), rx(40, b"GET /c HTTP/1.1\r\n\r\n"), tx(50, OK_5)] {
        p.on_data(&e, || unreachable!("the switch named the service"), &mut out);
    }
    let x: Vec<Exchange> = out.into_iter().filter_map(|o| if let Output::Exchange(x) = o { Some(x) } else { None }).collect();
    assert_eq!(
        summary(&x),
        [("GET", "key 77".into(), 200, 10, 20), ("HEAD", "key 78".into(), 204, 12, 30), ("GET", "/c".into(), 200, 40, 50)]
    );
    assert_eq!((x[0].response_body_bytes, x[0].first_byte_ns), (10, 15));
    assert!(x.iter().all(|e| e.paired_by == PairedBy::Agent(SlowReason::Pipelined)));
    assert!(matches!(x[0].head, Head::Kernel(KernelHead { service_id: 3, .. })));
}

/// A reset after the hand-over measures what the kernel left waiting, as reset.
#[test]
fn requests_the_kernel_left_waiting_are_measured_at_a_reset() {
    let mut p = Pairer::new(16);
    let mut out = vec![];
    p.adopt(&switch(&[(10, 3, 5)], None), "svc".into(), SlowReason::ClosedWaiting, &mut out);
    p.on_close(1, true, 99, &mut out);
    let Some(Output::Exchange(x)) = out.pop() else { panic!("{out:?}") };
    assert_eq!((x.status, x.reset, x.start_ns, x.end_ns), (None, true, 10, 99));
    assert!(out.is_empty());
}

/// A request body the kernel was reading goes on in the agent.
#[test]
fn a_request_body_in_progress_goes_on() {
    let mut p = Pairer::new(16);
    let mut out = vec![];
    let mut sw = switch(&[(10, 3, 5)], None);
    sw.pairing.req_state = probe_common::REQ_BODY;
    sw.pairing.req_left = 4;
    sw.pairing.pending[3].body_bytes = 6;
    p.adopt(&sw, "svc".into(), SlowReason::Pipelined, &mut out);
    for e in [rx(20, b"abcdGET /n HTTP/1.1\r\n\r\n"), tx(30, OK_5), tx(40, OK_5)] {
        p.on_data(&e, || "svc".into(), &mut out);
    }
    let x: Vec<Exchange> = out.into_iter().filter_map(|o| if let Output::Exchange(x) = o { Some(x) } else { None }).collect();
    assert_eq!(summary(&x), [("POST", "key 5".into(), 200, 10, 30), ("GET", "/n".into(), 200, 20, 40)]);
    assert_eq!(x[0].request_body_bytes, 10);
}

/// A head's first byte the kernel held (Go reads it alone) starts the head the agent reads.
#[test]
fn a_held_first_byte_starts_the_next_head() {
    let mut p = Pairer::new(16);
    let mut out = vec![];
    let mut sw = switch(&[], None);
    (sw.pairing.held[0], sw.pairing.held_len, sw.pairing.held_ns) = (b'G', 1, 7);
    p.adopt(&sw, "svc".into(), SlowReason::Pipelined, &mut out);
    for e in [rx(9, b"ET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"), tx(20, OK_5), tx(30, OK_5)] {
        p.on_data(&e, || "svc".into(), &mut out);
    }
    let x: Vec<Exchange> = out.into_iter().filter_map(|o| if let Output::Exchange(x) = o { Some(x) } else { None }).collect();
    assert_eq!(summary(&x), [("GET", "/a".into(), 200, 7, 20), ("GET", "/b".into(), 200, 9, 30)]);
}

/// A write on connection `conn` that left bytes unsent (`tx_end_seq`, as the kernel flags
/// it).
fn tx_unsent_on(conn: u64, ts: u64, bytes: &[u8], end_seq: u32) -> Data {
    let mut d = ev(conn, ts, Direction::Send, bytes);
    d.tx_end_seq = Some(end_seq);
    d
}

fn tx_unsent(ts: u64, bytes: &[u8], end_seq: u32) -> Data {
    tx_unsent_on(1, ts, bytes, end_seq)
}

fn exchanges(out: Vec<Output>) -> (Vec<Exchange>, Vec<&'static str>) {
    let mut x = vec![];
    let mut other = vec![];
    for o in out {
        match o {
            Output::Exchange(e) => x.push(e),
            Output::EndAtWrite(r) => other.push(r.label()),
            Output::WaitsForTransmission => {}
            o => panic!("unexpected {o:?}"),
        }
    }
    (x, other)
}

/// A response whose last write left bytes unsent ends when the kernel says they went out
/// (a `Sent` covering its end), not at the write; a `Sent` for an earlier sequence number
/// (an earlier write) ends nothing; sequence numbers wrap.
#[test]
fn a_response_ends_when_its_last_bytes_go_out() {
    let mut p = Pairer::new(16);
    let mut out = vec![];
    let end = 10u32.wrapping_sub(20); // wraps between the writes and the Sent
    p.on_data(&rx(10, b"GET /slow HTTP/1.1\r\n\r\n"), || "svc".into(), &mut out);
    p.on_data(&tx_unsent(20, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", end.wrapping_sub(5)), || "svc".into(), &mut out);
    p.on_data(&tx_unsent(30, b"world", end), || "svc".into(), &mut out);
    assert!(matches!(out[..], [Output::WaitsForTransmission]), "{out:?}");
    out.clear();
    assert_eq!(p.waiting_for_transmission(), 1);
    p.on_sent(1, end.wrapping_sub(5), 40, false, &mut out);
    assert!(out.is_empty(), "the bytes of the first write only: {out:?}");
    p.on_sent(1, end.wrapping_add(100), 90, false, &mut out);
    let (x, other) = exchanges(out);
    assert_eq!(summary(&x), vec![("GET", "/slow".into(), 200, 10, 90)]);
    assert!(other.is_empty());
    assert_eq!(p.waiting_for_transmission(), 0);
}

/// A close-delimited response ends at the close at its last write, or when what that
/// write left unsent goes out; a wait the next write supersedes is counted; a reset ends
/// its request at the reset.
#[test]
fn waits_at_the_close_superseded_and_reset() {
    let mut p = Pairer::new(16);
    let mut out = vec![];
    p.on_data(&rx(10, b"GET /a HTTP/1.0\r\n\r\n"), || "svc".into(), &mut out);
    p.on_data(&tx_unsent(20, b"HTTP/1.0 200 OK\r\n\r\nbody until close", 500), || "svc".into(), &mut out);
    p.on_close(1, false, 25, &mut out);
    assert!(matches!(out[..], [Output::WaitsForTransmission]), "{out:?}");
    out.clear();
    p.on_sent(1, 500, 70, false, &mut out);
    let (x, _) = exchanges(std::mem::take(&mut out));
    assert_eq!(summary(&x), vec![("GET", "/a".into(), 200, 10, 70)]);

    let c = 2;
    p.on_data(&ev(c, 100, Direction::Recv, b"GET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"), || "svc".into(), &mut out);
    p.on_data(&tx_unsent_on(c, 110, OK_5, 1000), || "svc".into(), &mut out);
    p.on_data(&tx_unsent_on(c, 120, OK_5, 1040), || "svc".into(), &mut out);
    p.on_sent(c, 1000, 120, true, &mut out);
    p.on_sent(c, 1040, 150, false, &mut out);
    let (x, other) = exchanges(std::mem::take(&mut out));
    assert_eq!(x.iter().map(|e| (e.start_ns, e.end_ns)).collect::<Vec<_>>(), vec![(100, 120), (100, 150)]);
    assert_eq!(other, vec!["superseded"]);

    let c = 3;
    p.on_data(&ev(c, 200, Direction::Recv, b"GET /d HTTP/1.1\r\n\r\n"), || "svc".into(), &mut out);
    p.on_data(&tx_unsent_on(c, 210, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart", 7), || "svc".into(), &mut out);
    p.on_close(c, true, 260, &mut out);
    let (x, _) = exchanges(std::mem::take(&mut out));
    assert_eq!((x[0].reset, x[0].end_ns), (true, 260));
    assert_eq!(p.waiting_for_transmission(), 0);
}

/// A wait whose news never came (events lost) ends at its write after the idle timeout,
/// counted as transmission_not_seen.
#[test]
fn a_wait_without_news_ends_at_its_write_after_the_idle_timeout() {
    let mut p = Pairer::new(16);
    let mut out = vec![];
    p.on_data(&rx(10, b"GET /a HTTP/1.1\r\n\r\n"), || "svc".into(), &mut out);
    p.on_data(&tx_unsent(20, OK_5, 9), || "svc".into(), &mut out);
    out.clear();
    p.evict_idle(500, 1_000, &mut out);
    assert!(out.is_empty());
    p.evict_idle(2_000, 1_000, &mut out);
    let (x, other) = exchanges(out);
    assert_eq!(summary(&x), vec![("GET", "/a".into(), 200, 10, 20)]);
    assert_eq!(other, vec!["transmission_not_seen"]);
}

/// A client connection's events, through the client pairer, closed at `close_ns` (`reset`,
/// or a FIN).
fn run_client(events: &[Data], reset: bool, close_ns: u64) -> (Vec<Exchange>, Vec<&'static str>) {
    run_on(Pairer::client(16), events, reset, close_ns)
}

/// On a client connection the writes are the requests and the reads the responses; a
/// request starts at its write (never an arrival stamp) and ends at the read of its
/// response's last byte; its Host header is kept.
#[test]
fn client_requests_are_writes_and_responses_reads() {
    let mut req = tx(10, b"POST /charge HTTP/1.1\r\nHost: payments:8443\r\nContent-Length: 4\r\n\r\n");
    req.arrival_ns = 3; // never used for a client's request
    let (x, other) = run_client(
        &[
            req,
            tx(11, b"body"),
            rx(40, b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nhello"),
            rx(55, b"world"),
            tx(60, b"GET /rates HTTP/1.1\r\nHost: payments:8443\r\n\r\n"),
            rx(70, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
        ],
        false,
        100,
    );
    assert_eq!(summary(&x), vec![("POST", "/charge".into(), 201, 10, 55), ("GET", "/rates".into(), 503, 60, 70)]);
    assert_eq!((x[0].request_body_bytes, x[0].response_body_bytes, x[0].first_byte_ns), (4, 10, 40));
    let Head::Read(line) = &x[0].head else { panic!("read") };
    assert_eq!(line.host.as_deref(), Some(&b"payments:8443"[..]));
    assert!(x.iter().all(|e| !e.reset) && other.is_empty(), "{other:?}");
}

/// A client's request left unanswered when its connection closes is measured up to the
/// close, as cut short, whether the close was a reset, the server's FIN or the target's
/// own (it gave up): never a request lost.
#[test]
fn unanswered_client_requests_end_at_the_close() {
    for reset in [true, false] {
        let (x, other) = run_client(
            &[
                tx(10, b"GET /slow HTTP/1.1\r\nHost: up\r\n\r\n"),
                rx(20, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
            ],
            reset,
            90,
        );
        assert_eq!((x.len(), x[0].status, x[0].reset, x[0].start_ns, x[0].end_ns), (1, Some(200), true, 10, 90), "reset {reset}");
        assert!(other.is_empty());
        let (x, _) = run_client(&[tx(10, b"GET /none HTTP/1.1\r\nHost: up\r\n\r\n")], reset, 300);
        assert_eq!((x[0].status, x[0].reset, x[0].end_ns), (None, true, 300), "reset {reset}");
    }
}
