//! The real servers the integration tests and the bench run: gunicorn + Django, uvicorn,
//! nginx, Node and Go, each on an endpoint of the test's choosing (IPv4, IPv6 or a Unix
//! socket). Their apps live in `tests/servers/` and serve the same routes as `app.py`.
//! The HTTP/2 servers (nghttpd, Node's http2, hypercorn, nginx with `http2`) serve the routes
//! of `node_h2.js`, and the gRPC servers (grpcio, grpc-js) the service of `grpc_server.py`;
//! their clients are in [`crate::h2`].
//! Each server is ready when it accepts a connection; it is stopped when dropped.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    client::{Endpoint, Stream},
    procs::{children, free_port, terminate, workspace_root},
    wait_for,
};

/// Which kind of endpoint a server listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    V4,
    V6,
    Unix,
    /// HTTPS on IPv4, with the run's self-signed certificate ([`certificate`]).
    Tls,
}

impl Bind {
    /// A fresh endpoint of this kind: a free port, or a socket path in `dir`.
    fn endpoint(self, dir: &Path) -> Endpoint {
        match self {
            Bind::V4 => Endpoint::v4(free_port()),
            Bind::V6 => Endpoint::v6(free_port6()),
            Bind::Unix => Endpoint::Unix(dir.join("server.sock")),
            Bind::Tls => Endpoint::Tls(std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))),
        }
    }
}

