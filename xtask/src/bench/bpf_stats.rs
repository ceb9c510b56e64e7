//! Where the kernel time goes: each of the agent's programs' run_time_ns / run_cnt, from
//! the kernel's own accounting (`kernel.bpf_stats_enabled`).
//!
//! The accounting adds two clock reads to every program run, so it is switched on only
//! for this phase, never during the side-by-side timings, and restored afterwards. Two
//! windows are read: a non-target loop (this process's TCP ping-pong: the bail-out
//! cost) and nginx under measure 2's load (target events, mixed with wrk's bail-outs).
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use testkit::procs::Agent;

use super::{
    Row,
    agent_cost::cpu_seconds,
    nginx::{HELLO, Nginx, USERS, counts, drain},
    non_target::tcp_ping_pong,
    wrk::{self, Load},
};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Sets kernel.bpf_stats_enabled=1 and restores the previous value when dropped.
struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    fn on() -> Result<Self> {
        let previous = std::fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?;
        std::fs::write(SYSCTL, "1").with_context(|| format!("writing {SYSCTL}"))?;
        Ok(StatsEnabled { previous: previous.trim().to_string() })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.previous);
    }
}

/// (run_time_ns, run_cnt) of each of `pid`'s programs, by name.
type Snapshot = BTreeMap<String, (u64, u64)>;

/// The programs `pid` holds: their ids from /proc/<pid>/fdinfo, names and counters from
/// the kernel's program info.
fn snapshot(pid: u32) -> Result<Snapshot> {
    let mut ids = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else { continue };
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("prog_id:")) {
            ids.insert(id.trim().parse::<u32>()?);
        }
    }
    let mut out = Snapshot::new();
    for info in aya::programs::loaded_programs() {
        let Ok(info) = info else { continue };
        if ids.contains(&info.id()) {
            let name = info.name_as_str().unwrap_or("?").to_string();
            out.insert(name, (info.run_time().as_nanos() as u64, info.run_count()));
        }
    }
    Ok(out)
}

fn delta(before: &Snapshot, after: &Snapshot) -> Snapshot {
    after
        .iter()
        .map(|(name, (t, n))| {
            let (t0, n0) = before.get(name).copied().unwrap_or((0, 0));
            (name.clone(), (t - t0, n - n0))
        })
        .collect()
}

fn per_run(t: u64, n: u64) -> String {
    if n == 0 { "-".into() } else { format!("{:.1}", t as f64 / n as f64) }
}

/// One loaded window: what each program, the agent and nginx's worker spent.
struct Window {
    programs: Snapshot,
    requests: u64,
    seconds: f64,
    events: f64,
    agent_cpu_s: f64,
    worker_cpu_s: f64,
}

impl Window {
    fn bpf_ns(&self) -> u64 {
        self.programs.values().map(|(t, _)| t).sum()
    }

    /// The headline row: BPF + agent time per request, as a share of nginx's own time
    /// per request (its worker's CPU less the BPF time, all of which is counted against
    /// nginx: the bail-outs in wrk's context make the share larger, never smaller).
    fn row(&self, measure: &str) -> Row {
        let n = self.requests.max(1) as f64;
        let bpf = self.bpf_ns() as f64 / n;
        let agent = self.agent_cpu_s * 1e9 / n;
        let own = (self.worker_cpu_s * 1e9 / n - bpf).max(1.0);
        let share = (bpf + agent) / own;
        Row {
            id: "H",
            measure: measure.into(),
            without: format!("{own:.0} ns"),
            with: format!("{:.0} ns", bpf + agent),
            result: format!("{:.1} %", share * 100.0),
            spread: format!("bpf {bpf:.0} + agent {agent:.0}"),
            goal: "<= 5 %".into(),
            met: Some(share <= 0.05),
        }
    }
}

/// nginx's worker (its single child).
fn worker(nginx: &Nginx) -> Result<u32> {
    testkit::procs::children(nginx.pid()).into_iter().next().context("nginx has no worker process")
}

