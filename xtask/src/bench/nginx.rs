//! Measures 2 and 3 (nginx `return 200` and a 4 KB static file served with sendfile,
//! saturated by wrk), and the samples of measure 5 (the agent's CPU and memory while it
//! measures measure 2's load).
//!
//! One nginx (1 worker) runs for the whole bench. "without" = no agent running; "with" =
//! an agent attached to nginx's master PID (its worker is measured as its child). The
//! same nginx process serves both sides.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testkit::{
    procs::{Agent, pid_args},
    servers::{Bind, NginxSite, RealServer, nginx},
    wait_for,
};

use super::{
    Row,
    agent_cost::{self, AgentCost, CpuSample},
    stats::{Paired, interleave},
    wrk::{self, Load, WrkResult},
};

pub const HELLO: &str = "/hello";
/// The route of the route-heavy variant (`wrk::RANDOM_USERS`).
pub const USERS: &str = "/users/{id}";
pub const STATIC_FILE: &str = "/static/4k.bin";

/// The bench's nginx and where its single worker runs.
pub struct Nginx {
    pub server: RealServer,
}

impl Nginx {
    pub fn start(pin_cpu: Option<usize>) -> Result<Self> {
        let file = vec![b'x'; 4096];
        let server = nginx(Bind::V4, &NginxSite { workers: 1, files: &[("4k.bin", &file)], ..Default::default() })
            .context("starting nginx")?;
        let worker = testkit::procs::children(server.pid()).into_iter().next().context("nginx has no worker process")?;
        if let Some(cpu) = pin_cpu {
            pin(worker, cpu)?;
        }
        Ok(Nginx { server })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    pub fn url(&self, path: &str) -> String {
        super::url(&self.server, path)
    }

    pub fn agent_args(&self) -> Vec<String> {
        pid_args(&[self.pid()])
    }
}

/// Pins `pid` (0: the calling thread) to one CPU (sched_setaffinity, as `taskset -p -c`
/// does).
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!("pinning PID {pid} to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Requests the agent counted on `route`, and the events it lost, as one scrape of its
/// /metrics shows them.
pub fn counts(agent: &Agent, route: &str) -> Result<(u64, u64)> {
    let m = agent.metrics()?;
    Ok((
        m.sum("http_server_request_duration_seconds_count", &[("http_route", route)]) as u64,
        m.sum("redprobe_events_lost_total", &[]) as u64,
    ))
}

/// How long the agent may take to count a run's last requests (it drains every 20 ms).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls the agent's /metrics until it has counted `served` requests on `route` since
/// `before` (`counts` taken before the run). Returns the requests counted and events lost
/// since then; when `DRAIN_TIMEOUT` passes first, the last ones seen, with a warning
/// naming them (events lost leave the count short: the bench reports that, it does not
/// fail on it).
pub fn drain(agent: &Agent, route: &str, before: (u64, u64), served: u64) -> Result<(u64, u64)> {
    drain_with(|| counts(agent, route), route, before, served, DRAIN_TIMEOUT)
}

/// `drain` with `scrape` for `counts`.
fn drain_with(
    mut scrape: impl FnMut() -> Result<(u64, u64)>,
    route: &str,
    before: (u64, u64),
    served: u64,
    timeout: Duration,
) -> Result<(u64, u64)> {
    let mut seen = (0, 0);
    let what = format!("the agent to count {served} {route} requests");
    let drained = wait_for(&what, timeout, || match scrape() {
        Err(e) => Some(Err(e)),
        Ok((counted, lost)) => {
            seen = (counted.saturating_sub(before.0), lost.saturating_sub(before.1));
            (seen.0 >= served).then_some(Ok(()))
        }
    });
    match drained {
        Ok(scraped) => scraped?,
        Err(e) => eprintln!("bench: warning: {e}: it counted {} of them, events lost {}", seen.0, seen.1),
    }
    Ok(seen)
}

/// One side of one round (what wrk and /proc measured; not a metrics sample).
struct SideRun {
    hello: WrkResult,
    file: WrkResult,
    /// `/users/<random id>`.
    users: WrkResult,
    /// The agent's CPU over the `hello` run ("with" only).
    cpu: Option<CpuSample>,
    peak_rss: u64,
    /// Requests the agent counted on /hello, events it lost ("with" only).
    counted: u64,
    lost: u64,
}

fn run_side(nginx: &Nginx, load: &Load, with_agent: bool) -> Result<SideRun> {
    let (hello_url, file_url) = (nginx.url(HELLO), nginx.url(STATIC_FILE));
    if !with_agent {
        let hello = wrk::run(load, &hello_url)?;
        let file = wrk::run(load, &file_url)?;
        let users = wrk::run_script(load, &nginx.url("/"), Some(wrk::RANDOM_USERS))?;
        return Ok(SideRun { hello, file, users, cpu: None, peak_rss: 0, counted: 0, lost: 0 });
    }
    let agent = Agent::start(&nginx.agent_args())?;
    let pid = agent.child.id();
    let before = counts(&agent, HELLO)?;
    let (cpu0, t0) = (agent_cost::cpu_seconds(pid)?, Instant::now());
    let hello = wrk::run(load, &hello_url)?;
    // The agent's CPU includes draining the run's last events: wait until it has counted
    // every /hello wrk completed (it may count more: wrk leaves requests in flight).
    drain(&agent, HELLO, before, hello.requests)?;
    let cpu = CpuSample {
        cpu_seconds: agent_cost::cpu_seconds(pid)? - cpu0,
        requests: hello.requests,
        wall_seconds: t0.elapsed().as_secs_f64(),
    };
    // The file run is on its own route: /hello's count is already there.
    let before = counts(&agent, STATIC_FILE)?;
    let file = wrk::run(load, &file_url)?;
    drain(&agent, STATIC_FILE, before, file.requests)?;
    let before = counts(&agent, USERS)?;
    let users = wrk::run_script(load, &nginx.url("/"), Some(wrk::RANDOM_USERS))?;
    drain(&agent, USERS, before, users.requests)?;
    let (counted, lost) = counts(&agent, HELLO)?;
    let peak_rss = agent_cost::peak_rss_bytes(pid)?;
    agent.stop()?;
    Ok(SideRun { hello, file, users, cpu: Some(cpu), peak_rss, counted, lost })
}

pub struct Results {
    pub rows: Vec<Row>,
    pub cost: AgentCost,
    /// Lines for the notes under the table.
    pub notes: Vec<String>,
    /// Median requests/s without the agent (nginx's ceiling under wrk).
    pub ceiling_rps: f64,
}

pub fn measure(nginx: &Nginx, load: &Load, rounds: usize) -> Result<Results> {
    let samples = interleave("measures 2, 3, 5 (nginx)", &["without", "with"], rounds, |side| {
        run_side(nginx, load, side == 1)
    })?;
    let (without, with) = (&samples[0], &samples[1]);
    let pair = |f: fn(&SideRun) -> f64| Paired::new(without.iter().map(f).collect(), with.iter().map(f).collect());
    let hello_rps = pair(|s| s.hello.rps);
    let hello_p99 = pair(|s| s.hello.p99_us);
    let file_rps = pair(|s| s.file.rps);
    let file_p99 = pair(|s| s.file.p99_us);
    let users_rps = pair(|s| s.users.rps);
    let users_p99 = pair(|s| s.users.p99_us);
    let ratio_row = Row::ratio;
    let rows = vec![
        ratio_row("2", "nginx return 200, req/s", &hello_rps, "", 0, Some((">= 0.95", hello_rps.ratio() >= 0.95))),
        ratio_row("2", "nginx return 200, p99 latency", &hello_p99, " us", 0, Some(("<= 1.10", hello_p99.ratio() <= 1.10))),
        ratio_row("3", "nginx 4 KB static (sendfile), req/s", &file_rps, "", 0, Some((">= 0.95", file_rps.ratio() >= 0.95))),
        ratio_row("3", "nginx 4 KB static (sendfile), p99", &file_p99, " us", 0, None),
        ratio_row("2u", "nginx /users/<random id>, req/s", &users_rps, "", 0, Some((">= 0.95", users_rps.ratio() >= 0.95))),
        ratio_row("2u", "nginx /users/<random id>, p99 latency", &users_p99, " us", 0, Some(("<= 1.10", users_p99.ratio() <= 1.10))),
    ];
    let counted: u64 = with.iter().map(|s| s.counted).sum();
    let served: u64 = with.iter().map(|s| s.hello.requests).sum();
    let lost: u64 = with.iter().map(|s| s.lost).sum();
    let notes = vec![format!(
        "measure 2 check: the agent counted {counted} /hello requests where wrk completed {served} \
         (wrk does not count up to {} requests in flight at its end); events lost: {lost}",
        load.connections as usize * rounds
    )];
    Ok(Results {
        rows,
        cost: AgentCost {
            samples: with.iter().filter_map(|s| s.cpu).collect(),
            peak_rss_bytes: with.iter().map(|s| s.peak_rss).max().unwrap_or(0),
        },
        notes,
        ceiling_rps: hello_rps.base_median(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_polls_until_the_route_count_is_reached() {
        let mut scrapes = 0;
        let scrape = || {
            scrapes += 1;
            Ok((10 + 40 * scrapes, 2))
        };
        // Counted since `before`: 40, 80, then 120 (>= 100) at the third scrape.
        let got = drain_with(scrape, HELLO, (10, 2), 100, Duration::from_secs(5)).unwrap();
        assert_eq!(got, (120, 0));
        assert_eq!(scrapes, 3);
    }

    #[test]
    fn drain_gives_up_with_the_counts_last_seen() {
        let got = drain_with(|| Ok((7, 5)), HELLO, (0, 1), 100, Duration::from_millis(30)).unwrap();
        assert_eq!(got, (7, 4), "short of the target: counted and lost as last seen");
    }

    #[test]
    fn drain_fails_when_the_agent_does_not_answer() {
        assert!(drain_with(|| anyhow::bail!("refused"), HELLO, (0, 0), 1, Duration::from_secs(5)).is_err());
    }
}
