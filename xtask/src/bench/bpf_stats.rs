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
    nginx::{HELLO, Nginx, counts, drain},
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

/// Runs both windows and returns the lines of the bpf_stats table.
pub fn measure(nginx: &Nginx, load: &Load) -> Result<Vec<String>> {
    let agent = Agent::start(&nginx.agent_args())?;
    let pid = agent.child.id();
    let _stats = StatsEnabled::on()?;
    // Window 1: non-target socket calls (4 per round trip).
    let round_trips = 100_000u32;
    let s0 = snapshot(pid)?;
    tcp_ping_pong(round_trips)?;
    let s1 = snapshot(pid)?;
    // Window 2: nginx under load.
    let events0 = agent.metrics()?.sum("redprobe_events_received_total", &[]);
    let before = counts(&agent, HELLO)?;
    let s2 = snapshot(pid)?;
    let run = wrk::run(load, &nginx.url(HELLO))?;
    let s3 = snapshot(pid)?;
    // The events of every request wrk completed are in once the agent has counted them.
    drain(&agent, HELLO, before, run.requests)?;
    let events = agent.metrics()?.sum("redprobe_events_received_total", &[]) - events0;
    drop(_stats);
    agent.stop()?;

    let (idle, busy) = (delta(&s0, &s1), delta(&s2, &s3));
    let requests = run.requests as f64;
    let mut lines = vec![format!(
        "{:<18} {:>14} {:>14} {:>12} {:>12} {:>12}",
        "program", "non-target", "", "nginx /hello", "under wrk", ""
    )];
    lines.push(format!(
        "{:<18} {:>14} {:>14} {:>12} {:>12} {:>12}",
        "", "runs", "ns/run", "runs/req", "ns/run", "ns/req"
    ));
    let mut total = 0u64;
    for (name, (t, n)) in &busy {
        let (ti, ni) = idle.get(name).copied().unwrap_or((0, 0));
        total += t;
        lines.push(format!(
            "{:<18} {:>14} {:>14} {:>12.2} {:>12} {:>12.1}",
            name,
            ni,
            per_run(ti, ni),
            *n as f64 / requests,
            per_run(*t, *n),
            *t as f64 / requests
        ));
    }
    lines.push(format!(
        "all programs: {:.0} ns of BPF time per nginx request ({} requests in {:.1} s, {:.2} events per request); \
         the non-target loop made {} socket calls",
        total as f64 / requests,
        run.requests,
        run.seconds,
        events / requests,
        round_trips * 4
    ));
    Ok(lines)
}
