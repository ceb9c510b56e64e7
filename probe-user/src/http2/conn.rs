//! One HTTP/2 server connection: its preface, its frames in each direction, its two header
//! compression contexts (HPACK, RFC 7541: the client's for requests, the server's for
//! responses), and its streams. A stream is a request: from the read that brought its
//! HEADERS to the write that carried its response's END_STREAM.
use std::collections::BTreeMap;

use loona_hpack::Decoder;

use super::frames::{self, Frame, FrameReader, PREFACE};
use crate::{
    decode::{Direction, H2Chunk},
    http::Version,
    labels::{Service, kernel_ids},
    pairing::{Exchange, H2cUpgrade, Head, KernelHead, Output, PairedBy, RequestLine, RpcCall},
    reason::{H2Undecodable, Reason, SlowReason},
};

/// Open streams the agent keeps per connection; more are counted as `too_many_streams`.
/// Servers allow 100 to 1000 concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const MAX_STREAMS: usize = 4096;
/// Largest header block gathered (HEADERS and its CONTINUATION frames): a larger one is not
/// decoded, and the direction's compression state is lost.
pub const MAX_BLOCK: usize = 256 * 1024;
/// Largest dynamic table a peer may ask for (SETTINGS_HEADER_TABLE_SIZE is 4,096 by
/// default): a larger size update does not decode.
pub const MAX_TABLE: usize = 64 * 1024;

const RECV: usize = 0;
const SEND: usize = 1;

/// The read or write being received in chunks: its length and how far its chunks went.
/// A call ends with its chunk flagged `last`; the next chunk starts another.
#[derive(Default)]
struct Call {
    len: u64,
    got: u64,
    open: bool,
}

/// A header block being gathered (HEADERS or PUSH_PROMISE, then CONTINUATION frames).
struct Block {
    stream: u32,
    kind: u8,
    end_stream: bool,
    buf: Vec<u8>,
    /// Bytes of it were not captured, or a frame was malformed: it cannot be decoded.
    damaged: bool,
    start_ns: u64,
    first_ns: u64,
    end_ns: u64,
}

fn decoder() -> Decoder<'static> {
    let mut d = Decoder::new();
    d.set_max_allowed_table_size(MAX_TABLE);
    d
}

/// What the decoder keeps of a header block.
#[derive(Default)]
struct Fields {
    method: Option<String>,
    path: Option<Vec<u8>>,
    status: Option<u16>,
    grpc: bool,
    grpc_status: Option<u32>,
}

impl Fields {
    fn add(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":method" => self.method = Some(String::from_utf8_lossy(value).into_owned()),
            b":path" => self.path = Some(value.to_vec()),
            b":status" => self.status = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()),
            b"content-type" => self.grpc = value.starts_with(b"application/grpc"),
            b"grpc-status" => self.grpc_status = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse().ok()),
            _ => {}
        }
    }
}

/// A request and what was sent of its response.
struct Stream {
    method: String,
    path: Vec<u8>,
    /// Of the request an h2c upgrade made stream 1: its head as the HTTP/1 pairing had it
    /// (read by the kernel, say), measured with version 2.
    upgraded: Option<Head>,
    grpc: bool,
    start_ns: u64,
    queued_ns: u64,
    request_body: u64,
    status: Option<u16>,
    grpc_status: Option<u32>,
    first_byte_ns: u64,
    response_body: u64,
    /// The response's header block could not be decoded: its status is unknown.
    response_undecoded: bool,
}

pub struct H2Conn {
    pub service: Service,
    family: u16,
    pub last_ns: u64,
    /// Bytes of the preface matched so far.
    preface: usize,
    readers: [FrameReader; 2],
    calls: [Call; 2],
    decoders: [Decoder<'static>; 2],
    /// A direction's compression state is lost: its header blocks are not decoded any more.
    hpack_lost: [bool; 2],
    blocks: [Option<Block>; 2],
    streams: BTreeMap<u32, Stream>,
    /// The highest stream a client opened (new streams have higher ids, RFC 9113 §5.1.1).
    last_client_stream: u32,
    /// The framing is lost: nothing more is read.
    broken: bool,
    /// `redprobe_http2_connections_undecodable_total` counted this connection.
    counted: bool,
}

impl H2Conn {
    pub fn new(service: Service, family: u16) -> Self {
        H2Conn {
            service,
            family,
            last_ns: 0,
            preface: 0,
            readers: Default::default(),
            calls: Default::default(),
            decoders: [decoder(), decoder()],
            hpack_lost: [false; 2],
            blocks: [None, None],
            streams: BTreeMap::new(),
            last_client_stream: 0,
            broken: false,
            counted: false,
        }
    }

