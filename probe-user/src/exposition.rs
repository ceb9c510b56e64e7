//! `/metrics` over HTTP (hyper), as OpenMetrics, Prometheus text 0.0.4 or Prometheus
//! protobuf (the one format with native histograms), as the scraper's Accept header asks.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    metrics::health::{Health, RefusedLabels},
    web_config::{Loaded, WebConfig},
};

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const PROMETHEUS_PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// What a scrape gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
    /// Classic and native buckets in one histogram.
    Protobuf,
}

impl Format {
    /// The scraper's preferred format among ours. Prometheus asks for protobuf first only
    /// when its native histograms are on; a media type with `q=0` is refused.
    pub fn of_accept(accept: &str) -> Format {
        let mut best = (Format::PrometheusText, 0.0f32);
        for item in accept.split(',') {
            let mut params = item.split(';').map(str::trim);
            let media = params.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut proto, mut delimited) = (1.0f32, false, false);
            for p in params {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "proto" => proto = v.trim() == "io.prometheus.client.MetricFamily",
                    "encoding" => delimited = v.trim() == "delimited",
                    _ => {}
                }
            }
            let format = match media.as_str() {
                "application/vnd.google.protobuf" if proto && delimited => Format::Protobuf,
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" => Format::PrometheusText,
                _ => continue,
            };
            if q > best.1 {
                best = (format, q);
            }
        }
        best.0
    }
}

/// Binds the listen address; done before loading the probe so that a busy port fails fast.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {addr}: the address is already in use (another redprobe or exporter?); choose another with --listen")
        } else {
            anyhow::anyhow!("cannot listen on {addr}: {e}")
        }
    })
}

/// Scrape connections served at once; more are closed as soon as they are accepted.
const MAX_SCRAPE_CONNECTIONS: usize = 64;
/// A scrape connection must send its request head within this time...
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and is closed after this time, whatever it does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `/metrics` until the process ends. A failing accept (out of file descriptors,
/// say) is counted and backed off from, never spun on; connections that send nothing are
/// timed out, and at most [`MAX_SCRAPE_CONNECTIONS`] are served at once, so a crowd of
/// idle clients can neither starve real scrapes for long nor take the agent's CPU.
/// Runs before each encode (the agent reads the kernel's aggregates then).
pub type BeforeScrape = Arc<dyn Fn() + Send + Sync>;

/// `web`: TLS and basic auth (`--web.config.file`), looked at again for each connection.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: Health,
    before: Option<BeforeScrape>,
    web: Option<Arc<WebConfig>>,
) {
    let accept_errors: Counter = health.scrape_accept_errors.clone();
    let slots = Arc::new(Semaphore::new(MAX_SCRAPE_CONNECTIONS));
    let mut backoff = Duration::from_millis(10);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                stream
            }
            Err(e) => {
                accept_errors.inc();
                tracing::debug!("accepting a /metrics connection: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // too many at once: the scraper retries
            continue;
        };
        let (registry, before, health) = (registry.clone(), before.clone(), health.clone());
        let config = web.as_ref().map(|w| {
            let (loaded, reload_failed) = w.current();
            if reload_failed {
                health.web_config_reload_failures.inc();
            }
            loaded
        });
        tokio::spawn(async move {
            let refused =
                |reason: &str| health.scrape_refused.get_or_create(&RefusedLabels { reason: reason.into() }).inc();
            let tls = config.as_ref().and_then(|c| c.tls.clone());
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
                b
            };
            let service = {
                let (config, health) = (config.clone(), health.clone());
                service_fn(move |req| handle(req, registry.clone(), before.clone(), config.clone(), health.clone()))
            };
            match tls {
                None => {
                    let _ = tokio::time::timeout(
                        CONNECTION_TIMEOUT,
                        builder.serve_connection(TokioIo::new(stream), service),
                    )
                    .await;
                }
                Some(tls) => {
                    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                    match tokio::time::timeout(HEAD_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                        }
                        // A connection closed before it said anything is a TCP check (a
                        // probe, a load balancer), not a refused scraper.
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                        Ok(Err(e)) => {
                            refused("tls_handshake");
                            tracing::debug!("/metrics TLS handshake: {e}");
                        }
                        Err(_) => {
                            refused("tls_handshake");
                        }
                    }
                }
            }
            drop(slot);
        });
    }
}

/// The registry in `format`. Collectors read /proc, so this runs off the event loop.
async fn encode(registry: Arc<Registry>, before: Option<BeforeScrape>, format: Format) -> Result<Vec<u8>, String> {
    tokio::task::spawn_blocking(move || {
        if let Some(before) = before {
            before();
        }
        if format == Format::Protobuf {
            return prometheus_client::encoding::prometheus_protobuf::encode_to_vec(&registry)
                .map_err(|e| format!("{e:?}"));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| e.to_string())?;
        Ok(match format {
            Format::PrometheusText => to_prometheus_text(&text),
            _ => text,
        }
        .into_bytes())
    })
    .await
    .map_err(|e| e.to_string())?
}

fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

async fn handle(
    req: Request<Incoming>,
    registry: Arc<Registry>,
    before: Option<BeforeScrape>,
    config: Option<Arc<Loaded>>,
    health: Health,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(config) = config else {
        return Ok(route(req, registry, before).await);
    };
    if config.requires_auth() {
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        // bcrypt is slow on purpose: off the event loop.
        let check = config.clone();
        let ok = tokio::task::spawn_blocking(move || check.authorized(authorization.as_deref())).await.unwrap_or(false);
        if !ok {
            health.scrape_refused.get_or_create(&RefusedLabels { reason: "unauthorized".into() }).inc();
            let mut resp =
                response(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized: this /metrics needs basic auth\n");
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"redprobe\""));
            return Ok(with_headers(resp, &config));
        }
    }
    Ok(with_headers(route(req, registry, before).await, &config))
}

/// The configuration's `http_server_config.headers`.
fn with_headers(mut resp: Response<Full<Bytes>>, config: &Loaded) -> Response<Full<Bytes>> {
    for (name, value) in &config.headers {
        if let (Ok(n), Ok(v)) = (header::HeaderName::from_bytes(name.as_bytes()), header::HeaderValue::from_str(value))
        {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}

/// The answer to a request that may be served (authenticated where the web config asks).
async fn route(req: Request<Incoming>, registry: Arc<Registry>, before: Option<BeforeScrape>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            let format = Format::of_accept(accept);
            let content_type = match format {
                Format::OpenMetrics => OPENMETRICS,
                Format::PrometheusText => PROMETHEUS_TEXT,
                Format::Protobuf => PROMETHEUS_PROTOBUF,
            };
            match encode(registry, before, format).await {
                Ok(body) => response(StatusCode::OK, content_type, body),
                Err(e) => response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("encoding failed: {e}\n")),
            }
        }
        "/" => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><head><title>redprobe</title></head><body><h1>redprobe</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n",
        ),
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found; metrics are at /metrics\n"),
    }
}

/// OpenMetrics text -> Prometheus text format 0.0.4: no `# EOF` or `# UNIT`, counter
/// families named after their `_total` samples, info families as `_info` gauges.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut renamed: std::collections::HashMap<&str, (String, &str)> = Default::default();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.splitn(2, ' ');
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                match kind {
                    "counter" => renamed.insert(name, (format!("{name}_total"), "counter")),
                    "info" => renamed.insert(name, (format!("{name}_info"), "gauge")),
                    _ => None,
                };
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# TYPE ")
            .map(|r| ("# TYPE ", r))
            .or_else(|| line.strip_prefix("# HELP ").map(|r| ("# HELP ", r)));
        if let Some((prefix, rest)) = meta {
            let mut it = rest.splitn(2, ' ');
            let (name, tail) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            if let Some((new_name, new_kind)) = renamed.get(name) {
                let tail = if prefix == "# TYPE " { *new_kind } else { tail };
                out.push_str(&format!("{prefix}{new_name} {tail}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_format() {
        // Prometheus 2.42 with --enable-feature=native-histograms, then without.
        let native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let classic = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let cases = [
            (native, Format::Protobuf),
            (classic, Format::OpenMetrics),
            ("", Format::PrometheusText),
            ("*/*", Format::PrometheusText),
            ("text/plain", Format::PrometheusText),
            // Text first, protobuf second: the scraper's order wins.
            (
                "text/plain;q=0.9,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5",
                Format::PrometheusText,
            ),
            // Protobuf of another message, or not delimited, is not ours.
            ("application/vnd.google.protobuf;proto=other.Message;encoding=delimited", Format::PrometheusText),
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
                Format::PrometheusText,
            ),
            ("application/openmetrics-text;q=0", Format::PrometheusText),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::of_accept(accept), want, "{accept}");
        }
    }

    #[test]
    fn converts_openmetrics_to_prometheus_text() {
        let om = "# HELP x_events Events.\n# TYPE x_events counter\nx_events_total 3\n\
                  # HELP x_build Build.\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n\
                  # HELP d_seconds D.\n# TYPE d_seconds histogram\n# UNIT d_seconds seconds\nd_seconds_count 1\n# EOF\n";
        let want = "# HELP x_events_total Events.\n# TYPE x_events_total counter\nx_events_total 3\n\
                    # HELP x_build_info Build.\n# TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n\
                    # HELP d_seconds D.\n# TYPE d_seconds histogram\nd_seconds_count 1\n";
        assert_eq!(to_prometheus_text(om), want);
    }
}
