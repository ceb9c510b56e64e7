//! HTTP/2 servers measured per stream, against h2load's own counts: Node's `http2`, nghttpd
//! and hypercorn over h2c with prior knowledge, Node and nginx over TLS (ALPN h2), with
//! concurrent streams; and bad input (a preface followed by garbage, a header block that
//! does not decode, a stream the client resets mid-response, 10,000 streams on one
//! connection), each counted under its reason and never as a request.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Result, ensure};
use testkit::{
    client::Endpoint,
    h2::{h2load, url},
    procs::Agent,
    scrape::Metrics,
    servers::{Bind, NginxSite, RealServer, hypercorn, nghttpd, nginx, nginx_h2_tls, node_h2},
};

/// One h2load run: `n` requests of `path`, over `clients` connections of up to `m`
/// concurrent streams, whose answers are `status` under `route`.
struct Run<'a> {
    path: &'a str,
    route: &'a str,
    status: u16,
    n: u32,
    m: u32,
    clients: u32,
    extra: &'a [&'a str],
}

fn run<'a>(path: &'a str, route: &'a str, status: u16) -> Run<'a> {
    Run { path, route, status, n: 300, m: 10, clients: 2, extra: &[] }
}

/// (route, status) -> requests counted over HTTP/2, with `scheme`.
fn h2_counts(m: &Metrics, scheme: &str) -> BTreeMap<(String, u16), u64> {
    let mut out = BTreeMap::new();
    for s in m.series("http_server_request_duration_seconds_count") {
        if s.label("network_protocol_version") == "2" && s.label("url_scheme") == scheme && s.value > 0.0 {
            let key = (s.label("http_route").to_string(), s.label("http_response_status_code").parse().unwrap_or(0));
            *out.entry(key).or_insert(0) += s.value as u64;
        }
    }
    out
}

/// Runs each of `runs` with h2load and checks the agent counted exactly what h2load saw.
fn exact(server: &RealServer, agent: &Agent, runs: &[Run<'_>]) -> Result<()> {
    let scheme = if matches!(server.endpoint, Endpoint::Tls(_)) { "https" } else { "http" };
    let mut want: BTreeMap<(String, u16), u64> = BTreeMap::new();
    for r in runs {
        let report = h2load(&url(&server.endpoint, r.path)?, r.n, r.m, r.clients, r.extra)?;
        let answered = match r.status / 100 {
            2 => report.status_2xx,
            3 => report.status_3xx,
            4 => report.status_4xx,
            _ => report.status_5xx,
        };
        ensure!(
            report.done == r.n as u64 && answered == r.n as u64 && report.errored == 0,
            "{} {}: h2load did not get {} answers {}:\n{}",
            server.name,
            r.path,
            r.n,
            r.status,
            report.output
        );
        ensure!(report.protocol.starts_with("h2"), "{}: h2load spoke {:?}, not HTTP/2", server.name, report.protocol);
        *want.entry((r.route.to_string(), r.status)).or_insert(0) += answered;
    }
    let total: u64 = want.values().sum();
    let m = agent.wait_metrics(&format!("{} requests of {}", total, server.name), |m| {
        h2_counts(m, scheme).values().sum::<u64>() >= total
    })?;
    assert_eq!(h2_counts(&m, scheme), want, "{}: the agent's HTTP/2 requests against h2load's", server.name);
    // Each stream was paired by the agent as an HTTP/2 one, and nothing was lost or unparsed.
    assert_eq!(m.sum("redprobe_requests_paired_total", &[("reason", "http2")]), total as f64);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0, "{}", unparsed(&m));
    assert_eq!(m.sum("redprobe_http2_connections_undecodable_total", &[]), 0.0);
    Ok(())
}

fn unparsed(m: &Metrics) -> String {
    m.series("redprobe_requests_unparsed_total").filter(|s| s.value > 0.0).map(|s| format!("{s:?}\n")).collect()
}

#[test]
fn node_http2_prior_knowledge() -> Result<()> {
    let server = node_h2(Bind::V4)?;
    let agent = Agent::attach(server.pid())?;
    let post = Run { extra: &["-d", "/etc/services"], ..run("/items/42", "/items/{id}", 200) };
    exact(&server, &agent, &[
        run("/", "/", 200),
        run("/items/7", "/items/{id}", 200),
        run("/status/503", "/status/{id}", 503),
        run("/status/404", "/status/{id}", 404),
        post,
        // 200 KiB bodies in 16 KiB DATA frames, in writes of several MB: the kernel skips the
        // DATA payloads and walks the frames.
        Run { n: 60, ..run("/big", "/big", 200) },
        // 100 concurrent streams: a write holds many responses.
        Run { n: 3000, m: 100, clients: 3, ..run("/", "/", 200) },
    ])
}

