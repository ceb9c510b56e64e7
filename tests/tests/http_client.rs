//! Outgoing calls: the HTTP requests a target sends to its upstreams
//! (`http_client_request_duration_seconds`), counted exactly against what the target's own
//! HTTP client got, by method, status, upstream and error type. Python's http.client, Node's
//! http.request and fetch (undici), Go's http.Client; upstreams that answer, reset, close
//! without an answer, or never answer.
use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use testkit::{
    client::Conn,
    procs::{Agent, Server, workspace_root},
    scrape::Metrics,
    servers::{Bind, RealServer, go, node, python},
};

/// (method, status, server_address, server_port, error_type) -> calls.
type ClientCounts = BTreeMap<(String, String, String, String, String), u64>;

/// The upstream every target calls: app.py, not a target.
fn upstream() -> Result<Server> {
    Server::start(Server::python_command(python(), 0))
}

/// An upstream that fails what it reads (`tests/servers/bad_upstream.py`).
fn bad_upstream(mode: &str) -> Result<Server> {
    let mut cmd = std::process::Command::new(python());
    cmd.arg(workspace_root().join("tests/servers/bad_upstream.py")).args(["--mode", mode]);
    Server::start(cmd)
}

/// Asks the target to make the calls `paths` (app.py's `/call` syntax) to the upstream on
/// `port`; returns what its client got, one outcome per call, and adds them to `truth`: a
/// status, or `error` (an exception) counted as `failed_as`.
fn call(c: &mut Conn, port: u16, paths: &[&str], extra: &str, failed_as: &str, truth: &mut ClientCounts) -> Result<Vec<String>> {
    let r = c.get(&format!("/call?port={port}&paths={}{extra}", paths.join(",")))?;
    ensure!(r.status == 200, "/call answered {}", r.status);
    let lines: Vec<String> = String::from_utf8_lossy(&r.body).lines().map(str::to_string).collect();
    ensure!(lines.len() == paths.len(), "one outcome per call: {lines:?}");
    for (spec, outcome) in paths.iter().zip(&lines) {
        let method = spec.rsplit_once(':').map(|(m, _)| m).unwrap_or("GET");
        let (status, error) = match outcome.parse::<u16>() {
            Ok(s) if s >= 400 => (s.to_string(), s.to_string()),
            Ok(s) => (s.to_string(), String::new()),
            Err(_) => (String::new(), failed_as.to_string()),
        };
        let key = (method.to_string(), status, "127.0.0.1".to_string(), port.to_string(), error);
        *truth.entry(key).or_insert(0) += 1;
    }
    Ok(lines)
}

fn total(c: &ClientCounts) -> u64 {
    c.values().sum()
}

/// Waits until the agent counted `truth`'s number of client calls, and asserts them exactly.
fn assert_client_exact(agent: &Agent, truth: &ClientCounts, what: &str) -> Result<Metrics> {
    let want = total(truth);
    let m = agent
        .wait_metrics(&format!("{want} client calls ({what})"), |m| total(&m.client_counts()) >= want)
        .with_context(|| format!("{what}: agent log:\n{}", agent.stderr()))?;
    let got = m.client_counts();
    println!("{what}: calls made {want}, counted {}", total(&got));
    assert_eq!(got, *truth, "{what}: client calls by (method, status, upstream, error_type)");
    assert_eq!(m.sum("redprobe_http_client_requests_unmeasured_total", &[]), 0.0, "{what}: unmeasured calls");
    let by = |pairer: &str| m.sum("redprobe_http_client_requests_paired_total", &[("pairer", pairer)]) as u64;
    println!("{what}: paired by the kernel {}, by the agent {}", by("kernel"), by("agent"));
    assert_eq!(by("kernel") + by("agent"), want, "{what}: every call paired once");
    Ok(m)
}

