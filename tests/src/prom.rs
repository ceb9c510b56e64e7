//! A real Prometheus server (Debian's `prometheus`) for the end-to-end test: started on a
//! free port with a given configuration, queried through its HTTP API.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{client::Conn, procs::free_port, scrape::Sample, wait_for};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

/// One sample of an instant vector (`metric`, the JSON object of its labels, and its
/// value), as the scraper represents samples: `__name__` is the name ("" when the query
/// dropped it), the other labels are labels.
fn sample(metric: &Value, value: f64) -> Sample {
    let mut labels: BTreeMap<String, String> = metric
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    let name = labels.remove("__name__").unwrap_or_default();
    Sample { name, labels, value }
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts `prometheus` with `config` (YAML text) and waits until it is ready.
    pub fn start(config: &str) -> Result<Self> {
        Prometheus::start_with(config, &[])
    }

    /// The same, with `features` enabled (`--enable-feature`: native-histograms...).
    pub fn start_with(config: &str, features: &[&str]) -> Result<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("redprobe-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(features.iter().map(|f| format!("--enable-feature={f}")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package prometheus; `cargo xtask test` installs it)")?;
        let mut p = Prometheus { child, port, dir };
        let ready = wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(Err(status));
            }
            p.get("/-/ready").ok().map(|_| Ok(()))
        })?;
        if let Err(status) = ready {
            bail!("prometheus exited with {status}:\n{}", p.log());
        }
        Ok(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path`; the body of a 200 answer.
    pub fn get(&self, path: &str) -> Result<String> {
        let mut conn = Conn::open(self.port)?;
        let r = conn.request("GET", path, "HTTP/1.1", &[("Connection", "close")], b"")?;
        let body = String::from_utf8_lossy(&r.body).into_owned();
        if r.status != 200 {
            bail!("GET {path}: {} {body}", r.status);
        }
        Ok(body)
    }

    /// GET an API path; the `data` of a `"status": "success"` answer.
    pub fn api(&self, path: &str) -> Result<Value> {
        let v: Value = serde_json::from_str(&self.get(path)?)?;
        if v["status"] != "success" {
            bail!("{path}: {v}");
        }
        Ok(v["data"].clone())
    }

    /// An instant query, at `time` (Unix seconds, ms precision) or now. Scalars come back
    /// as one sample without labels.
    pub fn query(&self, expr: &str, time: Option<f64>) -> Result<Vec<Sample>> {
        let at = time.map(|t| format!("&time={t:.3}")).unwrap_or_default();
        let data = self.api(&format!("/api/v1/query?query={}{at}", url_encode(expr))).with_context(|| format!("query {expr}"))?;
        let number = |v: &Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
        Ok(match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| sample(&s["metric"], number(&s["value"])))
                .collect(),
            Some("scalar") => vec![sample(&Value::Null, number(&data["result"]))],
            other => bail!("query {expr}: unexpected result type {other:?}"),
        })
    }

    /// The single value of a query that must return exactly one sample.
    pub fn scalar(&self, expr: &str, time: Option<f64>) -> Result<f64> {
        let r = self.query(expr, time)?;
        match r.as_slice() {
            [one] => Ok(one.value),
            _ => bail!("query {expr} returned {} samples, wanted 1: {r:?}", r.len()),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // A TSDB flush may take a while: more grace than the other processes get.
        crate::procs::terminate_within(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_samples_take_the_scrapers_shape() {
        let metric = serde_json::json!({"__name__": "up", "job": "redprobe"});
        let s = sample(&metric, 1.0);
        assert_eq!(s.name, "up");
        assert_eq!(s.label("job"), "redprobe");
        assert_eq!(s.label("__name__"), "");
        assert_eq!(s.labels.len(), 1);
        let scalar = sample(&Value::Null, 2.5);
        assert_eq!((scalar.name.as_str(), scalar.labels.len(), scalar.value), ("", 0, 2.5));
    }
}
