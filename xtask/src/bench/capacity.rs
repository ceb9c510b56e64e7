//! Measure 6: capacity, the highest request rate at which the agent loses no event.
//!
//! One agent measures nginx's `return 200` while the paced load generator steps the rate
//! up. After each step the agent must have counted exactly the requests that completed
//! (`http_server_request_duration_seconds_count`) and `redprobe_events_lost_total` must
//! not have grown. Stepping stops once the generator cannot reach the rate any more:
//! that is the machine's nginx ceiling.
use std::net::SocketAddr;

use anyhow::{Context, Result};
use testkit::{client::Endpoint, procs::Agent};

use super::{
    Row,
    loadgen::{self, Plan},
    nginx::{HELLO, Nginx, counts, drain},
};

/// Requests per second; the last step is unpaced (as fast as possible).
const STEPS: [Option<f64>; 8] =
    [Some(10e3), Some(25e3), Some(50e3), Some(75e3), Some(100e3), Some(150e3), Some(200e3), None];
/// The goal: at least this rate, or the ceiling if the machine cannot reach it.
const GOAL_RPS: f64 = 50e3;

pub struct Step {
    pub target: Option<f64>,
    pub achieved: f64,
    pub sent: u64,
    pub counted: u64,
    pub lost: u64,
}

impl Step {
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.counted == self.sent
    }
}

pub fn measure(nginx: &Nginx, seconds: f64, cpu: Option<usize>) -> Result<(Vec<Row>, Vec<String>)> {
    let Endpoint::Tcp(addr) = nginx.server.endpoint.clone() else { unreachable!("nginx listens on TCP") };
    let agent = Agent::start(&nginx.agent_args())?;
    // Warm-up, not counted.
    run_step(&agent, addr, Some(10e3), 1.0, cpu)?;
    let mut steps: Vec<Step> = vec![];
    for target in STEPS {
        eprintln!(
            "bench: measure 6 (capacity): {}",
            target.map(|r| format!("{:.0} req/s", r)).unwrap_or_else(|| "unpaced".into())
        );
        let step = run_step(&agent, addr, target, seconds, cpu)?;
        let reached = target.is_none_or(|t| step.achieved >= 0.95 * t);
        steps.push(step);
        if !reached {
            break; // the ceiling: faster steps would only repeat this one
        }
    }
    agent.stop()?;
    let ceiling = steps.iter().map(|s| s.achieved).fold(0.0, f64::max);
    let capacity = steps.iter().take_while(|s| s.clean()).map(|s| s.achieved).fold(0.0, f64::max);
    let all_clean = steps.iter().all(Step::clean);
    let met = capacity >= GOAL_RPS || all_clean;
    let notes = steps
        .iter()
        .map(|s| {
            format!(
                "measure 6 step {:>8}: achieved {:>7.0} req/s, sent {:>8}, counted {:>8}, events lost {}",
                s.target.map(|t| format!("{t:.0}")).unwrap_or_else(|| "unpaced".into()),
                s.achieved,
                s.sent,
                s.counted,
                s.lost
            )
        })
        .collect();
    let row = Row {
        id: "6",
        measure: "capacity: highest rate with 0 events lost, req/s".into(),
        without: "-".into(),
        with: format!("{capacity:.0}"),
        result: if all_clean { format!("{capacity:.0} (ceiling)") } else { format!("{capacity:.0}") },
        spread: format!("ceiling {ceiling:.0}"),
        goal: format!(">= {:.0}k or ceiling", GOAL_RPS / 1e3),
        met: Some(met),
    };
    Ok((vec![row], notes))
}

fn run_step(agent: &Agent, addr: SocketAddr, target: Option<f64>, seconds: f64, cpu: Option<usize>) -> Result<Step> {
    let before = counts(agent, HELLO)?;
    let done = loadgen::run(&Plan {
        addr,
        path: HELLO,
        rate: target,
        seconds,
        threads: 4,
        connections_per_thread: 8,
        cpu,
    })
    .context("load generator")?;
    // Until it has counted them all, or gives up (a step that lost events is not clean).
    let (counted, lost) = drain(agent, HELLO, before, done.requests)?;
    Ok(Step { target, achieved: done.rate(), sent: done.requests, counted, lost })
}
