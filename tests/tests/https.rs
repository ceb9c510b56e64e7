//! HTTPS through the TLS library's uprobes (the full mixes over TLS are in nginx.rs,
//! gunicorn_django.rs and node_http.rs, `Bind::Tls`): what is not a request on a TLS port
//! is counted under a reason and never as a request, Go's crypto/tls is reported as not
//! covered, and a TLS server that is not a target is not measured.
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    time::Duration,
};

use anyhow::Result;
use testkit::{
    client::{Conn, Endpoint, Stream},
    procs::Agent,
    servers::{Bind, NginxSite, go, nginx},
    workload::{Workload, assert_exact},
};

fn tcp(server: &Endpoint) -> Result<TcpStream> {
    let Endpoint::Tls(addr) = server else { anyhow::bail!("a TLS endpoint") };
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Reads until the server closes (or 10 s).
fn drain(mut s: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn bad_input_on_a_tls_port_is_counted_by_reason_never_as_requests() -> Result<()> {
    let server = nginx(Bind::Tls, &NginxSite { workers: 2, ..Default::default() })?;
    let agent = Agent::attach(server.pid())?;
    // Requests first (they mark the port as an HTTPS one), on keep-alive and on new
    // connections.
    let mut w = Workload::new(&server.endpoint);
    let mut c = Conn::connect(&server.endpoint)?;
    for _ in 0..4 {
        let r = c.get("/hello")?;
        w.record("GET", "/hello", &r);
    }
    drop(c);
    w.fresh_connections()?;
    assert_exact(&agent, &w, "nginx https")?;

    // 1. HTTP in clear to the HTTPS port: nginx answers 400 in clear.
    let mut s = tcp(&server.endpoint)?;
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let answer = drain(s);
    assert!(answer.starts_with(b"HTTP/1.1 400"), "nginx's answer to HTTP on its HTTPS port: {:?}", String::from_utf8_lossy(&answer));
    // 2. A handshake that fails: a record header, then bytes that are no ClientHello.
    let mut s = tcp(&server.endpoint)?;
    s.write_all(b"\x16\x03\x01\x00\x20")?;
    s.write_all(&[0x42; 32])?;
    drain(s);
    // 3. A client that gives up in the middle of its ClientHello.
    let mut s = tcp(&server.endpoint)?;
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")?;
    std::thread::sleep(Duration::from_millis(100));
    s.shutdown(Shutdown::Both)?;
    // 4. A handshake, then no request.
    let s = Stream::connect(&server.endpoint)?;
    s.shutdown(Shutdown::Both)?;

    let m = agent.wait_metrics("the four bad connections counted", |m| {
        m.sum("redprobe_connections_other_protocol_total", &[("protocol", "http_on_tls_port")]) >= 1.0
            && m.sum("redprobe_tls_connections_unmeasured_total", &[]) >= 3.0
    })?;
    // Let late closes arrive before the exact check.
    std::thread::sleep(Duration::from_millis(500));
    let m = agent.metrics().unwrap_or(m);
    let unmeasured = |reason| m.sum("redprobe_tls_connections_unmeasured_total", &[("reason", reason)]);
    assert_eq!(m.sum("redprobe_connections_other_protocol_total", &[("protocol", "http_on_tls_port")]), 1.0);
    assert_eq!(unmeasured("handshake_incomplete"), 2.0, "a failed handshake and a client that gave up in it");
    assert_eq!(unmeasured("no_request"), 1.0, "a handshake and no request");
    assert_eq!(unmeasured("library_not_probed"), 0.0);
    // Nothing of it became a request, or an unparsed one.
    assert_eq!(m.request_counts(), w.truth, "requests after the bad input");
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    assert_eq!(m.sum("redprobe_tls_libraries_unprobed_total", &[]), 0.0);
    assert_eq!(m.sum("redprobe_tls_probed_processes", &[]), 3.0, "nginx's master and its two workers");
    Ok(())
}

#[test]
fn go_crypto_tls_is_reported_as_not_covered() -> Result<()> {
    let server = go(Bind::Tls)?;
    let agent = Agent::attach(server.pid())?;
    let mut c = Conn::connect(&server.endpoint)?;
    for _ in 0..3 {
        assert_eq!(c.get("/hello")?.status, 200);
    }
    drop(c);
    let m = agent.wait_metrics("Go's TLS connection counted at its close", |m| {
        m.sum("redprobe_tls_connections_unmeasured_total", &[("reason", "library_not_probed")]) >= 1.0
    })?;
    assert_eq!(m.sum("redprobe_tls_libraries_unprobed_total", &[("reason", "go_crypto_tls")]), 1.0);
    assert_eq!(m.sum("http_server_request_duration_seconds_count", &[]), 0.0, "no HTTPS request of Go measured");
    assert_eq!(m.sum("redprobe_connections_other_protocol_total", &[]), 0.0);
    Ok(())
}

#[test]
fn a_tls_server_that_is_not_a_target_is_not_measured() -> Result<()> {
    let target = nginx(Bind::Tls, &NginxSite { workers: 1, ..Default::default() })?;
    let other = nginx(Bind::Tls, &NginxSite { workers: 1, ..Default::default() })?;
    let agent = Agent::attach(target.pid())?;
    let mut w = Workload::new(&target.endpoint);
    let mut mine = Conn::connect(&target.endpoint)?;
    let mut theirs = Conn::connect(&other.endpoint)?;
    for _ in 0..5 {
        let r = mine.get("/hello")?;
        w.record("GET", "/hello", &r);
        assert_eq!(theirs.get("/missing")?.status, 404);
    }
    let m = assert_exact(&agent, &w, "nginx https next to another")?;
    assert_eq!(m.sum("http_server_request_duration_seconds_count", &[("http_route", "/missing")]), 0.0);
    assert_eq!(m.sum("redprobe_tls_probed_processes", &[]), 2.0, "the target's master and worker only");
    Ok(())
}