#[test]
fn node_http2_over_tls() -> Result<()> {
    let server = node_h2(Bind::Tls)?;
    let agent = Agent::attach(server.pid())?;
    exact(&server, &agent, &[run("/", "/", 200), run("/status/500", "/status/{id}", 500), Run { n: 40, ..run("/big", "/big", 200) }])
}

#[test]
fn nghttpd_prior_knowledge() -> Result<()> {
    let server = nghttpd(Bind::V4)?;
    let agent = Agent::attach(server.pid())?;
    exact(&server, &agent, &[
        run("/", "/", 200),
        run("/items/2", "/items/{id}", 200),
        run("/missing", "/missing", 404),
        Run { n: 60, ..run("/big", "/big", 200) },
    ])
}

#[test]
fn hypercorn_prior_knowledge() -> Result<()> {
    let server = hypercorn(Bind::V4)?;
    let agent = Agent::attach(server.pid())?;
    exact(&server, &agent, &[run("/", "/", 200), run("/items/9", "/items/{id}", 200), run("/status/502", "/status/{id}", 502)])
}

#[test]
fn nginx_http2_over_tls() -> Result<()> {
    let server = nginx_h2_tls()?;
    let agent = Agent::attach(server.pid())?;
    exact(&server, &agent, &[run("/", "/", 200), run("/items/5", "/items/{id}", 200), run("/status/503", "/status/{id}", 503)])
}

/// nginx's cleartext HTTP/2 sends a file's DATA payloads with sendfile: the kernel, which
/// reads no bytes of a sendfile, knows they are inside a DATA payload and goes on.
#[test]
fn nginx_http2_cleartext_with_sendfile() -> Result<()> {
    let server = nginx(Bind::V4, &NginxSite { workers: 1, http2: true, ..Default::default() })?;
    let agent = Agent::attach(server.pid())?;
    exact(&server, &agent, &[run("/", "/", 200), Run { n: 100, ..run("/big", "/big", 200) }, run("/status/503", "/status/{id}", 503)])
}

/// A frame: its header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

/// A GET of `path` as an HPACK block with no dynamic table: `:method GET`, `:scheme http`
/// (static indices 2 and 6), `:path` as a literal without indexing (name index 4) and
/// `:authority` as one (name index 1).
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x04, path.len() as u8];
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, 9]);
    b.extend_from_slice(b"localhost");
    b
}

fn connect(server: &RealServer) -> Result<TcpStream> {
    let Endpoint::Tcp(addr) = &server.endpoint else { anyhow::bail!("a TCP endpoint") };
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Reads what the server sends until it closes or is quiet for `quiet`.
fn read_for(s: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    let _ = s.set_read_timeout(Some(quiet));
    let mut got = vec![];
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn bad_input_is_counted_under_its_reason() -> Result<()> {
    let server = node_h2(Bind::V4)?;
    let agent = Agent::attach(server.pid())?;

    // 1. The preface, then garbage: the server answers with a GOAWAY and closes.
    let mut s = connect(&server)?;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\ngarbage garbage garbage")?;
    read_for(&mut s, Duration::from_secs(2));
    drop(s);

    // 2. A request, then a header block that does not decode (index 70 of an empty dynamic
    //    table), then another request: the compression state is lost from the second on.
    let mut s = connect(&server)?;
    s.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, b""), &frame(HEADERS, END_HEADERS | END_STREAM, 1, &get_block("/"))].concat())?;
    read_for(&mut s, Duration::from_millis(500));
    // Both in one write, read at once: the server closes after the first.
    s.write_all(&[frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x80 | 70]), frame(HEADERS, END_HEADERS | END_STREAM, 5, &get_block("/"))].concat())?;
    read_for(&mut s, Duration::from_secs(1));
    drop(s);

    // 3. The client resets a stream while its response is being written (a slow one).
    let mut s = connect(&server)?;
    s.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, b""), &frame(HEADERS, END_HEADERS | END_STREAM, 1, &get_block("/slow?ms=300"))].concat())?;
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()))?;
    // Then a request on the same connection, answered.
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &get_block("/items/1")))?;
    read_for(&mut s, Duration::from_secs(1));
    drop(s);

    let m = agent.wait_metrics("the bad input counted", |m| {
        m.sum("redprobe_http2_connections_undecodable_total", &[]) >= 2.0
            && m.sum("redprobe_http2_streams_reset_total", &[("sender", "client")]) >= 1.0
            && h2_counts(m, "http").values().sum::<u64>() >= 3
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let m = agent.metrics().unwrap_or(m);
    let undecodable = |r| m.sum("redprobe_http2_connections_undecodable_total", &[("reason", r)]);
    assert_eq!(undecodable("bad_preface"), 1.0);
    assert_eq!(undecodable("header_block"), 1.0);
    assert_eq!(m.sum("redprobe_http2_connections_undecodable_total", &[]), 2.0);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[("reason", "http2_headers_undecoded")]), 2.0, "{}", unparsed(&m));
    assert_eq!(m.sum("redprobe_http2_streams_reset_total", &[("sender", "client"), ("error_code", "cancel")]), 1.0);
    // The decodable requests are measured; the one reset is measured up to the reset.
    let want: BTreeMap<(String, u16), u64> =
        [(("/".to_string(), 200), 1), (("/items/{id}".to_string(), 200), 1)].into_iter().collect();
    let answered: BTreeMap<(String, u16), u64> = h2_counts(&m, "http").into_iter().filter(|(k, _)| k.1 != 0).collect();
    assert_eq!(answered, want);
    assert_eq!(
        m.sum(
            "http_server_request_duration_seconds_count",
            &[("http_route", "/slow"), ("error_type", "connection_reset"), ("network_protocol_version", "2")]
        ),
        1.0
    );
    Ok(())
}

