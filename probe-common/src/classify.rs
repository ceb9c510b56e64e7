//! Is a connection's first data the start of an HTTP/1.x request? The kernel decides it
//! from the first bytes it receives, by the shape of a request line: a method token (any
//! token: `GET`, `PROPFIND`, `M-SEARCH`, a lowercase `get`), one space, then a target in
//! origin form (`/...`) or asterisk form (`*`), or an authority after `CONNECT`. The bytes
//! may come a few at a time (a client that writes byte by byte): the state is kept in the
//! connection's map entry between reads. Pure and `no_std`: the eBPF programs run it, and
//! its table tests run on the host.
//!
//! A token of [`MAX_METHOD`] characters with no space yet is taken for a request too (an
//! absurdly long method): the agent then reads it and counts it under its reason
//! (`head_too_large`), since the server answers it.

/// Token characters after which a verdict is due ("BASELINE-CONTROL" is 16).
pub const MAX_METHOD: u32 = 24;
/// Bytes one read can need before a verdict: a longest method, a space, a target byte.
pub const CLASSIFY_BYTES: usize = MAX_METHOD as usize + 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Request,
    NotRequest,
    /// `PRI *`: the start of the HTTP/2 connection preface (the agent checks the rest).
    Http2,
    /// `HTTP/`: a response, received first (a client connection caught in the middle of a
    /// call). Not a request.
    Response,
    /// More bytes are needed.
    Undecided,
}

/// The classifier's state between reads. Stored in `ConnState` as `first4` (the first four
/// bytes, little-endian) and `meta` (bytes seen | method length << 8 | in the target << 16).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classifier {
    pub first4: u32,
    seen: u32,
    method_len: u32,
    in_target: bool,
}

const CONNECT: u32 = u32::from_le_bytes(*b"CONN");
const HTTP: u32 = u32::from_le_bytes(*b"HTTP");
/// `PRI * HTTP/2.0`: the HTTP/2 preface has the shape of a request line; it is not one.
const PRI: u32 = u32::from_le_bytes(*b"PRI ");

/// tchar of RFC 9110 §5.6.2.
#[inline(always)]
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

impl Classifier {
    pub fn from_state(first4: u32, meta: u32) -> Self {
        Classifier { first4, seen: meta & 0xff, method_len: (meta >> 8) & 0xff, in_target: meta & 0x1_0000 != 0 }
    }

    pub fn meta(&self) -> u32 {
        self.seen.min(0xff) | self.method_len.min(0xff) << 8 | (self.in_target as u32) << 16
    }

    /// One more byte of the connection's first data.
    #[inline(always)]
    pub fn feed(&mut self, b: u8) -> Verdict {
        if self.seen < 4 {
            self.first4 |= (b as u32) << (self.seen * 8);
        }
        self.seen += 1;
        if !self.in_target {
            if is_tchar(b) {
                self.method_len += 1;
                return if self.method_len >= MAX_METHOD { Verdict::Request } else { Verdict::Undecided };
            }
            if b == b' ' && self.method_len > 0 {
                self.in_target = true;
                return Verdict::Undecided;
            }
            if b == b'/' && self.method_len == 4 && self.first4 == HTTP {
                return Verdict::Response;
            }
            return Verdict::NotRequest;
        }
        match b {
            b'*' if self.first4 == PRI => Verdict::Http2,
            b'/' | b'*' => Verdict::Request,
            _ if self.method_len == 7 && self.first4 == CONNECT && (b.is_ascii_alphanumeric() || b == b'[') => Verdict::Request,
            _ => Verdict::NotRequest,
        }
    }

    /// Feeds `bytes` (at most [`CLASSIFY_BYTES`] are looked at) until a verdict.
    #[inline(always)]
    pub fn feed_all(&mut self, bytes: &[u8]) -> Verdict {
        let mut i = 0;
        while i < bytes.len() && i < CLASSIFY_BYTES {
            match self.feed(bytes[i]) {
                Verdict::Undecided => i += 1,
                v => return v,
            }
        }
        Verdict::Undecided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(parts: &[&[u8]]) -> Verdict {
        let mut c = Classifier::default();
        let mut v = Verdict::Undecided;
        for p in parts {
            // Through the stored state between reads, as the kernel does.
            let mut again = Classifier::from_state(c.first4, c.meta());
            v = again.feed_all(p);
            c = again;
            if v != Verdict::Undecided {
                break;
            }
        }
        v
    }

    #[test]
    fn request_lines_by_their_shape() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /api HTTP/1.1\r\n",
            b"PROPFIND /x HTTP/1.1\r\n",
            b"FOOBAR /x HTTP/1.1\r\n",
            b"get /lower HTTP/1.1\r\n",
            b"M-SEARCH * HTTP/1.1\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n",
            b"CONNECT [::1]:443 HTTP/1.1\r\n",
            b"POSTPOSTPOSTPOSTPOSTPOSTPOST /hello HTTP/1.1\r\n",
        ] {
            assert_eq!(verdict(&[line]), Verdict::Request, "{:?}", line);
        }
    }

    #[test]
    fn other_protocols_are_not_requests() {
        for bytes in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"hello there\r\n",
            b"EHLO mail.example.com\r\n",
            b"SET key value\r\n",
            b"\x00\x01\x02",
            b" GET / HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"CONNECT2 host:1",
        ] {
            assert_eq!(verdict(&[bytes]), Verdict::NotRequest, "{:?}", bytes);
        }
    }

    #[test]
    fn a_request_line_in_pieces() {
        assert_eq!(verdict(&[b"G", b"E", b"T", b" ", b"/"]), Verdict::Request);
        assert_eq!(verdict(&[b"GE", b"T "]), Verdict::Undecided);
        assert_eq!(verdict(&[b"PR", b"OPFIND", b" /x"]), Verdict::Request);
        assert_eq!(verdict(&[b"\x16", b"\x03"]), Verdict::NotRequest);
        assert_eq!(verdict(&[b"PRI", b" *"]), Verdict::Http2);
        assert_eq!(verdict(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), Verdict::Http2);
        assert_eq!(verdict(&[b"PRI /x HTTP/1.1\r\n"]), Verdict::Request, "a PRI method on a path is HTTP/1");
    }

    #[test]
    fn a_response_received_first() {
        assert_eq!(verdict(&[b"HTTP/1.1 200 OK\r\n"]), Verdict::Response);
        assert_eq!(verdict(&[b"HT", b"TP", b"/1.0 404"]), Verdict::Response);
        assert_eq!(verdict(&[b"HTTPS/1.1 200"]), Verdict::NotRequest);
        assert_eq!(verdict(&[b"http/1.1 200"]), Verdict::NotRequest);
        assert_eq!(verdict(&[b"HTTP /x HTTP/1.1\r\n"]), Verdict::Request, "a method named HTTP");
    }
}
