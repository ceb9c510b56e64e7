//! Fetches and parses the agent's /metrics (Prometheus text format).
use std::{collections::BTreeMap, io::{Read, Write}, net::TcpStream, time::Duration};

use anyhow::{Context, Result, bail};

/// One sample: a series (name and labels) and its value. The agent's /metrics (`parse`)
/// and Prometheus's query API (`prom::Prometheus::query`) both give these.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`; "" when the sample has no such label (as Prometheus
    /// treats an absent label).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    /// True if the sample has every label of `want`, with that value.
    pub fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

/// GET /metrics from `addr` (host:port), with an optional Accept header.
pub fn fetch_raw(addr: &str, accept: Option<&str>) -> Result<(String, String)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {}", head.lines().next().unwrap_or(""));
    }
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    Ok((content_type, body.to_string()))
}

pub fn fetch(addr: &str) -> Result<Metrics> {
    let (_, text) = fetch_raw(addr, None)?;
    Ok(Metrics { samples: parse(&text)?, text })
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").context("label without value")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => value.push(c),
            }
        }
        let end = end.context("unterminated label value")?;
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(labels)
}

pub fn parse(text: &str) -> Result<Vec<Sample>> {
    let mut out = vec![];
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').with_context(|| format!("bad sample line {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').context("unclosed labels")?)?),
            None => (series, BTreeMap::new()),
        };
        out.push(Sample { name: name.to_string(), labels, value: value.parse().with_context(|| format!("bad value in {line:?}"))? });
    }
    Ok(out)
}

impl Metrics {
    /// The samples named `name`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Sum of the samples named `name` for which `keep` holds.
    pub fn sum_where(&self, name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
        self.series(name).filter(|s| keep(s)).map(|s| s.value).fold(0.0, |a, b| a + b)
    }

    /// Sum of samples named `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.sum_where(name, |s| s.has(want))
    }

    /// Requests counted for (method, status, route).
    pub fn requests(&self, method: &str, status: u16, route: &str) -> u64 {
        let status = status.to_string();
        self.sum(
            "http_server_request_duration_seconds_count",
            &[("http_request_method", method), ("http_response_status_code", &status), ("http_route", route)],
        ) as u64
    }

    /// Every (method, status, route) -> count.
    pub fn request_counts(&self) -> BTreeMap<(String, u16, String), u64> {
        let mut out = BTreeMap::new();
        for s in self.series("http_server_request_duration_seconds_count") {
            let key = (
                s.label("http_request_method").to_string(),
                s.label("http_response_status_code").parse().unwrap_or(0),
                s.label("http_route").to_string(),
            );
            *out.entry(key).or_insert(0) += s.value as u64;
        }
        out
    }

    /// The targets' client requests: (method, status, server_address, server_port,
    /// error_type) -> count (a status is "" when none was read).
    pub fn client_counts(&self) -> BTreeMap<(String, String, String, String, String), u64> {
        let mut out = BTreeMap::new();
        for s in self.series("http_client_request_duration_seconds_count") {
            let key = ["http_request_method", "http_response_status_code", "server_address", "server_port", "error_type"]
                .map(|l| s.label(l).to_string());
            let [method, status, address, port, error] = key;
            *out.entry((method, status, address, port, error)).or_insert(0) += s.value as u64;
        }
        out.retain(|_, n| *n > 0);
        out
    }

    /// Cumulative bucket counts (le, count) of the duration histogram for `route`.
    pub fn buckets(&self, route: &str) -> Vec<(f64, f64)> {
        let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
        for s in self.series("http_server_request_duration_seconds_bucket").filter(|s| s.has(&[("http_route", route)])) {
            *by_le.entry(s.label("le").to_string()).or_insert(0.0) += s.value;
        }
        let mut v: Vec<(f64, f64)> =
            by_le.into_iter().map(|(le, c)| (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) }, c)).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }

    /// `histogram_quantile(q, ...)` over the route's buckets, as Prometheus computes it
    /// (linear interpolation inside the bucket).
    pub fn quantile(&self, route: &str, q: f64) -> Option<f64> {
        let buckets = self.buckets(route);
        let total = buckets.last()?.1;
        if total == 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, count) in &buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let in_bucket = count - prev.1;
                let frac = if in_bucket > 0.0 { (rank - prev.1) / in_bucket } else { 0.0 };
                return Some(prev.0 + (le - prev.0) * frac);
            }
            prev = (le, count);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_interpolates() {
        let text = "# HELP x y\nh_bucket{le=\"0.1\",http_route=\"/a\"} 0\nh_bucket{le=\"0.2\",http_route=\"/a\"} 10\n\
                    h_bucket{le=\"+Inf\",http_route=\"/a\"} 10\nc_total{a=\"q\\\"x\"} 3\n";
        let m = Metrics { samples: parse(text).unwrap(), text: text.into() };
        assert_eq!(m.sum("c_total", &[("a", "q\"x")]), 3.0);
        let text = text.replace("h_bucket", "http_server_request_duration_seconds_bucket");
        let m = Metrics { samples: parse(&text).unwrap(), text };
        let p50 = m.quantile("/a", 0.5).unwrap();
        assert!((p50 - 0.15).abs() < 1e-9, "{p50}");
    }

    #[test]
    fn labels_absent_and_empty() {
        let m = Metrics { samples: parse("c{a=\"\",b=\"x\"} 1\nc{b=\"y\"} 2\nd 4\n").unwrap(), text: String::new() };
        assert_eq!(m.series("c").count(), 2);
        assert_eq!(m.sum("c", &[("a", "")]), 1.0, "an empty label matches only where it is present");
        assert_eq!(m.series("c").map(|s| s.label("a")).collect::<Vec<_>>(), ["", ""]);
        assert_eq!(m.sum_where("c", |s| s.label("b") == "y"), 2.0);
        assert_eq!(m.sum("e", &[]), 0.0);
        assert!(m.samples[2].has(&[]) && !m.samples[2].has(&[("b", "x")]));
    }
}
