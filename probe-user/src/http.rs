//! HTTP/1.x head parsing (httparse) and the framing facts pairing needs. Pure functions.

/// Largest head we accumulate across events before giving up on it.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    /// A stream of an HTTP/2 connection (`http2`).
    Http2,
}

impl Version {
    fn from_minor(minor: Option<u8>) -> Self {
        if minor == Some(0) { Version::Http10 } else { Version::Http11 }
    }
}

/// How the body after a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// Response body that ends when the server closes the connection.
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadParse<T> {
    /// The head is complete and `usize` bytes long.
    Complete(T, usize),
    /// More bytes are needed.
    Partial,
    /// Not HTTP (or malformed beyond repair).
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: Vec<u8>,
    pub version: Version,
    pub body: BodyFraming,
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    pub close: bool,
    /// The `Host` header's value (a client request's upstream: `labels::peer`).
    pub host: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: Version,
    /// `Upgrade: h2c` (of a `101`): the connection goes on in HTTP/2.
    pub upgrade_h2c: bool,
    /// Framing as declared by headers; the pairing adjusts for HEAD/204/304.
    pub body: BodyFraming,
}

struct Framing {
    content_length: Option<u64>,
    chunked: bool,
    connection_close: bool,
    keep_alive: bool,
}

impl Framing {
    /// The body's framing; `without_length` applies when neither chunked nor a length is
    /// declared (no body for requests, until-close for responses).
    fn body(&self, without_length: BodyFraming) -> BodyFraming {
        match (self.chunked, self.content_length) {
            (true, _) => BodyFraming::Chunked,
            (false, Some(0)) => BodyFraming::None,
            (false, Some(len)) => BodyFraming::Length(len),
            (false, None) => without_length,
        }
    }
}

/// A Content-Length value: a number, or a list of the same number (RFC 9110 §8.6: a
/// recipient may take `5, 5` as 5). Different numbers are no length at all.
fn content_length(value: &str) -> Option<u64> {
    let mut values = value.split(',').map(|v| v.trim().parse::<u64>());
    let first = values.next()?.ok()?;
    values.all(|v| v == Ok(first)).then_some(first)
}

fn framing(headers: &[httparse::Header<'_>]) -> Framing {
    let mut f = Framing { content_length: None, chunked: false, connection_close: false, keep_alive: false };
    for h in headers {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            f.content_length = content_length(value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            f.chunked = value.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            f.connection_close |= v.split(',').any(|t| t.trim() == "close");
            f.keep_alive |= v.split(',').any(|t| t.trim() == "keep-alive");
        }
    }
    f
}

/// Parses a request head at the start of `buf`.
pub fn parse_request(buf: &[u8]) -> HeadParse<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let f = framing(req.headers);
            let version = Version::from_minor(req.version);
            let body = f.body(BodyFraming::None);
            let close = f.connection_close || (version == Version::Http10 && !f.keep_alive);
            HeadParse::Complete(
                RequestHead {
                    method: req.method.unwrap_or("").to_string(),
                    target: req.path.unwrap_or("").as_bytes().to_vec(),
                    version,
                    body,
                    close,
                    host: req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value.to_vec()),
                },
                n,
            )
        }
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(_) => parse_non_utf8_target(buf),
    }
}

/// httparse takes the request target as a `&str`, so a target that is not UTF-8 (bytes
/// that servers do answer) fails. Parse it with those bytes masked, then put the real
/// bytes back (the route label is made from them lossily).
fn parse_non_utf8_target(buf: &[u8]) -> HeadParse<RequestHead> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(buf.len());
    let line = &buf[..line_end];
    if std::str::from_utf8(line).is_ok() {
        return HeadParse::Invalid;
    }
    let mut masked = buf.to_vec();
    masked[..line_end].iter_mut().filter(|b| **b >= 0x80).for_each(|b| *b = b'x');
    match parse_request(&masked) {
        HeadParse::Complete(mut head, n) => {
            let start = head.method.len() + 1;
            head.target = line[start..start + head.target.len()].to_vec();
            HeadParse::Complete(head, n)
        }
        other => other,
    }
}

