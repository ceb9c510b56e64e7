//! The state of the live view between refreshes: the last snapshot, each row's recent
//! rates (the sparkline), the sort, the filter and the last error. Keys change it; the
//! binary draws it.
use std::collections::{HashMap, VecDeque};

use super::{
    interval::{Interval, Row},
    snapshot::{RowKey, Snapshot},
};

/// Rates kept per row for its sparkline.
pub const HISTORY: usize = 30;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// Requests per second, highest first.
    #[default]
    Rate,
    /// 5xx share, then 4xx share, highest first.
    Errors,
    /// p99 latency, slowest first.
    P99,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::Rate => Sort::Errors,
            Sort::Errors => Sort::P99,
            Sort::P99 => Sort::Rate,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sort::Rate => "rate",
            Sort::Errors => "errors",
            Sort::P99 => "p99",
        }
    }
}

/// Orders rows by `sort`, ties by (service, route, method).
pub fn sort_rows(rows: &mut [&Row], sort: Sort) {
    let of = |o: Option<f64>| o.unwrap_or(-1.0);
    rows.sort_by(|a, b| {
        let order = match sort {
            Sort::Rate => b.rate.total_cmp(&a.rate),
            Sort::Errors => of(b.err)
                .total_cmp(&of(a.err))
                .then(of(b.err4).total_cmp(&of(a.err4)))
                .then(b.rate.total_cmp(&a.rate)),
            Sort::P99 => of(b.p99).total_cmp(&of(a.p99)).then(b.rate.total_cmp(&a.rate)),
        };
        order.then_with(|| a.key.cmp(&b.key))
    });
}

/// The rows of `iv` whose key matches `filter`, ordered by `sort`: what the screen and the
/// plain table show.
pub fn shown<'a>(iv: &'a Interval, sort: Sort, filter: &str) -> Vec<&'a Row> {
    let mut rows: Vec<&Row> = iv.rows.iter().filter(|r| matches(&r.key, filter)).collect();
    sort_rows(&mut rows, sort);
    rows
}

/// Whether a row's service, route or method contains `filter` (case-insensitive).
pub fn matches(key: &RowKey, filter: &str) -> bool {
    let f = filter.to_lowercase();
    [&key.service, &key.route, &key.method].iter().any(|s| s.to_lowercase().contains(&f))
}

/// A key, as the view understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    /// Ctrl-C.
    Interrupt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Redraw,
    Quit,
}

#[derive(Debug, Default)]
pub struct View {
    pub sort: Sort,
    pub filter: String,
    /// The filter being typed after `/`.
    pub editing: Option<String>,
    last: Option<(Snapshot, f64)>,
    history: HashMap<RowKey, VecDeque<f64>>,
    pub interval: Option<Interval>,
    /// Why the last read failed; cleared by the next good one.
    pub error: Option<String>,
}

impl View {
    pub fn new(sort: Sort, filter: String) -> View {
        View { sort, filter, ..Default::default() }
    }

    /// A new reading, taken `at` seconds from any fixed origin.
    pub fn observe(&mut self, snap: Snapshot, at: f64) {
        self.error = None;
        if let Some((before, then)) = &self.last {
            let iv = Interval::between(before, &snap, at - then);
            for row in &iv.rows {
                let h = self.history.entry(row.key.clone()).or_default();
                if h.len() == HISTORY {
                    h.pop_front();
                }
                h.push_back(row.rate);
            }
            let rows: std::collections::HashSet<&RowKey> = iv.rows.iter().map(|r| &r.key).collect();
            self.history.retain(|k, _| rows.contains(k));
            self.interval = Some(iv);
        }
        self.last = Some((snap, at));
    }

    pub fn failed(&mut self, why: String) {
        self.error = Some(why);
    }

    /// When the last good reading was taken (as given to `observe`).
    pub fn last_reading(&self) -> Option<f64> {
        self.last.as_ref().map(|(_, at)| *at)
    }

    /// True once a first reading came (rates need a second one).
    pub fn started(&self) -> bool {
        self.last.is_some()
    }

    /// The rows to show: filtered, sorted.
    pub fn rows(&self) -> Vec<&Row> {
        self.interval.as_ref().map(|iv| shown(iv, self.sort, &self.filter)).unwrap_or_default()
    }

