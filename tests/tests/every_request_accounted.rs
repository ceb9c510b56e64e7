//! Every request the server answered is counted once, with its status, or under a reason;
//! one bad exchange never blinds the rest of a connection. Each case comes from a server or
//! a client the rest of the suite does not use: clients that reset, servers that send stray
//! bytes or one long writev, methods outside the nine, pipelined errors past the capture
//! window, more connections than the table holds.
use std::{
    io::{Read, Write},
    net::TcpStream,
    os::fd::AsRawFd,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use testkit::{
    client::{Conn, Endpoint},
    procs::{Agent, Server},
    scrape::Metrics,
    servers::{self, Bind, NginxSite},
    wait_for,
    workload::{Counts, add},
};

/// Closes `stream` with a reset (SO_LINGER 0), as a client that times out does.
fn reset(stream: TcpStream) -> Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a plain setsockopt on a socket this process owns.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
    Ok(())
}

/// Requests counted with `error_type=connection_reset`, by (method, status, route).
fn resets(m: &Metrics) -> Counts {
    let mut out = Counts::new();
    for s in m.series("http_server_request_duration_seconds_count").filter(|s| s.label("error_type") == "connection_reset") {
        let status = s.label("http_response_status_code").parse().unwrap_or(0);
        *out.entry((s.label("http_request_method").into(), status, s.label("http_route").into())).or_default() += s.value as u64;
    }
    out
}

#[test]
fn a_client_that_resets_during_a_slow_request_is_measured_up_to_the_reset() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let mut s = TcpStream::connect(("127.0.0.1", server.port))?;
    s.write_all(b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")?;
    agent.wait_metrics("the request in flight", |m| m.sum("http_server_active_requests", &[("http_request_method", "GET")]) == 1.0)?;
    std::thread::sleep(Duration::from_millis(300)); // the client gives up after 300 ms or more
    reset(s)?;
    let m = agent.wait_metrics("the abandoned request counted, nothing in flight", |m| {
        m.request_counts().get(&("GET".into(), 0, "/sleep".into())) == Some(&1)
            && m.sum("http_server_active_requests", &[("http_request_method", "GET")]) == 0.0
    })?;
    let mut want = Counts::new();
    add(&mut want, "GET", 0, "/sleep");
    assert_eq!(resets(&m), want, "counted as reset, without a status");
    let seconds = m.sum("http_server_request_duration_seconds_sum", &[("http_route", "/sleep")]);
    assert!((0.3..3.0).contains(&seconds), "timed up to the reset: {seconds} s");
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    Ok(())
}

#[test]
fn clients_that_reset_in_the_middle_of_a_large_response_are_each_counted() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    const N: u64 = 5;
    for _ in 0..N {
        let mut s = TcpStream::connect(("127.0.0.1", server.port))?;
        s.write_all(b"GET /big?kb=4096 HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut got = vec![0u8; 64 * 1024];
        s.read_exact(&mut got)?;
        ensure!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..40]));
        reset(s)?;
    }
    let m = agent.wait_metrics("5 responses cut by a reset", |m| m.requests("GET", 200, "/big") == N)?;
    let mut want = Counts::new();
    for _ in 0..N {
        add(&mut want, "GET", 200, "/big");
    }
    assert_eq!(resets(&m), want, "with their status, as reset");
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    Ok(())
}

/// Node writes a stream of `res.write()` calls made in one tick as one writev: the head,
/// then size, data and CRLF for each chunk, then the terminator (11 iovecs here).
#[test]
fn a_chunked_response_in_one_long_writev_ends_and_the_connection_goes_on() -> Result<()> {
    let node = servers::node(Bind::V4)?;
    let agent = Agent::attach(node.pid())?;
    let mut conn = Conn::connect(&node.endpoint)?;
    let mut truth = Counts::new();
    for _ in 0..30 {
        let r = conn.get("/burst?parts=3")?;
        ensure!(r.body == b"part 0\npart 1\npart 2\n", "{:?}", String::from_utf8_lossy(&r.body));
        add(&mut truth, "GET", 200, "/burst");
        conn.get_ok("/hello", 1)?;
        add(&mut truth, "GET", 200, "/hello");
    }
    let m = agent.wait_metrics("60 requests", |m| m.request_counts().values().sum::<u64>() >= 60)?;
    assert_eq!(m.request_counts(), truth);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    assert_eq!(m.sum("redprobe_responses_inferred_total", &[]), 0.0, "the terminator was seen, not inferred");
    Ok(())
}

