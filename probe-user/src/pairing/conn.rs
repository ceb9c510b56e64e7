//! One connection's pairing state (each side's position in its byte stream and the
//! requests waiting for their responses), and the steps that complete, count or abandon
//! the requests on it.
use std::collections::VecDeque;
use crate::labels::Service;

use probe_common::{REQ_BODY, RESP_CHUNKED, RESP_LENGTH, RESP_UNTIL_CLOSE, SwitchEvent};

use super::{Exchange, Head, KernelHead, MAX_PENDING, Output, PairedBy, RequestLine, head::HeadBuf};
use crate::{
    chunked::ChunkParser,
    http::parse_status_line,
    labels::kernel_ids,
    reason::{Inference, Reason, SlowReason},
};

/// When a request started: its arrival at the socket if the kernel saw it, else the read
/// that brought its first byte; and the time between the two (its wait in the socket's
/// queues).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Start {
    pub ns: u64,
    pub queued_ns: u64,
}

impl Start {
    /// Read at `read_ns`, its arrival not known.
    pub fn read_at(read_ns: u64) -> Self {
        Start { ns: read_ns, queued_ns: 0 }
    }

    /// Arrived at `arrival_ns` (never after its read), read at `read_ns`.
    pub fn arrived(arrival_ns: u64, read_ns: u64) -> Self {
        let ns = arrival_ns.min(read_ns);
        Start { ns, queued_ns: read_ns - ns }
    }
}

#[derive(Debug)]
pub(super) struct Pending {
    /// Read, or not read for a reason. A request that could not be read has its response
    /// followed to keep the connection in step; the pair is measured under placeholder
    /// labels if only its head was beyond the capture window, counted under the reason
    /// otherwise.
    pub head: Head,
    pub start_ns: u64,
    /// The time it waited in the socket's queues (the kernel's `FastRequest::queued_ns`;
    /// 0 for the requests the agent reads itself, whose start is their read).
    pub queued_ns: u64,
    pub body_bytes: u64,
}

impl Pending {
    pub fn read(line: RequestLine, start: Start) -> Self {
        Pending { head: Head::Read(line), start_ns: start.ns, queued_ns: start.queued_ns, body_bytes: 0 }
    }

    pub fn unreadable(reason: Reason, start: Start) -> Self {
        Pending { head: Head::Unread(reason), start_ns: start.ns, queued_ns: start.queued_ns, body_bytes: 0 }
    }

    /// The method, for the in-flight gauge (None: not read).
    pub fn method(&self) -> Option<&str> {
        match &self.head {
            Head::Read(line) => Some(&line.method),
            Head::Kernel(k) => Some(kernel_ids::method(k.method)),
            Head::Unread(_) => None,
        }
    }

    /// Measured when answered: read, or only beyond the capture window.
    fn measurable(&self) -> bool {
        matches!(self.head, Head::Read(_) | Head::Kernel(_) | Head::Unread(Reason::OutsideCaptureWindow))
    }

