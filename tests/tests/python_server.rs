//! End to end on a real Python threaded HTTP server: the real probe attached by PID, a
//! known workload, exact counts per (method, status, route) and latency buckets.
use anyhow::Result;
use testkit::{
    client::{Conn, one_shot},
    procs::{Agent, Server},
    workload::{Counts, add},
};


/// Sends the known mix; returns what the client saw.
fn workload(port: u16) -> Result<Counts> {
    let mut truth = Counts::new();
    // Keep-alive: many requests on one connection.
    let mut conn = Conn::open(port)?;
    for _ in 0..5 {
        assert_eq!(conn.get("/hello")?.status, 200);
        add(&mut truth, "GET", 200, "/hello");
    }
    for id in [1, 22, 333] {
        assert_eq!(conn.get(&format!("/users/{id}?tab=x"))?.status, 200);
        add(&mut truth, "GET", 200, "/users/{id}");
    }
    for _ in 0..3 {
        assert_eq!(conn.get("/missing")?.status, 404);
        add(&mut truth, "GET", 404, "/missing");
    }
    for _ in 0..2 {
        assert_eq!(conn.get("/error")?.status, 500);
        add(&mut truth, "GET", 500, "/error");
    }
    for _ in 0..2 {
        let r = conn.get("/sleep?ms=60")?;
        assert_eq!(r.status, 200);
        add(&mut truth, "GET", 200, "/sleep");
    }
    for size in [10usize, 5000] {
        let r = conn.request("POST", "/echo", "HTTP/1.1", &[], &vec![b'p'; size])?;
        assert_eq!((r.status, r.body.clone()), (201, format!("{size}\n").into_bytes()));
        add(&mut truth, "POST", 201, "/echo");
    }
    for _ in 0..2 {
        let r = conn.get("/chunked")?;
        assert_eq!(r.status, 200);
        assert!(r.body.ends_with(b"third\n"));
        add(&mut truth, "GET", 200, "/chunked");
    }
    let r = conn.get("/big?kb=1024")?;
    assert_eq!(r.body.len(), 1024 * 1024);
    add(&mut truth, "GET", 200, "/big");
    let r = conn.request("HEAD", "/hello", "HTTP/1.1", &[], b"")?;
    assert_eq!(r.status, 200);
    add(&mut truth, "HEAD", 200, "/hello");
    // Connection: close, a new connection each.
    for _ in 0..4 {
        assert_eq!(one_shot(port, "GET", "/hello", "HTTP/1.1")?.status, 200);
        add(&mut truth, "GET", 200, "/hello");
    }
    // HTTP/1.0 without keep-alive.
    for _ in 0..2 {
        let r = one_shot(port, "GET", "/missing", "HTTP/1.0")?;
        assert_eq!(r.status, 404);
        add(&mut truth, "GET", 404, "/missing");
    }
    // A response delimited by the server closing the connection.
    let r = one_shot(port, "GET", "/http10", "HTTP/1.1")?;
    assert!(r.closed);
    add(&mut truth, "GET", 200, "/http10");
    Ok(truth)
}

#[test]
fn exact_counts_and_latency_buckets_for_a_python_server() -> Result<()> {
    let server = Server::start_python()?;
    let other = Server::start_python()?; // not a target
    let agent = Agent::attach(server.pid())?;

    // Traffic to the non-target server at the same time.
    let other_port = other.port;
    let noise = std::thread::spawn(move || -> Result<()> {
        let mut conn = Conn::open(other_port)?;
        for _ in 0..50 {
            conn.get("/users/not-a-target-route")?;
            conn.get("/hello")?;
        }
        Ok(())
    });
    let truth = workload(server.port)?;
    noise.join().expect("noise thread")?;
    let total: u64 = truth.values().sum();

    let m = agent.wait_metrics("all requests counted", |m| m.request_counts().values().sum::<u64>() >= total)?;
    assert_eq!(m.request_counts(), truth, "probe counts != client truth");
    assert!(!m.text.contains("not-a-target-route"), "the non-target server leaked into the metrics");

    // 60 ms sleeps: nothing at or below 0.05 s, both at or below 0.1 s.
    let buckets = m.buckets("/sleep");
    let le = |b: f64| buckets.iter().find(|(le, _)| (*le - b).abs() < 1e-9).map(|(_, c)| *c).unwrap_or(-1.0);
    assert_eq!((le(0.05), le(0.1)), (0.0, 2.0), "sleep buckets: {buckets:?}");
    // Labels: protocol version of the HTTP/1.0 requests.
    assert_eq!(m.sum("http_server_request_duration_seconds_count", &[("network_protocol_version", "1.0")]), 2.0);
    assert_eq!(m.sum("redprobe_events_lost_total", &[]), 0.0);
    // Every request was paired once, by the kernel or by the agent.
    assert_eq!(m.sum("redprobe_requests_paired_total", &[]), total as f64);
    assert!(m.sum("redprobe_requests_paired_total", &[("pairer", "kernel")]) > 0.0);
    Ok(())
}