    /// The connection an h2c upgrade started: `up` is its stream 1, and the server's first
    /// frames (written after the 101).
    pub fn upgraded(service: Service, family: u16, up: H2cUpgrade, out: &mut Vec<Output>) -> Self {
        let mut conn = H2Conn::new(service, family);
        let method = match &up.head {
            Head::Read(line) => line.method.clone(),
            Head::Kernel(k) => kernel_ids::method(k.method).to_string(),
            Head::Unread(_) => String::new(),
        };
        let head = match up.head {
            Head::Kernel(k) => Head::Kernel(KernelHead { version: probe_common::http1::VERSION_2, ..k }),
            Head::Read(line) => Head::Read(RequestLine { version: Version::Http2, ..line }),
            unread => unread,
        };
        conn.streams.insert(1, Stream {
            method,
            path: vec![],
            upgraded: Some(head),
            grpc: false,
            start_ns: up.start_ns,
            queued_ns: up.queued_ns,
            request_body: up.body_bytes,
            status: None,
            grpc_status: None,
            first_byte_ns: 0,
            response_body: 0,
            response_undecoded: false,
        });
        conn.last_client_stream = 1;
        conn.calls[SEND].open = false;
        for piece in &up.sent {
            // The captured head, the middle skipped (inside a DATA payload, or the framing
            // is lost), then the captured tail.
            let (ts, mut frames) = (piece.ts_ns, vec![]);
            let reader = &mut conn.readers[SEND];
            let fed = reader.feed(&piece.head, ts, ts, &mut frames).is_ok()
                && reader.skip(piece.skipped, ts, &mut frames).is_ok()
                && reader.feed(&piece.tail, ts, ts, &mut frames).is_ok();
            for f in frames {
                conn.frame(SEND, f, out);
            }
            if !fed {
                conn.lose_framing(H2Undecodable::BytesMissed, out);
                return conn;
            }
        }
        if up.missed {
            conn.lose_framing(H2Undecodable::BytesMissed, out);
        }
        conn
    }

    /// Requests read and not answered yet, by method.
    pub fn in_flight(&self) -> impl Iterator<Item = &str> {
        self.streams.values().map(|s| s.method.as_str())
    }

    pub fn on_chunk(&mut self, c: &H2Chunk, out: &mut Vec<Output>) {
        self.last_ns = c.ts_ns;
        if self.broken {
            return;
        }
        if c.after_loss {
            return self.lose_framing(H2Undecodable::EventsLost, out);
        }
        let d = if c.direction == Direction::Recv { RECV } else { SEND };
        let mut frames = vec![];
        // The gap before this chunk: a DATA payload the kernel did not send.
        let call = &mut self.calls[d];
        if !call.open {
            *call = Call { len: c.len, got: 0, open: true };
        }
        let missed = c.offset.saturating_sub(call.got);
        call.got = call.got.max(c.offset + c.data.len() as u64);
        if missed > 0 {
            if d == RECV && self.preface < PREFACE.len() {
                return self.lose_framing(H2Undecodable::BytesMissed, out);
            }
            if self.readers[d].skip(missed, c.ts_ns, &mut frames).is_err() {
                return self.lose_framing(H2Undecodable::BytesMissed, out);
            }
        }
        let mut bytes = &c.data[..];
        if d == RECV && self.preface < PREFACE.len() {
            let n = (PREFACE.len() - self.preface).min(bytes.len());
            if bytes[..n] != PREFACE[self.preface..self.preface + n] {
                return self.lose_framing(H2Undecodable::BadPreface, out);
            }
            self.preface += n;
            bytes = &bytes[n..];
        }
        let start_ns = if d == RECV { c.arrival_ns } else { c.ts_ns };
        if self.readers[d].feed(bytes, start_ns, c.ts_ns, &mut frames).is_err() {
            for f in frames {
                self.frame(d, f, out);
            }
            return self.lose_framing(H2Undecodable::FrameError, out);
        }
        // The call ended: what it moved after its last chunk was a DATA payload.
        if c.last {
            let call = &mut self.calls[d];
            let rest = call.len.saturating_sub(call.got);
            call.open = false;
            if rest > 0 && self.readers[d].skip(rest, c.ts_ns, &mut frames).is_err() {
                for f in frames {
                    self.frame(d, f, out);
                }
                return self.lose_framing(H2Undecodable::BytesMissed, out);
            }
        }
        for f in frames {
            if self.broken {
                return;
            }
            self.frame(d, f, out);
        }
        if c.truncated {
            self.lose_framing(H2Undecodable::BytesMissed, out);
        }
    }