/// A Python target whose handler calls an upstream 3 times per request (200s and 500s),
/// plus chunked, large, POST and 404 calls: the target's client counts are the calls it
/// made; the upstream, not a target, has no series.
#[test]
fn python_target_calls_counted_by_status_and_upstream() -> Result<()> {
    let up = upstream()?;
    let target = Server::start(Server::python_command(python(), 0))?;
    let agent = Agent::attach(target.pid())?;
    let mut c = Conn::open(target.port)?;
    let mut truth = ClientCounts::new();
    for _ in 0..10 {
        let got = call(&mut c, up.port, &["/hello", "/error", "/hello"], "", "", &mut truth)?;
        assert_eq!(got, ["200", "500", "200"]);
    }
    for _ in 0..3 {
        let got = call(&mut c, up.port, &["/chunked", "/big?kb=300", "POST:/echo", "/missing"], "", "", &mut truth)?;
        assert_eq!(got, ["200", "200", "201", "404"]);
    }
    let m = assert_client_exact(&agent, &truth, "python http.client")?;
    let client = |metric: &str, method: &str| m.sum(metric, &[("http_request_method", method)]);
    // Body sizes as transferred: 3 POSTs of 1000 bytes; 3 responses of 300 KiB among the GETs.
    assert_eq!(client("http_client_request_body_size_bytes_sum", "POST"), 3000.0);
    let big = m.sum_where("http_client_response_body_size_bytes_bucket", |s| s.label("le") == "+Inf") as u64;
    assert_eq!(big, total(&truth), "every call in the response size histogram");
    assert!(client("http_client_response_body_size_bytes_sum", "GET") >= 3.0 * 300.0 * 1024.0);
    // Each call took some time, within the request that made it.
    let calls = client("http_client_request_duration_seconds_sum", "GET");
    let served = m.sum("http_server_request_duration_seconds_sum", &[]);
    assert!(calls > 0.0 && calls < served, "client time {calls} s within the served time {served} s");
    // The target served 13 /call requests; the upstream is no target: no series of its routes.
    assert_eq!(m.request_counts(), BTreeMap::from([(("GET".to_string(), 200, "/call".to_string()), 13)]));
    Ok(())
}

/// Upstreams that reset, close without an answer, or never answer (the target's client
/// times out): each call is counted with its error_type, none is missing.
#[test]
fn failing_dependencies_are_counted_with_their_error_type() -> Result<()> {
    let reset = bad_upstream("reset")?;
    let closed = bad_upstream("close")?;
    let hang = bad_upstream("hang")?;
    let target = Server::start(Server::python_command(python(), 0))?;
    let agent = Agent::attach(target.pid())?;
    let mut c = Conn::open(target.port)?;
    let mut truth = ClientCounts::new();
    for _ in 0..3 {
        call(&mut c, reset.port, &["/a", "POST:/b"], "", "connection_reset", &mut truth)?;
        call(&mut c, closed.port, &["/a"], "", "connection_closed", &mut truth)?;
        call(&mut c, hang.port, &["/a"], "&timeout_ms=300", "timeout", &mut truth)?;
    }
    let m = assert_client_exact(&agent, &truth, "failing upstreams")?;
    let hung = m.sum("http_client_request_duration_seconds_sum", &[("error_type", "timeout")]);
    assert!(hung >= 3.0 * 0.3, "3 calls that timed out after 300 ms took {hung} s in all");
    // A call waiting for its answer is an active request of its upstream, until it ends.
    let port = hang.port.to_string();
    let active = |m: &Metrics| m.sum("http_client_active_requests", &[("server_port", &port), ("http_request_method", "GET")]);
    let waiting = std::thread::spawn(move || -> Result<Vec<String>> {
        let mut c = Conn::open(target.port)?;
        call(&mut c, hang.port, &["/a"], "&timeout_ms=4000", "timeout", &mut ClientCounts::new())
    });
    agent.wait_metrics("the waiting call in http_client_active_requests", |m| active(m) == 1.0)?;
    assert_eq!(waiting.join().expect("the waiting call's thread")?, ["TimeoutError"]);
    agent.wait_metrics("no active call once it timed out", |m| active(m) == 0.0)?;
    Ok(())
}

/// An established TCP connection to `port` on this host (from /proc/net/tcp).
fn connected_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[2].ends_with(&want) && f[3] == "01"
    })
}

/// Makes the target call `paths` (answered 200, 200, 500) on one connection to the upstream
/// on `up_port`, and attaches an agent while the first call is in flight.
fn attach_during_a_call(target: &Server, up_port: u16, paths: &'static [&'static str]) -> Result<Agent> {
    let port = target.port;
    let calls = std::thread::spawn(move || -> Result<Vec<String>> {
        let mut c = Conn::open(port)?;
        call(&mut c, up_port, paths, "", "", &mut ClientCounts::new())
    });
    testkit::wait_for("the target's call to its upstream", std::time::Duration::from_secs(10), || {
        connected_to(up_port).then_some(())
    })?;
    let agent = Agent::attach(target.pid())?;
    ensure!(!calls.is_finished(), "the agent attached while the first call was in flight");
    assert_eq!(calls.join().expect("the calls' thread")?, ["200", "200", "500"]);
    Ok(agent)
}

