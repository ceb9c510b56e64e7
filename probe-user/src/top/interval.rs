//! What happened between two snapshots: per row, the rate, the error shares, the quantiles
//! of the requests that ended in the interval (from the histograms' deltas), and the mean
//! requests in flight; the same over all rows; and the agent's health.
use std::collections::BTreeMap;

use super::{
    quantile::Dist,
    snapshot::{Health, RowKey, Snapshot},
};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub key: RowKey,
    /// Requests since the agent started.
    pub total: f64,
    /// Requests that ended in the interval, and what they took.
    pub interval: Dist,
    pub rate: f64,
    /// Shares (0..=1) of the interval's requests answered 5xx and 4xx; None without any.
    pub err5: Option<f64>,
    pub err4: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// Requests in flight on average over the interval: the time the interval's requests
    /// took, divided by its length (Little's law, for requests that ended in it).
    pub in_flight: f64,
}

impl Row {
    fn new(key: RowKey, total: f64, d: Dist, err5: f64, err4: f64, secs: f64) -> Row {
        let n = d.count;
        let share = |e: f64| (n > 0.0).then(|| (e / n).clamp(0.0, 1.0));
        Row {
            key,
            total,
            rate: n / secs,
            err5: share(err5),
            err4: share(err4),
            p50: d.quantile(0.5),
            p95: d.quantile(0.95),
            p99: d.quantile(0.99),
            in_flight: d.sum / secs,
            interval: d,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interval {
    pub secs: f64,
    pub rows: Vec<Row>,
    /// Every row together (key: all empty).
    pub all: Row,
    /// Requests read and not yet answered now, by service.
    pub active: BTreeMap<String, f64>,
    pub health: Health,
    /// Events lost and requests unparsed during the interval.
    pub lost: f64,
    pub unparsed: f64,
    /// Outgoing calls per second.
    pub client_rate: f64,
}

impl Interval {
    /// The interval of `secs` seconds from `before` to `now`.
    pub fn between(before: &Snapshot, now: &Snapshot, secs: f64) -> Interval {
        let secs = secs.max(1e-3);
        let mut all = Dist::default();
        let (mut all5, mut all4, mut total) = (0.0, 0.0, 0.0);
        let mut rows = Vec::with_capacity(now.rows.len());
        for (key, counts) in &now.rows {
            let then = before.rows.get(key);
            let restarted = then.is_some_and(|t| counts.all.count < t.all.count);
            let then = then.filter(|_| !restarted);
            let d = counts.all.since(&then.map(|t| t.all.clone()).unwrap_or_default());
            let since = |now: f64, then: Option<f64>| (now - then.unwrap_or(0.0)).max(0.0);
            let err5 = since(counts.err5, then.map(|t| t.err5));
            let err4 = since(counts.err4, then.map(|t| t.err4));
            all.add(d.count, d.sum, &d.classic, d.native.as_ref());
            (all5, all4, total) = (all5 + err5, all4 + err4, total + counts.all.count);
            rows.push(Row::new(key.clone(), counts.all.count, d, err5, err4, secs));
        }
        let grew = |now: f64, then: f64| if now >= then { now - then } else { now };
        let unparsed = |h: &Health| h.unparsed.values().sum::<f64>();
        Interval {
            secs,
            rows,
            all: Row::new(RowKey::default(), total, all, all5, all4, secs),
            active: now.active.clone(),
            lost: grew(now.health.events_lost, before.health.events_lost),
            unparsed: grew(unparsed(&now.health), unparsed(&before.health)),
            client_rate: grew(now.health.client_calls, before.health.client_calls) / secs,
            health: now.health.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::snapshot::RowCounts;

    fn snap(rows: &[(&str, f64, f64, f64, f64)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (route, count, sum, err5, err4) in rows {
            let key = RowKey { service: "shop".into(), route: route.to_string(), method: "GET".into() };
            let mut all = Dist::default();
            all.add(*count, *sum, &[(0.1, *count), (f64::INFINITY, *count)], None);
            s.rows.insert(key, RowCounts { all, err5: *err5, err4: *err4 });
        }
        s
    }

    #[test]
    fn rates_shares_and_in_flight() {
        let before = snap(&[("/a", 10.0, 1.0, 0.0, 0.0)]);
        let now = snap(&[("/a", 30.0, 5.0, 5.0, 1.0), ("/b", 4.0, 0.2, 0.0, 0.0)]);
        let iv = Interval::between(&before, &now, 2.0);
        let a = &iv.rows[0];
        assert_eq!((a.total, a.rate, a.err5, a.err4, a.in_flight), (30.0, 10.0, Some(0.25), Some(0.05), 2.0));
        assert_eq!(a.p50, Some(0.05));
        let b = &iv.rows[1];
        assert_eq!((b.total, b.rate, b.err5), (4.0, 2.0, Some(0.0)));
        assert_eq!((iv.all.total, iv.all.rate, iv.all.err5), (34.0, 12.0, Some(5.0 / 24.0)));
        // Nothing new: no share, no quantile.
        let idle = Interval::between(&now, &now, 1.0);
        assert_eq!((idle.rows[0].rate, idle.rows[0].err5, idle.rows[0].p99), (0.0, None, None));
        // The agent restarted: its counters start again from 0.
        let again = Interval::between(&now, &snap(&[("/a", 3.0, 0.1, 0.0, 0.0)]), 1.0);
        assert_eq!(again.rows[0].rate, 3.0);
    }
}
