//! Bad input on the target's socket. In every case a bad client and a well-formed client
//! hit the same target at the same time; the well-formed counts must be exact, the agent
//! must keep serving /metrics, and what could not be measured must show up in
//! `redprobe_requests_unparsed_total` under its reason, once per bad request.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result};
use testkit::{
    client::Conn,
    procs::{Agent, Server},
    scrape::Metrics,
    workload::{Counts, add, add_n},
};

/// The well-formed client: 40 requests on one keep-alive connection.
fn good_traffic(port: u16) -> Result<Counts> {
    let mut truth = Counts::new();
    let mut conn = Conn::open(port)?;
    for i in 0..40 {
        let (path, status, route) = match i % 4 {
            0 => ("/hello".to_string(), 200, "/hello"),
            1 => (format!("/users/{i}"), 200, "/users/{id}"),
            2 => ("/error".to_string(), 500, "/error"),
            _ => ("/sleep?ms=5".to_string(), 200, "/sleep"),
        };
        assert_eq!(conn.get(&path)?.status, status);
        add(&mut truth, "GET", status, route);
    }
    Ok(truth)
}

/// What the bad client does after writing its bytes.
#[derive(Clone, Copy)]
enum Then {
    /// Shut the write side (the server sees EOF), read the answer until the server closes.
    ShutdownAndRead,
    /// Close at once, without reading.
    Close,
}

/// Writes `bytes` on a fresh connection; returns the server's answer (first line).
fn bad_client(port: u16, bytes: &[u8], then: Then) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(bytes)?;
    match then {
        Then::Close => Ok(String::new()),
        Then::ShutdownAndRead => {
            s.shutdown(Shutdown::Write)?;
            let mut answer = vec![];
            let _ = s.read_to_end(&mut answer); // a reset after the answer is fine
            Ok(String::from_utf8_lossy(&answer).lines().next().unwrap_or("").chars().take(60).collect())
        }
    }
}

/// A bad client that sends `bytes` and shuts down its side, whatever the answer.
fn sends(bytes: &[u8]) -> impl FnOnce(u16) -> Result<()> + '_ {
    move |port| bad_client(port, bytes, Then::ShutdownAndRead).map(drop)
}

/// A bad client that sends `bytes`, shuts down its side and expects an answer starting
/// with `status_line`.
fn answered_with<'a>(bytes: &'a [u8], status_line: &'a str) -> impl FnOnce(u16) -> Result<()> + 'a {
    move |port| {
        let answer = bad_client(port, bytes, Then::ShutdownAndRead)?;
        assert!(answer.starts_with(status_line), "{answer}");
        Ok(())
    }
}

/// One bad-input case: runs `bad` beside the well-formed client, then checks that the
/// counts are the well-formed ones plus `extra` (requests the bad client made that are
/// measurable), and that the unparsed counters are exactly `reasons` (a connection of
/// another protocol, never a request, is `protocol=P` there).
fn case(bad: impl FnOnce(u16) -> Result<()>, extra: &[((&str, u16, &str), u64)], reasons: &[(&str, f64)]) -> Result<()> {
    case_with_outcomes(bad, &[(extra, reasons)]).map(drop)
}

/// Requests the bad client made that are measured, and the unparsed counts by reason.
type Outcome<'a> = (&'a [((&'a str, u16, &'a str), u64)], &'a [(&'a str, f64)]);

/// Like `case`, when the kernel may see the bad exchange in one of several ways; the
/// metrics that matched one.
fn case_with_outcomes(bad: impl FnOnce(u16) -> Result<()>, outcomes: &[Outcome<'_>]) -> Result<Metrics> {
    let server = Server::start_python()?;
    let mut agent = Agent::attach(server.pid())?;
    let port = server.port;
    let good = std::thread::spawn(move || good_traffic(port));
    bad(port)?;
    let good = good.join().expect("well-formed client")?;
    let wants: Vec<(Counts, BTreeMap<String, f64>)> = outcomes
        .iter()
        .map(|(extra, reasons)| {
            let mut truth = good.clone();
            for ((m, s, r), n) in extra.iter() {
                add_n(&mut truth, m, *s, r, *n);
            }
            (truth, reasons.iter().map(|(r, n)| (r.to_string(), *n)).collect())
        })
        .collect();
    // Unparsed requests by reason, and connections of another protocol as "protocol=P".
    let unparsed = |m: &Metrics| -> BTreeMap<String, f64> {
        let reasons = m.series("redprobe_requests_unparsed_total").map(|s| (s.label("reason").to_string(), s.value));
        let protocols = m
            .series("redprobe_connections_other_protocol_total")
            .map(|s| (format!("protocol={}", s.label("protocol")), s.value));
        reasons.chain(protocols).filter(|(_, v)| *v > 0.0).collect()
    };
    let result = agent.wait_metrics("exact counts and reasons", |m| {
        wants.iter().any(|(truth, want)| m.request_counts() == *truth && unparsed(m) == *want)
    });
    let m = match result {
        Ok(m) => m,
        Err(e) => {
            let m = agent.metrics()?;
            anyhow::bail!("counts {:#?}\nunparsed {:?}\nwant one of {wants:#?}\n{e}", m.request_counts(), unparsed(&m));
        }
    };
    assert_eq!(m.sum("redprobe_events_lost_total", &[]), 0.0);
    assert!(agent.child.try_wait()?.is_none(), "the agent must keep running");
    eprintln!("counted {:?}; unparsed {:?}", m.request_counts(), unparsed(&m));
    Ok(m)
}

#[test]
fn bad_input_garbage_bytes() -> Result<()> {
    case(sends(b"hello there, this is not http\r\n\r\n"), &[], &[("protocol=not_http", 1.0)])
}

#[test]
fn bad_input_binary_bytes() -> Result<()> {
    let bytes: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    case(sends(&bytes), &[], &[("protocol=binary", 1.0)])
}

#[test]
fn bad_input_tls_client_hello_on_the_plain_port() -> Result<()> {
    // A TLS 1.2/1.3 ClientHello record: handshake type 1, 512 bytes of body.
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    hello.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    hello.resize(5 + 512, 0);
    case(sends(&hello), &[], &[("protocol=tls", 1.0)])
}

#[test]
fn bad_input_head_larger_than_the_capture_window() -> Result<()> {
    // 16 KB of cookies: the request line is in the window, so it is measured.
    let mut head = b"GET /hello HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..16 {
        head.extend(format!("Cookie: c{i}={}\r\n", "v".repeat(1000)).as_bytes());
    }
    head.extend(b"\r\n");
    case(answered_with(&head, "HTTP/1.1 200"), &[(("GET", 200, "/hello"), 1)], &[])
}

