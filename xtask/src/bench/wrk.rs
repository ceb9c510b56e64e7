//! Load from wrk (Debian's package): one run, its output parsed.
use std::process::Command;

use anyhow::{Context, Result, bail};

/// How wrk is run: threads, connections, seconds, and the CPUs it is pinned to.
#[derive(Clone, Debug)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub seconds: f64,
    /// `taskset -c` list, e.g. "0"; None runs wrk unpinned.
    pub cpus: Option<String>,
}

impl Load {
    /// The command line, for the table's notes.
    pub fn describe(&self) -> String {
        let pin = self.cpus.as_ref().map(|c| format!("taskset -c {c} ")).unwrap_or_default();
        format!("{pin}wrk -t{} -c{} -d{}s --latency", self.threads, self.connections, self.seconds)
    }
}

/// What one wrk run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    /// The 99th percentile of latency, in microseconds.
    pub p99_us: f64,
}

/// A wrk script that asks for `/users/<random id>` (up to a billion ids): a route-heavy
/// service, whose paths the route heuristic folds to `/users/{id}`.
pub const RANDOM_USERS: &str = "request = function() return wrk.format(nil, \"/users/\" .. math.random(1, 1000000000)) end\n";

pub fn run(load: &Load, url: &str) -> Result<WrkResult> {
    run_script(load, url, None)
}

/// `run`, with a Lua script (wrk -s) that makes the requests.
pub fn run_script(load: &Load, url: &str, script: Option<&str>) -> Result<WrkResult> {
    let script_file = match script {
        Some(text) => {
            let path = std::env::temp_dir().join(format!("redprobe-wrk-{}.lua", std::process::id()));
            std::fs::write(&path, text).context("writing the wrk script")?;
            Some(path)
        }
        None => None,
    };
    let mut cmd = match &load.cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    // wrk takes whole seconds; shorter runs are for development only.
    let secs = (load.seconds.round() as u64).max(1);
    cmd.args([
        format!("-t{}", load.threads),
        format!("-c{}", load.connections),
        format!("-d{secs}s"),
        "--latency".into(),
    ]);
    if let Some(path) = &script_file {
        cmd.arg("-s").arg(path);
    }
    cmd.arg(url);
    let out = cmd.output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed ({}): {text}{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    parse(&text).with_context(|| format!("parsing wrk's output:\n{text}"))
}

/// Parses wrk's report. Responses that are not 2xx/3xx, and socket errors other than
/// connect-time ones, fail the run: the bench measures successful requests only.
pub fn parse(text: &str) -> Result<WrkResult> {
    let mut requests = None;
    let mut seconds = None;
    let mut rps = None;
    let mut p99 = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>()?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(duration_us(v.trim())?);
        } else if let Some((n, rest)) = line.split_once(" requests in ") {
            requests = Some(n.trim().parse::<u64>()?);
            let secs = rest.split(',').next().unwrap_or("");
            seconds = Some(duration_us(secs.trim())? / 1e6);
        } else if line.starts_with("Non-2xx or 3xx responses:") {
            bail!("the server answered errors: {line}");
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            let bad: u64 = errors
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            if bad > 0 {
                bail!("socket errors: {line}");
            }
        }
    }
    Ok(WrkResult {
        requests: requests.context("no 'requests in' line")?,
        seconds: seconds.context("no duration")?,
        rps: rps.context("no Requests/sec line")?,
        p99_us: p99.context("no 99% latency line (run wrk with --latency)")?,
    })
}

/// "287.00us", "1.46ms", "3.00s", "1.00m" -> microseconds.
fn duration_us(v: &str) -> Result<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).context("duration without unit")?;
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().with_context(|| format!("bad duration {v:?}"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => bail!("unknown duration unit in {v:?}"),
    };
    Ok(num * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 3s test @ http://127.0.0.1:18086/hello
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   454.96us  791.02us  15.61ms   90.99%
    Req/Sec   111.02k     5.41k  120.36k    73.33%
  Latency Distribution
     50%  187.00us
     75%  293.00us
     90%    1.46ms
     99%    3.60ms
  330977 requests in 3.00s, 54.92MB read
Requests/sec: 110177.95
Transfer/sec:     18.30MB
";

    #[test]
    fn parses_a_report() {
        let r = parse(OUT).unwrap();
        assert_eq!(r, WrkResult { requests: 330977, seconds: 3.0, rps: 110177.95, p99_us: 3600.0 });
    }

    #[test]
    fn rejects_errors_and_incomplete_reports() {
        assert!(parse(&OUT.replace("Requests/sec:", "  Non-2xx or 3xx responses: 5\nRequests/sec:")).is_err());
        assert!(parse(&OUT.replace("Requests/sec:", "  Socket errors: connect 0, read 2, write 0, timeout 0\nRequests/sec:")).is_err());
        assert!(parse(&OUT.replace("     99%    3.60ms\n", "")).is_err());
        assert_eq!(duration_us("1.5m").unwrap(), 90e6);
    }
}
