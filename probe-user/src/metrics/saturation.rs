//! Saturation (the S of RED+S), read from /proc at scrape time: CPU seconds and resident
//! memory of each service's processes, summed over all its workers (the registry's targets).
use crate::labels::Service;
use std::{collections::HashMap, sync::Mutex};

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::health::ServiceLabels;
use crate::{
    proc_root::{ProcRoot, is_permission},
    registry::{SharedRegistry, lock},
};

/// CPU and memory of one service.
pub struct ServiceTotals {
    pub service: Service,
    pub cpu_s: f64,
    pub rss_bytes: f64,
}

pub struct Saturation {
    registry: SharedRegistry,
    proc: ProcRoot,
    /// Highest CPU total reported per service, so the counter never goes down when a
    /// worker exits and is replaced.
    cpu_floor: Mutex<HashMap<Service, f64>>,
}

impl Saturation {
    pub fn new(registry: SharedRegistry, proc: ProcRoot) -> Self {
        Saturation { registry, proc, cpu_floor: Mutex::default() }
    }

    /// Totals per service. A target that exited meanwhile is skipped; one whose /proc
    /// entry cannot be read (permissions, no /proc) makes the collection fail.
    pub fn collect(&self) -> Result<Vec<ServiceTotals>, String> {
        let targets: Vec<_> = lock(&self.registry).targets().map(|t| (t.pid, t.service.clone(), t.root)).collect();
        let mut by: HashMap<Service, (f64, f64)> = HashMap::new();
        let mut error = None;
        for (pid, service, root) in targets {
            let s = match self.proc.stats(pid) {
                Ok(s) => s,
                Err(e) if is_permission(&e) => {
                    error = Some(format!("reading {}/{pid}/stat: {e}", self.proc.path().display()));
                    continue;
                }
                Err(_) => continue, // exited since the registry was read
            };
            let e = by.entry(service).or_default();
            e.0 += s.utime_s + s.stime_s + if root { s.children_s } else { 0.0 };
            e.1 += s.rss_bytes;
        }
        if let Some(e) = error {
            return Err(e);
        }
        let Ok(mut floor) = self.cpu_floor.lock() else {
            return Err("the CPU floor is poisoned".into());
        };
        let mut out = vec![];
        for (service, (cpu, rss)) in by {
            let f = floor.entry(service.clone()).or_insert(0.0);
            *f = f.max(cpu);
            out.push(ServiceTotals { service, cpu_s: *f, rss_bytes: rss });
        }
        // A forgotten service's CPU goes with its other series.
        let registry = lock(&self.registry);
        floor.retain(|service, _| registry.knows(service));
        drop(registry);
        for (service, f) in floor.iter() {
            if !out.iter().any(|t| &t.service == service) {
                // every process of the service exited
                out.push(ServiceTotals { service: service.clone(), cpu_s: *f, rss_bytes: 0.0 });
            }
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(out)
    }

    pub fn encode(totals: &[ServiceTotals], encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels = |t: &ServiceTotals| ServiceLabels { service: t.service.clone() };
        let mut cpu = encoder.encode_descriptor(
            "redprobe_target_cpu_seconds",
            "CPU seconds (user + system) of the target's processes, summed over all workers, including exited ones",
            None,
            MetricType::Counter,
        )?;
        for t in totals {
            ConstCounter::new(t.cpu_s).encode(cpu.encode_family(&labels(t))?)?;
        }
        let mut rss = encoder.encode_descriptor(
            "redprobe_target_resident_memory_bytes",
            "Resident memory of the target's processes, summed over all workers",
            None,
            MetricType::Gauge,
        )?;
        for t in totals {
            ConstGauge::new(t.rss_bytes).encode(rss.encode_family(&labels(t))?)?;
        }
        Ok(())
    }
}