/// The `Host` header of a head that is cut short (the rest is outside the capture window),
/// if its whole line was captured.
pub fn host_in_partial_head(buf: &[u8]) -> Option<Vec<u8>> {
    // Only lines that end in the buffer: the bytes after its last '\n' were cut.
    let end = buf.iter().rposition(|b| *b == b'\n')?;
    let mut lines = buf[..end].split(|b| *b == b'\n');
    lines.next()?; // the request line
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None; // the end of the head
        }
        if line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"host:") {
            return Some(line[5..].trim_ascii().to_vec());
        }
    }
    None
}

/// The request line of a head that is cut short (the rest is outside the capture
/// window): method, target and version, if the whole line is there.
pub fn parse_request_line(buf: &[u8]) -> Option<(String, Vec<u8>, Version)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let mut line = buf[..end].to_vec();
    line.extend_from_slice(b"\r\n\r\n");
    match parse_request(&line) {
        HeadParse::Complete(head, _) => Some((head.method, head.target, head.version)),
        _ => None,
    }
}

/// Parses a response head at the start of `buf`.
pub fn parse_response(buf: &[u8]) -> HeadParse<ResponseHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    // Obsolete line folding (a header continued on a line starting with a space) is valid
    // in responses a client accepts (RFC 9112 §5.2).
    let parsed = httparse::ParserConfig::default().allow_obsolete_multiline_headers_in_responses(true).parse_response(&mut resp, buf);
    match parsed {
        // Three digits, but not a status code: not HTTP (the label stays 100..=999).
        Ok(httparse::Status::Complete(_)) if resp.code.unwrap_or(0) < 100 => HeadParse::Invalid,
        Ok(httparse::Status::Complete(n)) => {
            let f = framing(resp.headers);
            let body = f.body(BodyFraming::UntilClose);
            HeadParse::Complete(
                ResponseHead {
                    status: resp.code.unwrap_or(0),
                    version: Version::from_minor(resp.version),
                    upgrade_h2c: resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("upgrade")
                            && String::from_utf8_lossy(h.value).split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c"))
                    }),
                    body,
                },
                n,
            )
        }
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(_) => HeadParse::Invalid,
    }
}