    fn reason(&self) -> Option<Reason> {
        match self.head {
            Head::Unread(r) => Some(r),
            Head::Read(_) | Head::Kernel(_) => None,
        }
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    /// A FIN, or forgotten when idle.
    Normally,
    /// A reset at this time: the peer gave up (or an abortive close).
    Reset(u64),
    /// Dropped from the agent's full table.
    Evicted,
    /// A client connection closed at this time without a reset, requests unanswered: the
    /// server closed it, or the target gave up waiting (`Pairer::client`). They are
    /// measured up to the close, as cut short.
    Abandoned(u64),
}

#[derive(Debug)]
pub(super) enum RecvState {
    /// A request head; `start` is when its first byte arrived and was read.
    Head { head: HeadBuf, start: Option<Start> },
    LengthBody(u64),
    ChunkedBody(ChunkParser),
    /// The body's end is unknown: the next request starts after the current response.
    UntilResponse,
    /// Lost track: wait for an event that starts with a request line.
    Desync,
}

impl RecvState {
    pub fn head() -> Self {
        RecvState::Head { head: HeadBuf::default(), start: None }
    }
}

#[derive(Debug)]
pub(super) enum Body {
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
pub(super) enum SendState {
    Idle,
    Head { head: HeadBuf, first_ns: u64 },
    Body { body: Body, status: u16, first_ns: u64, last_ns: u64, bytes: u64 },
    /// Lost track: ignore writes until a request is read again.
    Skip,
}

pub(super) struct Conn {
    pub recv: RecvState,
    pub send: SendState,
    pub pending: VecDeque<Pending>,
    pub family: u16,
    pub service: Service,
    pub last_ns: u64,
    /// Requests are arriving that cannot be read (beyond the capture window, malformed):
    /// each response with no request to pair is counted under this reason.
    pub unseen: Option<Reason>,
    /// A request answered before its body was read (an early 413 or 417): measured once
    /// the rest of its body has arrived, so that its body size is whole.
    pub answered_early: Option<Exchange>,
    /// Why the kernel left this connection to the agent.
    pub slow: SlowReason,
    /// The last write, if it left bytes unsent: its time and the sequence number after
    /// its last byte (`parked`).
    pub tx_last: Option<(u64, u32)>,
    /// A `101` to `h2c`: the connection goes on in HTTP/2 (`http2` takes it over).
    pub h2c: Option<H2cUpgrade>,
}

/// An HTTP/1.1 request answered `101 Switching Protocols` to h2c: it is stream 1 of the
/// HTTP/2 connection that follows (RFC 7540 §3.2), answered there. The server's writes
/// until the kernel sees the client's preface are its first frames.
#[derive(Debug)]
pub struct H2cUpgrade {
    pub head: Head,
    pub start_ns: u64,
    pub queued_ns: u64,
    pub body_bytes: u64,
    /// The server's writes after the 101, as captured.
    pub sent: Vec<H2cPiece>,
    /// More writes than are kept ([`MAX_H2C_WRITES`]): the HTTP/2 decoder cannot start.
    pub missed: bool,
}

/// Writes kept between a 101 to h2c and the client's preface.
pub const MAX_H2C_WRITES: usize = 64;

/// A write's captured bytes: its head window, then `skipped` bytes not captured, then its
/// tail window.
#[derive(Debug)]
pub struct H2cPiece {
    pub ts_ns: u64,
    pub head: Vec<u8>,
    pub skipped: u64,
    pub tail: Vec<u8>,
}

impl Conn {
    pub fn new(family: u16, service: Service) -> Self {
        Conn {
            h2c: None,
            recv: RecvState::head(),
            send: SendState::Idle,
            pending: VecDeque::new(),
            family,
            service,
            last_ns: 0,
            unseen: None,
            answered_early: None,
            slow: SlowReason::Unannounced,
            tx_last: None,
        }
    }

    /// A connection the kernel paired until now: its waiting requests, the request body
    /// being read and the response being written, as the kernel left them.
    pub fn from_kernel(sw: &SwitchEvent, service: Service, slow: SlowReason) -> Self {
        let k = &sw.pairing;
        let mut conn = Conn::new(sw.family, service);
        conn.slow = slow;
        conn.last_ns = sw.header.ts_ns;
        for r in k.waiting() {
            let head = KernelHead::of(r, sw.service);
            conn.pending.push_back(Pending { head: Head::Kernel(head), start_ns: r.start_ns, queued_ns: r.queued_ns, body_bytes: r.body_bytes });
        }
        if k.req_state == REQ_BODY && k.req_left > 0 {
            conn.recv = RecvState::LengthBody(k.req_left);
        } else if k.held_len > 0 {
            // The first bytes of the next head, from a short read.
            let held = k.held[..(k.held_len as usize).min(k.held.len())].to_vec();
            let start = Start { ns: k.held_ns, queued_ns: k.held_queued_ns };
            conn.recv = RecvState::Head { head: HeadBuf { buf: held }, start: Some(start) };
        }
        let body = match k.resp_state {
            RESP_LENGTH => Some(Body::Length(k.resp_left)),
            RESP_CHUNKED => Some(Body::ChunkedTail),
            RESP_UNTIL_CLOSE => Some(Body::UntilClose),
            _ => None,
        };
        if let Some(body) = body {
            conn.send = SendState::Body {
                body,
                status: k.status,
                first_ns: k.resp_first_ns,
                last_ns: k.resp_last_ns,
                bytes: k.resp_bytes,
            };
        }
        conn
    }

