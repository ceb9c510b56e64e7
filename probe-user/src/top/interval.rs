//! What happened between two snapshots: per row, the rate, the error shares, the quantiles
//! of the requests that ended in the interval (from the histograms' deltas), and the mean
//! requests in flight; the same over all rows; and the agent's health.
use std::collections::BTreeMap;

use super::{
    quantile::Dist,
    snapshot::{Class, Health, RowKey, Snapshot},
};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub key: RowKey,
    /// Requests since the agent started.
    pub total: f64,
    pub rate: f64,
    /// Shares (0..=1) of the interval's requests that were errors (5xx, or cut short
    /// without a status) and 4xx answers; None without any request.
    pub err: Option<f64>,
    pub err4: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// Requests in flight on average over the interval: the time the interval's requests
    /// took, divided by its length (Little's law, for requests that ended in it).
    pub in_flight: f64,
}

impl Row {
    fn new(key: RowKey, total: f64, d: Dist, err: f64, err4: f64, secs: f64) -> Row {
        let n = d.count;
        let share = |e: f64| (n > 0.0).then(|| (e / n).clamp(0.0, 1.0));
        Row {
            key,
            total,
            rate: n / secs,
            err: share(err),
            err4: share(err4),
            p50: d.quantile(0.5),
            p95: d.quantile(0.95),
            p99: d.quantile(0.99),
            in_flight: d.sum / secs,
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

/// What a counter added since `before`: from 0 when it went down (its series restarted).
fn grew(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

impl Interval {
    /// The interval of `secs` seconds from `before` to `now`. Each series is differenced
    /// on its own (one that restarted counts from 0, a new one from 0, one that went away
    /// adds nothing), then the differences are summed into rows.
    pub fn between(before: &Snapshot, now: &Snapshot, secs: f64) -> Interval {
        let secs = secs.max(1e-3);
        // Per row: the interval's distribution, its errors and 4xx.
        let mut rows: BTreeMap<&RowKey, (Dist, f64, f64)> = BTreeMap::new();
        let (mut all, mut all_err, mut all4) = (Dist::default(), 0.0, 0.0);
        for (labels, series) in &now.series {
            let d = match before.series.get(labels) {
                Some(then) => series.dist.since(&then.dist),
                None => series.dist.since(&Dist::default()),
            };
            let row = rows.entry(&series.row).or_default();
            row.0.add(d.count, d.sum, &d.classic, d.native.as_ref());
            all.add(d.count, d.sum, &d.classic, d.native.as_ref());
            match series.class {
                Class::Error => (row.1, all_err) = (row.1 + d.count, all_err + d.count),
                Class::ClientError => (row.2, all4) = (row.2 + d.count, all4 + d.count),
                Class::Ok => {}
            }
        }
        let totals = now.totals();
        let total: f64 = totals.values().map(|t| t.0).sum();
        let rows = rows
            .into_iter()
            .map(|(key, (d, err, err4))| Row::new(key.clone(), totals.get(key).map_or(0.0, |t| t.0), d, err, err4, secs))
            .collect();
        let unparsed =
            now.health.unparsed.iter().map(|(r, n)| grew(*n, before.health.unparsed.get(r).copied().unwrap_or(0.0))).sum();
        let client_calls: f64 = now
            .health
            .client_calls
            .iter()
            .map(|(l, n)| grew(*n, before.health.client_calls.get(l).copied().unwrap_or(0.0)))
            .sum();
        Interval {
            secs,
            rows,
            all: Row::new(RowKey::default(), total, all, all_err, all4, secs),
            active: now.active.clone(),
            lost: grew(now.health.events_lost, before.health.events_lost),
            unparsed,
            client_rate: client_calls / secs,
            health: now.health.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::snapshot::Series;

    /// Series: (route, pod, class, count, sum of seconds).
    fn snap(series: &[(&str, &str, Class, f64, f64)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (route, pod, class, count, sum) in series {
            let labels = [("http_route", *route), ("pod", *pod), ("class", if *class == Class::Ok { "ok" } else { "err" })]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let row = RowKey { service: "shop".into(), route: route.to_string(), method: "GET".into() };
            let mut dist = Dist::default();
            dist.add(*count, *sum, &[(0.1, *count), (f64::INFINITY, *count)], None);
            s.series.insert(labels, Series { row, class: *class, dist });
        }
        s
    }

    #[test]
    fn rates_shares_and_in_flight() {
        let before = snap(&[("/a", "p1", Class::Ok, 10.0, 1.0)]);
        let now = snap(&[
            ("/a", "p1", Class::Ok, 24.0, 4.0),
            ("/a", "p1", Class::Error, 5.0, 0.9),
            ("/a", "p2", Class::ClientError, 1.0, 0.1),
            ("/b", "p1", Class::Ok, 4.0, 0.2),
        ]);
        let iv = Interval::between(&before, &now, 2.0);
        let a = &iv.rows[0];
        assert_eq!((a.total, a.rate, a.err, a.err4, a.in_flight), (30.0, 10.0, Some(0.25), Some(0.05), 2.0));
        assert_eq!(a.p50, Some(0.05));
        let b = &iv.rows[1];
        assert_eq!((b.total, b.rate, b.err), (4.0, 2.0, Some(0.0)));
        assert_eq!((iv.all.total, iv.all.rate, iv.all.err), (34.0, 12.0, Some(5.0 / 24.0)));
        // Nothing new: no share, no quantile.
        let idle = Interval::between(&now, &now, 1.0);
        assert_eq!((idle.rows[0].rate, idle.rows[0].err, idle.rows[0].p99), (0.0, None, None));
    }

    #[test]
    fn series_that_go_or_restart_are_no_burst() {
        // Pod p2's series is forgotten (its pod went away): p1's 10 new requests are the
        // interval's, not minus p2's lifetime, nor p1's lifetime.
        let before = snap(&[("/a", "p1", Class::Ok, 1000.0, 10.0), ("/a", "p2", Class::Ok, 5000.0, 50.0)]);
        let now = snap(&[("/a", "p1", Class::Ok, 1010.0, 10.1)]);
        let iv = Interval::between(&before, &now, 1.0);
        assert_eq!((iv.rows[0].rate, iv.rows[0].total), (10.0, 1010.0));
        // A series that restarted (its count went down) counts from 0.
        let again = Interval::between(&now, &snap(&[("/a", "p1", Class::Ok, 3.0, 0.01)]), 1.0);
        assert_eq!(again.rows[0].rate, 3.0);
    }
}