/// The status code of a response head that is cut short, if its status line is there.
pub fn parse_status_line(buf: &[u8]) -> Option<(u16, Version)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let mut line = buf[..end].to_vec();
    line.extend_from_slice(b"\r\n\r\n");
    match parse_response(&line) {
        HeadParse::Complete(head, _) => Some((head.status, head.version)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_cut_heads() {
        use super::host_in_partial_head as host;
        assert_eq!(host(b"GET / HTTP/1.1\r\nHost: a:1\r\nX-Big: aaaa"), Some(b"a:1".to_vec()));
        assert_eq!(host(b"GET / HTTP/1.1\r\nhOsT:b\r\n"), Some(b"b".to_vec()));
        assert_eq!(host(b"GET / HTTP/1.1\r\nX: 1\r\nHost: a:1"), None, "a cut Host line");
        assert_eq!(host(b"GET / HTTP/1.1\r\nX: 1\r\n\r\nHost: a\r\n"), None, "past the head");
        assert_eq!(host(b"GET / HTTP/1.1"), None);
        assert_eq!(host(b"GET /host: HTTP/1.1\r\n"), None, "not in the request line");
    }

    use super::*;

    /// (method, target, version, body framing, connection closes after it)
    type Parsed<'a> = (&'a str, &'a str, Version, BodyFraming, bool);

    #[test]
    fn request_heads() {
        let cases: &[(&[u8], Option<Parsed>)] = &[
            (b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", Some(("GET", "/a?b=1", Version::Http11, BodyFraming::None, false))),
            (b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", Some(("POST", "/p", Version::Http11, BodyFraming::Length(5), false))),
            (b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Some(("POST", "/p", Version::Http11, BodyFraming::Chunked, false))),
            (b"GET / HTTP/1.0\r\n\r\n", Some(("GET", "/", Version::Http10, BodyFraming::None, true))),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Some(("GET", "/", Version::Http10, BodyFraming::None, false))),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", Some(("GET", "/", Version::Http11, BodyFraming::None, true))),
        ];
        for (raw, want) in cases {
            match (parse_request(raw), want) {
                (HeadParse::Complete(h, n), Some((m, t, v, b, c))) => {
                    assert_eq!((h.method.as_str(), h.target.as_slice(), h.version, h.body, h.close), (*m, t.as_bytes(), *v, *b, *c));
                    assert!(n <= raw.len());
                }
                (got, _) => panic!("{:?}: {got:?}", String::from_utf8_lossy(raw)),
            }
        }
        assert_eq!(parse_request(b"GET /a HTTP/1.1\r\nHost:"), HeadParse::Partial);
        assert_eq!(parse_request(b"\x16\x03\x01\x02\x00"), HeadParse::Invalid);
        // A target that is not UTF-8 is still a request; NUL is not allowed in one.
        match parse_request(b"GET /caf\xe9/\xff?q HTTP/1.1\r\nHost: x\r\n\r\n") {
            HeadParse::Complete(h, 35) => assert_eq!(h.target, b"/caf\xe9/\xff?q"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_request(b"GET /a\x00b HTTP/1.1\r\n\r\n"), HeadParse::Invalid);
        assert_eq!(parse_request(b"GET /\xff\x00 HTTP/1.1\r\n\r\n"), HeadParse::Invalid);
    }

    #[test]
    fn response_heads() {
        let ok = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
        assert!(matches!(ok, HeadParse::Complete(ResponseHead { status: 200, body: BodyFraming::Length(12), .. }, 39)));
        let chunked = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(chunked, HeadParse::Complete(ResponseHead { body: BodyFraming::Chunked, .. }, _)));
        let close = parse_response(b"HTTP/1.0 500 Oops\r\nServer: x\r\n\r\n");
        assert!(matches!(close, HeadParse::Complete(ResponseHead { status: 500, version: Version::Http10, body: BodyFraming::UntilClose, upgrade_h2c: false }, _)));
        assert_eq!(parse_response(b"HTTP/1.1 20"), HeadParse::Partial);
        // A Content-Length list of one value; a folded header.
        let list = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n");
        assert!(matches!(list, HeadParse::Complete(ResponseHead { body: BodyFraming::Length(5), .. }, _)), "{list:?}");
        let mixed = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n");
        assert!(matches!(mixed, HeadParse::Complete(ResponseHead { body: BodyFraming::UntilClose, .. }, _)), "{mixed:?}");
        let folded = parse_response(b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 2\r\n\r\nok");
        assert!(matches!(folded, HeadParse::Complete(ResponseHead { status: 200, body: BodyFraming::Length(2), .. }, _)), "{folded:?}");
        let h2c = parse_response(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: H2C\r\n\r\n");
        assert!(matches!(h2c, HeadParse::Complete(ResponseHead { status: 101, upgrade_h2c: true, .. }, _)), "{h2c:?}");
        let ws = parse_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert!(matches!(ws, HeadParse::Complete(ResponseHead { upgrade_h2c: false, .. }, _)), "{ws:?}");
        assert_eq!(parse_response(b"HTTP/1.1 099 Low\r\n\r\n"), HeadParse::Invalid);
        assert_eq!(parse_status_line(b"HTTP/1.1 404 Not Found\r\nX-Long: aaaa"), Some((404, Version::Http11)));
        assert_eq!(parse_request_line(b"DELETE /x/1 HTTP/1.1\r\nCookie: aaa"), Some(("DELETE".into(), b"/x/1".to_vec(), Version::Http11)));
        assert_eq!(parse_request_line(b"GET /no-end"), None);
    }
}
