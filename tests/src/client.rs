//! A small HTTP/1.x client over TCP (IPv4, IPv6) or a Unix socket, with exact control of
//! keep-alive, close and HTTP/1.0, timing each request from the client's side (the client
//! truth).
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// From just before the request was written to the last byte of the response.
    pub elapsed: Duration,
    pub closed: bool,
}

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// HTTPS on TCP (the server's certificate is not verified).
    Tls(SocketAddr),
}

impl Endpoint {
    pub fn v4(port: u16) -> Self {
        Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn v6(port: u16) -> Self {
        Endpoint::Tcp(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)))
    }

    /// The `network_transport` label redprobe gives this endpoint's requests.
    pub fn transport(&self) -> &'static str {
        match self {
            Endpoint::Tcp(_) | Endpoint::Tls(_) => "tcp",
            Endpoint::Unix(_) => "unix",
        }
    }

    /// The `url_scheme` label redprobe gives this endpoint's requests.
    pub fn scheme(&self) -> &'static str {
        if matches!(self, Endpoint::Tls(_)) { "https" } else { "http" }
    }

    /// "IPv4", "IPv6" or "Unix", for messages.
    pub fn transport_name(&self) -> &'static str {
        match self {
            Endpoint::Tcp(a) if a.is_ipv6() => "IPv6",
            Endpoint::Tcp(_) => "IPv4",
            Endpoint::Unix(_) => "Unix",
            Endpoint::Tls(_) => "HTTPS",
        }
    }

    /// The port, for TCP endpoints.
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Tcp(a) | Endpoint::Tls(a) => Some(a.port()),
            Endpoint::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) | Endpoint::Tls(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected stream of either kind.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// A TLS client that accepts any server certificate (the test servers' are self-signed).
fn tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            std::sync::Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Stream {
    pub fn connect(to: &Endpoint) -> Result<Self> {
        let s = match to {
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a).with_context(|| format!("connecting to {to}"))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                Stream::Tcp(s)
            }
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p).with_context(|| format!("connecting to {to}"))?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                Stream::Unix(s)
            }
            Endpoint::Tls(a) => {
                let s = TcpStream::connect(a).with_context(|| format!("connecting to {to}"))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
                let conn = rustls::ClientConnection::new(tls_config(), name).context("a TLS client")?;
                let mut tls = rustls::StreamOwned::new(conn, s);
                // The handshake now: a server that accepts TCP but not TLS is not ready.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).with_context(|| format!("TLS handshake with {to}"))?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(s)
    }

    pub fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tls(s) => s.sock.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            // A server that closes without close_notify (Python's ssl) ends the stream.
            Stream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => {
                let n = s.write(buf)?;
                s.flush()?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

pub struct Conn {
    reader: BufReader<Stream>,
}

impl Conn {
    /// A TCP connection to 127.0.0.1:`port`.
    pub fn open(port: u16) -> Result<Self> {
        Self::connect(&Endpoint::v4(port))
    }

    pub fn connect(to: &Endpoint) -> Result<Self> {
        Ok(Conn { reader: BufReader::new(Stream::connect(to)?) })
    }

    pub fn stream(&mut self) -> &mut Stream {
        self.reader.get_mut()
    }

    /// Sends one request and reads its whole response.
    pub fn request(&mut self, method: &str, path: &str, version: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
        let mut raw = format!("{method} {path} {version}\r\nHost: localhost\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(body);
        let start = Instant::now();
        self.reader.get_mut().write_all(&bytes)?;
        let mut resp = self.read_response(method == "HEAD")?;
        resp.elapsed = start.elapsed();
        Ok(resp)
    }

    pub fn get(&mut self, path: &str) -> Result<Response> {
        self.request("GET", path, "HTTP/1.1", &[], b"")
    }

    /// `n` GETs of `path`, each asserted to be answered 200.
    pub fn get_ok(&mut self, path: &str, n: usize) -> Result<()> {
        for _ in 0..n {
            assert_eq!(self.get(path)?.status, 200);
        }
        Ok(())
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("connection closed while reading a response head");
        }
        Ok(line.trim_end().to_string())
    }

    pub fn read_response(&mut self, head_request: bool) -> Result<Response> {
        loop {
            let status_line = self.read_line()?;
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad status line {status_line:?}"))?;
            let (mut length, mut chunked, mut close) = (None, false, status_line.starts_with("HTTP/1.0"));
            loop {
                let line = self.read_line()?;
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap_or((&line, ""));
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                match k.as_str() {
                    // A list of one length ("5, 5") is a length too.
                    "content-length" => length = v.split(',').next().and_then(|v| v.trim().parse::<usize>().ok()),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    "connection" => close = v.contains("close"),
                    _ => {}
                }
            }
            if (100..200).contains(&status) {
                continue;
            }
            let mut body = vec![];
            if head_request || status == 204 || status == 304 {
            } else if chunked {
                loop {
                    let size = usize::from_str_radix(self.read_line()?.split(';').next().unwrap_or("").trim(), 16)?;
                    if size == 0 {
                        while !self.read_line()?.is_empty() {}
                        break;
                    }
                    let mut chunk = vec![0; size + 2];
                    self.reader.read_exact(&mut chunk)?;
                    body.extend_from_slice(&chunk[..size]);
                }
            } else if let Some(n) = length {
                body.resize(n, 0);
                self.reader.read_exact(&mut body)?;
            } else {
                self.reader.read_to_end(&mut body)?;
                close = true;
            }
            return Ok(Response { status, body, elapsed: Duration::ZERO, closed: close });
        }
    }
}

/// One request on a fresh connection that is closed afterwards (`Connection: close`).
pub fn one_shot(port: u16, method: &str, path: &str, version: &str) -> Result<Response> {
    one_shot_to(&Endpoint::v4(port), method, path, version)
}

/// `one_shot` to any endpoint.
pub fn one_shot_to(to: &Endpoint, method: &str, path: &str, version: &str) -> Result<Response> {
    let mut conn = Conn::connect(to)?;
    let headers: &[(&str, &str)] = if version == "HTTP/1.1" { &[("Connection", "close")] } else { &[] };
    conn.request(method, path, version, headers, b"")
}
