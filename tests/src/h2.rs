//! HTTP/2 and gRPC clients whose own counts are the client truth: h2load (nghttp2's load
//! generator, h2c with prior knowledge on http:// URLs, ALPN h2 on https:// ones) and
//! tests/servers/grpc_client.py (grpcio). The servers are in [`crate::servers`]
//! (`nghttpd`, `node_h2`, `hypercorn`, `nginx_h2_tls`, `grpc_python`, `grpc_node`).
use std::{
    collections::BTreeMap,
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{client::Endpoint, procs::workspace_root, servers::python, wait_for};

/// How long a client run may take before it is killed and the test fails.
const CLIENT_DEADLINE: Duration = Duration::from_secs(300);

/// The URL of `path` (with its leading `/`, and any query) on a TCP endpoint: `http://` for
/// h2c, `https://` for [`Endpoint::Tls`].
pub fn url(endpoint: &Endpoint, path: &str) -> Result<String> {
    match endpoint {
        Endpoint::Tcp(a) => Ok(format!("http://{a}{path}")),
        Endpoint::Tls(a) => Ok(format!("https://{a}{path}")),
        Endpoint::Unix(_) => bail!("h2load and the gRPC client connect over TCP only"),
    }
}

/// What h2load counted, from its summary. h2load's own meanings: `succeeded` are the
/// requests answered with a status below 400 and a complete stream; `failed` are all the
/// others, which are the 4xx and 5xx answers and the `errored` ones (the stream was reset or
/// the connection lost; a reset after the response headers still counts that status);
/// `timeout` ones are among `errored` too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H2loadReport {
    pub total: u64,
    pub started: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// The negotiated protocol ("h2c", "h2"; "http/1.1" with `--h1`), empty if none was.
    pub protocol: String,
    /// h2load's whole output, for failure messages.
    pub output: String,
}

impl H2loadReport {
    /// Reads h2load's summary lines:
    /// `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout`,
    /// `status codes: N 2xx, N 3xx, N 4xx, N 5xx` and `Application protocol: h2c`.
    pub fn parse(output: &str) -> Result<Self> {
        let line = |prefix: &str| output.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::trim));
        // "N word, N word, ..." as word -> N.
        let counts = |text: &str| -> BTreeMap<String, u64> {
            text.split(',')
                .filter_map(|part| {
                    let (n, word) = part.trim().split_once(' ')?;
                    Some((word.trim().to_string(), n.parse().ok()?))
                })
                .collect()
        };
        let summary = |prefix: &str| {
            line(prefix).map(counts).with_context(|| format!("no `{prefix}` in h2load's output:\n{output}"))
        };
        let (requests, statuses) = (summary("requests:")?, summary("status codes:")?);
        let get = |map: &BTreeMap<String, u64>, key: &str| {
            map.get(key).copied().with_context(|| format!("no `{key}` count in h2load's output:\n{output}"))
        };
        Ok(H2loadReport {
            total: get(&requests, "total")?,
            started: get(&requests, "started")?,
            done: get(&requests, "done")?,
            succeeded: get(&requests, "succeeded")?,
            failed: get(&requests, "failed")?,
            errored: get(&requests, "errored")?,
            timeout: get(&requests, "timeout")?,
            status_2xx: get(&statuses, "2xx")?,
            status_3xx: get(&statuses, "3xx")?,
            status_4xx: get(&statuses, "4xx")?,
            status_5xx: get(&statuses, "5xx")?,
            protocol: line("Application protocol:").unwrap_or_default().to_string(),
            output: output.to_string(),
        })
    }

    /// Responses with a status, by class (a reset stream's included if its headers came).
    pub fn responses(&self) -> u64 {
        self.status_2xx + self.status_3xx + self.status_4xx + self.status_5xx
    }
}

/// Runs `h2load -n n -m m -c clients EXTRA... URL` (one thread) and reads its summary. `n`
/// requests in all, over `clients` connections with up to `m` concurrent streams each; e.g.
/// `extra_args` `["-H", "x-a: b"]`, `["-d", "body-file"]`, `["--h1"]`. Fails if h2load prints
/// no summary (bad arguments) or runs for more than 5 minutes; requests to a server that is
/// not there are `errored`.
pub fn h2load(url: &str, n: u32, m: u32, clients: u32, extra_args: &[&str]) -> Result<H2loadReport> {
    let mut cmd = Command::new("h2load");
    cmd.args(["-n", &n.to_string(), "-m", &m.to_string(), "-c", &clients.to_string(), "-t", "1"])
        .args(extra_args)
        .arg(url);
    let (status, stdout, stderr) = run(cmd, "h2load (install nghttp2-client)")?;
    H2loadReport::parse(&stdout).with_context(|| format!("h2load exited with {status}; stderr:\n{stderr}"))
}

