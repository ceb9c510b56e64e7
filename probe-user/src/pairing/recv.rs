//! The receive side: requests read from the connection's byte stream (heads across
//! reads, bodies by Content-Length or chunked), queued for their responses.
use super::{
    Output, RequestLine,
    conn::{Conn, Pending, RecvState, SendState, Start},
    head::Fed,
    piece::Piece,
};
use crate::{
    chunked::{Blind, ChunkParser},
    http::{BodyFraming, HeadParse, host_in_partial_head, parse_request, parse_request_line},
    reason::{Protocol, Reason},
};

fn starts_request(bytes: &[u8]) -> bool {
    parse_request_line(bytes).is_some() || matches!(parse_request(bytes), HeadParse::Complete(..))
}

/// Starts with `METHOD SP` (a token, then a space): a request line that failed to parse
/// further is a malformed request, not another protocol.
fn looks_like_request_line(buf: &[u8]) -> bool {
    let method_len = buf.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    method_len > 0 && buf.get(method_len) == Some(&b' ')
}

/// A read that returned at `ts`; its first byte arrived at `arrival_ns` (the kernel's
/// stamp, else `ts`). A request that starts later in the read has no arrival of its own.
pub(super) fn on_recv(conn: &mut Conn, p: &Piece<'_>, ts: u64, arrival_ns: u64, out: &mut Vec<Output>) {
    let start_at = |pos: u64| if pos == 0 { Start::arrived(arrival_ns, ts) } else { Start::read_at(ts) };
    if matches!(conn.recv, RecvState::Desync | RecvState::UntilResponse) && starts_request(p.head) {
        // A new request; for UntilResponse this also means the previous response (whose
        // framing we could not see) ended with its last write.
        conn.finish_open_ended(out);
        conn.recv = RecvState::head();
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
                let done = *left == 0;
                conn.add_request_body(take);
                if done {
                    conn.recv = RecvState::head();
                    conn.request_body_done(out);
                }
            }
            RecvState::ChunkedBody(parser) => match p.run_chunks(parser, pos) {
                Ok(end) => {
                    let done = parser.is_done();
                    conn.add_request_body(end - pos);
                    pos = end;
                    if done {
                        conn.recv = RecvState::head();
                        conn.request_body_done(out);
                    }
                }
                Err(Blind) => {
                    conn.recv = RecvState::UntilResponse;
                    return;
                }
            },
            RecvState::Head { head, start } => {
                let Some(known) = p.head_at(pos) else {
                    // A request starts where we captured nothing (deep in a pipelined
                    // batch): it cannot be read.
                    conn.unreadable(Reason::OutsideCaptureWindow, start_at(pos));
                    return;
                };
                let start = *start.get_or_insert(start_at(pos));
                let started_here = head.buf.is_empty();
                match head.feed(p, pos, known, parse_request) {
                    Fed::Complete { head, end } => {
                        pos = end;
                        conn.finish_before_next_request(out);
                        let line = RequestLine { method: head.method, target: head.target, version: head.version, host: head.host };
                        conn.push_pending(Pending::read(line, start), out);
                        conn.recv = match head.body {
                            BodyFraming::Length(n) => RecvState::LengthBody(n),
                            BodyFraming::Chunked => RecvState::ChunkedBody(ChunkParser::default()),
                            BodyFraming::None | BodyFraming::UntilClose => RecvState::head(),
                        };
                    }
                    Fed::More => return,
                    Fed::Cut => {
                        // The rest of the head was not captured: keep the request line.
                        let captured_all = pos + known.len() as u64 >= p.len;
                        match parse_request_line(&head.buf) {
                            Some((method, target, version)) => {
                                let host = host_in_partial_head(&head.buf);
                                conn.finish_before_next_request(out);
                                conn.push_pending(Pending::read(RequestLine { method, target, version, host }, start), out);
                                conn.recv = RecvState::UntilResponse;
                                if !captured_all {
                                    // More requests may follow in what was not captured
                                    // (pipelining): their responses are counted.
                                    conn.unseen = Some(Reason::OutsideCaptureWindow);
                                }
                            }
                            // Cut by the window: a head that starts deep in a read (pipelining)
                            // or whose request line alone is larger than the window.
                            None if started_here && pos > 0 => conn.unreadable(Reason::OutsideCaptureWindow, start),
                            None => conn.unreadable(Reason::HeadTooLarge, start),
                        }
                        return;
                    }
                    Fed::Invalid => {
                        let reason = if looks_like_request_line(&head.buf) {
                            Reason::MalformedRequest
                        } else {
                            Reason::NotRequest(Protocol::of(&head.buf))
                        };
                        conn.unreadable(reason, start);
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
pub(super) fn answer_incomplete_head(conn: &mut Conn) -> bool {
    let RecvState::Head { head, start: Some(start) } = &conn.recv else { return false };
    let Some((method, target, version)) = parse_request_line(&head.buf) else { return false };
    let req = Pending::read(RequestLine { method, target, version, host: host_in_partial_head(&head.buf) }, *start);
    conn.pending.push_back(req);
    conn.recv = RecvState::UntilResponse;
    true
}