/// The TLS servers' certificate and key (self-signed for localhost), made once per run
/// with the openssl command under target/test-tls/.
pub fn certificate() -> Result<(PathBuf, PathBuf)> {
    static MADE: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = workspace_root().join("target/test-tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .map_err(|e| format!("cannot run openssl (install openssl): {e}"))?;
        if !out.status.success() {
            return Err(format!("openssl req failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok((cert, key))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

fn free_port6() -> u16 {
    std::net::TcpListener::bind("[::1]:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A running server and its scratch directory (configs, sockets, static files, logs).
pub struct RealServer {
    pub child: Child,
    pub endpoint: Endpoint,
    pub dir: tempfile::TempDir,
    pub name: &'static str,
}

impl RealServer {
    /// The PID to give redprobe: the server's main (master) process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts `cmd` (with its output in the scratch log) and waits until `endpoint` accepts.
    fn spawn(name: &'static str, mut cmd: Command, endpoint: Endpoint, dir: tempfile::TempDir) -> Result<Self> {
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let mut server = RealServer { child, endpoint, dir, name };
        let ready = wait_for(&format!("{name} to accept on {}", server.endpoint), Duration::from_secs(60), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Some(Err(status));
            }
            Stream::connect(&server.endpoint).ok().map(|_| Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(server),
            Ok(Err(status)) => bail!("{name} exited with {status}:\n{}", server.log()),
            Err(e) => bail!("{e}\n{name} log:\n{}", server.log()),
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The Python interpreter with the test servers' packages: `$REDPROBE_PYTHON` (set by
/// `cargo xtask test` to the venv it made), else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os(crate::REDPROBE_PYTHON).map(PathBuf::from).unwrap_or_else(|| "python3".into())
}

fn scratch() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("redprobe-server-").tempdir()?)
}

fn servers_dir() -> PathBuf {
    workspace_root().join("tests/servers")
}

/// gunicorn + Django (tests/servers/djangoapp), sync workers. `extra` adds gunicorn flags
/// (e.g. `--max-requests`); `env` adds environment (e.g. django-prometheus for the bench).
pub fn gunicorn(bind: Bind, workers: u32, extra: &[&str], env: &[(&str, &str)]) -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let mut cmd = Command::new(python());
    cmd.args(["-m", "gunicorn", "--no-control-socket", "--workers", &workers.to_string(), "--bind"])
        .arg(endpoint.to_string())
        .args(extra);
    if matches!(endpoint, Endpoint::Tls(_)) {
        let (cert, key) = certificate()?;
        cmd.arg("--certfile").arg(cert).arg("--keyfile").arg(key);
    }
    cmd.arg("djangoapp.wsgi")
        .current_dir(servers_dir())
        .envs(env.iter().copied());
    RealServer::spawn("gunicorn", cmd, endpoint, dir)
}

/// uvicorn (asyncio) serving the same Django app through ASGI.
pub fn uvicorn(bind: Bind) -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let mut cmd = Command::new(python());
    cmd.args(["-m", "uvicorn", "--no-access-log", "--log-level", "warning"]);
    match &endpoint {
        Endpoint::Tcp(a) => cmd.args(["--host", &a.ip().to_string(), "--port", &a.port().to_string()]),
        Endpoint::Unix(p) => cmd.arg("--uds").arg(p),
        Endpoint::Tls(_) => bail!("the uvicorn server of the tests has no TLS set up"),
    };
    cmd.arg("djangoapp.asgi:application").current_dir(servers_dir());
    RealServer::spawn("uvicorn", cmd, endpoint, dir)
}

/// Python's http.server serving the files of a scratch directory (`files` are written
/// there first), in the threaded server the stdlib module runs.
pub fn http_server(bind: Bind, files: &[(&str, &[u8])]) -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let root = dir.path().join("www");
    std::fs::create_dir(&root)?;
    for (name, content) in files {
        std::fs::write(root.join(name), content)?;
    }
    let Endpoint::Tcp(addr) = &endpoint else { bail!("python -m http.server listens on TCP only") };
    let mut cmd = Command::new(python());
    cmd.args(["-m", "http.server", "--protocol", "HTTP/1.1", "--bind", &addr.ip().to_string(), "--directory"])
        .arg(&root)
        .arg(addr.port().to_string());
    RealServer::spawn("python http.server", cmd, endpoint, dir)
}

/// Node's `http` module (tests/servers/node_app.js).
pub fn node(bind: Bind) -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let mut cmd = Command::new("node");
    cmd.arg(servers_dir().join("node_app.js"));
    match &endpoint {
        Endpoint::Tcp(a) => cmd.arg(a.ip().to_string()).arg(a.port().to_string()),
        Endpoint::Unix(p) => cmd.arg("-").arg(p),
        Endpoint::Tls(a) => {
            let (cert, key) = certificate()?;
            cmd.arg(a.ip().to_string()).arg(a.port().to_string()).env("TLS_CERT", cert).env("TLS_KEY", key)
        }
    };
    RealServer::spawn("node", cmd, endpoint, dir)
}

/// Go's net/http (tests/servers/goapp), built once per test run into target/.
pub fn go(bind: Bind) -> Result<RealServer> {
    let binary = go_binary()?;
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let mut cmd = Command::new(binary);
    match &endpoint {
        Endpoint::Tcp(a) if a.is_ipv6() => cmd.arg("tcp6").arg(a.to_string()),
        Endpoint::Tcp(a) => cmd.arg("tcp4").arg(a.to_string()),
        Endpoint::Unix(p) => cmd.arg("unix").arg(p),
        Endpoint::Tls(a) => {
            let (cert, key) = certificate()?;
            cmd.arg("tcp4").arg(a.to_string()).env("TLS_CERT", cert).env("TLS_KEY", key)
        }
    };
    RealServer::spawn("go net/http", cmd, endpoint, dir)
}

fn go_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = workspace_root().join("target/goapp");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(servers_dir().join("goapp"))
            .env("GOCACHE", workspace_root().join("target/gocache"))
            .env("GOFLAGS", "-mod=mod")
            .status();
        match status {
            Ok(s) if s.success() => Ok(out),
            Ok(s) => Err(format!("go build failed with {s}")),
            Err(e) => Err(format!("cannot run go (install golang-go): {e}")),
        }
    });
    built.clone().map_err(|e| anyhow::anyhow!(e))
}

