//! Measure 1: what a process that is NOT a target pays while the agent is attached to
//! another PID. This process (xtask) runs three loops; "with" = an agent attached to the
//! bench's nginx, "without" = no agent running.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    time::Instant,
};

use anyhow::Result;
use testkit::procs::{Agent, pid_args};

use super::{
    Row,
    stats::{Paired, interleave},
};

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
pub fn ping_pong<S: Read + Write>(a: &mut S, b: &mut S, n: u32) -> Result<f64> {
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

pub fn tcp_pair() -> Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    Ok((a, b))
}

/// ns per TCP round trip over `n` round trips.
pub fn tcp_ping_pong(n: u32) -> Result<f64> {
    let (mut a, mut b) = tcp_pair()?;
    ping_pong(&mut a, &mut b, n)
}

struct Workload {
    id: &'static str,
    name: &'static str,
    /// Calls the figure is divided by: socket calls per round trip (4), or 1.
    calls: f64,
    /// Goal: at most this many ns added per call.
    goal_ns: f64,
    run: fn(f64) -> Result<f64>,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        id: "1a",
        name: "non-target write(2) to /dev/null, ns/call",
        calls: 1.0,
        goal_ns: 2.0,
        run: |scale| write_devnull((2_000_000.0 * scale) as u32),
    },
    Workload {
        id: "1b",
        name: "non-target TCP 1-byte ping-pong, ns/socket call",
        calls: 4.0,
        goal_ns: 45.0,
        run: |scale| tcp_ping_pong((100_000.0 * scale) as u32),
    },
    Workload {
        id: "1c",
        name: "non-target UNIX 1-byte ping-pong, ns/socket call",
        calls: 4.0,
        goal_ns: 30.0,
        run: |scale| {
            let (mut a, mut b) = UnixStream::pair()?;
            ping_pong(&mut a, &mut b, (200_000.0 * scale) as u32)
        },
    },
];

/// `scale` shortens the loops for development runs (1.0 = about 0.2 s per loop).
pub fn measure(target_pid: u32, rounds: usize, scale: f64) -> Result<Vec<Row>> {
    let args = pid_args(&[target_pid]);
    let run_all = || WORKLOADS.iter().map(|w| (w.run)(scale)).collect::<Result<Vec<f64>>>();
    let samples = interleave("measure 1 (non-target)", &["without", "with"], rounds, |side| {
        if side == 0 {
            return run_all();
        }
        let agent = Agent::start(&args)?;
        let v = run_all();
        agent.stop()?;
        v
    })?;
    let rows = WORKLOADS
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let per_call = |side: &Vec<Vec<f64>>| side.iter().map(|r| r[i] / w.calls).collect::<Vec<_>>();
            let p = Paired::new(per_call(&samples[0]), per_call(&samples[1]));
            let (lo, hi) = p.added_spread();
            Row {
                id: w.id,
                measure: w.name.into(),
                without: format!("{:.1}", p.base_median()),
                with: format!("{:.1}", p.with_median()),
                result: format!("{:+.1} ns", p.added()),
                spread: format!("{lo:+.1}..{hi:+.1}"),
                goal: format!("<= +{} ns", w.goal_ns),
                met: Some(p.added() <= w.goal_ns),
            }
        })
        .collect();
    Ok(rows)
}