    /// Lost track of the connection: what waits is counted under `reason`, and both sides
    /// wait for the next request.
    pub fn resync(&mut self, reason: Reason, out: &mut Vec<Output>) {
        for p in self.pending.drain(..) {
            out.push(Output::Unparsed(p.reason().unwrap_or(reason)));
        }
        self.recv = RecvState::Desync;
        self.send = SendState::Skip;
    }

    /// Completes a response that ends with the connection: close-delimited, or one whose
    /// framing we could not see.
    pub fn finish_open_ended(&mut self, out: &mut Vec<Output>) {
        if matches!(self.send, SendState::Body { body: Body::UntilClose, .. }) {
            self.finish_current(out);
        } else {
            self.finish_unknown(out);
        }
    }

    /// A response whose framing we could not see ends at its last write before the next
    /// request (or the close).
    pub fn finish_unknown(&mut self, out: &mut Vec<Output>) {
        if matches!(self.send, SendState::Body { body: Body::Unknown, .. }) {
            self.finish_current(out);
            out.push(Output::Inferred(Inference::ResponseHeadBeyondCapture));
        }
    }

    /// A new request arrives (its head is read): a response whose end was not seen ends at
    /// its last write. That is a response whose framing was beyond the capture window, or a
    /// chunked one whose terminator was (a client sends its next request once the previous
    /// response is complete, unless it pipelines).
    pub fn finish_before_next_request(&mut self, out: &mut Vec<Output>) {
        self.finish_unknown(out);
        if self.pending.len() == 1 && matches!(self.send, SendState::Body { body: Body::ChunkedTail, .. }) {
            self.finish_current(out);
            out.push(Output::Inferred(Inference::ChunkEndBeyondCapture));
        }
    }

    fn finish_current(&mut self, out: &mut Vec<Output>) {
        if let SendState::Body { status, first_ns, last_ns, bytes, .. } = self.send {
            self.complete(status, first_ns, last_ns, bytes, out);
        }
    }

    /// The response to the oldest waiting request is complete.
    pub fn complete(&mut self, status: u16, first_ns: u64, end_ns: u64, bytes: u64, out: &mut Vec<Output>) {
        self.send = SendState::Idle;
        if let Some(req) = self.pending.pop_front() {
            let body_follows = self.pending.is_empty() && matches!(self.recv, RecvState::LengthBody(_) | RecvState::ChunkedBody(_));
            match self.answered(req, Some(status), false, first_ns, end_ns, bytes) {
                Output::Exchange(x) if body_follows => self.answered_early = Some(x),
                o => out.push(o),
            }
        }
        if matches!(self.recv, RecvState::UntilResponse) {
            self.recv = RecvState::head();
        }
    }

    /// Body bytes of the request being received: the newest one waiting, or the one
    /// answered early.
    pub fn add_request_body(&mut self, n: u64) {
        if let Some(req) = self.pending.back_mut() {
            req.body_bytes += n;
        } else if let Some(x) = &mut self.answered_early {
            x.request_body_bytes += n;
        }
    }

    /// The request body being received is complete.
    pub fn request_body_done(&mut self, out: &mut Vec<Output>) {
        if let Some(x) = self.answered_early.take() {
            out.push(Output::Exchange(x));
        }
    }

