//! Known workloads with client truth: every request a test sends is recorded here as
//! (method, status, route), the way redprobe should label it, so a test can compare the
//! whole map with the agent's counts.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};

use crate::{
    client::{Conn, Endpoint, Response, one_shot_to},
    servers::{Bind, RealServer},
};

/// (method, status, route) → requests.
pub type Counts = BTreeMap<(String, u16, String), u64>;

/// Counts one request.
pub fn add(counts: &mut Counts, method: &str, status: u16, route: &str) {
    add_n(counts, method, status, route, 1);
}

/// Counts `n` requests.
pub fn add_n(counts: &mut Counts, method: &str, status: u16, route: &str, n: u64) {
    *counts.entry((method.to_string(), status, route.to_string())).or_insert(0) += n;
}

pub struct Workload {
    pub to: Endpoint,
    /// The open keep-alive connection, reused while the server keeps it open.
    conn: Option<Conn>,
    pub truth: Counts,
    /// Client-side durations per route, for latency bounds.
    pub elapsed: BTreeMap<String, Vec<Duration>>,
}

impl Workload {
    pub fn new(to: &Endpoint) -> Self {
        Workload { to: to.clone(), conn: None, truth: Counts::new(), elapsed: BTreeMap::new() }
    }

    pub fn total(&self) -> u64 {
        self.truth.values().sum()
    }

    /// Records one request the server answered.
    pub fn record(&mut self, method: &str, route: &str, r: &Response) {
        add(&mut self.truth, method, r.status, route);
        self.elapsed.entry(route.to_string()).or_default().push(r.elapsed);
    }

    /// One request on the kept-alive connection (a new one if the server closed it).
    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response> {
        let mut c = match self.conn.take() {
            Some(c) => c,
            None => Conn::connect(&self.to)?,
        };
        let r = c.request(method, path, "HTTP/1.1", &[], body)?;
        if !r.closed {
            self.conn = Some(c);
        }
        Ok(r)
    }

    fn get(&mut self, path: &str) -> Result<Response> {
        self.send("GET", path, b"")
    }

    fn expect(&mut self, method: &str, route: &str, r: Response, status: u16) -> Result<Response> {
        ensure!(r.status == status, "{method} {route} on {}: status {} (want {status})", self.to, r.status);
        self.record(method, route, &r);
        Ok(r)
    }

    /// Keep-alive GETs (reconnecting when the server closes, as gunicorn's sync workers
    /// do): plain, an ID route, 404, 500, and HEAD.
    pub fn basics(&mut self) -> Result<()> {
        for _ in 0..5 {
            let r = self.get("/hello")?;
            ensure!(r.body == b"hello world\n", "/hello body {:?}", String::from_utf8_lossy(&r.body));
            self.expect("GET", "/hello", r, 200)?;
        }
        for id in [7, 42, 1234] {
            let r = self.get(&format!("/users/{id}?tab=profile"))?;
            self.expect("GET", "/users/{id}", r, 200)?;
        }
        for _ in 0..2 {
            let r = self.get("/missing")?;
            self.expect("GET", "/missing", r, 404)?;
        }
        for _ in 0..3 {
            let r = self.get("/error")?;
            self.expect("GET", "/error", r, 500)?;
        }
        let r = self.send("HEAD", "/hello", b"")?;
        self.expect("HEAD", "/hello", r, 200)?;
        Ok(())
    }

    /// Requests that each use a fresh connection: `Connection: close` and HTTP/1.0.
    pub fn fresh_connections(&mut self) -> Result<()> {
        self.fresh_connections_to("/hello")
    }

    /// `fresh_connections` for another path (its own route, answered 200).
    pub fn fresh_connections_to(&mut self, path: &str) -> Result<()> {
        for version in ["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.0"] {
            let r = one_shot_to(&self.to, "GET", path, version)?;
            self.expect("GET", path, r, 200)?;
        }
        Ok(())
    }

    /// `n` requests written in one go before any response is read; responses in order.
    pub fn pipelined(&mut self, n: usize) -> Result<()> {
        let mut c = Conn::connect(&self.to)?;
        let mut batch = Vec::new();
        for i in 0..n {
            let path = if i % 2 == 0 { "/hello".to_string() } else { format!("/users/{i}") };
            batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        }
        let start = Instant::now();
        c.stream().write_all(&batch)?;
        for i in 0..n {
            let mut r = c.read_response(false)?;
            r.elapsed = start.elapsed();
            let route = if i % 2 == 0 { "/hello" } else { "/users/{id}" };
            self.expect("GET", route, r, 200)?;
        }
        Ok(())
    }

    /// Requests for `paths` written in one go, then their responses in order; each path
    /// is its own route.
    pub fn pipelined_paths(&mut self, paths: &[&str]) -> Result<()> {
        let mut c = Conn::connect(&self.to)?;
        let batch: String = paths.iter().map(|p| format!("GET {p} HTTP/1.1\r\nHost: localhost\r\n\r\n")).collect();
        let start = Instant::now();
        c.stream().write_all(batch.as_bytes())?;
        for p in paths {
            let mut r = c.read_response(false)?;
            r.elapsed = start.elapsed();
            self.record("GET", p, &r);
        }
        Ok(())
    }

