//! Gauge families set from whole snapshots of the pairing state.
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::{family::Family, gauge::Gauge};

/// A gauge family set from whole snapshots (every second, from the pairing state): a
/// series set by an earlier snapshot and absent from this one goes back to 0, where a
/// plain gauge would keep its last value. Values of label sets that repeat add up.
#[derive(Clone, Debug)]
pub struct SnapshotGauge<L> {
    pub family: Family<L, Gauge>,
    seen: Arc<Mutex<Vec<L>>>,
}

impl<L> Default for SnapshotGauge<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    fn default() -> Self {
        SnapshotGauge { family: Family::default(), seen: Default::default() }
    }
}

impl<L> SnapshotGauge<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    pub fn set(&self, values: impl IntoIterator<Item = (L, i64)>) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        for labels in seen.iter() {
            self.family.get_or_create(labels).set(0);
        }
        for (labels, n) in values {
            self.family.get_or_create(&labels).inc_by(n);
            if !seen.contains(&labels) {
                seen.push(labels);
            }
        }
    }

    /// Removes the label sets `gone` picks (a forgotten service's): they leave the page
    /// instead of staying at 0.
    pub fn remove_where(&self, gone: impl Fn(&L) -> bool) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        seen.retain(|labels| {
            if gone(labels) {
                self.family.remove(labels);
                return false;
            }
            true
        });
    }
}
