//! Process metrics from /proc, read at scrape time: the agent's own (`process_*`, the
//! names every Prometheus client library uses) and the targets' saturation.
use std::fs;

use crate::procfs::Stat;

/// CPU seconds, resident bytes, start time (seconds since boot) of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcStats {
    pub utime_s: f64,
    pub stime_s: f64,
    /// CPU of waited-for children (cutime + cstime).
    pub children_s: f64,
    pub rss_bytes: f64,
    pub vsize_bytes: f64,
    pub threads: f64,
    pub start_s: f64,
}

fn ticks() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> f64 {
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as f64 } else { 4096.0 }
}

/// CPU, memory and start time from /proc/PID/stat content.
pub fn parse_stat(stat: &str) -> Option<ProcStats> {
    let s = Stat::parse(stat)?;
    let num = |n: usize| s.field::<f64>(n);
    let hz = ticks();
    Some(ProcStats {
        utime_s: num(14)? / hz,
        stime_s: num(15)? / hz,
        children_s: (num(16)? + num(17)?) / hz,
        threads: num(20)?,
        start_s: num(22)? / hz,
        vsize_bytes: num(23)?,
        rss_bytes: num(24)? * page_size(),
    })
}

pub fn stats(pid: &str) -> Option<ProcStats> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn open_fds(pid: &str) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

pub fn boot_time_s() -> f64 {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The agent's own process metrics.
#[derive(Debug)]
pub struct SelfCollector;

impl prometheus_client::collector::Collector for SelfCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
        };
        let Some(s) = stats("self") else { return Ok(()) };
        let fds = open_fds("self").unwrap_or(0) as f64;
        ConstCounter::new(s.utime_s + s.stime_s).encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time of the agent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory of the agent in bytes", s.rss_bytes),
            ("process_virtual_memory_bytes", "Virtual memory of the agent in bytes", s.vsize_bytes),
            ("process_open_fds", "Open file descriptors of the agent", fds),
            ("process_threads", "Threads of the agent", s.threads),
            ("process_start_time_seconds", "Start time of the agent since the Unix epoch in seconds", boot_time_s() + s.start_s),
        ];
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_reads_self() {
        let stat = "7 (a (b) c) S 1 7 7 0 -1 0 0 0 0 0 200 100 50 25 20 0 3 0 1000 4096000 250";
        let s = parse_stat(stat).unwrap();
        let hz = ticks();
        assert_eq!(s.utime_s, 200.0 / hz);
        assert_eq!(s.stime_s, 100.0 / hz);
        assert_eq!(s.children_s, 75.0 / hz);
        assert_eq!(s.threads, 3.0);
        assert_eq!(s.rss_bytes, 250.0 * page_size());
        assert!(stats("self").unwrap().rss_bytes > 0.0);
        assert!(parse_stat("nonsense").is_none());
    }
}
