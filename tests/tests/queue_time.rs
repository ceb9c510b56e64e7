//! A request's duration starts when it arrived at the socket, not when the server got
//! around to reading it. On a saturated server the wait in the listener's accept queue
//! (one connection served at a time, as by a prefork server with every worker busy) and in
//! a connection's receive queue (an event loop held by another request) is part of what
//! clients wait; `redprobe_http_server_queue_time_seconds` shows that wait.
//!
//! Without the arrival stamp both servers below are timed at about a quarter of what the
//! clients see (WORK_MS of 4 x WORK_MS), so the 10 % bound fails.
use std::{thread, time::Duration, time::Instant};

use anyhow::Result;
use testkit::{
    client::{Conn, Endpoint},
    procs::{Agent, Server},
    servers::{Bind, node},
};

/// Concurrent clients, each sending REQUESTS requests, to a server that takes WORK_MS for
/// each and serves one at a time: a request waits for about CLIENTS - 1 others.
const CLIENTS: usize = 4;
const REQUESTS: usize = 10;
const WORK_MS: u64 = 20;

/// Runs CLIENTS threads of `one` (REQUESTS times each); returns the requests and the sum
/// of their client-side times.
fn load(one: impl Fn(&mut Option<Conn>) -> Result<Duration> + Sync) -> Result<(usize, Duration)> {
    let results: Vec<Result<Vec<Duration>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    let mut conn = None;
                    (0..REQUESTS).map(|_| one(&mut conn)).collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let mut times = vec![];
    for r in results {
        times.extend(r?);
    }
    Ok((times.len(), times.iter().sum()))
}

/// The probe's mean duration and mean queue time for `route`, once it counted `n`
/// requests there; asserts the count is exact and the queue time counted each request.
fn probe_means(agent: &Agent, route: &str, n: usize) -> Result<(f64, f64)> {
    let m = agent.wait_metrics("every request", |m| m.requests("GET", 200, route) >= n as u64)?;
    assert_eq!(m.requests("GET", 200, route), n as u64, "{:#?}", m.request_counts());
    let duration = m.sum("http_server_request_duration_seconds_sum", &[("http_route", route)]);
    let queued = m.sum("redprobe_http_server_queue_time_seconds_sum", &[]);
    let queue_count = m.sum("redprobe_http_server_queue_time_seconds_count", &[]);
    assert_eq!(queue_count, n as f64, "one queue time per request");
    Ok((duration / n as f64, queued / n as f64))
}

/// The probe's mean duration against the clients' (`load`'s requests and total time), and
/// its queue time.
fn check(server: &str, agent: &Agent, route: &str, (n, client): (usize, Duration)) -> Result<()> {
    let (probe_mean, queue_mean) = probe_means(agent, route, n)?;
    let client_mean = client.as_secs_f64() / n as f64;
    println!(
        "{server}: {CLIENTS} clients x {REQUESTS}: client mean {:.2} ms, probe mean {:.2} ms ({:.3}), queue time mean {:.2} ms",
        client_mean * 1e3,
        probe_mean * 1e3,
        probe_mean / client_mean,
        queue_mean * 1e3
    );
    assert!(
        (probe_mean / client_mean - 1.0).abs() < 0.10,
        "{server}: probe mean {probe_mean:.4} s is not within 10 % of the clients' {client_mean:.4} s"
    );
    // Each request waits for about CLIENTS - 1 others: most of its time is in a queue.
    let work = WORK_MS as f64 / 1e3;
    assert!(queue_mean > work, "{server}: queue time mean {queue_mean:.4} s; the clients waited {client_mean:.4} s for {work} s of work");
    assert!(queue_mean < probe_mean, "{server}: queue time mean {queue_mean:.4} s is above the duration's {probe_mean:.4} s");
    Ok(())
}

/// One connection at a time (Python's HTTPServer): the other clients' connections wait,
/// request sent, in the accept queue.
#[test]
fn accept_queue_wait_is_part_of_the_duration() -> Result<()> {
    let mut cmd = Server::python_command("python3", 0);
    cmd.arg("--one-at-a-time");
    let server = Server::start(cmd)?;
    // The server listened before the agent came: the agent marks its port at attach, so
    // the first connections' waits count too.
    let agent = Agent::attach(server.pid())?;
    let path = format!("/sleep?ms={WORK_MS}");
    let clients = load(|_| {
        let start = Instant::now();
        let mut c = Conn::open(server.port)?;
        let r = c.request("GET", &path, "HTTP/1.0", &[], b"")?;
        assert_eq!(r.status, 200);
        Ok(start.elapsed())
    })?;
    check("python HTTPServer", &agent, "/sleep", clients)
}

/// One event loop (Node) held WORK_MS by each request: the requests of the other
/// keep-alive connections wait, unread, in their receive queues.
#[test]
fn receive_queue_wait_is_part_of_the_duration() -> Result<()> {
    let server = node(Bind::V4)?;
    let Endpoint::Tcp(addr) = server.endpoint.clone() else { unreachable!("a TCP endpoint") };
    let agent = Agent::attach(server.pid())?;
    let path = format!("/busy?ms={WORK_MS}");
    let clients = load(|conn| {
        let start = Instant::now();
        if conn.is_none() {
            *conn = Some(Conn::open(addr.port())?);
        }
        let r = conn.as_mut().expect("connected").get(&path)?;
        assert_eq!(r.status, 200);
        Ok(start.elapsed())
    })?;
    check("node http", &agent, "/busy", clients)
}
