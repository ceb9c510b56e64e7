//! The HTTP/2 decoder on connections built frame by frame, fed as the kernel chunks them.
use loona_hpack::Encoder;

use super::{H2Conns, conn::MAX_STREAMS, frames::*};
use crate::{
    decode::{Direction, Event, H2Chunk, decode},
    http::Version,
    pairing::{Exchange, Head, Output, RpcCall},
    reason::{H2Undecodable, Reason},
    wire,
};

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// What the kernel does with one direction's bytes (`probe-ebpf/src/h2.rs`): it follows
/// the frames and sends every byte but DATA payloads, as chunks of at most `H2_CHUNK`
/// bytes, and an empty last chunk at each call's end.
#[derive(Default)]
struct KernelWalk {
    left: usize,
    skip: bool,
    hdr: Vec<u8>,
}

impl KernelWalk {
    fn client() -> Self {
        KernelWalk { left: PREFACE.len(), ..Default::default() }
    }

    /// The records of one call of `bytes`.
    fn call(&mut self, ts: u64, recv: bool, bytes: &[u8]) -> Vec<Vec<u8>> {
        use probe_common::{FLAG_H2_LAST, H2_CHUNK};
        let mut chunks: Vec<(usize, Vec<u8>)> = vec![];
        let keep = |at: usize, b: u8, chunks: &mut Vec<(usize, Vec<u8>)>| match chunks.last_mut() {
            Some((start, c)) if *start + c.len() == at && c.len() < H2_CHUNK => c.push(b),
            _ => chunks.push((at, vec![b])),
        };
        for (at, &b) in bytes.iter().enumerate() {
            if self.left > 0 {
                self.left -= 1;
                if !self.skip {
                    keep(at, b, &mut chunks);
                }
                continue;
            }
            keep(at, b, &mut chunks);
            self.hdr.push(b);
            if self.hdr.len() == 9 {
                let h = std::mem::take(&mut self.hdr);
                self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                self.skip = h[3] == DATA;
            }
        }
        let mut records: Vec<Vec<u8>> =
            chunks.iter().map(|(at, c)| wire::h2(7, 1, ts, recv, bytes.len(), *at, c, 0)).collect();
        records.push(wire::h2(7, 1, ts, recv, bytes.len(), bytes.len(), b"", FLAG_H2_LAST));
        records
    }
}

/// A client and a server talking over one connection, with their own HPACK encoders.
struct Talk {
    conns: H2Conns,
    out: Vec<Output>,
    client: Encoder<'static>,
    server: Encoder<'static>,
    ts: u64,
    walks: [KernelWalk; 2],
}

impl Talk {
    fn new() -> Self {
        let mut t = Talk::bare();
        let mut opening = PREFACE.to_vec();
        opening.extend(frame(SETTINGS, 0, 0, b""));
        t.recv(&opening);
        t.send(&frame(SETTINGS, 0, 0, b""));
        t
    }

    /// A connection whose preface is still to come.
    fn bare() -> Self {
        Talk {
            conns: H2Conns::new(100),
            out: vec![],
            client: Encoder::new(),
            server: Encoder::new(),
            ts: 1000,
            walks: [KernelWalk::client(), KernelWalk::default()],
        }
    }

    /// Through the records the kernel writes and the decoder the agent runs.
    fn io(&mut self, recv: bool, bytes: &[u8]) {
        self.ts += 1000;
        let records = self.walks[if recv { 0 } else { 1 }].call(self.ts, recv, bytes);
        for record in records {
            let Ok(Event::H2(c)) = decode(&record) else { panic!("not an H2 record") };
            self.conns.on_chunk(&c, || "svc".into(), || None, &mut self.out);
        }
    }

    fn recv(&mut self, bytes: &[u8]) {
        self.io(true, bytes)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.io(false, bytes)
    }

    fn request_block(&mut self, method: &str, path: &str, grpc: bool) -> Vec<u8> {
        let mut h: Vec<(&[u8], &[u8])> =
            vec![(b":method", method.as_bytes()), (b":scheme", b"http"), (b":path", path.as_bytes()), (b":authority", b"x")];
        if grpc {
            h.push((b"content-type", b"application/grpc"));
        }
        self.client.encode(h)
    }

    fn response_block(&mut self, status: &str, grpc_status: Option<&str>) -> Vec<u8> {
        let mut h: Vec<(&[u8], &[u8])> = vec![(b":status", status.as_bytes()), (b"server", b"test")];
        if let Some(g) = grpc_status {
            h.push((b"grpc-status", g.as_bytes()));
        }
        self.server.encode(h)
    }

