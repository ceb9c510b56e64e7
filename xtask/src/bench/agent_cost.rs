//! Measure 5: the agent's own cost, read from /proc while it measures nginx (measure 2).
//! CPU is utime + stime from /proc/<pid>/stat (clock ticks); peak RSS is VmHWM from
//! /proc/<pid>/status.
use anyhow::Result;
use testkit::procs::{STAT_STIME, STAT_UTIME, Stat, status_kib};

use super::stats::{median, range};

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User + system CPU seconds of `pid` so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = Stat::read(pid)?;
    Ok((stat.number(STAT_UTIME)? + stat.number(STAT_STIME)?) as f64 / clock_ticks_per_second())
}

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    Ok(status_kib(pid, "VmHWM:")? * 1024)
}

/// The agent's CPU over one loaded run, and the requests served meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    pub cpu_seconds: f64,
    pub requests: u64,
    pub wall_seconds: f64,
}

impl CpuSample {
    /// CPU-seconds per 10,000 requests (= fraction of a core at 10,000 requests/s).
    pub fn per_10k(&self) -> f64 {
        self.cpu_seconds / self.requests as f64 * 10_000.0
    }
}

/// Summary over the "with" runs of measure 2.
pub struct AgentCost {
    pub samples: Vec<CpuSample>,
    pub peak_rss_bytes: u64,
}

impl AgentCost {
    /// Median CPU-seconds per 10k requests and its range over the runs.
    pub fn per_10k(&self) -> (f64, (f64, f64)) {
        let v: Vec<f64> = self.samples.iter().map(CpuSample::per_10k).collect();
        (median(&v), range(&v))
    }

    /// Median share of one core while nginx was saturated.
    pub fn busy_share(&self) -> f64 {
        median(&self.samples.iter().map(|s| s.cpu_seconds / s.wall_seconds).collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(peak_rss_bytes(me).unwrap() > 0);
        let s = CpuSample { cpu_seconds: 0.5, requests: 500_000, wall_seconds: 3.0 };
        assert!((s.per_10k() - 0.01).abs() < 1e-12);
    }
}