/// One wrk run on `url` (with `script`), counted on `route`, with stats on.
fn window(agent: &Agent, nginx: &Nginx, load: &Load, url: &str, script: Option<&str>, route: &str) -> Result<Window> {
    let (pid, worker) = (agent.child.id(), worker(nginx)?);
    let events0 = agent.metrics()?.sum("redprobe_events_received_total", &[]);
    let before = counts(agent, route)?;
    let (agent0, worker0) = (cpu_seconds(pid)?, cpu_seconds(worker)?);
    let s0 = snapshot(pid)?;
    let run = wrk::run_script(load, url, script)?;
    let s1 = snapshot(pid)?;
    let worker1 = cpu_seconds(worker)?;
    // The agent's share includes reading the run's aggregates (the scrapes that wait for
    // its count) and any event it drained.
    drain(agent, route, before, run.requests)?;
    let agent1 = cpu_seconds(pid)?;
    let events = agent.metrics()?.sum("redprobe_events_received_total", &[]) - events0;
    Ok(Window {
        programs: delta(&s0, &s1),
        requests: run.requests,
        seconds: run.seconds,
        events,
        agent_cpu_s: agent1 - agent0,
        worker_cpu_s: worker1 - worker0,
    })
}

/// Runs the windows; returns the headline rows and the lines of the bpf_stats table.
pub fn measure(nginx: &Nginx, load: &Load) -> Result<(Vec<Row>, Vec<String>)> {
    let agent = Agent::start(&nginx.agent_args())?;
    let pid = agent.child.id();
    let _stats = StatsEnabled::on()?;
    // Window 1: non-target socket calls (4 per round trip).
    let round_trips = 100_000u32;
    let s0 = snapshot(pid)?;
    tcp_ping_pong(round_trips)?;
    let s1 = snapshot(pid)?;
    // Windows 2 and 3: nginx under load, on one path and on random ones.
    let hello = window(&agent, nginx, load, &nginx.url(HELLO), None, HELLO)?;
    let users = window(&agent, nginx, load, &nginx.url("/"), Some(wrk::RANDOM_USERS), USERS)?;
    drop(_stats);
    agent.stop()?;

    let rows = vec![
        hello.row("redprobe added per nginx /hello request, % of nginx"),
        users.row("same, nginx /users/<random id>"),
    ];
    let idle = delta(&s0, &s1);
    let mut lines = vec![format!(
        "{:<20} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "program", "non-target", "", "/hello", "", "", "/users/id", "", ""
    )];
    lines.push(format!(
        "{:<20} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "", "runs", "ns/run", "runs/req", "ns/run", "ns/req", "runs/req", "ns/run", "ns/req"
    ));
    for (name, (t, n)) in &hello.programs {
        let (ti, ni) = idle.get(name).copied().unwrap_or((0, 0));
        let (tu, nu) = users.programs.get(name).copied().unwrap_or((0, 0));
        let (rh, ru) = (hello.requests.max(1) as f64, users.requests.max(1) as f64);
        lines.push(format!(
            "{:<20} {:>12} {:>10} {:>10.2} {:>10} {:>10.1} {:>10.2} {:>10} {:>10.1}",
            name,
            ni,
            per_run(ti, ni),
            *n as f64 / rh,
            per_run(*t, *n),
            *t as f64 / rh,
            nu as f64 / ru,
            per_run(tu, nu),
            tu as f64 / ru,
        ));
    }
    for (path, w) in [("/hello", &hello), ("/users/<random id>", &users)] {
        let n = w.requests.max(1) as f64;
        lines.push(format!(
            "{path}: {:.0} ns of BPF time and {:.0} ns of agent CPU per request; nginx's worker {:.0} ns per request              ({} requests in {:.1} s, {:.3} events per request)",
            w.bpf_ns() as f64 / n,
            w.agent_cpu_s * 1e9 / n,
            w.worker_cpu_s * 1e9 / n,
            w.requests,
            w.seconds,
            w.events / n
        ));
    }
    lines.push(format!("the non-target loop made {} socket calls", round_trips * 4));
    Ok((rows, lines))
}
