//! One connection's pairing state (each side's position in its byte stream and the
//! requests waiting for their responses), and the steps that complete, count or abandon
//! the requests on it.
use std::{collections::VecDeque, sync::Arc};

use super::{Exchange, MAX_PENDING, Output, head::HeadBuf};
use crate::{
    chunked::ChunkParser,
    http::Version,
    reason::{Inference, Reason},
};

#[derive(Debug)]
pub(super) struct Pending {
    pub method: String,
    pub target: Vec<u8>,
    pub version: Version,
    pub start_ns: u64,
    pub body_bytes: u64,
    /// A request that was seen but could not be read (the reason): its response is
    /// followed to keep the connection in step, and the pair is counted under the reason.
    pub unparsed: Option<Reason>,
}

impl Pending {
    pub fn unreadable(reason: Reason, start_ns: u64) -> Self {
        Pending { method: String::new(), target: vec![], version: Version::Http11, start_ns, body_bytes: 0, unparsed: Some(reason) }
    }
}

#[derive(Debug)]
pub(super) enum RecvState {
    /// A request head; `start_ns` is when its first byte was read.
    Head { head: HeadBuf, start_ns: Option<u64> },
    LengthBody(u64),
    ChunkedBody(ChunkParser),
    /// The body's end is unknown: the next request starts after the current response.
    UntilResponse,
    /// Lost track: wait for an event that starts with a request line.
    Desync,
}

impl RecvState {
    pub fn head() -> Self {
        RecvState::Head { head: HeadBuf::default(), start_ns: None }
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
    pub service: Arc<str>,
    pub last_ns: u64,
    /// Requests are arriving that cannot be read (beyond the capture window, malformed):
    /// each response with no request to pair is counted under this reason.
    pub unseen: Option<Reason>,
}

impl Conn {
    pub fn new(family: u16, service: Arc<str>) -> Self {
        Conn {
            recv: RecvState::head(),
            send: SendState::Idle,
            pending: VecDeque::new(),
            family,
            service,
            last_ns: 0,
            unseen: None,
        }
    }

    /// Lost track of the connection: what waits is counted under `reason`, and both sides
    /// wait for the next request.
    pub fn resync(&mut self, reason: Reason, out: &mut Vec<Output>) {
        for p in self.pending.drain(..) {
            out.push(Output::Unparsed(p.unparsed.unwrap_or(reason)));
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

    fn finish_current(&mut self, out: &mut Vec<Output>) {
        if let SendState::Body { status, first_ns, last_ns, bytes, .. } = self.send {
            self.complete(status, first_ns, last_ns, bytes, out);
        }
    }

    /// The response to the oldest waiting request is complete.
    pub fn complete(&mut self, status: u16, first_ns: u64, end_ns: u64, bytes: u64, out: &mut Vec<Output>) {
        self.send = SendState::Idle;
        if let Some(reason) = self.pending.front().and_then(|p| p.unparsed) {
            self.pending.pop_front();
            out.push(Output::Unparsed(reason));
        } else if let Some(req) = self.pending.pop_front() {
            out.push(Output::Exchange(Exchange {
                method: req.method,
                target: req.target,
                version: req.version,
                status,
                family: self.family,
                service: self.service.clone(),
                start_ns: req.start_ns,
                first_byte_ns: first_ns,
                end_ns,
                request_body_bytes: req.body_bytes,
                response_body_bytes: bytes,
            }));
        }
        if matches!(self.recv, RecvState::UntilResponse) {
            self.recv = RecvState::head();
        }
    }

    /// Queues a request for its response, within `MAX_PENDING`.
    pub fn push_pending(&mut self, req: Pending, out: &mut Vec<Output>) {
        if self.pending.len() >= MAX_PENDING {
            out.push(Output::Unparsed(Reason::PipelineTooDeep));
            return;
        }
        self.unseen = None; // a readable request: the connection is in step again
        self.pending.push_back(req);
    }

    /// A request arrived that cannot be read: it is counted under `reason` when its response
    /// has been followed (or at the close), and so is every further response that has no
    /// request to pair, until a readable request arrives.
    pub fn unreadable(&mut self, reason: Reason, start_ns: u64) {
        self.recv = RecvState::Desync;
        self.unseen = Some(reason);
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back(Pending::unreadable(reason, start_ns));
        }
    }

    /// The connection is gone: finish what ends with it, count what never will.
    pub fn close(mut self, out: &mut Vec<Output>) {
        self.finish_open_ended(out);
        if matches!(&self.recv, RecvState::Head { head, .. } if !head.buf.is_empty()) {
            out.push(Output::Unparsed(Reason::HeadIncomplete)); // a head cut short by the close
        }
        // A response started and not finished, then the requests never answered.
        let mut reason = if matches!(self.send, SendState::Head { .. } | SendState::Body { .. }) {
            Reason::ResponseIncomplete
        } else {
            Reason::NoResponse
        };
        for p in self.pending.drain(..) {
            out.push(Output::Unparsed(p.unparsed.unwrap_or(reason)));
            reason = Reason::NoResponse;
        }
    }
}
