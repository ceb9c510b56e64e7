//! Measure 8: HTTP/2. Node's `http2` module (h2c with prior knowledge, pinned like measure
//! 2's nginx worker), saturated by h2load with 10 concurrent streams on each of 4
//! connections, on `/` (a small body): "with" = an agent attached to it (every byte but
//! DATA payloads goes to the agent, which decodes frames and HPACK) ÷ "without"; and the
//! ns the agent adds per request (1/rps with − 1/rps without, the server being the
//! bottleneck).
use std::process::Command;

use anyhow::{Context, Result, bail};
use testkit::{
    procs::{Agent, pid_args},
    servers::{Bind, RealServer, node_h2},
};

use super::{
    Row,
    nginx::{drain, pin},
    stats::{Paired, interleave},
};

const PATH: &str = "/";

pub struct Http2 {
    server: RealServer,
}

impl Http2 {
    pub fn start(pin_cpu: Option<usize>) -> Result<Self> {
        let server = node_h2(Bind::V4).context("starting Node's http2 server")?;
        if let Some(cpu) = pin_cpu {
            pin(server.pid(), cpu)?;
        }
        Ok(Http2 { server })
    }
}

/// One h2load run of `seconds`: (requests done, req/s).
fn h2load(url: &str, seconds: f64, cpus: Option<&str>) -> Result<(u64, f64)> {
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c, "h2load"]);
            cmd
        }
        None => Command::new("h2load"),
    };
    let secs = format!("{}", seconds.ceil().max(1.0) as u64);
    let out = cmd.args(["-D", &secs, "-c", "4", "-m", "10", "-t", "1", url]).output().context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let report = testkit::h2::H2loadReport::parse(&text)?;
    // "finished in 3.00s, 41234.56 req/s, 1.23MB/s"
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.strip_suffix(" req/s"))
        .and_then(|r| r.parse::<f64>().ok())
        .with_context(|| format!("no req/s in h2load's output:\n{text}"))?;
    if report.errored > 0 || report.status_2xx != report.done {
        bail!("h2load got errors:\n{text}");
    }
    Ok((report.done, rps))
}

pub fn measure(h2: &Http2, seconds: f64, load_cpu: Option<usize>, rounds: usize) -> Result<Vec<Row>> {
    let url = super::url(&h2.server, PATH);
    let cpus = load_cpu.map(|c| c.to_string());
    let mut short = Vec::new();
    let sides = interleave("measure 8 (Node http2, h2c)", &["without", "with"], rounds, |side| {
        if side == 0 {
            return Ok(h2load(&url, seconds, cpus.as_deref())?.1);
        }
        let agent = Agent::start(&pid_args(&[h2.server.pid()]))?;
        let before = super::nginx::counts(&agent, PATH)?;
        let (done, rps) = h2load(&url, seconds, cpus.as_deref())?;
        let (counted, lost) = drain(&agent, PATH, before, done)?;
        if counted < done || lost > 0 {
            short.push(format!("{counted} of {done} counted, {lost} events lost"));
        }
        agent.stop()?;
        Ok(rps)
    })?;
    if !short.is_empty() {
        eprintln!("bench: warning: measure 8: {}", short.join("; "));
    }
    let rps = Paired::new(sides[0].clone(), sides[1].clone());
    Ok(vec![
        Row::ratio("8", "Node http2 h2c, h2load -c 4 -m 10: req/s", &rps, "", 0, None),
        Row::added_ns("8", "  ns added per HTTP/2 request (1/rps with - without)", &rps),
    ])
}
