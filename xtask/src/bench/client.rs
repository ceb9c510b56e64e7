//! Measure 9: outgoing calls. Go's net/http (pinned like measure 2's nginx worker) serving
//! `/call`, each request making 3 keep-alive calls with http.Client to nginx's `/hello`
//! (the upstream, not a target), saturated by wrk: req/s with an agent attached that
//! measures the calls (the kernel pairs them: no event per call) ÷ with an agent that does
//! not (`--no-client-metrics`, the server side alone) and ÷ without an agent; and the ns
//! the client metrics add per call.
use anyhow::{Context, Result};
use testkit::{
    procs::{Agent, pid_args},
    servers::{Bind, NginxSite, RealServer, go, nginx},
};

use super::{
    Row,
    nginx::pin,
    stats::{Paired, interleave},
    wrk::{Load, run},
};

/// Calls per served request.
const CALLS: u64 = 3;

pub struct Calls {
    target: RealServer,
    upstream: RealServer,
}

impl Calls {
    pub fn start(pin_cpu: Option<usize>) -> Result<Self> {
        let upstream = nginx(Bind::V4, &NginxSite { workers: 1, ..Default::default() }).context("starting the upstream")?;
        let target = go(Bind::V4).context("starting Go's net/http")?;
        if let Some(cpu) = pin_cpu {
            pin(target.pid(), cpu)?;
        }
        Ok(Calls { target, upstream })
    }

    fn path(&self) -> String {
        let port = self.upstream.endpoint.port().unwrap_or(0);
        format!("/call?port={port}&paths=/hello,/hello,/hello")
    }
}

/// Client calls the agent counted so far.
fn calls(agent: &Agent) -> Result<u64> {
    Ok(agent.metrics()?.sum("http_client_request_duration_seconds_count", &[]) as u64)
}

pub fn measure(c: &Calls, load: &Load, rounds: usize) -> Result<Vec<Row>> {
    let url = super::url(&c.target, &c.path());
    let mut short = Vec::new();
    let mut kernel_share = Vec::new();
    let sides = interleave("measure 9 (Go http.Client calls)", &["without", "server only", "with"], rounds, |side| {
        if side == 0 {
            return Ok(run(load, &url)?.rps);
        }
        let mut args = pid_args(&[c.target.pid()]);
        if side == 1 {
            args.push("--no-client-metrics".into());
        }
        let agent = Agent::start(&args)?;
        let before = if side == 2 { calls(&agent)? } else { 0 };
        let r = run(load, &url)?;
        if side == 2 {
            // Every call of a completed request is counted (and those of requests wrk cut).
            let want = before + CALLS * r.requests;
            let counted = agent
                .wait_metrics("the calls counted", |m| m.sum("http_client_request_duration_seconds_count", &[]) as u64 >= want)
                .map(|m| m.sum("http_client_request_duration_seconds_count", &[]) as u64)
                .unwrap_or_else(|_| calls(&agent).unwrap_or(0));
            if counted < want {
                short.push(format!("{} of {} calls counted", counted - before, want - before));
            }
            let m = agent.metrics()?;
            let by = |p: &str| m.sum("redprobe_http_client_requests_paired_total", &[("pairer", p)]);
            kernel_share.push(by("kernel") / (by("kernel") + by("agent")).max(1.0));
        }
        agent.stop()?;
        Ok(r.rps)
    })?;
    if !short.is_empty() {
        eprintln!("bench: warning: measure 9: {}", short.join("; "));
    }
    let share = kernel_share.iter().copied().fold(1.0, f64::min);
    let server_only = Paired::new(sides[0].clone(), sides[1].clone());
    let with = Paired::new(sides[0].clone(), sides[2].clone());
    let client_cost = Paired::new(sides[1].clone(), sides[2].clone());
    let per_call = {
        let (base, with) = (1e9 / client_cost.base_median(), 1e9 / client_cost.with_median());
        (with - base) / CALLS as f64
    };
    let mut added = Row::added_ns("9", "  ns added per call ((1/rps on - server only) / 3)", &client_cost);
    added.result = format!("{per_call:+.0} ns");
    Ok(vec![
        Row::ratio("9", "Go /call (3 calls each): req/s, server only ÷ none", &server_only, "", 0, None),
        Row::ratio("9", "  client metrics on ÷ none", &with, "", 0, None),
        Row::ratio(
            "9",
            &format!("  client metrics on ÷ server only ({:.0} % kernel-paired)", share * 100.0),
            &client_cost,
            "",
            0,
            None,
        ),
        added,
    ])
}
