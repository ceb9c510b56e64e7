//! `cargo xtask demo`: the whole product in one command. Builds the agent, starts the
//! built-in demo server (tests/servers/app.py), attaches to it by PID, drives a mixed
//! workload from a few keep-alive clients, then prints the RED summary the probe measured
//! beside what the clients measured themselves.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use testkit::{
    client::Conn,
    procs::{Agent, Server},
    scrape::Metrics,
};
use xtask::{REDPROBE_BIN, agent_path, is_root};

const CLIENTS: usize = 4;

/// (route label, request path, method) picked by a deterministic pseudo-random walk.
fn pick(n: u64) -> (&'static str, String, &'static str) {
    match n % 20 {
        0..=9 => ("/hello", "/hello".into(), "GET"),
        10..=12 => ("/users/{id}", format!("/users/{}", n % 1000), "GET"),
        13 | 14 => ("/sleep", format!("/sleep?ms={}", 20 + n % 60), "GET"),
        15 => ("/missing", "/missing".into(), "GET"),
        16 => ("/error", "/error".into(), "GET"),
        17 => ("/chunked", "/chunked".into(), "GET"),
        _ => ("/echo", "/echo".into(), "POST"),
    }
}

/// Client-side truth: per route, the status codes and durations seen.
type Truth = BTreeMap<&'static str, Vec<(u16, Duration)>>;

fn drive(port: u16, seconds: f64, seed: u64, truth: Arc<Mutex<Truth>>) -> Result<()> {
    let mut conn = Conn::open(port)?;
    let mut state = seed;
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (route, path, method) = pick(state >> 33);
        let body = if method == "POST" { vec![b'x'; 512] } else { vec![] };
        let r = conn.request(method, &path, "HTTP/1.1", &[], &body)?;
        truth.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.entry(route).or_default().push((r.status, r.elapsed));
    }
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(v: f64) -> String {
    format!("{:.2}", v * 1000.0)
}

fn print_summary(m: &Metrics, truth: &Truth, seconds: f64) {
    println!();
    println!("RED summary measured by redprobe over {seconds:.1} s (client truth in brackets)");
    println!(
        "{:<13} {:>13} {:>7} {:>7} {:>15} {:>15} {:>7} {:>7}",
        "route", "requests", "rate/s", "errors%", "mean ms", "p50 ms", "p95 ms", "p99 ms"
    );
    for (route, seen) in truth {
        let count = m.sum("http_server_request_duration_seconds_count", &[("http_route", route)]);
        let sum = m.sum("http_server_request_duration_seconds_sum", &[("http_route", route)]);
        let errors = m.sum_where("http_server_request_duration_seconds_count", |s| {
            s.has(&[("http_route", route)]) && s.label("http_response_status_code").starts_with('5')
        });
        let mut durations: Vec<Duration> = seen.iter().map(|(_, d)| *d).collect();
        durations.sort();
        let client_mean = durations.iter().map(Duration::as_secs_f64).sum::<f64>() / durations.len().max(1) as f64;
        let q = |x| m.quantile(route, x).map(ms).unwrap_or_else(|| "-".into());
        println!(
            "{:<13} {:>13} {:>7.1} {:>7.1} {:>15} {:>15} {:>7} {:>7}",
            route,
            format!("{count} [{}]", seen.len()),
            count / seconds,
            if count > 0.0 { 100.0 * errors / count } else { 0.0 },
            format!("{} [{}]", ms(sum / count.max(1.0)), ms(client_mean)),
            format!("{} [{}]", q(0.5), ms(percentile(&durations, 0.5).as_secs_f64())),
            q(0.95),
            q(0.99),
        );
    }
    println!();
    println!("mean = _sum / _count (exact); quantiles = histogram_quantile() over the buckets, as Prometheus");
    println!("computes them (interpolated inside a bucket). Client times include the client's own socket calls.");
}

pub fn demo(seconds: f64, keep: bool) -> Result<()> {
    crate::build::build()?;
    if !is_root() {
        bail!("the demo loads eBPF programs: run it as root (sudo -E cargo xtask demo)");
    }
    // SAFETY: single-threaded at this point; the test kit reads REDPROBE_BIN.
    unsafe { std::env::set_var(REDPROBE_BIN, agent_path()) };
    let server = Server::start_python().context("starting the demo server")?;
    println!("demo server: python3 tests/servers/app.py, PID {}, http://127.0.0.1:{}/", server.pid(), server.port);
    let agent = Agent::attach(server.pid())?;
    println!("redprobe attached to PID {}; metrics at http://{}/metrics", server.pid(), agent.addr);
    println!("driving {CLIENTS} keep-alive clients for {seconds} s ...");

    let truth = Arc::new(Mutex::new(Truth::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS as u64)
        .map(|i| {
            let truth = truth.clone();
            let port = server.port;
            std::thread::spawn(move || drive(port, seconds, i + 1, truth))
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let truth = truth.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let sent: usize = truth.values().map(Vec::len).sum();
    let m = agent.wait_metrics("every request counted", |m| {
        m.sum("http_server_request_duration_seconds_count", &[]) as usize >= sent
    })?;
    print_summary(&m, &truth, elapsed);
    let lost = m.sum("redprobe_events_lost_total", &[]);
    println!("requests sent {sent}, counted {}, events lost {lost}", m.sum("http_server_request_duration_seconds_count", &[]));
    if keep {
        println!("--keep: agent and server keep running; metrics at http://{}/metrics (Ctrl-C to stop)", agent.addr);
        loop {
            std::thread::park();
        }
    }
    agent.stop()?;
    println!("demo done: agent detached, server stopped.");
    Ok(())
}
