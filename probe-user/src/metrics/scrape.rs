//! The collectors that read /proc when Prometheus scrapes: the targets' saturation and the
//! agent's own process. Each reports whether it succeeded and how long it took
//! (`redprobe_scrape_collector_success`, `redprobe_scrape_collector_duration_seconds`), as
//! node_exporter's collectors do, and a failure is logged once, not hidden.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use super::{process::AgentProcess, saturation::Saturation};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CollectorLabels {
    collector: String,
}

pub struct ScrapeCollectors {
    saturation: Saturation,
    process: AgentProcess,
    warned: [AtomicBool; 2],
}

impl std::fmt::Debug for ScrapeCollectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeCollectors")
    }
}

impl ScrapeCollectors {
    pub fn new(saturation: Saturation, process: AgentProcess) -> Self {
        ScrapeCollectors { saturation, process, warned: Default::default() }
    }

    fn report(&self, i: usize, name: &str, result: &Result<(), String>) {
        match result {
            Err(e) if !self.warned[i].swap(true, Ordering::Relaxed) => {
                tracing::warn!(collector = name, "collector failed: {e} (redprobe_scrape_collector_success is 0)");
            }
            Ok(()) => self.warned[i].store(false, Ordering::Relaxed),
            Err(_) => {}
        }
    }
}

impl Collector for ScrapeCollectors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Each collector reads, then encodes what it read; a failed read encodes nothing.
        type Collect<'a> = Box<dyn Fn(&mut DescriptorEncoder) -> Result<Result<(), String>, std::fmt::Error> + 'a>;
        let collectors: [(&str, Collect<'_>); 2] = [
            ("saturation", Box::new(|e| match self.saturation.collect() {
                Ok(totals) => Saturation::encode(&totals, e).map(Ok),
                Err(why) => Ok(Err(why)),
            })),
            ("process", Box::new(|e| match self.process.collect() {
                Ok(stats) => AgentProcess::encode(&stats, e).map(Ok),
                Err(why) => Ok(Err(why)),
            })),
        ];
        let mut outcomes = vec![];
        for (i, (name, collect)) in collectors.iter().enumerate() {
            let start = Instant::now();
            let result = collect(&mut encoder)?;
            self.report(i, name, &result);
            outcomes.push((*name, result.is_ok(), start.elapsed().as_secs_f64()));
        }

        let mut success = encoder.encode_descriptor(
            "redprobe_scrape_collector_success",
            "Whether the collector read what it needs at this scrape (1) or failed (0, logged)",
            None,
            MetricType::Gauge,
        )?;
        for (name, ok, _) in &outcomes {
            let labels = CollectorLabels { collector: name.to_string() };
            ConstGauge::new(if *ok { 1.0 } else { 0.0 }).encode(success.encode_family(&labels)?)?;
        }
        let mut duration = encoder.encode_descriptor(
            "redprobe_scrape_collector_duration_seconds",
            "How long the collector took at this scrape",
            None,
            MetricType::Gauge,
        )?;
        for (name, _, seconds) in &outcomes {
            let labels = CollectorLabels { collector: name.to_string() };
            ConstGauge::new(*seconds).encode(duration.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