#[test]
fn stray_bytes_after_a_response_resynchronise_at_the_next_request() -> Result<()> {
    let mut cmd = Server::python_command("python3", 0);
    cmd.arg("--head-body");
    let server = Server::start(cmd)?;
    let agent = Agent::attach(server.pid())?;
    let mut conn = Conn::open(server.port)?;
    let mut truth = Counts::new();
    for _ in 0..4 {
        // The server answers HEAD with a body: read as if it were a GET's answer.
        conn.stream().write_all(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let r = conn.read_response(false)?;
        ensure!(r.status == 200 && r.body == b"hello world\n", "{:?}", String::from_utf8_lossy(&r.body));
        add(&mut truth, "HEAD", 200, "/hello");
        conn.get_ok("/hello", 5)?;
        for _ in 0..5 {
            add(&mut truth, "GET", 200, "/hello");
        }
    }
    let m = agent.wait_metrics("24 requests", |m| m.request_counts().values().sum::<u64>() >= 24)?;
    assert_eq!(m.request_counts(), truth);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0, "stray bytes are no lost request");
    Ok(())
}

/// Sends `head` on a new connection and returns the status the server answered.
fn first_request(port: u16, head: &str) -> Result<u16> {
    let mut c = Conn::open(port)?;
    c.stream().write_all(head.as_bytes())?;
    Ok(c.read_response(false)?.status)
}

#[test]
fn methods_outside_the_nine_are_other_even_on_a_new_connection() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let mut truth = Counts::new();
    for method in ["PROPFIND", "FOOBAR", "M-SEARCH"] {
        let status = first_request(server.port, &format!("{method} /x HTTP/1.1\r\nHost: x\r\n\r\n"))?;
        add(&mut truth, "_OTHER", status, "/x");
    }
    // Ten lowercase `get`s on one connection: each is an unknown method.
    let mut c = Conn::open(server.port)?;
    for _ in 0..10 {
        c.stream().write_all(b"get /hello HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let r = c.read_response(false)?;
        add(&mut truth, "_OTHER", r.status, "/hello");
        if r.closed {
            c = Conn::open(server.port)?;
        }
    }
    let m = agent.wait_metrics("13 requests", |m| m.request_counts().values().sum::<u64>() >= 13)?;
    assert_eq!(m.request_counts(), truth);
    assert_eq!(m.sum("redprobe_connections_other_protocol_total", &[]), 0.0);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    Ok(())
}

#[test]
fn pipelined_errors_past_the_capture_window_keep_the_error_rate() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    const N: u64 = 100;
    let mut c = Conn::open(server.port)?;
    let batch = "GET /error HTTP/1.1\r\nHost: x\r\n\r\n".repeat(N as usize);
    c.stream().write_all(batch.as_bytes())?;
    for _ in 0..N {
        ensure!(c.read_response(false)?.status == 500);
    }
    let m = agent.wait_metrics("100 requests", |m| m.request_counts().values().sum::<u64>() >= N)?;
    let counts = m.request_counts();
    let read = counts.get(&("GET".into(), 500, "/error".into())).copied().unwrap_or(0);
    let unread = counts.get(&("_OTHER".into(), 500, "_unknown".into())).copied().unwrap_or(0);
    println!("100 pipelined 500s: {read} with their route, {unread} by their response alone");
    assert_eq!(read + unread, N, "{counts:?}");
    assert!(read >= 1 && unread >= 1, "{counts:?}");
    assert_eq!(m.sum("redprobe_requests_unread_total", &[("reason", "outside_capture_window")]), unread as f64);
    assert_eq!(m.sum("http_server_request_duration_seconds_count", &[("error_type", "500")]), N as f64, "error rate 100 %");
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    Ok(())
}

