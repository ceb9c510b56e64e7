//! HTTP/2 framing (RFC 9113 §4): one direction's byte stream -> frames, incrementally, across
//! reads and writes, with gaps where the kernel copied nothing (past its per-call bound).
//! Only the payloads the decoder needs are kept (header blocks, resets); a DATA payload is
//! counted and skipped, so a gap inside one loses nothing.

/// The 24 bytes a client opens a connection with (§3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// Largest payload kept (a header block fragment, a reset): larger is taken for broken
/// framing. Endpoints rarely allow more than 16 KiB (SETTINGS_MAX_FRAME_SIZE's default).
pub const MAX_KEPT: u32 = 1 << 20;

/// One frame, whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    /// Its payload's length.
    pub len: u32,
    /// The payload of a kept kind ([`kept`]); empty otherwise.
    pub payload: Vec<u8>,
    /// When the read that brought its first byte began to arrive (of a write: that write).
    pub start_ns: u64,
    /// The read or write that brought its first byte.
    pub first_ns: u64,
    /// The read or write that brought its last byte.
    pub end_ns: u64,
}

/// Frame kinds whose payload the decoder reads.
fn kept(kind: u8) -> bool {
    matches!(kind, HEADERS | CONTINUATION | PUSH_PROMISE | RST_STREAM | GOAWAY)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A kept frame larger than [`MAX_KEPT`].
    TooLarge,
    /// Bytes missed across a frame header: where the next frame starts is unknown.
    Missed,
}

#[derive(Debug, Default)]
pub struct FrameReader {
    /// The frame header being read, and how much of it.
    header: [u8; 9],
    have: usize,
    /// The frame whose payload is being read: its header, and what is left of it.
    current: Option<(Frame, u32)>,
    /// Bytes of the current kept payload that were not captured.
    damaged: bool,
}

impl FrameReader {
    /// Reads `bytes`, which arrived at `start_ns` and were read (or written) at `end_ns`.
    pub fn feed(&mut self, mut bytes: &[u8], start_ns: u64, end_ns: u64, out: &mut Vec<Frame>) -> Result<(), FrameError> {
        while !bytes.is_empty() {
            match &mut self.current {
                None => {
                    let n = (9 - self.have).min(bytes.len());
                    self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                    self.have += n;
                    bytes = &bytes[n..];
                    if self.have < 9 {
                        break;
                    }
                    self.have = 0;
                    let h = self.header;
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let frame = Frame { kind: h[3], flags: h[4], stream, len, payload: vec![], start_ns, first_ns: end_ns, end_ns };
                    if kept(frame.kind) && len > MAX_KEPT {
                        return Err(FrameError::TooLarge);
                    }
                    self.current = Some((frame, len));
                }
                Some((frame, left)) => {
                    let n = (*left as usize).min(bytes.len());
                    if kept(frame.kind) {
                        frame.payload.extend_from_slice(&bytes[..n]);
                    }
                    *left -= n as u32;
                    bytes = &bytes[n..];
                }
            }
            self.finish(end_ns, out);
        }
        // A frame with an empty payload whose header just completed.
        self.finish(end_ns, out);
        Ok(())
    }

    /// `n` bytes went by uncaptured. Fine inside a payload; a kept payload is then marked
    /// damaged (`Ok(true)` once). Across a frame header, the framing is lost.
    pub fn skip(&mut self, n: u64, end_ns: u64, out: &mut Vec<Frame>) -> Result<bool, FrameError> {
        if n == 0 {
            return Ok(false);
        }
        match &mut self.current {
            Some((frame, left)) if n <= *left as u64 => {
                *left -= n as u32;
                let damaged = kept(frame.kind);
                self.damaged |= damaged;
                self.finish(end_ns, out);
                Ok(damaged)
            }
            _ => Err(FrameError::Missed),
        }
    }