/// gRPC calls by method and status code number (0 OK, 5 NOT_FOUND, 13 INTERNAL, ...).
pub type GrpcCounts = BTreeMap<String, BTreeMap<u32, u64>>;

/// Runs tests/servers/grpc_client.py against `target` (host:port, e.g. the gRPC server's
/// endpoint) with `plan`, whitespace-separated steps `METHOD:PAYLOAD=COUNT`, e.g.
/// `Unary:ok=20 Unary:code:5=3 ServerStream:n:3=4 ServerStream:n:2,code:13=2`, made one
/// after the other on one channel. Returns the calls by the status the client saw.
pub fn grpc_client(target: &str, plan: &str) -> Result<GrpcCounts> {
    let mut cmd = Command::new(python());
    cmd.arg(workspace_root().join("tests/servers/grpc_client.py")).arg(target).args(plan.split_whitespace());
    let (status, stdout, stderr) = run(cmd, "the gRPC client (grpcio, in the test venv)")?;
    if !status.success() {
        bail!("the gRPC client exited with {status}:\n{stdout}{stderr}");
    }
    let json: BTreeMap<String, BTreeMap<String, u64>> = serde_json::from_str(stdout.trim())
        .with_context(|| format!("the gRPC client's output is not its counts: {stdout:?}\n{stderr}"))?;
    json.into_iter()
        .map(|(method, codes)| {
            let codes = codes.into_iter().map(|(c, n)| Ok((c.parse().with_context(|| format!("code {c:?}"))?, n)));
            Ok((method, codes.collect::<Result<_>>()?))
        })
        .collect()
}

/// Runs a client to its end (killed after [`CLIENT_DEADLINE`]): (status, stdout, stderr).
fn run(mut cmd: Command, what: &str) -> Result<(ExitStatus, String, String)> {
    let (out, err) = (tempfile::tempfile()?, tempfile::tempfile()?);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?)
        .spawn()
        .with_context(|| format!("starting {what}: {}", crate::describe(&cmd)))?;
    let status = wait_for(what, CLIENT_DEADLINE, || child.try_wait().ok().flatten());
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut s = String::new();
        let _ = f.rewind().and_then(|_| f.read_to_string(&mut s));
        s
    };
    match status {
        Ok(status) => Ok((status, read(out), read(err))),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{e} ({}):\n{}{}", crate::describe(&cmd), read(out), read(err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_summary_is_read() {
        let output = "starting benchmark...
spawning thread #0: 2 total client(s). 100 total requests
Application protocol: h2c
progress: 10% done

finished in 60.16ms, 1662.15 req/s, 56.78KB/s
requests: 100 total, 99 started, 98 done, 90 succeeded, 10 failed, 4 errored, 1 timeout
status codes: 88 2xx, 2 3xx, 5 4xx, 1 5xx
traffic: 3.42KB (3498) total, 762B (762) headers (space savings 90.47%), 900B (900) data
";
        let r = H2loadReport::parse(output).unwrap();
        let requests = (r.total, r.started, r.done, r.succeeded, r.failed, r.errored, r.timeout);
        assert_eq!(requests, (100, 99, 98, 90, 10, 4, 1));
        assert_eq!((r.status_2xx, r.status_3xx, r.status_4xx, r.status_5xx), (88, 2, 5, 1));
        assert_eq!((r.responses(), r.protocol.as_str()), (96, "h2c"));
        assert!(H2loadReport::parse("starting benchmark...\nNo protocol negotiated. Aborted.\n").is_err());
    }

    #[test]
    fn urls_name_the_scheme_of_the_endpoint() {
        assert_eq!(url(&Endpoint::v4(8080), "/items/1").unwrap(), "http://127.0.0.1:8080/items/1");
        assert_eq!(url(&Endpoint::v6(8080), "/").unwrap(), "http://[::1]:8080/");
        assert_eq!(url(&Endpoint::Tls(([127, 0, 0, 1], 443).into()), "/").unwrap(), "https://127.0.0.1:443/");
        assert!(url(&Endpoint::Unix("/tmp/s".into()), "/").is_err());
    }
}