    /// A row's recent rates, oldest first.
    pub fn history(&self, key: &RowKey) -> Vec<f64> {
        self.history.get(key).map(|h| h.iter().copied().collect()).unwrap_or_default()
    }

    pub fn key(&mut self, key: Key) -> Action {
        if key == Key::Interrupt {
            return Action::Quit;
        }
        if let Some(typed) = &mut self.editing {
            match key {
                Key::Char(c) => typed.push(c),
                Key::Backspace => {
                    typed.pop();
                }
                Key::Enter => self.filter = self.editing.take().unwrap_or_default(),
                Key::Esc => self.editing = None,
                Key::Interrupt => {}
            }
            return Action::Redraw;
        }
        match key {
            Key::Char('q') => Action::Quit,
            Key::Char('s') => {
                self.sort = self.sort.next();
                Action::Redraw
            }
            Key::Char('/') => {
                self.editing = Some(self.filter.clone());
                Action::Redraw
            }
            Key::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                Action::Redraw
            }
            _ => Action::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::{
        quantile::Dist,
        snapshot::{Class, Series},
    };

    fn snap(rows: &[(&str, f64, f64)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (route, count, err) in rows {
            let row = RowKey { service: "shop".into(), route: route.to_string(), method: "GET".into() };
            // Each route's requests all take its count in ms (so p99 orders like rate here).
            let ms = *count / 1000.0;
            for (class, n) in [(Class::Ok, count - err), (Class::Error, *err)] {
                let labels = [("route", route.to_string()), ("class", format!("{class:?}"))].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                let mut dist = Dist::default();
                dist.add(n, ms * n, &[(ms, n), (f64::INFINITY, n)], None);
                s.series.insert(labels, Series { row: row.clone(), class, dist });
            }
        }
        s
    }

    fn routes(v: &View) -> Vec<String> {
        v.rows().iter().map(|r| r.key.route.clone()).collect()
    }

    #[test]
    fn sort_cycles_and_filter_edits() {
        let mut v = View::new(Sort::Rate, String::new());
        v.observe(snap(&[]), 0.0);
        assert!(v.interval.is_none());
        v.observe(snap(&[("/fast", 90.0, 0.0), ("/err", 10.0, 5.0), ("/slow", 2.0, 0.0)]), 1.0);
        assert_eq!(routes(&v), ["/fast", "/err", "/slow"]);
        assert_eq!(v.key(Key::Char('s')), Action::Redraw);
        assert_eq!((v.sort, routes(&v)), (Sort::Errors, vec!["/err".to_string(), "/fast".into(), "/slow".into()]));
        v.key(Key::Char('s'));
        assert_eq!(v.sort, Sort::P99);
        assert_eq!(routes(&v)[0], "/fast");
        v.key(Key::Char('s'));
        assert_eq!(v.sort, Sort::Rate);
        // `/` edits the filter; Enter applies it, Esc then clears it. `q` while typing is text.
        v.key(Key::Char('/'));
        for c in "SLq".chars() {
            v.key(Key::Char(c));
        }
        v.key(Key::Backspace);
        assert_eq!(v.key(Key::Enter), Action::Redraw);
        assert_eq!((v.filter.as_str(), routes(&v)), ("SL", vec!["/slow".to_string()]));
        v.key(Key::Esc);
        assert_eq!(routes(&v).len(), 3);
        assert_eq!(v.key(Key::Char('q')), Action::Quit);
        assert_eq!(v.key(Key::Interrupt), Action::Quit);
        v.key(Key::Char('/'));
        assert_eq!(v.key(Key::Interrupt), Action::Quit);
    }

    #[test]
    fn history_follows_rows() {
        let mut v = View::default();
        for i in 0..(HISTORY + 5) {
            v.observe(snap(&[("/a", (i * i) as f64, 0.0)]), i as f64);
        }
        let key = RowKey { service: "shop".into(), route: "/a".into(), method: "GET".into() };
        let h = v.history(&key);
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.last(), Some(&(((HISTORY + 4) * (HISTORY + 4) - (HISTORY + 3) * (HISTORY + 3)) as f64)));
        v.observe(snap(&[]), 100.0);
        assert!(v.history(&key).is_empty());
    }
}