    /// A request's answer is known: measured, or counted under its reason.
    fn answered(&self, req: Pending, status: Option<u16>, reset: bool, first_ns: u64, end_ns: u64, bytes: u64) -> Output {
        if !req.measurable() {
            return Output::Unparsed(req.reason().unwrap_or(Reason::MalformedRequest));
        }
        Output::Exchange(Exchange {
            head: req.head,
            status,
            reset,
            family: self.family,
            service: self.service.clone(),
            start_ns: req.start_ns,
            queued_ns: req.queued_ns,
            first_byte_ns: first_ns,
            end_ns,
            request_body_bytes: req.body_bytes,
            response_body_bytes: bytes,
            paired_by: PairedBy::Agent(self.slow),
        })
    }

    /// Queues a request for its response, within `MAX_PENDING`. A readable request puts
    /// the connection in step again: the send side, if it was skipping bytes no request
    /// asked for, waits for this request's response.
    pub fn push_pending(&mut self, req: Pending, out: &mut Vec<Output>) {
        if self.pending.len() >= MAX_PENDING {
            out.push(Output::Unparsed(Reason::PipelineTooDeep));
            return;
        }
        self.unseen = None;
        if matches!(self.send, SendState::Skip) {
            self.send = SendState::Idle;
        }
        self.pending.push_back(req);
    }

    /// A request arrived that cannot be read: it is counted under `reason` when its response
    /// has been followed (or at the close), and so is every further response that has no
    /// request to pair, until a readable request arrives.
    pub fn unreadable(&mut self, reason: Reason, start: Start) {
        self.recv = RecvState::Desync;
        self.unseen = Some(reason);
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back(Pending::unreadable(reason, start));
        }
    }

    /// The connection is gone: finish what ends with it, count what never will. After a
    /// reset, the requests waiting are measured up to the reset, as reset (the client gave
    /// up on them: the ones users most need to see), the one being answered with its
    /// status; otherwise they are counted as never (completely) answered.
    pub fn close(mut self, how: Closed, out: &mut Vec<Output>) {
        if self.h2c.take().is_some() {
            // A 101 to h2c, and no HTTP/2 preface after it: its answer never came.
            out.push(Output::Unparsed(Reason::Upgraded));
        }
        self.request_body_done(out);
        self.finish_open_ended(out);
        if matches!(&self.recv, RecvState::Head { head, .. } if !head.buf.is_empty()) {
            // A head cut short by the close (or lost with the evicted connection).
            out.push(Output::Unparsed(if how == Closed::Evicted { Reason::ConnectionTableFull } else { Reason::HeadIncomplete }));
        }
        // The response in progress: its status and first byte, if its status line was sent.
        let in_progress = match &self.send {
            SendState::Body { status, first_ns, bytes, .. } => Some((Some(*status), *first_ns, *bytes)),
            SendState::Head { head, first_ns } => Some((parse_status_line(&head.buf).map(|(s, _)| s), *first_ns, 0)),
            _ => None,
        };
        let pending: Vec<Pending> = self.pending.drain(..).collect();
        for (i, p) in pending.into_iter().enumerate() {
            let answering = if i == 0 { in_progress } else { None };
            match how {
                Closed::Reset(at) | Closed::Abandoned(at) => {
                    let (status, first_ns, bytes) = answering.unwrap_or((None, at, 0));
                    out.push(self.answered(p, status, true, first_ns, at, bytes));
                }
                Closed::Evicted => out.push(Output::Unparsed(p.reason().unwrap_or(Reason::ConnectionTableFull))),
                Closed::Normally => {
                    let reason = if answering.is_some() { Reason::ResponseIncomplete } else { Reason::NoResponse };
                    out.push(Output::Unparsed(p.reason().unwrap_or(reason)));
                }
            }
        }
    }
}
