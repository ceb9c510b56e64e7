//! Saturation (the S of RED+S), read from /proc at scrape time: CPU seconds and resident
//! memory of each service's processes, summed over all its workers.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::{health::ServiceLabels, process};

/// One measured process.
#[derive(Clone, Debug)]
pub struct Member {
    pub pid: u32,
    pub start_time: u64,
    pub service: Arc<str>,
    /// A PID given on the command line: its waited-for children's CPU counts too.
    pub root: bool,
}

/// The targets, shared with the agent (which updates it as processes come and go).
#[derive(Debug, Default)]
pub struct Saturation {
    pub members: Mutex<Vec<Member>>,
    /// Highest CPU total reported per service, so the counter never goes down when a
    /// worker exits and is replaced.
    cpu_floor: Mutex<HashMap<Arc<str>, f64>>,
}

impl Saturation {
    fn totals(&self) -> Vec<(Arc<str>, f64, f64)> {
        let members = self.members.lock().map(|m| m.clone()).unwrap_or_default();
        let mut by: HashMap<Arc<str>, (f64, f64)> = HashMap::new();
        for m in &members {
            let Some(s) = process::stats(&m.pid.to_string()) else { continue };
            let e = by.entry(m.service.clone()).or_default();
            e.0 += s.utime_s + s.stime_s + if m.root { s.children_s } else { 0.0 };
            e.1 += s.rss_bytes;
        }
        let Ok(mut floor) = self.cpu_floor.lock() else { return vec![] };
        let mut out = vec![];
        for (service, (cpu, rss)) in by {
            let f = floor.entry(service.clone()).or_insert(0.0);
            *f = f.max(cpu);
            out.push((service, *f, rss));
        }
        for (service, f) in floor.iter() {
            if !out.iter().any(|(s, _, _)| s == service) {
                out.push((service.clone(), *f, 0.0)); // every process of the service exited
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Collector for Saturation {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.totals();
        let mut cpu = encoder.encode_descriptor(
            "redprobe_target_cpu_seconds",
            "CPU seconds (user + system) of the target's processes, summed over all workers, including exited ones",
            None,
            MetricType::Counter,
        )?;
        for (service, c, _) in &totals {
            let labels = ServiceLabels { service_name: service.to_string() };
            ConstCounter::new(*c).encode(cpu.encode_family(&labels)?)?;
        }
        let mut rss = encoder.encode_descriptor(
            "redprobe_target_resident_memory_bytes",
            "Resident memory of the target's processes, summed over all workers",
            None,
            MetricType::Gauge,
        )?;
        for (service, _, r) in &totals {
            let labels = ServiceLabels { service_name: service.to_string() };
            ConstGauge::new(*r).encode(rss.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
