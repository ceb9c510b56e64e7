//! Pairs requests with responses per connection and times them.
//!
//! Requests are read from the received byte stream, responses from the sent one; both
//! are followed byte by byte (Content-Length, chunked, close-delimited) so that a
//! response ends at the write that carried its last byte, never at its first. Requests
//! wait in a FIFO per connection (keep-alive and pipelining).
//!
//! Duration = from the read that brought a request's first byte to the write that sent
//! its response's last byte (both kernel timestamps).
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::{
    chunked::{Blind, ChunkParser, ends_with_last_chunk},
    decode::{Data, Direction},
    http::{
        BodyFraming, HeadParse, MAX_HEAD, Version, classify_garbage, parse_request,
        parse_request_line, parse_response, parse_status_line,
    },
};

/// A request whose response was sent completely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    pub target: Vec<u8>,
    pub version: Version,
    pub status: u16,
    pub family: u16,
    pub service: Arc<str>,
    /// Return of the read that brought the request's first byte.
    pub start_ns: u64,
    /// Return of the write that sent the response's first byte.
    pub first_byte_ns: u64,
    /// Return of the write that sent the response's last byte.
    pub end_ns: u64,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Exchange(Exchange),
    /// Bytes of a tracked connection that could not be measured; the reason is a label.
    Unparsed(&'static str),
    /// A response whose end had to be inferred (its head was larger than the capture
    /// window); it is measured up to its last write before the next request or close.
    Inferred(&'static str),
}

/// Requests a connection may have waiting for their responses; deeper pipelines are
/// counted as `pipeline_too_deep` instead of growing the agent's memory.
pub const MAX_PENDING: usize = 256;

#[derive(Debug)]
struct Pending {
    method: String,
    target: Vec<u8>,
    version: Version,
    start_ns: u64,
    body_bytes: u64,
    /// A request that was seen but could not be read (the reason): its response is
    /// followed to keep the connection in step, and the pair is counted under the reason.
    unparsed: Option<&'static str>,
}

impl Pending {
    fn unreadable(reason: &'static str, start_ns: u64) -> Self {
        Pending { method: String::new(), target: vec![], version: Version::Http11, start_ns, body_bytes: 0, unparsed: Some(reason) }
    }
}

#[derive(Debug)]
enum RecvState {
    Head { buf: Vec<u8>, start_ns: Option<u64> },
    LengthBody(u64),
    ChunkedBody(ChunkParser),
    /// The body's end is unknown: the next request starts after the current response.
    UntilResponse,
    /// Lost track: wait for an event that starts with a request line.
    Desync,
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(ChunkParser),
    /// Chunk boundaries were not captured: the body ends with a write that ends in the
    /// last-chunk marker.
    ChunkedTail,
    UntilClose,
    /// Framing headers not captured: ends at the last write before the next request.
    Unknown,
}

#[derive(Debug)]
enum SendState {
    Idle,
    Head { buf: Vec<u8>, first_ns: u64 },
    Body { body: Body, status: u16, first_ns: u64, last_ns: u64, bytes: u64 },
    /// Lost track: ignore writes until a request is read again.
    Skip,
}

struct Conn {
    recv: RecvState,
    send: SendState,
    pending: VecDeque<Pending>,
    family: u16,
    service: Arc<str>,
    last_ns: u64,
    /// Requests are arriving that cannot be read (beyond the capture window, malformed):
    /// each response with no request to pair is counted under this reason.
    unseen: Option<&'static str>,
}

impl Conn {
    fn new(family: u16, service: Arc<str>) -> Self {
        Conn {
            recv: RecvState::Head { buf: vec![], start_ns: None },
            send: SendState::Idle,
            pending: VecDeque::new(),
            family,
            service,
            last_ns: 0,
            unseen: None,
        }
    }
}

/// Where the captured bytes of one event are, relative to its start.
struct Piece<'a> {
    len: u64,
    head: &'a [u8],
    tail: &'a [u8],
}

impl<'a> Piece<'a> {
    /// Captured bytes of the head window at `pos` and after.
    fn head_at(&self, pos: u64) -> Option<&'a [u8]> {
        (pos < self.head.len() as u64).then(|| &self.head[pos as usize..])
    }

    fn tail_start(&self) -> u64 {
        self.len - self.tail.len() as u64
    }

    /// Captured bytes (head or tail window) at `pos` and after.
    fn known_at(&self, pos: u64) -> Option<&'a [u8]> {
        if let Some(head) = self.head_at(pos) {
            return Some(head);
        }
        let start = self.tail_start();
        (!self.tail.is_empty() && pos >= start && pos < self.len).then(|| &self.tail[(pos - start) as usize..])
    }

    /// The next position after `pos` where captured bytes start (or the end).
    fn next_known(&self, pos: u64) -> u64 {
        let start = self.tail_start();
        if !self.tail.is_empty() && pos < start { start } else { self.len }
    }
}

