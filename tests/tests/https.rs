//! HTTPS through the TLS library's uprobes (the full mixes over TLS are in nginx.rs,
//! gunicorn_django.rs, node_http.rs and go_net_http.rs, `Bind::Tls`): what is not a
//! request on a TLS port is counted under a reason and never as a request, on OpenSSL
//! (nginx) and on Go's crypto/tls; and a TLS server that is not a target is not measured.
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    time::Duration,
};

use anyhow::Result;
use testkit::{
    client::{Conn, Endpoint, Stream},
    procs::Agent,
    servers::{Bind, NginxSite, RealServer, go, nginx},
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

/// `processes`: the targets whose TLS library is probed (nginx: master and 2 workers).
fn bad_input(server: RealServer, processes: f64) -> Result<()> {
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
    assert_exact(&agent, &w, &format!("{} https", server.name))?;

    // 1. HTTP in clear to the HTTPS port: nginx and Go answer 400 in clear.
    let mut s = tcp(&server.endpoint)?;
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let answer = String::from_utf8_lossy(&drain(s)).to_string();
    assert!(answer.starts_with("HTTP/1.") && answer.contains(" 400 "), "the answer to HTTP on an HTTPS port: {answer:?}");
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
    assert_eq!(m.sum("redprobe_tls_probed_processes", &[]), processes, "targets with their TLS library probed");
    Ok(())
}

#[test]
fn bad_input_on_an_nginx_https_port_is_counted_by_reason_never_as_requests() -> Result<()> {
    bad_input(nginx(Bind::Tls, &NginxSite { workers: 2, ..Default::default() })?, 3.0)
}

#[test]
fn bad_input_on_a_go_https_port_is_counted_by_reason_never_as_requests() -> Result<()> {
    bad_input(go(Bind::Tls)?, 1.0)
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
