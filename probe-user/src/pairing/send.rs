//! The send side: responses followed byte by byte to their real end (Content-Length, the
//! chunked terminator, the close; none for HEAD, 1xx, 204, 304), each completing the
//! oldest waiting request.
use super::{
    Output,
    conn::{Body, Conn, H2cPiece, H2cUpgrade, MAX_H2C_WRITES, Pending, SendState, Start},
    head::{Fed, HeadBuf},
    piece::Piece,
    recv::answer_incomplete_head,
};
use crate::{
    chunked::{Blind, ChunkParser, ends_with_last_chunk},
    http::{BodyFraming, parse_response, parse_status_line},
    reason::Reason,
};

pub(super) fn on_send(conn: &mut Conn, p: &Piece<'_>, ts: u64, out: &mut Vec<Output>) {
    if let Some(up) = &mut conn.h2c {
        // HTTP/2 frames after a 101 to h2c, before the kernel saw the client's preface.
        keep_h2c_bytes(up, p, 0, ts);
        return;
    }
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
                        conn.pending.push_back(Pending::unreadable(reason, Start::read_at(ts)));
                        continue;
                    }
                    // Bytes no request asked for. A status line: the response to a request
                    // we did not see (a connection opened before the agent started), which
                    // is counted. Anything else: stray bytes after a complete response (a
                    // body sent with the answer to a HEAD): no request is lost. Either way
                    // the bytes are skipped until the next request.
                    if p.head.starts_with(b"HTTP/") {
                        out.push(Output::Unparsed(Reason::ResponseWithoutRequest));
                    }
                    conn.send = SendState::Skip;
                    return;
                }
                if p.head_at(pos).is_none() {
                    conn.resync(Reason::OutsideCaptureWindow, out);
                    return;
                }
                conn.send = SendState::Head { head: HeadBuf::default(), first_ns: ts };
            }
            SendState::Head { head, first_ns } => {
                let first_ns = *first_ns;
                let Some(known) = p.head_at(pos) else {
                    conn.resync(Reason::OutsideCaptureWindow, out);
                    return;
                };
                match head.feed(p, pos, known, parse_response) {
                    Fed::Complete { head, end } => {
                        pos = end;
                        if (100..200).contains(&head.status) && head.status != 101 {
                            conn.send = SendState::Idle; // interim response: the final one follows
                            continue;
                        }
                        let is_head = conn.pending.front().and_then(|r| r.method()) == Some("HEAD");
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
                        if head.status == 101 && head.upgrade_h2c && let Some(req) = conn.pending.pop_front() {
                            // h2c: the request is stream 1 of the HTTP/2 connection that
                            // follows, and its answer comes in frames, which may start here.
                            let mut up = H2cUpgrade {
                                head: req.head,
                                start_ns: req.start_ns,
                                queued_ns: req.queued_ns,
                                body_bytes: req.body_bytes,
                                sent: vec![],
                                missed: false,
                            };
                            keep_h2c_bytes(&mut up, p, pos, ts);
                            conn.h2c = Some(up);
                            conn.send = SendState::Skip;
                            return;
                        }
                        match body {
                            None => {
                                conn.complete(head.status, first_ns, ts, 0, out);
                                if head.status == 101 {
                                    // Switching protocols: what follows is not HTTP/1.x.
                                    conn.resync(Reason::Upgraded, out);
                                    return;
                                }
                            }
                            Some(body) => {
                                conn.send = SendState::Body { body, status: head.status, first_ns, last_ns: ts, bytes: 0 };
                            }
                        }
                    }
                    Fed::More => return,
                    Fed::Cut => {
                        match parse_status_line(&head.buf) {
                            Some((status, _)) => {
                                conn.send = SendState::Body {
                                    body: Body::Unknown,
                                    status,
                                    first_ns,
                                    last_ns: ts,
                                    bytes: p.len - pos,
                                };
                            }
                            None => conn.resync(Reason::ResponseNotHttp, out),
                        }
                        return;
                    }
                    Fed::Invalid => {
                        conn.resync(Reason::ResponseNotHttp, out);
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
                            conn.complete(status, first_ns, ts, total, out);
                        }
                    }
                    Body::Chunked(parser) => match p.run_chunks(parser, pos) {
                        Ok(end) => {
                            *bytes += end - pos;
                            pos = end;
                            if parser.is_done() {
                                let total = *bytes;
                                conn.complete(status, first_ns, ts, total, out);
                            }
                        }
                        Err(Blind) => {
                            *bytes += p.len - pos;
                            *body = Body::ChunkedTail;
                            if ends_with_last_chunk(p.end()) {
                                let total = *bytes;
                                conn.complete(status, first_ns, ts, total, out);
                            }
                            return;
                        }
                    },
                    Body::ChunkedTail => {
                        *bytes += p.len - pos;
                        if ends_with_last_chunk(p.end()) {
                            let total = *bytes;
                            conn.complete(status, first_ns, ts, total, out);
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

/// The bytes of a write from `pos` on, kept for the HTTP/2 decoder of an h2c connection.
fn keep_h2c_bytes(up: &mut H2cUpgrade, p: &Piece<'_>, pos: u64, ts: u64) {
    if pos >= p.len {
        return;
    }
    if up.sent.len() >= MAX_H2C_WRITES {
        up.missed = true;
        return;
    }
    let head = p.head_at(pos).unwrap_or_default();
    let end = pos + head.len() as u64;
    // The tail window, where it is past the head.
    let tail = if p.len > end { &p.tail[p.tail.len().saturating_sub((p.len - end) as usize)..] } else { &[] };
    let skipped = p.len - end - tail.len() as u64;
    up.sent.push(H2cPiece { ts_ns: ts, head: head.to_vec(), skipped, tail: tail.to_vec() });
}