#[test]
fn ten_thousand_streams_on_one_connection() -> Result<()> {
    let server = node_h2(Bind::V4)?;
    let agent = Agent::attach(server.pid())?;
    exact(&server, &agent, &[Run { n: 10_000, m: 100, clients: 1, ..run("/items/3", "/items/{id}", 200) }])
}

#[test]
fn a_connection_opened_before_the_agent_is_counted_not_guessed() -> Result<()> {
    let server = node_h2(Bind::V4)?;
    let mut s = connect(&server)?;
    s.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, b""), &frame(HEADERS, END_HEADERS | END_STREAM, 1, &get_block("/"))].concat())?;
    read_for(&mut s, Duration::from_millis(500));
    let agent = Agent::attach(server.pid())?;
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &get_block("/")))?;
    read_for(&mut s, Duration::from_millis(500));
    let m = agent.wait_metrics("the mid-stream connection", |m| {
        m.sum("redprobe_connections_other_protocol_total", &[("protocol", "http2_mid_stream")]) >= 1.0
    })?;
    assert_eq!(m.sum("redprobe_connections_other_protocol_total", &[("protocol", "http2_mid_stream")]), 1.0);
    assert_eq!(h2_counts(&m, "http").values().sum::<u64>(), 0, "nothing guessed");
    Ok(())
}

/// Runs `nghttp -u -n -s` (h2c by Upgrade: the first URL is the HTTP/1.1 request upgraded to
/// stream 1) and reads its statistics: (status, path) of each response it got.
fn nghttp_upgrade(urls: &[String]) -> Result<Vec<(u16, String)>> {
    let out = std::process::Command::new("nghttp").args(["-u", "-n", "-s"]).args(urls).output()?;
    ensure!(out.status.success(), "nghttp failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rows: Vec<(u16, String)> = text
        .lines()
        .skip_while(|l| !l.starts_with("id "))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((cols.get(4)?.parse().ok()?, cols.get(6)?.to_string()))
        })
        .collect();
    ensure!(rows.len() == urls.len(), "nghttp did not get every response:\n{text}");
    Ok(rows)
}

#[test]
fn hypercorn_h2c_by_upgrade() -> Result<()> {
    let server = hypercorn(Bind::V4)?;
    let agent = Agent::attach(server.pid())?;
    let urls: Vec<String> =
        ["/items/1", "/status/404", "/"].iter().map(|p| url(&server.endpoint, p)).collect::<Result<_>>()?;
    let mut want: BTreeMap<(String, u16), u64> = BTreeMap::new();
    for _ in 0..5 {
        for (status, path) in nghttp_upgrade(&urls)? {
            let route = match path.as_str() {
                "/items/1" => "/items/{id}",
                "/status/404" => "/status/{id}",
                p => p,
            };
            *want.entry((route.to_string(), status)).or_insert(0) += 1;
        }
    }
    let m = agent.wait_metrics("15 requests over h2c by Upgrade", |m| h2_counts(m, "http").values().sum::<u64>() >= 15)?;
    // The upgraded request (stream 1) is an HTTP/2 request too, answered in frames.
    assert_eq!(h2_counts(&m, "http"), want);
    assert_eq!(m.sum("http_server_request_duration_seconds_count", &[("network_protocol_version", "1.1")]), 0.0, "no 101 measured");
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0, "{}", unparsed(&m));
    Ok(())
}
