//! The agent's own process metrics (`process_*`, the names every Prometheus client
//! library uses), read from /proc at scrape time.
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::proc_root::{ProcRoot, ProcStats};

pub struct AgentProcess {
    proc: ProcRoot,
}

/// What the collector read.
pub struct AgentStats {
    stats: ProcStats,
    fds: usize,
    boot_time_s: u64,
}

impl AgentProcess {
    pub fn new(proc: ProcRoot) -> Self {
        AgentProcess { proc }
    }

    pub fn collect(&self) -> Result<AgentStats, String> {
        let root = self.proc.path().display();
        let stats = self.proc.own_stats().map_err(|e| format!("reading {root}/self/stat: {e}"))?;
        let fds = self.proc.own_open_fds().map_err(|e| format!("reading {root}/self/fd: {e}"))?;
        let boot_time_s = self.proc.boot_time_s().map_err(|e| format!("reading {root}/stat: {e}"))?;
        Ok(AgentStats { stats, fds, boot_time_s })
    }

    pub fn encode(a: &AgentStats, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &a.stats;
        ConstCounter::new(s.utime_s + s.stime_s).encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time of the agent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory of the agent in bytes", s.rss_bytes),
            ("process_virtual_memory_bytes", "Virtual memory of the agent in bytes", s.vsize_bytes),
            ("process_open_fds", "Open file descriptors of the agent", a.fds as f64),
            ("process_threads", "Threads of the agent", s.threads),
            ("process_start_time_seconds", "Start time of the agent since the Unix epoch in seconds", a.boot_time_s as f64 + s.start_s),
        ];
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        Ok(())
    }
}
