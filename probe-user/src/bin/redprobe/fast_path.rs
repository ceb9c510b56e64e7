//! The agent's side of the kernel's fast path: the route ids it writes (`ROUTES`) and the
//! aggregates it reads at each scrape (`AGG`). The gauges come from `CONNS` itself
//! (`conn_map.rs`, `Pipeline::housekeeping`); the service ids of processes (`SERVICES`)
//! are the targets' (`targets.rs`).
use std::sync::{Arc, Mutex, PoisonError};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use probe_common::{AggKey, AggValue, RouteKey};
use probe_user::{
    metrics::{
        Metrics,
        kernel::{KernelTotals, add},
    },
    registry::{SharedRegistry, lock},
};

/// `ROUTES`, written from the agent's loop.
pub struct FastPath {
    routes: BpfHashMap<MapData, RouteKey, u32>,
    metrics: Metrics,
}

impl FastPath {
    pub fn new(routes: BpfHashMap<MapData, RouteKey, u32>, metrics: Metrics) -> Self {
        FastPath { routes, metrics }
    }

    /// The kernel labels requests with `key` by `route` from now on.
    pub fn set_route(&mut self, service_id: u32, key: u64, route: u32) {
        let k = RouteKey { service: service_id, _pad: 0, path_key: key };
        if self.routes.insert(k, route, 0).is_err() {
            self.metrics.health.map_write_failed("ROUTES");
        }
    }
}

/// `AGG`, read at each scrape: what the kernel added since the last read goes into the
/// series.
pub struct Aggregates {
    map: PerCpuHashMap<MapData, AggKey, AggValue>,
    totals: KernelTotals,
    metrics: Metrics,
    registry: SharedRegistry,
}

impl Aggregates {
    pub fn new(
        map: PerCpuHashMap<MapData, AggKey, AggValue>,
        metrics: Metrics,
        registry: SharedRegistry,
    ) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Aggregates { map, totals: KernelTotals::default(), metrics, registry }))
    }

    pub fn sync(&mut self) {
        let read: Vec<(AggKey, AggValue)> = self
            .map
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| {
                let mut sum = AggValue::default();
                for v in per_cpu.iter() {
                    add(&mut sum, v);
                }
                (key, sum)
            })
            .collect();
        let registry = lock(&self.registry);
        self.totals.apply(&self.metrics, read, |id| registry.service_named(id));
        drop(registry);
        self.metrics.health.set_map("AGG", self.totals.keys() as i64, crate::loader::MAX_AGGREGATES as i64);
    }

    /// Forgotten service ids: what the kernel added for them is read one last time, then
    /// their keys leave the kernel's map (no process of theirs is left to add to them, and
    /// the ids are not given out again).
    pub fn forget(&mut self, service_ids: &std::collections::HashSet<u32>) {
        self.sync();
        let keys: Vec<AggKey> =
            self.map.keys().filter_map(Result::ok).filter(|k| service_ids.contains(&k.service)).collect();
        for k in keys {
            let _ = self.map.remove(&k);
        }
        self.totals.forget(service_ids);
    }
}

/// A read of the aggregates: the hook the exposition runs before each encode, which the
/// loop also runs every `READ_AGGREGATES_EVERY`.
pub fn reader(aggregates: Arc<Mutex<Aggregates>>) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || aggregates.lock().unwrap_or_else(PoisonError::into_inner).sync())
}