    /// `n` requests to /sleep?ms=`ms` on one connection.
    pub fn sleeps(&mut self, n: usize, ms: u64) -> Result<()> {
        for _ in 0..n {
            let r = self.get(&format!("/sleep?ms={ms}"))?;
            ensure!(r.elapsed >= Duration::from_millis(ms.saturating_sub(1)), "slept less than {ms} ms: {:?}", r.elapsed);
            self.expect("GET", "/sleep", r, 200)?;
        }
        Ok(())
    }

    /// A chunked response written over time (`parts` parts, `ms` apart).
    pub fn stream(&mut self, parts: usize, ms: u64) -> Result<()> {
        for _ in 0..2 {
            let r = self.get(&format!("/stream?parts={parts}&ms={ms}"))?;
            let want: Vec<u8> = (0..parts).flat_map(|i| format!("part {i}\n").into_bytes()).collect();
            ensure!(r.body == want, "/stream body {:?}", String::from_utf8_lossy(&r.body));
            self.expect("GET", "/stream", r, 200)?;
        }
        Ok(())
    }

    /// A response of `kb` KiB, then an upload of `kb` KiB, both on one connection.
    pub fn big(&mut self, kb: usize) -> Result<()> {
        let r = self.get(&format!("/big?kb={kb}"))?;
        ensure!(r.body.len() == kb * 1024, "/big body {} bytes", r.body.len());
        self.expect("GET", "/big", r, 200)?;
        let r = self.send("POST", "/echo", &vec![b'u'; kb * 1024])?;
        ensure!(r.body == format!("{}\n", kb * 1024).into_bytes(), "/echo answered {:?}", String::from_utf8_lossy(&r.body));
        self.expect("POST", "/echo", r, 201)?;
        Ok(())
    }

    /// An upload in chunked transfer coding, written in several writes.
    pub fn chunked_upload(&mut self) -> Result<()> {
        let mut c = Conn::connect(&self.to)?;
        let start = Instant::now();
        c.stream().write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        for part in [&b"hello "[..], b"chunked ", b"world"] {
            c.stream().write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
            c.stream().write_all(part)?;
            c.stream().write_all(b"\r\n")?;
        }
        c.stream().write_all(b"0\r\n\r\n")?;
        let mut r = c.read_response(false)?;
        r.elapsed = start.elapsed();
        // Django under WSGI does not read chunked request bodies (no CONTENT_LENGTH) and
        // answers "0"; the request is served either way.
        ensure!(r.body == b"19\n" || r.body == b"0\n", "chunked upload answered {:?}", String::from_utf8_lossy(&r.body));
        self.expect("POST", "/echo", r, 201)?;
        Ok(())
    }

    /// `Expect: 100-continue`: the head, the server's interim 100, then the body.
    pub fn expect_continue(&mut self) -> Result<()> {
        let mut c = Conn::connect(&self.to)?;
        let start = Instant::now();
        let body = vec![b'e'; 3000];
        c.stream().write_all(
            format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len())
                .as_bytes(),
        )?;
        let mut interim = [0u8; 25];
        c.stream().read_exact(&mut interim)?;
        ensure!(interim.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"), "no 100 Continue: {:?}", String::from_utf8_lossy(&interim));
        c.stream().write_all(&body)?;
        let mut r = c.read_response(false)?;
        r.elapsed = start.elapsed();
        self.expect("POST", "/echo", r, 201)?;
        Ok(())
    }

    /// 204 (and 304 where the server has it): no body, on a keep-alive connection.
    pub fn no_body(&mut self, not_modified: bool) -> Result<()> {
        let r = self.get("/nocontent")?;
        self.expect("GET", "/nocontent", r, 204)?;
        if not_modified {
            let r = self.get("/notmodified")?;
            self.expect("GET", "/notmodified", r, 304)?;
        }
        let r = self.get("/hello")?;
        self.expect("GET", "/hello", r, 200)?;
        Ok(())
    }
}

/// Waits until the agent has counted the workload, then asserts the agent's counts equal
/// client truth exactly, every request carries the endpoint's `network_transport`, and
/// nothing was lost or left unparsed. Prints "sent N, counted M" for the record.
pub fn assert_exact(agent: &crate::procs::Agent, w: &Workload, server: &str) -> Result<crate::scrape::Metrics> {
    let total = w.total();
    let m = agent.wait_metrics(&format!("{server}: {total} requests counted"), |m| {
        m.request_counts().values().sum::<u64>() >= total
    })?;
    let counted: u64 = m.request_counts().values().sum();
    println!("{server}: requests sent {total}, counted {counted}");
    assert_eq!(m.request_counts(), w.truth, "{server}: probe counts != client truth");
    let transport = w.to.transport();
    let with_transport = m.sum("http_server_request_duration_seconds_count", &[("network_transport", transport)]);
    assert_eq!(with_transport, total as f64, "{server}: requests with network_transport={transport}");
    let scheme = w.to.scheme();
    let with_scheme = m.sum("http_server_request_duration_seconds_count", &[("url_scheme", scheme)]);
    assert_eq!(with_scheme, total as f64, "{server}: requests with url_scheme={scheme}");
    assert_eq!(m.sum("redprobe_events_lost_total", &[]), 0.0, "{server}: events lost");
    let unparsed: Vec<&str> = m.text.lines().filter(|l| l.starts_with("redprobe_requests_unparsed_total")).collect();
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0, "{server}: unparsed: {unparsed:?}");
    // Each request was paired once, by the kernel's fast path or by the agent.
    let kernel = m.sum("redprobe_requests_paired_total", &[("pairer", "kernel")]);
    let agent_paired = m.sum("redprobe_requests_paired_total", &[("pairer", "agent")]);
    assert_eq!(kernel + agent_paired, total as f64, "{server}: requests paired (kernel {kernel}, agent {agent_paired})");
    record_share(server, total, &m);
    Ok(m)
}