#[test]
fn connection_opened_before_attach_counts_from_its_next_request() -> Result<()> {
    let server = Server::start_python()?;
    let mut early = Conn::open(server.port)?;
    assert_eq!(early.get("/hello")?.status, 200); // before the agent: not counted
    let agent = Agent::attach(server.pid())?;
    early.get_ok("/hello", 3)?;
    assert_eq!(early.get("/missing")?.status, 404);
    let m = agent.wait_metrics("4 requests", |m| m.request_counts().values().sum::<u64>() >= 4)?;
    let mut want = Counts::new();
    for _ in 0..3 {
        add(&mut want, "GET", 200, "/hello");
    }
    add(&mut want, "GET", 404, "/missing");
    assert_eq!(m.request_counts(), want);
    Ok(())
}

#[test]
fn garbage_and_tls_are_other_protocols_not_requests() -> Result<()> {
    use std::io::Write;
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    // A TLS ClientHello on the plain port, then binary garbage, each on its own connection.
    for bytes in [&b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..], &b"\x00\x01\x02\x03garbage\xff\r\n\r\n"[..]] {
        let mut c = Conn::open(server.port)?;
        c.stream().write_all(bytes)?;
        c.stream().shutdown(std::net::Shutdown::Write)?; // the server sees EOF and gives up
        let _ = c.read_response(false); // a 400 or a plain close
    }
    let mut ok = Conn::open(server.port)?;
    assert_eq!(ok.get("/hello")?.status, 200);
    let m = agent.wait_metrics("tls and binary reported", |m| {
        m.sum("redprobe_connections_other_protocol_total", &[("protocol", "tls")]) >= 1.0
            && m.sum("redprobe_connections_other_protocol_total", &[("protocol", "binary")]) >= 1.0
            && m.sum("redprobe_connections_classified_total", &[("role", "other")]) >= 2.0
            && m.requests("GET", 200, "/hello") == 1
    })?;
    let mut want = Counts::new();
    add(&mut want, "GET", 200, "/hello");
    assert_eq!(m.request_counts(), want, "garbage must not create request series");
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0, "another protocol is not an unparsed request");
    Ok(())
}

#[test]
fn python_m_http_server_static_files_keep_alive() -> Result<()> {
    use testkit::{
        servers::{Bind, http_server},
        workload::{Workload, assert_exact},
    };
    let page = vec![b'h'; 20_000];
    let server = http_server(Bind::V4, &[("page.html", &page), ("small.txt", b"small\n")])?;
    let agent = Agent::attach(server.pid())?;
    let mut w = Workload::new(&server.endpoint);
    w.pipelined_paths(&["/page.html", "/small.txt", "/page.html", "/nope.txt"])?;
    let mut c = Conn::connect(&server.endpoint)?;
    let r = c.request("HEAD", "/page.html", "HTTP/1.1", &[], b"")?;
    w.record("HEAD", "/page.html", &r);
    // The 404 comes last: http.server closes the connection after an error.
    for path in ["/small.txt", "/page.html", "/nope.txt"] {
        let r = c.get(path)?;
        w.record("GET", path, &r);
    }
    w.fresh_connections_to("/small.txt")?;
    assert_exact(&agent, &w, "python -m http.server")?;
    Ok(())
}

#[test]
fn msg_peek_reads_are_not_counted_twice() -> Result<()> {
    let mut cmd = Server::python_command("python3", 0);
    cmd.arg("--peek");
    let server = Server::start(cmd)?;
    let agent = Agent::attach(server.pid())?;
    let mut want = Counts::new();
    for _ in 0..3 {
        let mut c = Conn::open(server.port)?; // a peek at the start of each connection
        for _ in 0..2 {
            assert_eq!(c.get("/hello")?.status, 200);
            add(&mut want, "GET", 200, "/hello");
        }
    }
    let m = agent.wait_metrics("6 requests", |m| m.request_counts().values().sum::<u64>() >= 6)?;
    assert_eq!(m.request_counts(), want, "peeked requests counted twice?");
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    Ok(())
}

#[test]
fn a_request_written_one_byte_at_a_time_is_counted() -> Result<()> {
    use std::io::Write;
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let mut c = Conn::open(server.port)?;
    for _ in 0..2 {
        for b in b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" {
            c.stream().write_all(&[*b])?;
            // A pause between bytes, so that the server reads them one at a time: the shape
            // of this workload, not a wait for anything.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(c.read_response(false)?.status, 200);
    }
    let m = agent.wait_metrics("2 requests", |m| m.requests("GET", 200, "/hello") == 2)?;
    let mut want = Counts::new();
    add(&mut want, "GET", 200, "/hello");
    add(&mut want, "GET", 200, "/hello");
    assert_eq!(m.request_counts(), want);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    Ok(())
}