/// Runs a chunk parser over the piece from `pos`; returns where the body ended (or the
/// piece's end). Fails if a chunk-size line falls where nothing was captured.
fn run_chunks(parser: &mut ChunkParser, p: &Piece<'_>, mut pos: u64) -> Result<u64, Blind> {
    while pos < p.len && !parser.is_done() {
        match p.known_at(pos) {
            Some(known) => pos += parser.feed(known)? as u64,
            None => {
                let next = p.next_known(pos);
                parser.skip(next - pos)?;
                pos = next;
            }
        }
    }
    Ok(pos)
}

/// Per-connection pairing of everything the probe captured.
pub struct Pairer {
    conns: HashMap<u64, Conn>,
    max_conns: usize,
}

impl Pairer {
    pub fn new(max_conns: usize) -> Self {
        Pairer { conns: HashMap::new(), max_conns }
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Requests read and not yet answered, by (service, method).
    pub fn active_requests(&self) -> HashMap<(Arc<str>, String), i64> {
        let mut active = HashMap::new();
        for c in self.conns.values() {
            for p in c.pending.iter().filter(|p| p.unparsed.is_none()) {
                *active.entry((c.service.clone(), p.method.clone())).or_insert(0) += 1;
            }
        }
        active
    }

    /// Tracked connections by service.
    pub fn connections_by_service(&self) -> HashMap<Arc<str>, i64> {
        let mut by = HashMap::new();
        for c in self.conns.values() {
            *by.entry(c.service.clone()).or_insert(0) += 1;
        }
        by
    }

    /// `service` names the `service_name` of the process that did the I/O; it is asked
    /// only for a connection seen for the first time.
    pub fn on_data(&mut self, d: &Data, service: impl FnOnce() -> Arc<str>, out: &mut Vec<Output>) {
        if !self.conns.contains_key(&d.conn_id) && self.conns.len() >= self.max_conns {
            self.evict_oldest(out);
        }
        let conn = self.conns.entry(d.conn_id).or_insert_with(|| Conn::new(d.family, service()));
        conn.last_ns = d.ts_ns;
        if d.after_loss {
            resync(conn, "events_lost", out);
        }
        if d.unclassified {
            out.push(Output::Unparsed(classify_garbage(&d.head)));
            conn.recv = RecvState::Desync;
            return;
        }
        let piece = Piece { len: d.len, head: &d.head, tail: &d.tail };
        match d.direction {
            Direction::Recv => on_recv(conn, &piece, d.ts_ns, out),
            Direction::Send => on_send(conn, &piece, d.ts_ns, out),
        }
    }

    /// The target closed the connection.
    pub fn on_close(&mut self, conn_id: u64, out: &mut Vec<Output>) {
        if let Some(mut conn) = self.conns.remove(&conn_id) {
            finish_open_ended(&mut conn, out);
            if matches!(&conn.recv, RecvState::Head { buf, .. } if !buf.is_empty()) {
                out.push(Output::Unparsed("head_incomplete")); // a head cut short by the close
            }
            // A response started and not finished, then the requests never answered.
            let mut reason = if matches!(conn.send, SendState::Head { .. } | SendState::Body { .. }) {
                "response_incomplete"
            } else {
                "no_response"
            };
            for p in conn.pending.drain(..) {
                out.push(Output::Unparsed(p.unparsed.unwrap_or(reason)));
                reason = "no_response";
            }
        }
    }

    /// Forgets connections idle for longer than `idle_ns` (closed without a close event,
    /// e.g. UNIX sockets), finishing what can be finished.
    pub fn evict_idle(&mut self, now_ns: u64, idle_ns: u64, out: &mut Vec<Output>) {
        let stale: Vec<u64> =
            self.conns.iter().filter(|(_, c)| now_ns.saturating_sub(c.last_ns) > idle_ns).map(|(k, _)| *k).collect();
        for id in stale {
            self.on_close(id, out);
        }
    }

    fn evict_oldest(&mut self, out: &mut Vec<Output>) {
        if let Some(id) = self.conns.iter().min_by_key(|(_, c)| c.last_ns).map(|(k, _)| *k) {
            out.push(Output::Unparsed("connection_table_full"));
            self.on_close(id, out);
        }
    }
}

fn resync(conn: &mut Conn, reason: &'static str, out: &mut Vec<Output>) {
    for p in conn.pending.drain(..) {
        out.push(Output::Unparsed(p.unparsed.unwrap_or(reason)));
    }
    conn.recv = RecvState::Desync;
    conn.send = SendState::Skip;
}

/// Completes a response that ends with the connection: close-delimited, or one whose
/// framing we could not see.
fn finish_open_ended(conn: &mut Conn, out: &mut Vec<Output>) {
    if matches!(conn.send, SendState::Body { body: Body::UntilClose, .. }) {
        finish_current(conn, out);
    } else {
        finish_unknown(conn, out);
    }
}

/// A response whose framing we could not see ends at its last write before the next
/// request (or the close).
fn finish_unknown(conn: &mut Conn, out: &mut Vec<Output>) {
    if matches!(conn.send, SendState::Body { body: Body::Unknown, .. }) {
        finish_current(conn, out);
        out.push(Output::Inferred("response_head_beyond_capture"));
    }
}

fn finish_current(conn: &mut Conn, out: &mut Vec<Output>) {
    if let SendState::Body { status, first_ns, last_ns, bytes, .. } = conn.send {
        complete(conn, status, first_ns, last_ns, bytes, out);
    }
}

fn complete(conn: &mut Conn, status: u16, first_ns: u64, end_ns: u64, bytes: u64, out: &mut Vec<Output>) {
    conn.send = SendState::Idle;
    if let Some(reason) = conn.pending.front().and_then(|p| p.unparsed) {
        conn.pending.pop_front();
        out.push(Output::Unparsed(reason));
    } else if let Some(req) = conn.pending.pop_front() {
        out.push(Output::Exchange(Exchange {
            method: req.method,
            target: req.target,
            version: req.version,
            status,
            family: conn.family,
            service: conn.service.clone(),
            start_ns: req.start_ns,
            first_byte_ns: first_ns,
            end_ns,
            request_body_bytes: req.body_bytes,
            response_body_bytes: bytes,
        }));
    }
    if matches!(conn.recv, RecvState::UntilResponse) {
        conn.recv = RecvState::Head { buf: vec![], start_ns: None };
    }
}

fn starts_request(bytes: &[u8]) -> bool {
    parse_request_line(bytes).is_some() || matches!(parse_request(bytes), HeadParse::Complete(..))
}

fn on_recv(conn: &mut Conn, p: &Piece<'_>, ts: u64, out: &mut Vec<Output>) {
    if matches!(conn.recv, RecvState::Desync | RecvState::UntilResponse) && starts_request(p.head) {
        // A new request; for UntilResponse this also means the previous response (whose
        // framing we could not see) ended with its last write.
        finish_open_ended(conn, out);
        conn.recv = RecvState::Head { buf: vec![], start_ns: None };
        conn.unseen = None;
        if matches!(conn.send, SendState::Skip) {
            conn.send = SendState::Idle;
        }
    }
    let mut pos = 0u64;
    while pos < p.len {
        match &mut conn.recv {
            RecvState::Desync | RecvState::UntilResponse => return,
            RecvState::LengthBody(left) => {
                let take = (*left).min(p.len - pos);
                *left -= take;
                pos += take;
                if let Some(req) = conn.pending.back_mut() {
                    req.body_bytes += take;
                }
                if *left == 0 {
                    conn.recv = RecvState::Head { buf: vec![], start_ns: None };
                }
            }
            RecvState::ChunkedBody(parser) => match run_chunks(parser, p, pos) {
                Ok(end) => {
                    if let Some(req) = conn.pending.back_mut() {
                        req.body_bytes += end - pos;
                    }
                    pos = end;
                    if parser.is_done() {
                        conn.recv = RecvState::Head { buf: vec![], start_ns: None };
                    }
                }
                Err(Blind) => {
                    conn.recv = RecvState::UntilResponse;
                    return;
                }
            },
            RecvState::Head { buf, start_ns } => {
                let Some(known) = p.head_at(pos) else {
                    // A request starts where we captured nothing (deep in a pipelined
                    // batch): it cannot be read.
                    unreadable(conn, "outside_capture_window", ts);
                    return;
                };
                let start = *start_ns.get_or_insert(ts);
                let prev = buf.len();
                buf.extend_from_slice(&known[..known.len().min(MAX_HEAD.saturating_sub(prev))]);
                match parse_request(buf) {
                    HeadParse::Complete(head, n) => {
                        pos += (n - prev) as u64;
                        finish_unknown(conn, out);
                        push_pending(
                            conn,
                            Pending {
                                method: head.method,
                                target: head.target,
                                version: head.version,
                                start_ns: start,
                                body_bytes: 0,
                                unparsed: None,
                            },
                            out,
                        );
                        conn.recv = match head.body {
                            BodyFraming::Length(n) => RecvState::LengthBody(n),
                            BodyFraming::Chunked => RecvState::ChunkedBody(ChunkParser::default()),
                            BodyFraming::None | BodyFraming::UntilClose => {
                                RecvState::Head { buf: vec![], start_ns: None }
                            }
                        };
                    }
                    HeadParse::Partial => {
                        let captured_all = pos + known.len() as u64 >= p.len;
                        if captured_all && buf.len() < MAX_HEAD {
                            return; // the head continues in the next read
                        }
                        // The rest of the head was not captured: keep the request line.
                        match parse_request_line(buf) {
                            Some((method, target, version)) => {
                                finish_unknown(conn, out);
                                let req = Pending { method, target, version, start_ns: start, body_bytes: 0, unparsed: None };
                                push_pending(conn, req, out);
                                conn.recv = RecvState::UntilResponse;
                                if !captured_all {
                                    // More requests may follow in what was not captured
                                    // (pipelining): their responses are counted.
                                    conn.unseen = Some("outside_capture_window");
                                }
                            }
                            // Cut by the window: a head that starts deep in a read (pipelining)
                            // or whose request line alone is larger than the window.
                            None if prev == 0 && pos > 0 => unreadable(conn, "outside_capture_window", start),
                            None => unreadable(conn, "head_too_large", start),
                        }
                        return;
                    }
                    HeadParse::Invalid => {
                        let reason = if looks_like_request_line(buf) { "malformed_request" } else { classify_garbage(buf) };
                        unreadable(conn, reason, start);
                        return;
                    }
                }
            }
        }
    }
}

/// The server answers a head whose end was not seen (the client sent part of it and
/// shut its side down, which ends the head for the server): the request is its request
/// line.
fn answer_incomplete_head(conn: &mut Conn) -> bool {
    let RecvState::Head { buf, start_ns: Some(start) } = &conn.recv else { return false };
    let Some((method, target, version)) = parse_request_line(buf) else { return false };
    let req = Pending { method, target, version, start_ns: *start, body_bytes: 0, unparsed: None };
    conn.pending.push_back(req);
    conn.recv = RecvState::UntilResponse;
    true
}

/// Queues a request for its response, within `MAX_PENDING`.
fn push_pending(conn: &mut Conn, req: Pending, out: &mut Vec<Output>) {
    if conn.pending.len() >= MAX_PENDING {
        out.push(Output::Unparsed("pipeline_too_deep"));
        return;
    }
    conn.unseen = None; // a readable request: the connection is in step again
    conn.pending.push_back(req);
}

/// A request arrived that cannot be read: it is counted under `reason` when its response
/// has been followed (or at the close), and so is every further response that has no
/// request to pair, until a readable request arrives.
fn unreadable(conn: &mut Conn, reason: &'static str, start_ns: u64) {
    conn.recv = RecvState::Desync;
    conn.unseen = Some(reason);
    if conn.pending.len() < MAX_PENDING {
        conn.pending.push_back(Pending::unreadable(reason, start_ns));
    }
}

/// Starts with `METHOD SP` (a token, then a space): a request line that failed to parse
/// further is a malformed request, not another protocol.
fn looks_like_request_line(buf: &[u8]) -> bool {
    let method_len = buf.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    method_len > 0 && buf.get(method_len) == Some(&b' ')
}

fn on_send(conn: &mut Conn, p: &Piece<'_>, ts: u64, out: &mut Vec<Output>) {
    let mut pos = 0u64;
    while pos < p.len {
        match &mut conn.send {
            SendState::Skip => return,
            SendState::Idle => {
                if conn.pending.is_empty() {
                    if answer_incomplete_head(conn) {
                        continue;
                    }
                    if let Some(reason) = conn.unseen {
                        // The answer to another request that could not be read.
                        conn.pending.push_back(Pending::unreadable(reason, ts));
                        continue;
                    }
                    // Bytes with no request to answer (a response to a request we did not
                    // see, e.g. on a connection opened before the agent started).
                    out.push(Output::Unparsed("response_without_request"));
                    conn.send = SendState::Skip;
                    return;
                }
                if p.head_at(pos).is_none() {
                    resync(conn, "outside_capture_window", out);
                    return;
                }
                conn.send = SendState::Head { buf: vec![], first_ns: ts };
            }
            SendState::Head { buf, first_ns } => {
                let first_ns = *first_ns;
                let Some(known) = p.head_at(pos) else {
                    resync(conn, "outside_capture_window", out);
                    return;
                };
                let prev = buf.len();
                buf.extend_from_slice(&known[..known.len().min(MAX_HEAD.saturating_sub(prev))]);
                match parse_response(buf) {
                    HeadParse::Complete(head, n) => {
                        pos += (n - prev) as u64;
                        if (100..200).contains(&head.status) && head.status != 101 {
                            conn.send = SendState::Idle; // interim response: the final one follows
                            continue;
                        }
                        let is_head = conn.pending.front().is_some_and(|r| r.method == "HEAD");
                        let body = if is_head || head.status == 204 || head.status == 304 || head.status == 101 {
                            None
                        } else {
                            match head.body {
                                BodyFraming::None | BodyFraming::Length(0) => None,
                                BodyFraming::Length(n) => Some(Body::Length(n)),
                                BodyFraming::Chunked => Some(Body::Chunked(ChunkParser::default())),
                                BodyFraming::UntilClose => Some(Body::UntilClose),
                            }
                        };
                        match body {
                            None => {
                                complete(conn, head.status, first_ns, ts, 0, out);
                                if head.status == 101 {
                                    // Switching protocols: what follows is not HTTP/1.x.
                                    resync(conn, "upgraded", out);
                                    return;
                                }
                            }
                            Some(body) => {
                                conn.send = SendState::Body { body, status: head.status, first_ns, last_ns: ts, bytes: 0 };
                            }
                        }
                    }
                    HeadParse::Partial => {
                        let captured_all = pos + known.len() as u64 >= p.len;
                        if captured_all && buf.len() < MAX_HEAD {
                            return;
                        }
                        match parse_status_line(buf) {
                            Some((status, _)) => {
                                conn.send = SendState::Body {
                                    body: Body::Unknown,
                                    status,
                                    first_ns,
                                    last_ns: ts,
                                    bytes: p.len - pos,
                                };
                            }
                            None => resync(conn, "response_not_http", out),
                        }
                        return;
                    }
                    HeadParse::Invalid => {
                        resync(conn, "response_not_http", out);
                        return;
                    }
                }
            }
            SendState::Body { body, status, first_ns, last_ns, bytes } => {
                *last_ns = ts;
                let (status, first_ns) = (*status, *first_ns);
                match body {
                    Body::Length(left) => {
                        let take = (*left).min(p.len - pos);
                        *left -= take;
                        *bytes += take;
                        pos += take;
                        if *left == 0 {
                            let total = *bytes;
                            complete(conn, status, first_ns, ts, total, out);
                        }
                    }
                    Body::Chunked(parser) => match run_chunks(parser, p, pos) {
                        Ok(end) => {
                            *bytes += end - pos;
                            pos = end;
                            if parser.is_done() {
                                let total = *bytes;
                                complete(conn, status, first_ns, ts, total, out);
                            }
                        }
                        Err(Blind) => {
                            *bytes += p.len - pos;
                            *body = Body::ChunkedTail;
                            if ends_with_last_chunk(event_end(p)) {
                                let total = *bytes;
                                complete(conn, status, first_ns, ts, total, out);
                            }
                            return;
                        }
                    },
                    Body::ChunkedTail => {
                        *bytes += p.len - pos;
                        if ends_with_last_chunk(event_end(p)) {
                            let total = *bytes;
                            complete(conn, status, first_ns, ts, total, out);
                        }
                        return;
                    }
                    Body::UntilClose | Body::Unknown => {
                        *bytes += p.len - pos;
                        return;
                    }
                }
            }
        }
    }
}

/// The last captured bytes of an event: its tail, or its head when it was captured whole.
fn event_end<'a>(p: &Piece<'a>) -> &'a [u8] {
    if !p.tail.is_empty() {
        p.tail
    } else if p.head.len() as u64 == p.len {
        p.head
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests;
