//! `cargo xtask bench`: overhead, measured side by side in one run.
//!
//! Measure 1: what a process that is NOT a target pays while the agent is attached to
//! another PID. This process (xtask) runs three loops, with and without the agent, in
//! interleaved A/B/A/B repetitions after one warm-up; each side is the median of its
//! repetitions, and the spread is the range of the per-pair differences.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use testkit::procs::{Agent, Server};
use xtask::{REDPROBE_BIN, agent_path, is_root};

const REPETITIONS: usize = 7;

/// ns per write(2) of one byte to /dev/null.
fn write_devnull(n: u32) -> Result<f64> {
    let mut f = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(b"x")?;
    }
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}

/// ns per 1-byte round trip (write, read, write, read) between two connected sockets,
/// driven from one thread so that no scheduling is measured.
fn ping_pong<S: Read + Write>(a: &mut S, b: &mut S, n: u32) -> Result<f64> {
    let mut byte = [0u8; 1];
    let start = Instant::now();
    for _ in 0..n {
        a.write_all(b"p")?;
        b.read_exact(&mut byte)?;
        b.write_all(b"q")?;
        a.read_exact(&mut byte)?;
    }
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}

fn tcp_pair() -> Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    Ok((a, b))
}

struct Workload {
    name: &'static str,
    /// Syscalls the probe's hooks see per unit (4 socket calls per round trip).
    socket_calls: f64,
    run: fn() -> Result<f64>,
}

const WORKLOADS: [Workload; 3] = [
    Workload { name: "write(2) to /dev/null, ns/call", socket_calls: 0.0, run: || write_devnull(2_000_000) },
    Workload {
        name: "TCP 1-byte ping-pong, ns/round trip",
        socket_calls: 4.0,
        run: || {
            let (mut a, mut b) = tcp_pair()?;
            ping_pong(&mut a, &mut b, 100_000)
        },
    },
    Workload {
        name: "UNIX 1-byte ping-pong, ns/round trip",
        socket_calls: 4.0,
        run: || {
            let (mut a, mut b) = UnixStream::pair()?;
            ping_pong(&mut a, &mut b, 200_000)
        },
    },
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run_all() -> Result<Vec<f64>> {
    WORKLOADS.iter().map(|w| (w.run)()).collect()
}

pub fn bench() -> Result<()> {
    crate::build::build()?;
    if !is_root() {
        bail!("the bench loads eBPF programs: run it as root");
    }
    // SAFETY: single-threaded here; the test kit reads REDPROBE_BIN.
    unsafe { std::env::set_var(REDPROBE_BIN, agent_path()) };
    let target = Server::start_python().context("starting the target server")?;
    let target_args = ["--pid".to_string(), target.pid().to_string()];

    eprintln!("bench: warm-up");
    run_all()?;
    let mut without: Vec<Vec<f64>> = vec![vec![]; WORKLOADS.len()];
    let mut with: Vec<Vec<f64>> = vec![vec![]; WORKLOADS.len()];
    for rep in 0..REPETITIONS {
        eprintln!("bench: repetition {}/{REPETITIONS}", rep + 1);
        for (i, v) in run_all()?.into_iter().enumerate() {
            without[i].push(v);
        }
        let agent = Agent::start(&target_args)?;
        for (i, v) in run_all()?.into_iter().enumerate() {
            with[i].push(v);
        }
        agent.stop()?;
    }

    println!();
    println!("Measure 1: a process that is NOT a target, agent attached to another PID");
    println!("({REPETITIONS} interleaved repetitions, medians; spread = min..max of per-pair differences)");
    println!(
        "{:<38} {:>10} {:>10} {:>9} {:>7} {:>16} {:>14}",
        "workload", "without", "with", "added", "ratio", "spread", "per sock call"
    );
    for (i, w) in WORKLOADS.iter().enumerate() {
        let diffs: Vec<f64> = with[i].iter().zip(&without[i]).map(|(b, a)| b - a).collect();
        let (lo, hi) = diffs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
        let (a, b) = (median(&mut without[i].clone()), median(&mut with[i].clone()));
        let per_call = if w.socket_calls > 0.0 { format!("{:+.1}", (b - a) / w.socket_calls) } else { "-".into() };
        println!(
            "{:<38} {:>10.1} {:>10.1} {:>+9.1} {:>7.3} {:>16} {:>14}",
            w.name,
            a,
            b,
            b - a,
            b / a,
            format!("{lo:+.1}..{hi:+.1}"),
            per_call
        );
    }
    println!();
    println!("Not yet measured here: nginx/gunicorn throughput ratios, agent CPU per 10k req, capacity.");
    Ok(())
}