/// What nginx serves, besides `location = /hello { return 200 }` (and `/users/<anything>`,
/// `/missing` 404, `/nocontent` 204).
#[derive(Default)]
pub struct NginxSite<'a> {
    /// Worker processes (the master is the PID to attach to).
    pub workers: u32,
    /// Files under `/static/`, served with sendfile.
    pub files: &'a [(&'a str, &'a [u8])],
    /// `/app/` is proxied (HTTP/1.1, keep-alive) to this upstream, e.g. gunicorn on a
    /// Unix socket.
    pub upstream: Option<&'a Endpoint>,
    /// Proxy with nginx's defaults (HTTP/1.0, `Connection: close`) instead of HTTP/1.1
    /// keep-alive: responses without a length are delimited by the upstream's close.
    pub upstream_http10: bool,
    /// Room for this many idle clients (slowloris): worker connections and file limits
    /// raised above it, a listen backlog of 4096, and 600 s header and keep-alive
    /// timeouts, so that nginx keeps them all open. 0: nginx's defaults (1024 connections).
    pub idle_clients: u32,
    /// HTTP/2: over TLS on `Bind::Tls` (ALPN h2, and http/1.1 for clients that do not offer
    /// h2); cleartext on the other binds, with prior knowledge only (h2c, no Upgrade: nginx
    /// answers no HTTP/1.x there). Adds the routes of node_h2.js that nginx can serve: `/`,
    /// `/items/<id>`, `/big` (200 KiB file) and `/status/<code>` for [`NGINX_H2_STATUSES`].
    pub http2: bool,
}

/// The codes of nginx's `/status/<code>` routes (with `http2`); others are 404.
pub const NGINX_H2_STATUSES: &[u16] = &[200, 201, 204, 400, 403, 404, 429, 500, 502, 503];

