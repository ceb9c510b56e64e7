//! nginx, master + 2 workers, the agent given the master PID: `return` responses, static
//! files sent with sendfile (and gzip-compressed, chunked, for a client that asks), a head
//! beyond the capture window, and `proxy_pass` to gunicorn over a Unix socket, where
//! nginx's own upstream connections are client connections and never count as served.
use std::collections::BTreeMap;

use anyhow::Result;
use testkit::{
    client::Conn,
    procs::{Agent, pid_args},
    servers::{Bind, NginxSite, gunicorn, nginx},
    workload::{Counts, Workload, add, assert_exact},
};

const PAGE: &[u8] = &[b'p'; 4096];

fn nginx_mix(w: &mut Workload) -> Result<()> {
    let mut c = Conn::connect(&w.to)?;
    for _ in 0..5 {
        let r = c.get("/hello")?;
        w.record("GET", "/hello", &r);
    }
    for _ in 0..3 {
        let r = c.get("/static/page.html")?;
        anyhow::ensure!(r.body == PAGE, "static body of {} bytes", r.body.len());
        w.record("GET", "/static/page.html", &r);
    }
    let r = c.request("HEAD", "/static/page.html", "HTTP/1.1", &[], b"")?;
    w.record("HEAD", "/static/page.html", &r);
    let r = c.get("/missing")?;
    w.record("GET", "/missing", &r);
    let r = c.get("/nocontent")?;
    w.record("GET", "/nocontent", &r);
    let r = c.get("/static/big.bin")?;
    anyhow::ensure!(r.body.len() == 3 << 20, "big static body of {} bytes", r.body.len());
    w.record("GET", "/static/big.bin", &r);
    // Compressed on request: a chunked response written by nginx's gzip filter.
    for _ in 0..2 {
        let r = c.request("GET", "/static/page.html", "HTTP/1.1", &[("Accept-Encoding", "gzip")], b"")?;
        anyhow::ensure!(r.body.len() < PAGE.len() && r.body.starts_with(&[0x1f, 0x8b]), "a gzip body of {} bytes", r.body.len());
        w.record("GET", "/static/page.html", &r);
    }
    // A head larger than the capture window (a 2 KB cookie), and an empty POST.
    let cookie = "a".repeat(2000);
    let r = c.request("GET", "/hello", "HTTP/1.1", &[("Cookie", &cookie)], b"")?;
    w.record("GET", "/hello", &r);
    let r = c.request("POST", "/hello", "HTTP/1.1", &[("Content-Length", "0")], b"")?;
    w.record("POST", "/hello", &r);
    w.fresh_connections()?;
    w.pipelined_paths(&["/hello", "/static/page.html", "/hello", "/missing"])?;
    Ok(())
}

fn static_site(big: &[u8]) -> Vec<(&'static str, &[u8])> {
    vec![("page.html", PAGE), ("big.bin", big)]
}

fn run(bind: Bind) -> Result<()> {
    let big = vec![b'b'; 3 << 20];
    let files = static_site(&big);
    let server = nginx(bind, &NginxSite { workers: 2, files: &files, ..Default::default() })?;
    // With the response-size histogram (not served by default), for the sendfile bytes.
    let mut args = testkit::procs::pid_args(&[server.pid()]);
    args.extend(["--extra-histograms".to_string(), "response-size".to_string()]);
    let agent = Agent::start(&args)?;
    let mut w = Workload::new(&server.endpoint);
    nginx_mix(&mut w)?;
    let m = assert_exact(&agent, &w, &format!("nginx return+sendfile ({bind:?})"))?;
    // The static responses went out with sendfile: counted by bytes, not payload.
    let big_bytes = m.sum("http_server_response_body_size_bytes_sum", &[("http_route", "/static/big.bin")]);
    assert_eq!(big_bytes, (3 << 20) as f64, "response body bytes of the sendfile route");
    Ok(())
}

testkit::per_bind_tests! { run;
    nginx_return_and_sendfile_ipv4 => V4,
    nginx_return_and_sendfile_ipv6 => V6,
    nginx_return_and_ssl_https => Tls,
}

testkit::per_bind_tests! { proxy_pass;
    nginx_proxy_pass_to_gunicorn_over_a_unix_socket => Unix,
    nginx_proxy_pass_to_gunicorn_over_tcp => V4,
}

/// nginx's default upstream protocol is HTTP/1.0: gunicorn ends a streaming response by
/// closing the Unix socket. The response completes when nginx reads that end-of-file.
#[test]
fn close_delimited_response_over_a_unix_socket_completes_at_close() -> Result<()> {
    let app = gunicorn(Bind::Unix, 1, &[], &[])?;
    let site = NginxSite { workers: 1, upstream: Some(&app.endpoint), upstream_http10: true, ..Default::default() };
    let proxy = nginx(Bind::V4, &site)?;
    let agent = Agent::attach(app.pid())?;
    let mut c = Conn::connect(&proxy.endpoint)?;
    for _ in 0..3 {
        let r = c.get("/app/stream?parts=4&ms=25")?;
        assert_eq!(r.body, b"part 0\npart 1\npart 2\npart 3\n");
    }
    let m = agent.wait_metrics("3 close-delimited responses", |m| m.requests("GET", 200, "/stream") == 3)?;
    let sum = m.sum("http_server_request_duration_seconds_sum", &[("http_route", "/stream")]);
    assert!(sum >= 3.0 * 0.075, "3 responses written over >= 75 ms each took {sum} s in all");
    assert_eq!(m.sum("http_server_request_duration_seconds_count", &[("network_transport", "unix")]), 3.0);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    Ok(())
}