    /// Hands over the current frame if its payload is complete.
    fn finish(&mut self, end_ns: u64, out: &mut Vec<Frame>) {
        if let Some((_, 0)) = &self.current
            && let Some((mut frame, _)) = self.current.take()
        {
            frame.end_ns = end_ns;
            if std::mem::take(&mut self.damaged) {
                // A kept payload with bytes missing: the caller sees an empty one of the
                // announced length, and knows its block is lost.
                frame.payload.clear();
            }
            out.push(frame);
        }
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload: without its padding,
/// priority fields or promised stream id (§6.2, §6.6). None if malformed.
pub fn header_fragment(frame: &Frame) -> Option<&[u8]> {
    let mut p = &frame.payload[..];
    let mut pad = 0usize;
    if frame.flags & PADDED != 0 && frame.kind != CONTINUATION {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    let skip = match frame.kind {
        HEADERS if frame.flags & PRIORITY != 0 => 5,
        PUSH_PROMISE => 4,
        _ => 0,
    };
    if p.len() < skip + pad {
        return None;
    }
    Some(&p[skip..p.len() - pad])
}

/// The promised stream of a PUSH_PROMISE.
pub fn promised_stream(frame: &Frame) -> Option<u32> {
    let p = &frame.payload[..];
    let at = if frame.flags & PADDED != 0 { 1 } else { 0 };
    let b = p.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
}

/// The error code of a RST_STREAM or GOAWAY payload.
pub fn error_code(frame: &Frame) -> Option<u32> {
    let at = if frame.kind == GOAWAY { 4 } else { 0 };
    let b = frame.payload.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Do these bytes (the start of a connection's data the agent saw) read as HTTP/2 frames?
/// Whole frame headers of known kinds, with plausible lengths, and at least one frame:
/// a connection picked up mid-stream.
pub fn looks_like_frames(bytes: &[u8]) -> bool {
    let mut at = 0usize;
    let mut frames = 0;
    while at + 9 <= bytes.len() {
        let h = &bytes[at..at + 9];
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let kind = h[3];
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
        // Connection frames on stream 0, stream frames on another (§6); endpoints may allow
        // frames up to 16 MiB, but mid-stream ones larger than 1 MiB are taken for
        // something else (a TLS record header reads as a 1.4 MB frame).
        let on_zero = matches!(kind, SETTINGS | 6 | GOAWAY);
        if kind > CONTINUATION || stream >> 31 != 0 || on_zero != (stream == 0) && kind != 8 || len > 1 << 20 {
            return false;
        }
        // Only the flags its kind defines, and the lengths it must have (§6).
        let flags = h[4];
        let allowed = match kind {
            DATA => END_STREAM | PADDED,
            HEADERS => END_STREAM | END_HEADERS | PADDED | PRIORITY,
            SETTINGS | 6 => 0x1,
            PUSH_PROMISE => END_HEADERS | PADDED,
            CONTINUATION => END_HEADERS,
            _ => 0,
        };
        let length_ok = match kind {
            2 => len == 5,
            RST_STREAM | 8 => len == 4,
            SETTINGS => len % 6 == 0,
            6 => len == 8,
            GOAWAY => len >= 8,
            _ => true,
        };
        if flags & !allowed != 0 || !length_ok {
            return false;
        }
        frames += 1;
        at += 9 + len;
    }
    // Bytes left over are a frame header cut by the capture window.
    frames > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn read_all(parts: &[&[u8]]) -> Vec<Frame> {
        let mut r = FrameReader::default();
        let mut out = vec![];
        for (i, p) in parts.iter().enumerate() {
            r.feed(p, i as u64, i as u64, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn frames_across_reads_at_every_split() {
        let mut bytes = frame(HEADERS, END_HEADERS, 1, b"abc");
        bytes.extend(frame(DATA, END_STREAM, 1, &[7; 100]));
        bytes.extend(frame(SETTINGS, 0, 0, b""));
        bytes.extend(frame(RST_STREAM, 0, 3, &8u32.to_be_bytes()));
        for split in 0..bytes.len() {
            let out = read_all(&[&bytes[..split], &bytes[split..]]);
            let kinds: Vec<(u8, u32, u32)> = out.iter().map(|f| (f.kind, f.stream, f.len)).collect();
            assert_eq!(kinds, vec![(HEADERS, 1, 3), (DATA, 1, 100), (SETTINGS, 0, 0), (RST_STREAM, 3, 4)], "{split}");
            assert_eq!(out[0].payload, b"abc");
            assert!(out[1].payload.is_empty(), "DATA payloads are not kept");
            assert_eq!(error_code(&out[3]), Some(8));
            // The DATA frame ends in the read that brought its last byte.
            let data_end = 9 + 3 + 9 + 100;
            assert_eq!(out[1].end_ns, if split >= data_end { 0 } else { 1 }, "{split}");
        }
    }

    #[test]
    fn gaps_inside_data_are_skipped_and_elsewhere_lose_the_framing() {
        let mut r = FrameReader::default();
        let mut out = vec![];
        let data = frame(DATA, END_STREAM, 1, &[0; 1000]);
        r.feed(&data[..100], 0, 0, &mut out).unwrap();
        assert_eq!(r.skip(909, 1, &mut out), Ok(false));
        assert_eq!(out.len(), 1, "the DATA frame ended in the gap");
        r.feed(&frame(HEADERS, END_HEADERS, 3, b"xy")[..11], 2, 2, &mut out).unwrap();
        assert_eq!(r.skip(5, 3, &mut out), Err(FrameError::Missed));
        // A gap in a header block: the frame comes, marked by an empty payload.
        let mut r = FrameReader::default();
        let mut out = vec![];
        r.feed(&frame(HEADERS, END_HEADERS, 1, b"abcd")[..10], 0, 0, &mut out).unwrap();
        assert_eq!(r.skip(3, 1, &mut out), Ok(true));
        assert_eq!((out.len(), out[0].payload.len(), out[0].len), (1, 0, 4));
    }

    #[test]
    fn fragments_without_padding_and_priority() {
        let f = |flags, payload: &[u8]| Frame { kind: HEADERS, flags, stream: 1, len: 0, payload: payload.to_vec(), start_ns: 0, first_ns: 0, end_ns: 0 };
        assert_eq!(header_fragment(&f(0, b"abc")), Some(&b"abc"[..]));
        assert_eq!(header_fragment(&f(PADDED, b"\x02abcPP")), Some(&b"abc"[..]));
        assert_eq!(header_fragment(&f(PRIORITY, b"12345abc")), Some(&b"abc"[..]));
        assert_eq!(header_fragment(&f(PADDED | PRIORITY, b"\x0112345abcP")), Some(&b"abc"[..]));
        assert_eq!(header_fragment(&f(PADDED, b"\x09abc")), None);
        assert_eq!(r_too_large(), Err(FrameError::TooLarge));
    }

    fn r_too_large() -> Result<(), FrameError> {
        let mut h = frame(HEADERS, 0, 1, b"");
        h[0] = 0x7f;
        FrameReader::default().feed(&h, 0, 0, &mut vec![])
    }

    #[test]
    fn frames_picked_up_mid_stream() {
        let mut bytes = frame(DATA, 0, 5, b"hello");
        bytes.extend(frame(HEADERS, END_HEADERS, 7, &[0x82, 0x84]));
        assert!(looks_like_frames(&bytes));
        assert!(looks_like_frames(&bytes[..20]), "a frame cut by the capture window");
        assert!(!looks_like_frames(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_frames(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"));
        assert!(!looks_like_frames(b"abc"));
        assert!(!looks_like_frames(b"\x00\x01\x02\x03garbage\xff\r\n\r\n"), "a RST_STREAM with flags and a length it cannot have");
    }
}
