//! How `top` writes its numbers and which ones it marks, for the screen and the plain
//! table alike.
use super::interval::{Interval, Row};

/// What a value means to the reader: the screen colours `Bad` and `Warn`, the plain
/// table does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Warn,
    Bad,
}

/// A label and its value, in a header line.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub label: String,
    pub value: String,
    pub tone: Tone,
}

fn field(label: impl Into<String>, value: String, tone: Tone) -> Field {
    Field { label: label.into(), value, tone }
}

pub fn rate(r: f64) -> String {
    // + 0.0: an empty float sum is -0.0, which would print as "-0".
    let r = r + 0.0;
    if r >= 1000.0 { format!("{r:.0}") } else { format!("{r:.1}") }
}

pub fn share(s: Option<f64>) -> String {
    s.map(|s| format!("{:.1}%", s * 100.0)).unwrap_or_else(|| "-".into())
}

/// A duration in seconds, in the unit that keeps three significant digits.
pub fn duration(s: Option<f64>) -> String {
    let Some(s) = s else { return "-".into() };
    let (v, unit) = if s >= 1.0 {
        (s, "s")
    } else if s >= 1e-3 {
        (s * 1e3, "ms")
    } else {
        (s * 1e6, "µs")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

pub fn count(c: f64) -> String {
    format!("{:.0}", c + 0.0)
}

/// The table's columns, in order (the screen adds the sparkline after RATE).
pub const COLUMNS: [&str; 11] = ["SERVICE", "ROUTE", "METHOD", "REQ/S", "ERR", "4XX", "P50", "P95", "P99", "ACTIVE", "TOTAL"];
/// Columns aligned to the right (numbers).
pub const NUMERIC_FROM: usize = 3;

fn error_tone(s: Option<f64>, bad: Tone) -> Tone {
    if s.is_some_and(|s| s > 0.0) { bad } else { Tone::Plain }
}

fn slow_tone(d: Option<f64>, slow: f64) -> Tone {
    if d.is_some_and(|d| d >= slow) { Tone::Warn } else { Tone::Plain }
}

/// A row's cells, one per `COLUMNS`; quantiles at or above `slow` seconds are marked.
pub fn cells(row: &Row, slow: f64) -> Vec<(String, Tone)> {
    let plain = |s: String| (s, Tone::Plain);
    vec![
        plain(row.key.service.clone()),
        plain(row.key.route.clone()),
        plain(row.key.method.clone()),
        plain(rate(row.rate)),
        (share(row.err), error_tone(row.err, Tone::Bad)),
        (share(row.err4), error_tone(row.err4, Tone::Warn)),
        (duration(row.p50), slow_tone(row.p50, slow)),
        (duration(row.p95), slow_tone(row.p95, slow)),
        (duration(row.p99), slow_tone(row.p99, slow)),
        plain(format!("{:.1}", row.in_flight)),
        plain(count(row.total)),
    ]
}

/// The first header line: every row together over the interval.
pub fn summary(iv: &Interval, slow: f64) -> Vec<Field> {
    let a = &iv.all;
    let active: f64 = iv.active.values().sum();
    vec![
        field("requests/s", rate(a.rate), Tone::Plain),
        field("errors", share(a.err), error_tone(a.err, Tone::Bad)),
        field("4xx", share(a.err4), error_tone(a.err4, Tone::Warn)),
        field("p50", duration(a.p50), slow_tone(a.p50, slow)),
        field("p95", duration(a.p95), slow_tone(a.p95, slow)),
        field("p99", duration(a.p99), slow_tone(a.p99, slow)),
        field("active now", count(active), Tone::Plain),
        field("total", count(a.total), Tone::Plain),
    ]
}

/// The second header line: the agent's health, totals since it started (marked when
/// they grew in the interval).
pub fn health(iv: &Interval) -> Vec<Field> {
    let h = &iv.health;
    let unparsed: f64 = h.unparsed.values().sum();
    let mut reasons: Vec<(&String, &f64)> = h.unparsed.iter().collect();
    reasons.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    let by_reason = if reasons.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = reasons.iter().take(4).map(|(r, n)| format!("{r} {}", count(**n))).collect();
        format!(" ({}{})", list.join(", "), if reasons.len() > 4 { ", ..." } else { "" })
    };
    let grew = |n: f64, tone: Tone| if n > 0.0 { tone } else { Tone::Plain };
    vec![
        field("targets", h.targets.map(count).unwrap_or_else(|| "-".into()), Tone::Plain),
        field("events lost", count(h.events_lost), grew(iv.lost, Tone::Bad)),
        field("unparsed", format!("{}{by_reason}", count(unparsed)), grew(iv.unparsed, Tone::Warn)),
        field("outgoing calls/s", rate(iv.client_rate), Tone::Plain),
    ]
}

/// Values as a bar per value, scaled to the highest: the rate's sparkline. Zero is a
/// space, so idle intervals read as gaps.
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| if *v <= 0.0 || max <= 0.0 { ' ' } else { BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(
            [duration(Some(0.000_042)), duration(Some(0.0123)), duration(Some(0.25)), duration(Some(2.5)), duration(None)],
            ["42.0µs", "12.3ms", "250ms", "2.50s", "-"]
        );
        assert_eq!([rate(0.0), rate(12.34), rate(12345.6), rate(-0.0)], ["0.0", "12.3", "12346", "0.0"]);
        assert_eq!([count(-0.0), count(3.0)], ["0", "3"]);
        assert_eq!([share(Some(0.0)), share(Some(0.125)), share(None)], ["0.0%", "12.5%", "-"]);
        assert_eq!(sparkline(&[0.0, 1.0, 4.0, 8.0]), " ▂▅█");
        assert_eq!(sparkline(&[0.0, 0.0]), "  ");
    }
}