    fn trailers(&mut self, grpc_status: &str) -> Vec<u8> {
        self.server.encode(vec![(&b"grpc-status"[..], grpc_status.as_bytes())])
    }

    fn exchanges(&mut self) -> Vec<Exchange> {
        let mut v = vec![];
        for o in std::mem::take(&mut self.out) {
            match o {
                Output::Exchange(x) => v.push(x),
                other => self.out.push(other),
            }
        }
        v
    }

    fn others(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }
}

/// A chunk the way the kernel would not send it on its own: for what the walk or the ring
/// buffer may do (a truncated walk, events lost).
fn chunk(conn_id: u64, direction: Direction, len: u64, data: &[u8], after_loss: bool, truncated: bool) -> H2Chunk {
    H2Chunk {
        conn_id,
        tgid: 1,
        ts_ns: 1,
        arrival_ns: 1,
        direction,
        family: 2,
        len,
        offset: 0,
        data: data.to_vec(),
        after_loss,
        last: true,
        truncated,
    }
}

fn line(x: &Exchange) -> (String, String, Option<u16>, bool) {
    match &x.head {
        Head::Read(l) => {
            assert_eq!(l.version, Version::Http2);
            (l.method.clone(), String::from_utf8_lossy(&l.target).into_owned(), x.status, x.reset)
        }
        h => panic!("{h:?}"),
    }
}

#[test]
fn interleaved_streams_with_continuation_padding_and_priority() {
    let mut t = Talk::new();
    let a = t.request_block("GET", "/a", false);
    let b = t.request_block("POST", "/b", false);
    // Stream 1 in a HEADERS and a CONTINUATION; stream 3 padded with a priority, and a body.
    let mut bytes = frame(HEADERS, END_STREAM, 1, &a[..2]);
    bytes.extend(frame(CONTINUATION, END_HEADERS, 1, &a[2..]));
    let mut padded = vec![3u8, 0, 0, 0, 1, 16];
    padded.extend(&b);
    padded.extend([0, 0, 0]);
    bytes.extend(frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 3, &padded));
    bytes.extend(frame(DATA, END_STREAM, 3, b"hello"));
    t.recv(&bytes);
    // The answers in the other order, stream 3's in two writes.
    let r3 = t.response_block("201", None);
    t.send(&frame(HEADERS, END_HEADERS, 3, &r3));
    t.send(&frame(DATA, END_STREAM, 3, b"made"));
    let r1 = t.response_block("404", None);
    t.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &r1));
    let x = t.exchanges();
    assert_eq!(x.iter().map(line).collect::<Vec<_>>(), vec![
        ("POST".into(), "/b".into(), Some(201), false),
        ("GET".into(), "/a".into(), Some(404), false),
    ]);
    assert_eq!((x[0].request_body_bytes, x[0].response_body_bytes), (5, 4));
    // From the read of the requests to the write of each END_STREAM.
    assert_eq!((x[0].start_ns, x[0].first_byte_ns, x[0].end_ns), (4000, 5000, 6000));
    assert_eq!(x[1].end_ns, 7000);
    assert!(t.others().is_empty());
}

#[test]
fn any_split_of_a_connection_gives_the_same_requests() {
    // One read holding everything, then the same bytes fed as one-byte reads.
    let build = |t: &mut Talk| {
        let mut req = vec![];
        let mut resp = vec![];
        for i in 0..5u32 {
            let id = 2 * i + 1;
            let b = t.request_block("GET", &format!("/item/{i}"), false);
            req.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &b));
            let r = t.response_block("200", None);
            resp.extend(frame(HEADERS, END_HEADERS, id, &r));
            resp.extend(frame(DATA, END_STREAM, id, &vec![b'x'; 100 * i as usize]));
        }
        (req, resp)
    };
    let mut whole = Talk::new();
    let (req, resp) = build(&mut whole);
    whole.recv(&req);
    whole.send(&resp);
    let mut bytewise = Talk::new();
    let (req, resp) = build(&mut bytewise);
    for b in &req {
        bytewise.recv(std::slice::from_ref(b));
    }
    for b in &resp {
        bytewise.send(std::slice::from_ref(b));
    }
    let (w, b) = (whole.exchanges(), bytewise.exchanges());
    assert_eq!(w.len(), 5);
    assert_eq!(w.iter().map(line).collect::<Vec<_>>(), b.iter().map(line).collect::<Vec<_>>());
}