fn proxy_pass(upstream: Bind) -> Result<()> {
    let app = gunicorn(upstream, 2, &[], &[])?;
    let site = NginxSite { workers: 2, upstream: Some(&app.endpoint), ..Default::default() };
    let proxy = nginx(Bind::V4, &site)?;
    // One agent, both targets: nginx's served requests on TCP and gunicorn's on the Unix
    // socket; nginx's upstream side of the same requests is a client connection.
    let agent = Agent::start(&pid_args(&[proxy.pid(), app.pid()]))?;
    let mut c = Conn::connect(&proxy.endpoint)?;
    let mut truth = Counts::new();
    for _ in 0..4 {
        assert_eq!(c.get("/app/hello")?.status, 200);
        add(&mut truth, "GET", 200, "/app/hello");
        add(&mut truth, "GET", 200, "/hello");
    }
    for _ in 0..2 {
        assert_eq!(c.get("/app/error")?.status, 500);
        add(&mut truth, "GET", 500, "/app/error");
        add(&mut truth, "GET", 500, "/error");
    }
    let r = c.get("/app/stream?parts=3&ms=10")?;
    assert_eq!(r.body, b"part 0\npart 1\npart 2\n");
    add(&mut truth, "GET", 200, "/app/stream");
    add(&mut truth, "GET", 200, "/stream");
    assert_eq!(c.get("/hello")?.status, 200);
    add(&mut truth, "GET", 200, "/hello");
    let total: u64 = truth.values().sum();
    let m = agent.wait_metrics("proxied requests counted", |m| m.request_counts().values().sum::<u64>() >= total)?;
    println!(
        "nginx proxy_pass + gunicorn ({upstream:?}): requests sent 8 (7 proxied), counted {} (nginx 8 + gunicorn 7)",
        m.request_counts().values().sum::<u64>()
    );
    assert_eq!(m.request_counts(), truth, "nginx + gunicorn counts");
    let by = |service: &str, transport: &str| {
        m.sum("http_server_request_duration_seconds_count", &[("service_name", service), ("network_transport", transport)])
    };
    let app_transport = app.endpoint.transport();
    assert_eq!(by("nginx", "tcp"), 8.0, "nginx's served requests");
    let app_requests = m.sum("http_server_request_duration_seconds_count", &[("network_transport", app_transport)])
        - if app_transport == "tcp" { by("nginx", "tcp") } else { 0.0 };
    assert_eq!(app_requests, 7.0, "gunicorn's served requests on {app_transport}");
    assert_eq!(by("nginx", "unix"), 0.0, "nginx's upstream requests must not count as served");
    if upstream != Bind::Unix {
        // A TCP upstream connection is seen, and classified as nginx's client side. (An
        // unbound Unix client socket is skipped before classification.)
        // (The kernel's counters reach the metrics on the agent's next poll.)
        agent.wait_metrics("upstream connections classified as client", |m| {
            m.sum("redprobe_connections_classified_total", &[("role", "client")]) >= 1.0
        })?;
        // nginx's calls to its upstream, from its side, are gunicorn's requests from
        // gunicorn's side, request for request (by method and status). The upstream is
        // named as nginx's Host header names it: the `app` upstream block, default port.
        let m = agent.wait_metrics("nginx's 7 upstream calls", |m| {
            m.sum("http_client_request_duration_seconds_count", &[("service_name", "nginx")]) >= 7.0
        })?;
        let mut client = BTreeMap::new();
        for s in m.series("http_client_request_duration_seconds_count").filter(|s| s.value > 0.0) {
            assert!(s.has(&[("service_name", "nginx"), ("server_address", "app"), ("server_port", "80")]), "{s:?}");
            let status = s.label("http_response_status_code");
            let want_error = if status == "500" { "500" } else { "" };
            assert_eq!(s.label("error_type"), want_error, "{s:?}");
            *client.entry((s.label("http_request_method").to_string(), status.to_string())).or_insert(0) += s.value as u64;
        }
        let mut served = BTreeMap::new();
        for s in m.series("http_server_request_duration_seconds_count").filter(|s| s.label("service_name") != "nginx") {
            let key = (s.label("http_request_method").to_string(), s.label("http_response_status_code").to_string());
            *served.entry(key).or_insert(0) += s.value as u64;
        }
        served.retain(|_, n| *n > 0);
        println!("nginx's upstream calls {client:?}; gunicorn's served requests {served:?}");
        assert_eq!(client, served, "nginx's client series against gunicorn's server series");
    }
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    Ok(())
}

/// Keep-alive connections opened (and used) before the agent attached, spread over both
/// workers, are counted from their next request.
#[test]
fn nginx_connections_opened_before_attach_count_from_their_next_request() -> Result<()> {
    let server = nginx(Bind::V4, &NginxSite { workers: 2, files: &[], ..Default::default() })?;
    let mut early: Vec<Conn> = (0..8).map(|_| Conn::connect(&server.endpoint)).collect::<Result<_>>()?;
    for c in &mut early {
        assert_eq!(c.get("/hello")?.status, 200); // before the agent: not counted
    }
    let agent = Agent::attach(server.pid())?;
    let mut w = Workload::new(&server.endpoint);
    for c in &mut early {
        for path in ["/hello", "/missing"] {
            let r = c.get(path)?;
            w.record("GET", path, &r);
        }
    }
    assert_exact(&agent, &w, "nginx, connections opened before attach")?;
    Ok(())
}