    fn frame(&mut self, d: usize, f: Frame, out: &mut Vec<Output>) {
        match f.kind {
            frames::HEADERS | frames::PUSH_PROMISE => {
                if self.blocks[d].is_some() {
                    return self.lose_framing(H2Undecodable::FrameError, out);
                }
                let whole = f.payload.len() as u32 == f.len;
                let fragment = if whole { frames::header_fragment(&f) } else { None };
                let block = Block {
                    stream: f.stream,
                    kind: f.kind,
                    end_stream: f.kind == frames::HEADERS && f.flags & frames::END_STREAM != 0,
                    buf: fragment.map(<[u8]>::to_vec).unwrap_or_default(),
                    damaged: fragment.is_none(),
                    start_ns: f.start_ns,
                    first_ns: f.first_ns,
                    end_ns: f.end_ns,
                };
                if f.flags & frames::END_HEADERS != 0 {
                    self.block(d, block, out);
                } else {
                    self.blocks[d] = Some(block);
                }
            }
            frames::CONTINUATION => {
                let Some(mut block) = self.blocks[d].take().filter(|b| b.stream == f.stream) else {
                    return self.lose_framing(H2Undecodable::FrameError, out);
                };
                if f.payload.len() as u32 == f.len && block.buf.len() + f.payload.len() <= MAX_BLOCK {
                    block.buf.extend_from_slice(&f.payload);
                } else {
                    block.damaged = true;
                    block.buf = vec![];
                }
                block.end_ns = f.end_ns;
                if f.flags & frames::END_HEADERS != 0 {
                    self.block(d, block, out);
                } else {
                    self.blocks[d] = Some(block);
                }
            }
            // Nothing may come between a header block's frames (§6.10).
            _ if self.blocks[d].is_some() => self.lose_framing(H2Undecodable::FrameError, out),
            frames::DATA => self.data(d, &f, out),
            frames::RST_STREAM => {
                let code = frames::error_code(&f).unwrap_or(u32::MAX);
                out.push(Output::H2Reset { by_client: d == RECV, code });
                if let Some(s) = self.streams.remove(&f.stream) {
                    self.exchange(s, f.end_ns, true, out);
                }
            }
            _ => {}
        }
    }

    /// A whole header block: decoded (every block, to keep the compression state), then
    /// applied to its stream.
    fn block(&mut self, d: usize, b: Block, out: &mut Vec<Output>) {
        let fields = if self.hpack_lost[d] {
            None
        } else {
            let mut fields = Fields::default();
            let decoded = !b.damaged && self.decoders[d].decode_with_cb(&b.buf, |n, v| fields.add(&n, &v)).is_ok();
            if decoded {
                Some(fields)
            } else {
                self.hpack_lost[d] = true;
                self.count(H2Undecodable::HeaderBlock, out);
                None
            }
        };
        // A pushed response's block only matters to the compression state.
        if b.kind == frames::PUSH_PROMISE {
            return;
        }
        match d {
            RECV => self.request_block(b, fields, out),
            _ => self.response_block(b, fields, out),
        }
    }

    fn request_block(&mut self, b: Block, fields: Option<Fields>, out: &mut Vec<Output>) {
        if b.stream <= self.last_client_stream || b.stream % 2 == 0 {
            // Trailers of a request (its end), or not a client's new stream.
            return;
        }
        self.last_client_stream = b.stream;
        let Some(Fields { method: Some(method), path, grpc, .. }) = fields else {
            return out.push(Output::Unparsed(Reason::Http2HeadersUndecoded));
        };
        if self.streams.len() >= MAX_STREAMS {
            return out.push(Output::Unparsed(Reason::TooManyStreams));
        }
        let stream = Stream {
            upgraded: None,
            method,
            // CONNECT has no :path.
            path: path.unwrap_or_default(),
            grpc,
            start_ns: b.start_ns,
            queued_ns: b.first_ns.saturating_sub(b.start_ns),
            request_body: 0,
            status: None,
            grpc_status: None,
            first_byte_ns: 0,
            response_body: 0,
            response_undecoded: false,
        };
        self.streams.insert(b.stream, stream);
    }