#[test]
fn grpc_calls_with_trailers_and_trailers_only() {
    let mut t = Talk::new();
    let a = t.request_block("POST", "/pkg.Echo/Unary", true);
    let b = t.request_block("POST", "/pkg.Echo/Stream", true);
    t.recv(&[frame(HEADERS, END_HEADERS, 1, &a), frame(DATA, END_STREAM, 1, b"\0\0\0\0\x02ok")].concat());
    t.recv(&[frame(HEADERS, END_HEADERS, 3, &b), frame(DATA, END_STREAM, 3, b"\0\0\0\0\x00")].concat());
    // A server stream: headers, messages, trailers with a status.
    let h = t.response_block("200", None);
    let tr = t.trailers("13");
    t.send(&[frame(HEADERS, END_HEADERS, 3, &h), frame(DATA, 0, 3, b"m1"), frame(DATA, 0, 3, b"m2")].concat());
    t.send(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &tr));
    // Trailers-only: the status in the one HEADERS.
    let only = t.response_block("200", Some("5"));
    t.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &only));
    let calls: Vec<RpcCall> = t
        .others_and_exchanges()
        .into_iter()
        .filter_map(|o| if let Output::Rpc(c) = o { Some(c) } else { None })
        .collect();
    assert_eq!(
        calls.iter().map(|c| (String::from_utf8_lossy(&c.path).into_owned(), c.code)).collect::<Vec<_>>(),
        vec![("/pkg.Echo/Stream".to_string(), Some(13)), ("/pkg.Echo/Unary".to_string(), Some(5))]
    );
}

impl Talk {
    fn others_and_exchanges(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }
}

#[test]
fn resets_end_streams_and_are_counted_by_sender_and_code() {
    let mut t = Talk::new();
    for id in [1, 3] {
        let b = t.request_block("GET", "/slow", false);
        t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, id, &b));
    }
    let h = t.response_block("200", None);
    t.send(&[frame(HEADERS, END_HEADERS, 1, &h), frame(DATA, 0, 1, b"part")].concat());
    // The client cancels stream 1 mid-response; the server refuses stream 3.
    t.recv(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    t.send(&frame(RST_STREAM, 0, 3, &7u32.to_be_bytes()));
    let x = t.exchanges();
    assert_eq!(x.iter().map(line).collect::<Vec<_>>(), vec![
        ("GET".into(), "/slow".into(), Some(200), true),
        ("GET".into(), "/slow".into(), None, true),
    ]);
    assert_eq!(t.others(), vec![Output::H2Reset { by_client: true, code: 8 }, Output::H2Reset { by_client: false, code: 7 }]);
}

#[test]
fn garbage_after_the_preface_is_a_bad_preface() {
    let mut t = Talk::bare();
    t.recv(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
    t.recv(b"more garbage");
    assert_eq!(t.others(), vec![Output::H2Undecodable(H2Undecodable::BadPreface)]);
}

#[test]
fn a_header_block_that_does_not_decode_loses_the_requests_after_it_not_the_framing() {
    let mut t = Talk::new();
    let ok = t.request_block("GET", "/ok", false);
    t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &ok));
    // Index 70 of an empty dynamic table does not exist.
    t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x80 | 70]));
    let later = t.request_block("GET", "/later", false);
    t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, 5, &later));
    let r = t.response_block("200", None);
    t.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &r));
    let x = t.exchanges();
    assert_eq!(x.iter().map(line).collect::<Vec<_>>(), vec![("GET".into(), "/ok".into(), Some(200), false)]);
    assert_eq!(t.others(), vec![
        Output::H2Undecodable(H2Undecodable::HeaderBlock),
        Output::Unparsed(Reason::Http2HeadersUndecoded),
        Output::Unparsed(Reason::Http2HeadersUndecoded),
    ]);
}

#[test]
fn data_payloads_are_gaps_and_a_response_ends_at_the_call_that_carried_its_end() {
    let mut t = Talk::new();
    let b = t.request_block("POST", "/big", false);
    t.recv(&[frame(HEADERS, END_HEADERS, 1, &b), frame(DATA, 0, 1, &[1; 5000])].concat());
    t.recv(&frame(DATA, END_STREAM, 1, &[1; 70_000]));
    let h = t.response_block("200", None);
    // A 600 KB body in one write, in 16 KiB frames; the last one ends the response.
    let mut write = frame(HEADERS, END_HEADERS, 1, &h);
    let body = vec![b'z'; 600_000];
    let frames: Vec<&[u8]> = body.chunks(16384).collect();
    for (i, f) in frames.iter().enumerate() {
        write.extend(frame(DATA, if i + 1 == frames.len() { END_STREAM } else { 0 }, 1, f));
    }
    t.send(&write);
    let x = t.exchanges();
    assert_eq!(x.iter().map(|x| (line(x).1, x.request_body_bytes, x.response_body_bytes)).collect::<Vec<_>>(), vec![
        ("/big".into(), 75_000, 600_000)
    ]);
    assert_eq!(x[0].end_ns, t.ts, "ends with the write, not at the next event");
}