/// Appends who paired a server's requests to `target/fast-path-share.txt`, which
/// `cargo xtask test` prints at its end: the share of the fast path, and the reasons the
/// rest went to the agent.
pub fn record_share(server: &str, total: u64, m: &crate::scrape::Metrics) {
    let kernel = m.sum("redprobe_requests_paired_total", &[("pairer", "kernel")]);
    let mut reasons: Vec<(String, f64)> = m
        .text
        .lines()
        .filter(|l| l.starts_with("redprobe_requests_paired_total{pairer=\"agent\""))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?.to_string();
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            (n > 0.0).then_some((reason, n))
        })
        .collect();
    reasons.sort_by(|a, b| b.1.total_cmp(&a.1));
    let rest: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let line = format!(
        "{server}: {total} requests, {kernel} by the kernel ({:.0} %); agent: {}\n",
        100.0 * kernel / total.max(1) as f64,
        if rest.is_empty() { "none".to_string() } else { rest.join(", ") }
    );
    let path = crate::procs::workspace_root().join("target/fast-path-share.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        use std::io::Write;
        let _ = f.write_all(line.as_bytes());
    }
}

/// What a server supports beyond the common mix.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mix {
    /// Several requests per write (gunicorn's sync workers close after one response).
    pub pipelining: bool,
    /// A `/notmodified` route answering 304 (the Django app).
    pub not_modified: bool,
}

/// The full mix: keep-alive basics with 404/500/HEAD, fresh connections and HTTP/1.0,
/// pipelining, sleeps, a streaming response, 3 MiB each way, a chunked upload,
/// `Expect: 100-continue`, and 204 (and 304).
pub fn full_mix(w: &mut Workload, mix: Mix) -> Result<()> {
    w.basics()?;
    w.fresh_connections()?;
    if mix.pipelining {
        w.pipelined(6)?;
    }
    w.sleeps(2, 40)?;
    w.stream(4, 20)?;
    w.big(3 * 1024)?;
    w.chunked_upload()?;
    w.expect_continue()?;
    w.no_body(mix.not_modified)?;
    Ok(())
}

/// Starts the agent on `server`'s main PID, sends the full mix and asserts exact counts.
pub fn full_mix_is_counted_exactly(server: &RealServer, mix: Mix) -> Result<()> {
    let agent = crate::procs::Agent::attach(server.pid())?;
    let mut w = Workload::new(&server.endpoint);
    full_mix(&mut w, mix)?;
    assert_exact(&agent, &w, &format!("{} ({})", server.name, server.endpoint.transport_name()))?;
    Ok(())
}

/// `full_mix_is_counted_exactly` on the server `start` starts on `bind`.
pub fn full_mix_on(start: impl FnOnce(Bind) -> Result<RealServer>, bind: Bind, mix: Mix) -> Result<()> {
    full_mix_is_counted_exactly(&start(bind)?, mix)
}

/// One `#[test]` for each `name => Bind`: `name` returns `run(Bind::...)`, where `run`
/// takes a `servers::Bind` and returns `anyhow::Result<()>`:
///
/// ```text
/// testkit::per_bind_tests! { run;
///     nginx_return_and_sendfile_ipv4 => V4,
///     nginx_return_and_sendfile_ipv6 => V6,
/// }
/// ```
#[macro_export]
macro_rules! per_bind_tests {
    ($run:expr; $($name:ident => $bind:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() -> $crate::anyhow::Result<()> {
                ($run)($crate::servers::Bind::$bind)
            }
        )+
    };
}

/// A real server's test file: one `#[test]` for each `name => Bind`, which starts the
/// server with `start(bind)` (a `servers` function such as `servers::go`), attaches the
/// agent to it, sends the full mix `mix` and asserts exact counts (`full_mix_on`):
///
/// ```text
/// testkit::full_mix_tests! { go, Mix { pipelining: true, not_modified: false };
///     go_net_http_ipv4 => V4,
///     go_net_http_unix_socket => Unix,
/// }
/// ```
#[macro_export]
macro_rules! full_mix_tests {
    ($start:expr, $mix:expr; $($name:ident => $bind:ident),+ $(,)?) => {
        $crate::per_bind_tests! { |bind| $crate::workload::full_mix_on($start, bind, $mix); $($name => $bind),+ }
    };
}
