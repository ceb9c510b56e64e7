//! Measure 7: HTTPS. An nginx with `ssl` (1 worker, pinned like measure 2's), saturated by
//! wrk over keep-alive HTTPS connections on `return 200`:
//! - 7a: "with" = an agent attached to it (its TLS library probed), ÷ "without" = no agent;
//!   and the ns the agent adds per request (1/rps with − 1/rps without, the worker being
//!   the bottleneck);
//! - 7b: the same nginx as a process that is NOT a target, while an agent is attached to
//!   another server (the bench's plain nginx) that maps the same libssl: its breakpoints
//!   are not installed in this nginx, so the ratio should be 1.
use anyhow::{Context, Result};
use testkit::{
    procs::{Agent, pid_args},
    servers::{Bind, NginxSite, RealServer, nginx},
};

use super::{
    Row,
    nginx::{HELLO, counts, drain, pin},
    stats::{Paired, interleave},
    wrk::{self, Load},
};

pub struct Https {
    server: RealServer,
}

impl Https {
    pub fn start(pin_cpu: Option<usize>) -> Result<Self> {
        let server = nginx(Bind::Tls, &NginxSite { workers: 1, ..Default::default() }).context("starting nginx with ssl")?;
        let worker = testkit::procs::children(server.pid()).into_iter().next().context("nginx has no worker process")?;
        if let Some(cpu) = pin_cpu {
            pin(worker, cpu)?;
        }
        Ok(Https { server })
    }
}

struct Side {
    rps: f64,
    p99_us: f64,
}

/// `other`: the PID an agent attaches to for 7b (a server that is not this nginx).
pub fn measure(https: &Https, other: u32, load: &Load, rounds: usize) -> Result<Vec<Row>> {
    let url = super::url(&https.server, HELLO);
    let mut short = Vec::new();
    let target = interleave("measure 7a (nginx HTTPS, the target)", &["without", "with"], rounds, |side| {
        if side == 0 {
            let r = wrk::run(load, &url)?;
            return Ok(Side { rps: r.rps, p99_us: r.p99_us });
        }
        let agent = Agent::start(&pid_args(&[https.server.pid()]))?;
        let before = counts(&agent, HELLO)?;
        let r = wrk::run(load, &url)?;
        let (counted, lost) = drain(&agent, HELLO, before, r.requests)?;
        if counted < r.requests || lost > 0 {
            short.push(format!("{counted} of {} counted, {lost} events lost", r.requests));
        }
        agent.stop()?;
        Ok(Side { rps: r.rps, p99_us: r.p99_us })
    })?;
    let bystander = interleave("measure 7b (nginx HTTPS, not a target)", &["without", "with"], rounds, |side| {
        let agent = if side == 1 { Some(Agent::start(&pid_args(&[other]))?) } else { None };
        let r = wrk::run(load, &url)?;
        if let Some(agent) = agent {
            let counted = agent.metrics()?.sum("http_server_request_duration_seconds_count", &[("url_scheme", "https")]);
            anyhow::ensure!(counted == 0.0, "an agent attached to another process counted {counted} HTTPS requests");
            agent.stop()?;
        }
        Ok(Side { rps: r.rps, p99_us: r.p99_us })
    })?;
    if !short.is_empty() {
        eprintln!("bench: warning: measure 7a: {}", short.join("; "));
    }
    let pair = |s: &[Vec<Side>], f: fn(&Side) -> f64| Paired::new(s[0].iter().map(f).collect(), s[1].iter().map(f).collect());
    let row = Row::ratio;
    let rps = pair(&target, |s| s.rps);
    let p99 = pair(&target, |s| s.p99_us);
    let other_rps = pair(&bystander, |s| s.rps);
    Ok(vec![
        row("7a", "nginx HTTPS return 200, the target: req/s", &rps, "", 0, Some((">= 0.90", rps.ratio() >= 0.90))),
        Row::added_ns("7a", "  ns added per HTTPS request (1/rps with - without)", &rps),
        row("7a", "  p99 latency (lower is better)", &p99, " us", 0, None),
        row(
            "7b",
            "nginx HTTPS, NOT a target (same libssl): req/s",
            &other_rps,
            "",
            0,
            Some((">= 0.98", other_rps.ratio() >= 0.98)),
        ),
    ])
}
