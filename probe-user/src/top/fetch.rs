//! Reads an agent's page over HTTP (hyper's client): protobuf first, for the native
//! histograms, else text. Every way it can fail is a `FetchError` that says what to check.
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

use super::{
    page::{Page, parse_text},
    protobuf,
    snapshot::{NotRedprobe, Snapshot},
};

/// What `top` asks for: protobuf (native histograms), else Prometheus text.
pub const ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// A page larger than this is not read (a node's page at its caps is about 35 MB).
const MAX_BODY: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{0}")]
    Url(String),
    #[error("cannot resolve {host}: {why}")]
    Resolve { host: String, why: std::io::Error },
    #[error("connection refused by {addr}: no agent listens there (start one with `redprobe --pid PID --listen {addr}`)")]
    Refused { addr: String },
    #[error("cannot connect to {addr}: {why}")]
    Connect { addr: String, why: std::io::Error },
    #[error("no answer from {addr} within {} s", .after.as_secs_f64())]
    Timeout { addr: String, after: Duration },
    #[error("{addr} answered {status} for {path}")]
    Status { addr: String, path: String, status: StatusCode },
    #[error("reading the page from {addr}: {why}")]
    Http { addr: String, why: Box<dyn std::error::Error + Send + Sync> },
    #[error("{addr}{path} is not a metrics page: {why}")]
    NotMetrics { addr: String, path: String, why: String },
    #[error("{addr}{path}: {why}")]
    NotRedprobe { addr: String, path: String, why: NotRedprobe },
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where an agent serves its page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    host: String,
    port: u16,
    path: String,
    /// host:port, as written.
    addr: String,
}

impl Source {
    /// `http://HOST:PORT/PATH`, `HOST:PORT` (http and /metrics assumed) or
    /// `http://HOST:PORT` (/metrics assumed).
    pub fn parse(url: &str) -> Result<Source, FetchError> {
        let bad = |why: &str| FetchError::Url(format!("--url {url:?}: {why}"));
        let full = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
        let uri: Uri = full.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "top reads http:// only; read an agent served over TLS (--web.config.file) from its host, or run `redprobe top --pid ...` there",
                ));
            }
            _ => return Err(bad("the scheme must be http://")),
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = match uri.authority().map(|a| a.as_str()).and_then(|a| a.rsplit_once(':')) {
            Some((_, p)) if !p.contains(']') => p.parse().map_err(|_| bad(&format!("port {p:?} is not a TCP port")))?,
            _ => 80,
        };
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("/") | Some("") => "/metrics".to_string(),
            Some(p) => p.to_string(),
        };
        let addr = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| format!("{host}:{port}"));
        Ok(Source { host, port, path, addr })
    }

    /// The URL, for the header.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// Reads the page, within `timeout` in all.
    pub async fn page(&self, timeout: Duration) -> Result<Page, FetchError> {
        let addr = self.addr.clone();
        tokio::time::timeout(timeout, self.read()).await.map_err(|_| FetchError::Timeout { addr, after: timeout })?
    }

    /// Reads the page and sums it for the view.
    pub async fn snapshot(&self, timeout: Duration) -> Result<Snapshot, FetchError> {
        let page = self.page(timeout).await?;
        Snapshot::of(&page).map_err(|why| FetchError::NotRedprobe { addr: self.addr.clone(), path: self.path.clone(), why })
    }

    async fn read(&self) -> Result<Page, FetchError> {
        let addr = self.addr.clone();
        let mut last = None;
        let targets = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|why| FetchError::Resolve { host: self.host.clone(), why })?;
        let mut stream = None;
        for target in targets {
            match TcpStream::connect(target).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(FetchError::Refused { addr });
            }
            (None, Some(why)) => return Err(FetchError::Connect { addr, why }),
            (None, None) => {
                return Err(FetchError::Resolve { host: self.host.clone(), why: std::io::ErrorKind::NotFound.into() });
            }
        };
        let http = |why: hyper::Error| FetchError::Http { addr: addr.clone(), why: Box::new(why) };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        // The connection's task ends with this read, however it ends (a timeout drops it
        // mid-way: a silent server must not keep a socket per retry).
        let _driver = AbortOnDrop(tokio::spawn(conn));
        let request = hyper::Request::get(self.path.as_str())
            .header(header::HOST, self.addr.as_str())
            .header(header::ACCEPT, ACCEPT)
            .header(header::USER_AGENT, concat!("redprobe-top/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Url(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(FetchError::Status { addr, path: self.path.clone(), status });
        }
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|why| FetchError::Http { addr: addr.clone(), why })?
            .to_bytes();
        // Decoding a node's page takes milliseconds: off the runtime's thread.
        let protobuf = content_type.starts_with("application/vnd.google.protobuf");
        let decoded = tokio::task::spawn_blocking(move || decode(&body, protobuf)).await;
        let why = match decoded {
            Ok(Ok(page)) => return Ok(page),
            Ok(Err(why)) => why,
            Err(e) => format!("decoding failed ({e})"),
        };
        Err(FetchError::NotMetrics { addr, path: self.path.clone(), why })
    }
}

/// A page's body, as protobuf or text; the error says why it is not metrics.
fn decode(body: &[u8], protobuf: bool) -> Result<Page, String> {
    if protobuf {
        return protobuf::parse(body).map_err(|e| format!("bad protobuf ({e})"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "binary bytes, not text".to_string())?;
    if text.trim().is_empty() {
        return Err("an empty body".into());
    }
    parse_text(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = Source::parse("http://127.0.0.1:9464/metrics").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.path.as_str(), s.url()), ("127.0.0.1", 9464, "/metrics", s.url()));
        assert_eq!(Source::parse("localhost:9464").unwrap().url(), "http://localhost:9464/metrics");
        assert_eq!(Source::parse("http://[::1]:9464").unwrap().host, "::1");
        assert_eq!(Source::parse("http://h:1/custom?x=1").unwrap().path, "/custom?x=1");
        for bad in ["https://h:9464/metrics", "ftp://h/", "http://", "http://h:99999/"] {
            assert!(matches!(Source::parse(bad), Err(FetchError::Url(_))), "{bad}");
        }
    }
}
