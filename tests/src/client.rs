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
            Endpoint::Tcp(_) => "tcp",
            Endpoint::Unix(_) => "unix",
        }
    }

    /// "IPv4", "IPv6" or "Unix", for messages.
    pub fn transport_name(&self) -> &'static str {
        match self {
            Endpoint::Tcp(a) if a.is_ipv6() => "IPv6",
            Endpoint::Tcp(_) => "IPv4",
            Endpoint::Unix(_) => "Unix",
        }
    }

    /// The port, for TCP endpoints.
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Tcp(a) => Some(a.port()),
            Endpoint::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected stream of either kind.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
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
        };
        Ok(s)
    }

    pub fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