    fn response_block(&mut self, b: Block, fields: Option<Fields>, out: &mut Vec<Output>) {
        let Some(s) = self.streams.get_mut(&b.stream) else { return };
        match fields {
            None => s.response_undecoded = true,
            Some(f) => {
                // Interim (1xx) responses come before the final one.
                if let Some(status) = f.status.filter(|&st| st >= 200)
                    && s.status.is_none()
                {
                    s.status = Some(status);
                    s.first_byte_ns = b.first_ns;
                }
                if f.grpc_status.is_some() {
                    s.grpc_status = f.grpc_status;
                }
            }
        }
        if b.end_stream
            && let Some(s) = self.streams.remove(&b.stream)
        {
            self.exchange(s, b.end_ns, false, out);
        }
    }

    fn data(&mut self, d: usize, f: &Frame, out: &mut Vec<Output>) {
        let Some(s) = self.streams.get_mut(&f.stream) else { return };
        if d == RECV {
            s.request_body += f.len as u64;
            return;
        }
        s.response_body += f.len as u64;
        if f.flags & frames::END_STREAM != 0
            && let Some(s) = self.streams.remove(&f.stream)
        {
            self.exchange(s, f.end_ns, false, out);
        }
    }

    fn exchange(&self, s: Stream, end_ns: u64, reset: bool, out: &mut Vec<Output>) {
        if s.response_undecoded && !reset {
            return out.push(Output::Unparsed(Reason::Http2HeadersUndecoded));
        }
        let first_byte_ns = if s.first_byte_ns == 0 { end_ns } else { s.first_byte_ns };
        if s.grpc {
            out.push(Output::Rpc(RpcCall {
                service: self.service.clone(),
                path: s.path.clone(),
                code: s.grpc_status,
                duration_ns: end_ns.saturating_sub(s.start_ns),
            }));
        }
        let head = match s.upgraded {
            Some(head) => head,
            None => Head::Read(RequestLine { method: s.method, target: s.path, version: Version::Http2, host: None }),
        };
        out.push(Output::Exchange(Exchange {
            head,
            status: s.status,
            reset,
            family: self.family,
            service: self.service.clone(),
            start_ns: s.start_ns,
            queued_ns: s.queued_ns,
            first_byte_ns,
            end_ns,
            request_body_bytes: s.request_body,
            response_body_bytes: s.response_body,
            paired_by: PairedBy::Agent(SlowReason::Http2),
        }));
    }

    /// The connection closed (`reset`: by a reset, at `ts_ns`): streams still open are
    /// requests the client gave up on (a reset), or that got no (whole) response.
    pub fn close(mut self, reset: bool, ts_ns: u64, out: &mut Vec<Output>) {
        for (_, s) in std::mem::take(&mut self.streams) {
            if reset {
                self.exchange(s, ts_ns, true, out);
            } else {
                out.push(Output::Unparsed(if s.status.is_some() { Reason::ResponseIncomplete } else { Reason::NoResponse }));
            }
        }
    }

    /// Forgotten to make room: what was in flight is counted as such, and the connection
    /// (its compression state gone with it).
    pub fn evict(mut self, out: &mut Vec<Output>) {
        self.count(H2Undecodable::ConnectionTableFull, out);
        for _ in self.streams.values() {
            out.push(Output::Unparsed(Reason::ConnectionTableFull));
        }
    }

    fn count(&mut self, why: H2Undecodable, out: &mut Vec<Output>) {
        if !std::mem::replace(&mut self.counted, true) {
            out.push(Output::H2Undecodable(why));
        }
    }

    /// The framing is lost: what is in flight is counted, and nothing more is read.
    fn lose_framing(&mut self, why: H2Undecodable, out: &mut Vec<Output>) {
        self.count(why, out);
        self.broken = true;
        for _ in std::mem::take(&mut self.streams).values() {
            out.push(Output::Unparsed(Reason::Http2Undecodable));
        }
    }
}
