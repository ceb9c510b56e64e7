//! Servers that write a response's headers and its body in two writes, with Nagle's
//! algorithm on (their default), to a client that delays its ACKs: the body waits in the
//! server's send queue until the client acknowledges the headers, about 40 ms later. The
//! client waits those 40 ms; the server's last write returned long before. The probe ends
//! each response when its last byte leaves (`tx` in probe-ebpf), so its durations match
//! the client's. Timed to the last write instead, it saw 0.75-1.27 ms against the
//! clients' 44 ms.
use std::{process::Command, time::Duration};

use anyhow::Result;
use testkit::{
    client::Conn,
    procs::{Agent, Server, workspace_root},
};

const REQUESTS: usize = 30;

fn server(program: &str, file: &str) -> Result<Server> {
    let mut cmd = Command::new(program);
    cmd.arg(workspace_root().join("tests/servers").join(file)).arg("0");
    Server::start(cmd)
}

/// REQUESTS keep-alive GETs of /hello: the client's times, sorted.
fn client_times(port: u16) -> Result<Vec<Duration>> {
    let mut conn = Conn::open(port)?;
    let mut times = (0..REQUESTS)
        .map(|_| {
            let r = conn.get("/hello")?;
            assert_eq!(r.status, 200);
            Ok(r.elapsed)
        })
        .collect::<Result<Vec<_>>>()?;
    times.sort();
    Ok(times)
}

fn check(name: &str, server: &Server) -> Result<()> {
    let agent = Agent::attach(server.pid())?;
    let times = client_times(server.port)?;
    let m = agent.wait_metrics("every request", |m| m.requests("GET", 200, "/hello") >= REQUESTS as u64)?;
    assert_eq!(m.requests("GET", 200, "/hello"), REQUESTS as u64, "{:#?}", m.request_counts());
    let probe_mean = m.sum("http_server_request_duration_seconds_sum", &[("http_route", "/hello")]) / REQUESTS as f64;
    let client_mean = times.iter().sum::<Duration>().as_secs_f64() / REQUESTS as f64;
    let client_p50 = times[REQUESTS / 2].as_secs_f64();
    let waited = m.sum("redprobe_responses_waited_for_transmission_total", &[]);
    println!(
        "{name}: {REQUESTS} keep-alive requests: client p50 {:.2} ms, mean {:.2} ms; probe mean {:.2} ms ({:.3}); {waited} waited for their last bytes to leave",
        client_p50 * 1e3,
        client_mean * 1e3,
        probe_mean * 1e3,
        probe_mean / client_mean
    );
    // Without the delayed ACK there is nothing to see: the test says so rather than pass.
    assert!(client_p50 > 0.010, "{name}: the client's p50 is {client_p50:.4} s: Nagle and the delayed ACK did not show here");
    assert!(
        (probe_mean / client_mean - 1.0).abs() < 0.10,
        "{name}: probe mean {probe_mean:.4} s is not within 10 % of the client's {client_mean:.4} s"
    );
    assert!(waited >= (REQUESTS / 2) as f64, "{name}: only {waited} responses waited for their last bytes");
    Ok(())
}

#[test]
fn jdk_httpserver_body_held_by_nagle() -> Result<()> {
    let server = server("java", "JdkServer.java")?;
    check("JDK HttpServer", &server)
}

#[test]
fn webrick_body_held_by_nagle() -> Result<()> {
    let server = server("ruby", "webrick_app.rb")?;
    check("Ruby WEBrick", &server)
}