#[test]
fn bad_input_header_with_no_end() -> Result<()> {
    // A header line that never ends: the server gives up with 431, measured by the
    // request line.
    let mut head = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-No-End: ".to_vec();
    head.extend(vec![b'a'; 70_000]);
    case(answered_with(&head, "HTTP/1.1 431"), &[(("GET", 431, "/hello"), 1)], &[])
}

#[test]
fn bad_input_half_sent_request_then_close() -> Result<()> {
    // Half a head then a full close: the server reads EOF, which ends the head for it,
    // and answers to the closed socket. On loopback the client's reset usually closes the
    // server's socket inside that very write, before the write's event, so the request is
    // counted as head_incomplete; if the answer is seen first, the request is measured by
    // it. Either way: one count.
    case_with_outcomes(
        |port| {
            bad_client(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n", Then::Close)?;
            Ok(())
        },
        &[(&[], &[("head_incomplete", 1.0)]), (&[(("GET", 200, "/hello"), 1)], &[("response_incomplete", 1.0)])],
    )
    .map(drop)
}

#[test]
fn bad_input_response_never_finished() -> Result<()> {
    case(answered_with(b"GET /partial?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200"), &[], &[("response_incomplete", 1.0)])
}

#[test]
fn bad_input_a_hundred_pipelined_requests() -> Result<()> {
    // 100 requests in one write: those whose request line is in the first 512 bytes of
    // the server's read are measured, each of the others by its response alone (its
    // status and duration; method and route unknown).
    let one = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let line = b"GET /hello HTTP/1.1\r\n".len();
    let in_window = ((512 - line) / one.len() + 1) as u64;
    case(
        |port| {
            let mut conn = Conn::open(port)?;
            conn.stream().write_all(&one.repeat(100))?;
            for _ in 0..100 {
                assert_eq!(conn.read_response(false)?.status, 200);
            }
            Ok(())
        },
        &[(("GET", 200, "/hello"), in_window), (("_OTHER", 200, "_unknown"), 100 - in_window)],
        &[],
    )
}

#[test]
fn bad_input_method_of_one_kilobyte() -> Result<()> {
    let mut line = b"POST".repeat(256);
    line.extend(b" /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    case(answered_with(&line, "HTTP/1.1 501"), &[], &[("head_too_large", 1.0)])
}

#[test]
fn bad_input_path_of_64_kilobytes() -> Result<()> {
    let line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(64 * 1024));
    case(answered_with(line.as_bytes(), "HTTP/1.1 414"), &[], &[("head_too_large", 1.0)])
}

#[test]
fn bad_input_invalid_utf8_in_the_path() -> Result<()> {
    // Measured: the route label holds U+FFFD where the bytes were not UTF-8.
    let m = case_with_outcomes(
        answered_with(b"GET /caf\xe9/\xff\xfe?x=\xc3 HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404"),
        &[(&[(("GET", 404, "/caf\u{fffd}/\u{fffd}\u{fffd}"), 1)], &[])],
    )?;
    assert!(std::str::from_utf8(m.text.as_bytes()).is_ok());
    Ok(())
}

#[test]
fn bad_input_nul_bytes() -> Result<()> {
    case(
        |port| {
            for bytes in [&b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"GET /hello HTTP/1.1\r\nHost: x\x00y\r\n\r\n"] {
                let answer = bad_client(port, bytes, Then::ShutdownAndRead)?;
                assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
            }
            // NUL bytes before anything else: binary.
            bad_client(port, b"\x00\x00\x00\x00GET / HTTP/1.1\r\n\r\n", Then::ShutdownAndRead)?;
            Ok(())
        },
        &[],
        &[("malformed_request", 2.0), ("protocol=binary", 1.0)],
    )
    .context("NUL in a path, in a header, and first")
}
