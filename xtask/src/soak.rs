//! `cargo xtask soak [--minutes N]`: the agent attached to the demo server under a steady
//! load for N minutes (default 10). Prints the agent's memory over time, then checks that
//! its RSS stayed flat and that every request the clients made was counted exactly.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use testkit::{
    client::{Conn, one_shot},
    procs::{Agent, Server},
};
use xtask::{REDPROBE_BIN, agent_path, is_root};

const CLIENTS: u64 = 4;
/// Requests a second per client.
const RATE: u64 = 50;
/// RSS growth after the warm-up minute that still counts as flat.
const FLAT_KIB: u64 = 4096;

use testkit::workload::{Counts, add};

/// One client: a paced mix on a keep-alive connection, a fresh connection now and then.
fn client(port: u16, seed: u64, stop: Arc<AtomicBool>, truth: Arc<Mutex<Counts>>) -> Result<()> {
    let mut conn = Conn::open(port)?;
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_micros(n * 1_000_000 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let i = n.wrapping_mul(2654435761).wrapping_add(seed);
        let (method, path, status, route) = match i % 10 {
            0..=4 => ("GET", "/hello".to_string(), 200, "/hello"),
            5 | 6 => ("GET", format!("/users/{}", i % 10_000), 200, "/users/{id}"),
            7 => ("GET", "/missing".to_string(), 404, "/missing"),
            8 => ("GET", "/error".to_string(), 500, "/error"),
            _ => ("POST", "/echo".to_string(), 201, "/echo"),
        };
        let got = if n % 100 == 99 {
            one_shot(port, method, &path, "HTTP/1.1")?.status // connection churn
        } else if method == "POST" {
            conn.request(method, &path, "HTTP/1.1", &[], b"soak body")?.status
        } else {
            conn.get(&path)?.status
        };
        if got != status {
            bail!("{method} {path}: status {got}, expected {status}");
        }
        add(&mut *truth.lock().map_err(|_| anyhow::anyhow!("poisoned"))?, method, status, route);
        n += 1;
    }
    Ok(())
}

pub fn soak(minutes: f64) -> Result<()> {
    crate::build::build()?;
    if !is_root() {
        bail!("the soak loads eBPF programs: run `cargo xtask soak` as root");
    }
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var(REDPROBE_BIN, agent_path()) };
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let pid = agent.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let truth = Arc::new(Mutex::new(Counts::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, truth, port) = (stop.clone(), truth.clone(), server.port);
            std::thread::spawn(move || client(port, c * 7919, stop, truth))
        })
        .collect();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let every = (total / 20).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let warmup = (total / 10).min(Duration::from_secs(60));
    println!("soak: {minutes} min, {CLIENTS} clients x {RATE} req/s, agent PID {pid}; sampling every {every:?}");
    println!("{:>8} {:>10} {:>10} {:>8} {:>9}", "elapsed", "RSS KiB", "requests", "CONNS", "tracked");
    let start = Instant::now();
    let mut samples = vec![];
    while start.elapsed() < total {
        std::thread::sleep(every.min(total.saturating_sub(start.elapsed())));
        let rss = testkit::procs::status_kib(pid, "VmRSS:")?;
        let m = agent.metrics()?;
        let requests: u64 = m.request_counts().values().sum();
        println!(
            "{:>7.0}s {rss:>10} {requests:>10} {:>8} {:>9}",
            start.elapsed().as_secs_f64(),
            m.sum("redprobe_map_entries", &[("map", "CONNS")]),
            m.sum("redprobe_connections_tracked", &[])
        );
        samples.push((start.elapsed(), rss));
        if clients.iter().any(|c| c.is_finished()) {
            break; // a client failed: report it below
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    let truth = truth.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let sent: u64 = truth.values().sum();
    let m = agent.wait_metrics("every request counted", |m| m.request_counts().values().sum::<u64>() >= sent)?;
    let counted = m.request_counts();
    println!("{:<8} {:>4} {:<14} {:>9} {:>9}", "method", "code", "route", "sent", "counted");
    for (k, v) in &truth {
        println!("{:<8} {:>4} {:<14} {v:>9} {:>9}", k.0, k.1, k.2, counted.get(k).copied().unwrap_or(0));
    }
    let lost = m.sum("redprobe_events_lost_total", &[]);
    let after_warmup: Vec<u64> = samples.iter().filter(|(t, _)| *t >= warmup).map(|(_, r)| *r).collect();
    let (first, last, peak) = (
        after_warmup.first().copied().unwrap_or(0),
        after_warmup.last().copied().unwrap_or(0),
        after_warmup.iter().copied().max().unwrap_or(0),
    );
    println!(
        "requests sent {sent}, counted {}, events lost {lost}; agent RSS after warm-up {first} KiB, at the end {last} KiB, peak {peak} KiB",
        counted.values().sum::<u64>()
    );
    if counted != truth {
        bail!("counts differ from what the clients sent");
    }
    if last > first + FLAT_KIB {
        bail!("agent RSS grew by {} KiB after the warm-up", last - first);
    }
    println!("soak ok: counts exact, RSS flat (within {FLAT_KIB} KiB)");
    Ok(())
}