#[test]
fn a_call_the_kernel_could_not_walk_loses_the_framing() {
    let mut t = Talk::new();
    let b = t.request_block("GET", "/", false);
    t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &b));
    let c = chunk(7, Direction::Send, 100_000, &frame(SETTINGS, 0, 0, b""), false, true);
    t.conns.on_chunk(&c, || "svc".into(), || None, &mut t.out);
    assert_eq!(t.others(), vec![
        Output::H2Undecodable(H2Undecodable::BytesMissed),
        Output::Unparsed(Reason::Http2Undecodable)
    ]);
}

#[test]
fn ten_thousand_streams_are_each_a_request_and_open_ones_are_bounded() {
    let mut t = Talk::new();
    for i in 0..10_000u32 {
        let id = 2 * i + 1;
        let b = t.request_block("GET", "/", false);
        t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, id, &b));
        let r = t.response_block("200", None);
        t.send(&frame(HEADERS, END_HEADERS | END_STREAM, id, &r));
    }
    assert_eq!(t.exchanges().len(), 10_000);
    // Open streams past the bound are counted, not kept.
    let mut t = Talk::new();
    for i in 0..(MAX_STREAMS as u32 + 3) {
        let b = t.request_block("GET", "/", false);
        t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &b));
    }
    assert_eq!(t.others(), vec![Output::Unparsed(Reason::TooManyStreams); 3]);
    // At a reset close, the open ones are requests the client gave up on.
    t.conns.on_close(7, true, 1, &mut t.out);
    assert_eq!(t.exchanges().iter().filter(|x| x.reset).count(), MAX_STREAMS);
}

#[test]
fn a_lost_event_stops_the_decoding_and_counts_what_was_in_flight() {
    let mut t = Talk::new();
    let b = t.request_block("GET", "/", false);
    t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &b));
    let c = chunk(7, Direction::Send, 9, &frame(SETTINGS, 0, 0, b""), true, false);
    t.conns.on_chunk(&c, || "svc".into(), || None, &mut t.out);
    assert_eq!(t.others(), vec![
        Output::H2Undecodable(H2Undecodable::EventsLost),
        Output::Unparsed(Reason::Http2Undecodable)
    ]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes after the preface, in both directions, as arbitrary chunks: the
    /// decoder never panics, and whatever it outputs is bounded by the streams it saw.
    #[test]
    fn arbitrary_frames_never_panic(
        calls in proptest::collection::vec((proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..300)), 0..20),
        frames in proptest::collection::vec((0u8..12, proptest::num::u8::ANY, 0u32..8, proptest::collection::vec(proptest::num::u8::ANY, 0..40)), 0..30),
    ) {
        let mut t = Talk::new();
        // Well-framed frames with arbitrary kinds, flags, streams and payloads...
        for (kind, flags, stream, payload) in &frames {
            t.recv(&frame(*kind, *flags, *stream, payload));
            t.send(&frame(*kind, *flags, *stream, payload));
        }
        // ...then arbitrary bytes.
        for (recv, bytes) in &calls {
            t.io(*recv, bytes);
        }
        t.conns.on_close(7, false, u64::MAX, &mut t.out);
        let requests = t.out.iter().filter(|o| matches!(o, Output::Exchange(_) | Output::Unparsed(_))).count();
        proptest::prop_assert!(requests <= frames.len() + calls.len() * 40 + 1);
    }
}

#[test]
fn a_connection_evicted_from_a_full_table_is_counted_and_its_later_bytes_ignored() {
    let mut t = Talk::new();
    t.conns = H2Conns::new(1);
    t.walks = [KernelWalk::client(), KernelWalk::default()];
    t.recv(&[PREFACE.to_vec(), frame(SETTINGS, 0, 0, b"")].concat());
    let b = t.request_block("GET", "/", false);
    t.recv(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &b));
    // Another connection needs the only room.
    let other = chunk(8, Direction::Recv, PREFACE.len() as u64, PREFACE, false, false);
    t.conns.on_chunk(&other, || "svc".into(), || None, &mut t.out);
    assert_eq!(t.others(), vec![
        Output::H2Undecodable(H2Undecodable::ConnectionTableFull),
        Output::Unparsed(Reason::ConnectionTableFull)
    ]);
    // Its later bytes are not a bad preface: they are ignored until its close.
    let r = t.response_block("200", None);
    t.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &r));
    assert!(t.conns.on_close(7, false, 0, &mut t.out));
    assert!(t.out.is_empty(), "{:?}", t.out);
}