/// nginx, master + workers, in the foreground with everything under a scratch prefix.
pub fn nginx(bind: Bind, site: &NginxSite<'_>) -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let prefix = dir.path();
    let root = prefix.join("www");
    std::fs::create_dir_all(root.join("static"))?;
    for (name, content) in site.files {
        std::fs::write(root.join("static").join(name), content)?;
    }
    // nginx's `listen` and `server` take addresses as Endpoint displays them.
    let mut listen = endpoint.to_string();
    let mut directives = String::new();
    if let Endpoint::Tls(_) = &endpoint {
        let (cert, key) = certificate()?;
        listen.push_str(" ssl");
        directives = format!("ssl_certificate {}; ssl_certificate_key {};", cert.display(), key.display());
    }
    let mut h2_routes = Vec::new();
    if site.http2 {
        // `http2 on;` came with nginx 1.25.1, which deprecated the `listen` parameter.
        if nginx_version()? >= (1, 25, 1) {
            directives.push_str(" http2 on;");
        } else {
            listen.push_str(" http2");
        }
        std::fs::write(root.join("big"), vec![b'x'; 200 * 1024])?;
        h2_routes.push(r#"location = / { return 200 "hello h2\n"; }"#.to_string());
        h2_routes.push(r#"location /items/ { return 200 "item\n"; }"#.to_string());
        h2_routes.push("location = /big { }".to_string());
        for code in NGINX_H2_STATUSES {
            let body = if *code == 204 { String::new() } else { format!(r#" "status {code}\n""#) };
            h2_routes.push(format!("location = /status/{code} {{ return {code}{body}; }}"));
        }
    }
    let h2_routes = h2_routes.join("\n        ");
    let upstream = match site.upstream {
        Some(up) => format!("upstream app {{ server {up}; keepalive 4; }}\n"),
        None => String::new(),
    };
    let proxy = match (site.upstream, site.upstream_http10) {
        (None, _) => "",
        (Some(_), true) => "location /app/ { proxy_pass http://app/; }",
        (Some(_), false) => {
            "location /app/ { proxy_pass http://app/; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
        }
    };
    let (limits, backlog, timeouts) = match site.idle_clients {
        0 => ("events { worker_connections 1024; }".to_string(), "", ""),
        n => (
            format!("worker_rlimit_nofile {}; events {{ worker_connections {}; }}", 2 * (n + 2000), n + 2000),
            " backlog=4096",
            "client_header_timeout 600s; keepalive_timeout 600s;",
        ),
    };
    let conf = format!(
        r#"daemon off;
master_process on;
user root;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/server.log warn;
{limits}
http {{
    access_log off;
    {timeouts}
    sendfile on;
    tcp_nopush off;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    {upstream}
    server {{
        listen {listen}{backlog};
        {directives}
        root {root};
        # Only for clients that ask: a compressed response has no length, so it is chunked.
        gzip on;
        gzip_types *;
        gzip_min_length 100;
        location = /hello {{ return 200 "hello world\n"; }}
        location = /missing {{ return 404; }}
        location = /nocontent {{ return 204; }}
        location /users/ {{ return 200 "user\n"; }}
        location /static/ {{ }}
        {proxy}
        {h2_routes}
    }}
}}
"#,
        workers = site.workers.max(1),
        prefix = prefix.display(),
        root = root.display(),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(prefix).arg("-c").arg(&conf_path).arg("-e").arg(prefix.join("server.log"));
    let server = RealServer::spawn("nginx", cmd, endpoint, dir)?;
    // The master may accept (through its listening socket) before it forked its workers.
    let workers = site.workers.max(1) as usize;
    wait_for("nginx's workers", Duration::from_secs(30), || (children(server.pid()).len() >= workers).then_some(()))?;
    Ok(server)
}

/// The installed nginx's version, from `nginx -v` (e.g. (1, 22, 1)).
pub fn nginx_version() -> Result<(u32, u32, u32)> {
    static VERSION: OnceLock<Result<(u32, u32, u32), String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let out = Command::new("nginx").arg("-v").output().map_err(|e| format!("cannot run nginx -v: {e}"))?;
            // "nginx version: nginx/1.22.1", on stderr.
            let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            let version = text.split_once("nginx/").map(|(_, v)| v.split_whitespace().next().unwrap_or_default());
            let numbers: Vec<u32> = version.unwrap_or_default().split('.').filter_map(|n| n.parse().ok()).collect();
            match numbers[..] {
                [major, minor, patch, ..] => Ok((major, minor, patch)),
                _ => Err(format!("no version in `nginx -v`: {text:?}")),
            }
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// nginx (master + 1 worker) serving HTTP/2 over TLS (ALPN h2), on IPv4: [`nginx`] with
/// [`NginxSite::http2`].
pub fn nginx_h2_tls() -> Result<RealServer> {
    nginx(Bind::Tls, &NginxSite { workers: 1, http2: true, ..Default::default() })
}

/// nghttpd, nghttp2's HTTP/2 server (one process, one thread, an event loop), serving a
/// document root with the paths of node_h2.js that are files: `/` (index.html, "hello h2\n"),
/// `/items/1` to `/items/3`, and `/big` (200 KiB); other paths are 404. On `Bind::V4` and
/// `Bind::V6`, cleartext with prior knowledge only (h2c: no Upgrade, no HTTP/1.x); on
/// `Bind::Tls`, over TLS (ALPN h2 only).
pub fn nghttpd(bind: Bind) -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("items"))?;
    std::fs::write(root.join("index.html"), "hello h2\n")?;
    for id in 1..=3 {
        std::fs::write(root.join("items").join(id.to_string()), format!("{{\"item\": \"{id}\"}}\n"))?;
    }
    std::fs::write(root.join("big"), vec![b'x'; 200 * 1024])?;
    let mut cmd = Command::new("nghttpd");
    let addr = match &endpoint {
        Endpoint::Tcp(a) | Endpoint::Tls(a) => a,
        Endpoint::Unix(_) => bail!("nghttpd listens on TCP only"),
    };
    cmd.arg("--address").arg(addr.ip().to_string()).arg("--htdocs").arg(&root).arg(addr.port().to_string());
    match &endpoint {
        Endpoint::Tls(_) => {
            let (cert, key) = certificate()?;
            cmd.arg(key).arg(cert)
        }
        _ => cmd.arg("--no-tls"),
    };
    RealServer::spawn("nghttpd", cmd, endpoint, dir)
}

/// Node's `http2` module (tests/servers/node_h2.js): h2c with prior knowledge on `Bind::V4`,
/// `Bind::V6` and `Bind::Unix` (no Upgrade, no HTTP/1.x); HTTP/2 over TLS (ALPN h2 only) on
/// `Bind::Tls`. Its `/reset` sends headers and data, then resets the stream.
pub fn node_h2(bind: Bind) -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let mut cmd = Command::new("node");
    cmd.arg(servers_dir().join("node_h2.js"));
    match &endpoint {
        Endpoint::Tcp(a) => cmd.env("HOST", a.ip().to_string()).env("PORT", a.port().to_string()),
        Endpoint::Unix(p) => cmd.arg(p),
        Endpoint::Tls(a) => {
            let (cert, key) = certificate()?;
            cmd.env("HOST", a.ip().to_string()).env("PORT", a.port().to_string());
            cmd.env("TLS_CERT", cert).env("TLS_KEY", key)
        }
    };
    RealServer::spawn("node http2", cmd, endpoint, dir)
}

/// hypercorn (asyncio, one process: `--workers 0` serves in the process started, where
/// hypercorn's default spawns a worker process) with the bare ASGI app of
/// tests/servers/h2_asgi.py (node_h2.js's routes but `/reset`). On a cleartext endpoint it
/// serves HTTP/1.1, h2c with prior knowledge and h2c by Upgrade; on `Bind::Tls`, ALPN h2 and
/// http/1.1.
pub fn hypercorn(bind: Bind) -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = bind.endpoint(dir.path());
    let mut cmd = Command::new(python());
    cmd.args(["-m", "hypercorn", "--workers", "0", "--bind"]);
    match &endpoint {
        Endpoint::Tcp(a) => cmd.arg(a.to_string()),
        Endpoint::Unix(p) => cmd.arg(format!("unix:{}", p.display())),
        Endpoint::Tls(a) => {
            let (cert, key) = certificate()?;
            cmd.arg(a.to_string()).arg("--certfile").arg(cert).arg("--keyfile").arg(key)
        }
    };
    cmd.arg("h2_asgi:app").current_dir(servers_dir());
    RealServer::spawn("hypercorn", cmd, endpoint, dir)
}

/// The gRPC service of tests/servers/grpc_server.py on grpcio (gRPC's C core, a thread
/// pool), insecure (h2c) on 127.0.0.1.
pub fn grpc_python() -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = Endpoint::v4(free_port());
    let mut cmd = Command::new(python());
    cmd.arg(servers_dir().join("grpc_server.py")).env("PORT", endpoint.port().unwrap_or_default().to_string());
    RealServer::spawn("grpc python", cmd, endpoint, dir)
}

/// The same gRPC service on @grpc/grpc-js (tests/servers/grpc_server.js, over Node's http2),
/// insecure (h2c) on 127.0.0.1. Its package is in tests/servers/node_modules (installed by
/// `cargo xtask test`, or `npm ci` in tests/servers).
pub fn grpc_node() -> Result<RealServer> {
    let dir = scratch()?;
    let endpoint = Endpoint::v4(free_port());
    let mut cmd = Command::new("node");
    cmd.arg(servers_dir().join("grpc_server.js")).env("PORT", endpoint.port().unwrap_or_default().to_string());
    RealServer::spawn("grpc node", cmd, endpoint, dir)
}