#[test]
fn more_keep_alive_connections_than_the_table_holds_lose_nothing() -> Result<()> {
    const CONNS: usize = 2000;
    const ROUNDS: usize = 10;
    const TABLE: u32 = 512;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let site = NginxSite { workers: 1, idle_clients: CONNS as u32, ..Default::default() };
    let nginx = servers::nginx(Bind::V4, &site)?;
    let agent = Agent::start(&["--pid".into(), nginx.pid().to_string(), "--max-connections".into(), TABLE.to_string()])?;
    let port = nginx.endpoint.port().context("nginx on TCP")?;
    let mut conns = (0..CONNS).map(|_| Conn::connect(&Endpoint::v4(port))).collect::<Result<Vec<_>>>()?;
    for _ in 0..ROUNDS {
        for c in conns.iter_mut() {
            c.get_ok("/hello", 1)?;
        }
    }
    let total = (CONNS * ROUNDS) as u64;
    let m = agent.wait_metrics("20,000 requests", |m| m.requests("GET", 200, "/hello") >= total)?;
    assert_eq!(m.requests("GET", 200, "/hello"), total);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0, "nothing lost: no connection_table_full");
    drop(conns);
    // Every connection closed: the gauges go back to the truth (the map's fill level is
    // counted each second).
    let m = wait_for("the gauges back to 0", Duration::from_secs(30), || {
        let m = agent.metrics().ok()?;
        let tracked = m.sum("redprobe_connections_tracked", &[]);
        let open = m.sum("redprobe_target_open_connections", &[]);
        let map = m.sum("redprobe_map_entries", &[("map", "CONNS")]);
        (tracked == 0.0 && open == 0.0 && map == 0.0).then_some(m)
    });
    let m = match m {
        Ok(m) => m,
        Err(e) => {
            let m = agent.metrics()?;
            anyhow::bail!(
                "{e}: tracked {}, open {}, map {}",
                m.sum("redprobe_connections_tracked", &[]),
                m.sum("redprobe_target_open_connections", &[]),
                m.sum("redprobe_map_entries", &[("map", "CONNS")])
            );
        }
    };
    assert_eq!(m.requests("GET", 200, "/hello"), total);
    Ok(())
}

#[test]
fn framing_a_strict_parser_would_refuse_is_followed() -> Result<()> {
    let server = Server::start_python()?;
    // With the body-size histograms (not served by default), to check the early body.
    let mut args = testkit::procs::pid_args(&[server.pid()]);
    args.extend(["--extra-histograms".to_string(), "request-size".to_string()]);
    let agent = Agent::start(&args)?;
    let mut c = Conn::open(server.port)?;
    let mut truth = Counts::new();
    for path in ["/cl-list", "/hello", "/folded", "/hello"] {
        c.get_ok(path, 1)?;
        add(&mut truth, "GET", 200, path);
    }
    // A body read after its request was answered (413 before the body was read).
    let body = vec![b'b'; 3000];
    let r = c.request("POST", "/early", "HTTP/1.1", &[], &body)?;
    ensure!(r.status == 413, "status {}", r.status);
    add(&mut truth, "POST", 413, "/early");
    c.get_ok("/hello", 1)?;
    add(&mut truth, "GET", 200, "/hello");
    let m = agent.wait_metrics("6 requests", |m| m.request_counts().values().sum::<u64>() >= 6)?;
    assert_eq!(m.request_counts(), truth);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    let early = m.sum("http_server_request_body_size_bytes_sum", &[("http_route", "/early")]);
    assert_eq!(early, body.len() as f64, "the body read after the answer counts");
    Ok(())
}

#[test]
fn known_series_are_served_at_zero_from_the_start() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let m = agent.wait_metrics("the first housekeeping", |m| m.series("http_server_active_requests").count() > 0)?;
    let service = std::fs::read_to_string(format!("/proc/{}/comm", server.pid()))?.trim().to_string();
    assert_eq!(m.sum("http_server_active_requests", &[("http_request_method", "GET"), ("service_name", &service)]), 0.0);
    for (family, label, value) in [
        ("redprobe_responses_inferred_total", "reason", "response_head_beyond_capture"),
        ("redprobe_kernel_skipped_io_total", "reason", "foreign_context"),
        ("redprobe_requests_unparsed_total", "reason", "no_response"),
        ("redprobe_connections_other_protocol_total", "protocol", "tls"),
        ("redprobe_connections_classified_total", "role", "server"),
    ] {
        assert!(m.series(family).any(|s| s.label(label) == value), "{family}{{{label}={value:?}}} missing at start");
    }
    Ok(())
}

#[test]
fn help_says_exit_with_target_is_for_pids_only() -> Result<()> {
    let help = std::process::Command::new(testkit::procs::agent_bin()).arg("--help").output()?;
    let text = String::from_utf8_lossy(&help.stdout);
    let flag = text.split("--exit-with-target").nth(1).context("--exit-with-target in --help")?;
    assert!(flag.contains("Only with --pid"), "{flag}");
    let refused = std::process::Command::new(testkit::procs::agent_bin()).args(["--port", "8000", "--exit-with-target"]).output()?;
    assert_eq!(refused.status.code(), Some(2), "as --help says, not with a selector");
    Ok(())
}