/// A keep-alive client connection in the middle of a call when the agent attaches (its
/// request was sent before): the answer it then reads is counted without its request, and
/// its next calls on that connection are measured.
#[test]
fn calls_on_a_connection_opened_before_attach_count_from_the_next_one() -> Result<()> {
    let up = upstream()?;
    let target = Server::start(Server::python_command(python(), 0))?;
    let up_port = up.port;
    let agent = attach_during_a_call(&target, up_port, &["/sleep?ms=4000", "/hello", "/error"])?;
    let mut truth = ClientCounts::new();
    for (status, error) in [("200", ""), ("500", "500")] {
        truth.insert(("GET".into(), status.into(), "127.0.0.1".into(), up_port.to_string(), error.into()), 1);
    }
    let m = agent.wait_metrics("the 2 calls after attach", |m| total(&m.client_counts()) >= 2)?;
    assert_eq!(m.client_counts(), truth);
    let without = m.sum("redprobe_http_client_requests_unmeasured_total", &[("reason", "response_without_request")]);
    assert_eq!(without, 1.0, "the answer read after attach, to a call sent before");
    Ok(())
}

/// A keep-alive client connection in the middle of a response's body when the agent
/// attaches: another protocol at first (its first bytes seen are body bytes), a client
/// connection from its next response on (counted without its request), and measured from
/// the call after.
#[test]
fn a_connection_caught_mid_body_counts_from_the_call_after_its_next_response() -> Result<()> {
    let up = node(Bind::V4)?;
    let up_port = up.endpoint.port().context("a TCP upstream")?;
    let target = Server::start(Server::python_command(python(), 0))?;
    let agent = attach_during_a_call(&target, up_port, &["/stream?parts=10%26ms=500", "/hello", "/error"])?;
    let key = ("GET".into(), "500".into(), "127.0.0.1".into(), up_port.to_string(), "500".into());
    let m = agent.wait_metrics("the call after the next response", |m| total(&m.client_counts()) >= 1)?;
    assert_eq!(m.client_counts(), ClientCounts::from([(key, 1)]));
    let without = m.sum("redprobe_http_client_requests_unmeasured_total", &[("reason", "response_without_request")]);
    assert_eq!(without, 1.0, "the /hello answer, whose request was written while the connection was another protocol's");
    Ok(())
}

/// Client metrics off: the target's client connections are only counted.
#[test]
fn no_client_metrics_leaves_only_the_connection_count() -> Result<()> {
    let up = upstream()?;
    let target = Server::start(Server::python_command(python(), 0))?;
    let mut args = testkit::procs::pid_args(&[target.pid()]);
    args.push("--no-client-metrics".into());
    let agent = Agent::start(&args)?;
    let mut c = Conn::open(target.port)?;
    call(&mut c, up.port, &["/hello", "/error"], "", "", &mut ClientCounts::new())?;
    let m = agent.wait_metrics("the /call request and its client connection", |m| {
        m.requests("GET", 200, "/call") == 1 && m.sum("redprobe_connections_classified_total", &[("role", "client")]) >= 1.0
    })?;
    ensure!(m.series("http_client_request_duration_seconds_count").next().is_none(), "no client series:\n{}", m.text);
    ensure!(!m.text.contains("http_client_"), "no client family at all");
    Ok(())
}

/// Node's and Go's clients, calling app.py (the same `/call` route in node_app.js and goapp).
fn other_client(server: RealServer, extra: &str, what: &str) -> Result<()> {
    let up = upstream()?;
    let agent = Agent::attach(server.pid())?;
    let mut c = Conn::connect(&server.endpoint)?;
    let mut truth = ClientCounts::new();
    for _ in 0..5 {
        let got = call(&mut c, up.port, &["/hello", "/error", "/chunked", "POST:/echo", "/big?kb=200"], extra, "", &mut truth)?;
        assert_eq!(got, ["200", "500", "200", "201", "200"], "{what}");
    }
    let m = assert_client_exact(&agent, &truth, what)?;
    assert_eq!(m.sum("http_client_request_body_size_bytes_sum", &[("http_request_method", "POST")]), 5000.0);
    Ok(())
}

#[test]
fn node_http_request_calls() -> Result<()> {
    other_client(node(Bind::V4)?, "", "node http.request")
}

#[test]
fn node_fetch_calls() -> Result<()> {
    other_client(node(Bind::V4)?, "&via=fetch", "node fetch (undici)")
}

#[test]
fn go_http_client_calls() -> Result<()> {
    other_client(go(Bind::V4)?, "", "go http.Client")
}
