//! The HTTP/1.x heads the kernel's fast path reads itself: a request's method, target,
//! version and body framing; a response's status and body framing. Pure and `no_std`: the
//! eBPF programs run it on the bytes they captured (in the per-CPU scratch buffer, which
//! is why it takes a fixed [`HEAD_BUF`]-byte array and the count of valid bytes), and its
//! table tests run on the host.
//!
//! It is fast where it must be: the head's end and its line starts are found a 64-bit word
//! at a time, and only lines whose first letter could start `Content-Length` or
//! `Transfer-Encoding` are looked at. It is strict: whatever is not plain (a head not whole
//! in the bytes given, obsolete line folding, a Content-Length list or two of them, a
//! transfer coding other than `chunked` alone, a bare LF) is [`Parse::Slow`], and the
//! connection goes to the agent's full parser.
//!
//! For the verifier, every value a loop carries or leaves behind (a line start, the head's
//! length, where the target ends) is kept in [`Scratch::cells`], memory of a map: loads
//! from it are values the verifier does not track, so the paths through a loop meet again
//! in one state instead of one state per value, and a 512-byte scan is verified in a few
//! thousand instructions instead of past its limit.

use core::ptr::{read_volatile, write_volatile};

use crate::HEAD_WINDOW;

/// The buffer the parsers read: twice the capture window, so that every word read at an
/// offset inside the window stays inside the buffer.
pub const HEAD_BUF: usize = 2 * HEAD_WINDOW;

/// Cells of [`Scratch`] the parsers use.
pub const CELLS: usize = 64;
const C_N: usize = 0;
const C_LEN: usize = 1;
const C_COUNT: usize = 2;
const C_OPEN: usize = 3;
const C_T: usize = 4;
const C_M: usize = 5;
const C_LENGTH: usize = 6;
const C_CHUNKED: usize = 7;
const C_VALUE: usize = 24;
const C_DIGITS: usize = 25;
const C_AFTER: usize = 26;
const C_J: usize = 27;
const C_I: usize = 28;
const C_END: usize = 29;
const C_DONE: usize = 30;
const C_STARTS: usize = 8;
/// Where the value of the head's `Host` header starts and ends (0, 0: none), and the
/// walk of [`host_key`].
const C_HOST_START: usize = 40;
const C_HOST_END: usize = 41;
const C_HOST_H: usize = 42;
const C_HOST_OPEN: usize = 43;
const C_ENDS: usize = 16;

/// The per-CPU scratch the fast path works in: the captured bytes, and the parsers' cells.
#[repr(C)]
pub struct Scratch {
    pub buf: [u8; HEAD_BUF],
    pub cells: [u64; CELLS],
}

impl Scratch {
    pub const fn new() -> Self {
        Scratch { buf: [0; HEAD_BUF], cells: [0; CELLS] }
    }

    /// Cell `i`, loaded from memory (a value the verifier does not track).
    #[inline(always)]
    pub(crate) fn take(&self, i: usize) -> u64 {
        unsafe { read_volatile(&self.cells[i & (CELLS - 1)]) }
    }

    #[inline(always)]
    pub(crate) fn put(&mut self, i: usize, v: u64) {
        unsafe { write_volatile(&mut self.cells[i & (CELLS - 1)], v) }
    }

    /// The captured byte at `i` (masked into the buffer).
    #[inline(always)]
    pub fn byte(&self, i: usize) -> u8 {
        self.buf[i & (HEAD_BUF - 1)]
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// The nine standard methods, in the order of their ids (1..=9); 0 is any other token.
pub const METHODS: [&[u8]; 9] = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"];
pub const METHOD_OTHER: u8 = 0;
pub const METHOD_HEAD: u8 = 2;

pub const VERSION_10: u8 = 0;
pub const VERSION_11: u8 = 1;
/// Never the kernel's: the agent's, for a request an h2c upgrade made stream 1 of an HTTP/2
/// connection.
pub const VERSION_2: u8 = 2;

/// Longest method token the fast path reads.
const MAX_METHOD: usize = 16;
/// Longest target the fast path reads.
pub const MAX_TARGET: usize = 256;
/// Header lines starting with c/C/t/T the fast path looks at (Content-Type, Connection,
/// Cookie, Cache-Control... are among them).
const MAX_CANDIDATES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse<T> {
    Complete(T),
    /// Not for the fast path: the agent parses it.
    Slow,
}

/// How a body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No Content-Length and no Transfer-Encoding: no body for a request, until the close
    /// for a response.
    None,
    Length(u64),
    Chunked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: u8,
    pub version: u8,
    /// The target's bytes: `buf[target_start..target_end]`.
    pub target_start: usize,
    pub target_end: usize,
    /// Bytes of the head, the final CRLF included.
    pub len: usize,
    pub framing: Framing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub len: usize,
    pub framing: Framing,
}

/// The byte at `i` (masked into the buffer: no bounds check to fail).
#[inline(always)]
fn at(s: &Scratch, i: usize) -> u8 {
    s.buf[i & (HEAD_BUF - 1)]
}

/// The little-endian word at `i` (< HEAD_WINDOW: inside the buffer).
#[inline(always)]
fn word(s: &Scratch, i: usize) -> u64 {
    let i = i & (HEAD_WINDOW - 1);
    let mut w = [0u8; 8];
    w.copy_from_slice(&s.buf[i..i + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// A control byte no header may hold (httparse refuses them: the agent counts such a
/// request as malformed): below 0x20 but HTAB, CR and LF, or DEL.
#[inline(always)]
fn forbidden(b: u8) -> bool {
    (b < 0x20 && b != b'\t' && b != b'\r' && b != b'\n') || b == 0x7f
}

/// Finds the end of the head in the first `n` bytes (CRLF CRLF), a word at a time, and
/// the header lines beginning with c/C/t/T (their starts in cells `C_STARTS..`, their CRs
/// in `C_ENDS..`, their count in `C_COUNT`), and the value of a `Host` line (outside the
/// candidates: cells `C_HOST_START`, `C_HOST_END`). The head's length goes to `C_LEN`. A
/// head with a control byte is not scanned (the agent's).
#[inline(always)]
pub fn scan(s: &mut Scratch) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const SPACES: u64 = 0x2020_2020_2020_2020;
    const DELS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    s.put(C_COUNT, 0);
    s.put(C_OPEN, 0);
    s.put(C_HOST_START, 0);
    s.put(C_HOST_END, 0);
    s.put(C_HOST_OPEN, 0);
    let mut base = 0;
    while base < HEAD_WINDOW {
        if base as u64 >= s.take(C_N) {
            return false;
        }
        let x = word(s, base);
        let del = x ^ DELS;
        // A byte below 0x20 (a LF, or a control byte) or a DEL in this word: which bytes.
        if (x.wrapping_sub(SPACES) & !x & HIGHS) | (del.wrapping_sub(ONES) & !del & HIGHS) != 0 {
            // Loaded once a word: the byte loop below runs for every line end.
            let n = s.take(C_N);
            let mut k = 0;
            while k < 8 {
                let i = base + k;
                let b = at(s, i);
                if (i as u64) < n && forbidden(b) {
                    return false;
                }
                if (i as u64) < n && b == b'\n' {
                    if i == 0 || at(s, i - 1) != b'\r' {
                        return false; // a bare LF
                    }
                    // The line that ends here, if it is a candidate.
                    if s.take(C_OPEN) != 0 {
                        let c = s.take(C_COUNT) as usize;
                        s.put(C_ENDS + ((c + MAX_CANDIDATES - 1) & (MAX_CANDIDATES - 1)), (i - 1) as u64);
                        s.put(C_OPEN, 0);
                    }
                    if s.take(C_HOST_OPEN) != 0 {
                        s.put(C_HOST_END, (i - 1) as u64);
                        s.put(C_HOST_OPEN, 0);
                    }
                    let next = i + 1;
                    if next as u64 + 1 >= n {
                        return false; // the head goes on beyond what was captured
                    }
                    match at(s, next) {
                        b'\r' => {
                            if at(s, next + 1) != b'\n' {
                                return false;
                            }
                            s.put(C_LEN, (next + 2) as u64);
                            return true;
                        }
                        // A `Host` line: its value is a client request's upstream (`host_key`).
                        b'h' | b'H' if header_is(s, next, b"host:") => {
                            s.put(C_HOST_START, next as u64 + 5);
                            s.put(C_HOST_OPEN, 1);
                        }
                        b'c' | b'C' | b't' | b'T' => {
                            let c = s.take(C_COUNT) as usize;
                            if c >= MAX_CANDIDATES {
                                return false;
                            }
                            s.put(C_STARTS + c, next as u64);
                            s.put(C_COUNT, c as u64 + 1);
                            s.put(C_OPEN, 1);
                        }
                        b' ' | b'\t' => return false, // obsolete line folding
                        _ => {}
                    }
                }
                k += 1;
            }
        }
        base += 8;
    }
    false
}

/// Case-insensitive: does the line at `i` start with `name` (lowercase, colon included)?
#[inline(always)]
fn header_is(s: &Scratch, i: usize, name: &[u8]) -> bool {
    let mut k = 0;
    while k < name.len() {
        if at(s, i + k) | 0x20 != name[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// Moves cell `C_J` past up to 8 spaces before cell `C_END`.
#[inline(always)]
fn skip_spaces(s: &mut Scratch) {
    let mut k = 0;
    while k < 8 {
        let j = s.take(C_J) as usize;
        if (j as u64) < s.take(C_END) && at(s, j) == b' ' {
            s.put(C_J, j as u64 + 1);
        }
        k += 1;
    }
}

/// The framing the candidate header lines declare (after [`scan`]). Every loop counts
/// from 0 to a constant and reloads what it compares with from the cells, so that the
/// verifier's states at a loop head are alike whatever path led there.
#[inline(always)]
pub fn framing(s: &mut Scratch) -> Parse<Framing> {
    s.put(C_LENGTH, u64::MAX);
    s.put(C_CHUNKED, 0);
    let mut c = 0;
    while c < MAX_CANDIDATES {
        if c as u64 >= s.take(C_COUNT) {
            break;
        }
        s.put(C_I, s.take(C_STARTS + c) & (HEAD_WINDOW as u64 - 1));
        s.put(C_END, s.take(C_ENDS + c) & (HEAD_WINDOW as u64 - 1));
        let i = s.take(C_I) as usize;
        if header_is(s, i, b"content-length:") {
            if s.take(C_LENGTH) != u64::MAX {
                return Parse::Slow; // two of them
            }
            // Digits, with spaces around: one number (a list is the agent's).
            s.put(C_VALUE, 0);
            s.put(C_DIGITS, 0);
            s.put(C_AFTER, 0);
            s.put(C_DONE, 0);
            let mut k = 0;
            while k < 40 {
                let j = s.take(C_I) as usize + 15 + k;
                if j as u64 >= s.take(C_END) {
                    s.put(C_DONE, 1);
                    break;
                }
                let b = at(s, j);
                let digits = s.take(C_DIGITS);
                if b.is_ascii_digit() && s.take(C_AFTER) == 0 && digits < 19 {
                    s.put(C_VALUE, s.take(C_VALUE).wrapping_mul(10).wrapping_add((b - b'0') as u64));
                    s.put(C_DIGITS, digits + 1);
                } else if b == b' ' || b == b'\t' {
                    s.put(C_AFTER, (digits > 0) as u64);
                } else {
                    return Parse::Slow;
                }
                k += 1;
            }
            if s.take(C_DIGITS) == 0 || s.take(C_DONE) == 0 {
                return Parse::Slow;
            }
            s.put(C_LENGTH, s.take(C_VALUE));
        } else if header_is(s, i, b"transfer-encoding:") {
            // `chunked` alone, with spaces around: the line, spaces trimmed, is 25 bytes
            // from `Transfer-Encoding:` to the end of `chunked`.
            s.put(C_J, s.take(C_I) + 18);
            skip_spaces(s);
            let j = s.take(C_J) as usize & (HEAD_WINDOW - 1);
            if !header_is(s, j, b"chunked") {
                return Parse::Slow;
            }
            s.put(C_J, j as u64 + 7);
            skip_spaces(s);
            if s.take(C_J) != s.take(C_END) {
                return Parse::Slow;
            }
            s.put(C_CHUNKED, 1);
        }
        c += 1;
    }
    let length = s.take(C_LENGTH);
    Parse::Complete(if s.take(C_CHUNKED) != 0 {
        Framing::Chunked
    } else if length != u64::MAX {
        Framing::Length(length)
    } else {
        Framing::None
    })
}

/// Longest `Host` value (spaces trimmed) the kernel keys; a longer one has no key (0) and
/// its request goes to the agent.
pub const MAX_HOST: usize = 64;

/// The key of the head's `Host` value (after [`head`]), as [`host_key_of`] computes it
/// for the value's bytes: its FNV-1a hash, lowercase, spaces around it trimmed (never 0);
/// 0 when the head has no Host, an empty one, or one longer than [`MAX_HOST`]. The walk
/// goes through the scratch's cells, so that the verifier sees one state per byte.
#[inline(always)]
pub fn host_key(s: &mut Scratch) -> u64 {
    s.put(C_HOST_H, crate::route::FNV_OFFSET);
    s.put(C_J, s.take(C_HOST_START) & (HEAD_WINDOW as u64 - 1));
    s.put(C_END, s.take(C_HOST_END) & (HEAD_WINDOW as u64 - 1));
    if s.take(C_J) == 0 {
        return 0;
    }
    skip_spaces(s);
    // The value's end, trailing spaces left out.
    let mut k = 0;
    while k < 8 {
        let e = s.take(C_END) as usize;
        if (e as u64) > s.take(C_J) && at(s, e - 1) == b' ' {
            s.put(C_END, e as u64 - 1);
        }
        k += 1;
    }
    let start = s.take(C_J);
    if s.take(C_END) <= start || s.take(C_END) - start > MAX_HOST as u64 {
        return 0;
    }
    let mut k = 0;
    while k < MAX_HOST {
        let j = s.take(C_J) + k as u64;
        if j >= s.take(C_END) {
            break;
        }
        s.put(C_HOST_H, crate::route::fnv(s.take(C_HOST_H), at(s, j as usize).to_ascii_lowercase()));
        k += 1;
    }
    s.take(C_HOST_H) | 1
}

/// Where the value [`host_key`] keyed is in the scratch buffer: (start, end), right after it.
#[inline(always)]
pub fn host_span(s: &Scratch) -> (usize, usize) {
    (s.take(C_J) as usize, s.take(C_END) as usize)
}

/// The key of a `Host` value's bytes (as [`host_key`] computes it in a head); 0 when empty
/// or longer than [`MAX_HOST`] once trimmed.
pub fn host_key_of(value: &[u8]) -> u64 {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > MAX_HOST {
        return 0;
    }
    v.iter().fold(crate::route::FNV_OFFSET, |h, b| crate::route::fnv(h, b.to_ascii_lowercase())) | 1
}

/// `HTTP/1.0` or `HTTP/1.1` at `i`.
#[inline(always)]
fn version_at(s: &Scratch, i: usize) -> Option<u8> {
    if word(s, i) & 0x00ff_ffff_ffff_ffff != u64::from_le_bytes(*b"HTTP/1.\0") {
        return None;
    }
    match at(s, i + 7) {
        b'0' => Some(VERSION_10),
        b'1' => Some(VERSION_11),
        _ => None,
    }
}

/// The method id of the `len` bytes at the start.
#[inline(always)]
fn method_id(s: &Scratch, len: usize) -> u8 {
    let first = word(s, 0);
    let mut id = 0;
    while id < METHODS.len() {
        let m = METHODS[id];
        if m.len() == len {
            let mut w = [0u8; 8];
            w[..m.len()].copy_from_slice(m);
            let mask = u64::MAX >> (64 - 8 * m.len());
            if first & mask == u64::from_le_bytes(w) {
                return id as u8 + 1;
            }
        }
        id += 1;
    }
    METHOD_OTHER
}

/// A request line at the start of the first `n` bytes: (method id, target start, target
/// end, version), or None. (Sets the captured length for [`head`].)
#[inline(always)]
pub fn request_line(s: &mut Scratch, n: usize) -> Option<(u8, usize, usize, u8)> {
    s.put(C_N, n.min(HEAD_WINDOW) as u64);
    let mut m = 0;
    while m < MAX_METHOD && is_tchar(at(s, m)) {
        m += 1;
    }
    s.put(C_M, m as u64);
    let m = s.take(C_M) as usize & (MAX_METHOD * 2 - 1);
    if m == 0 || at(s, m) != b' ' {
        return None;
    }
    let target_start = m + 1;
    let mut t = target_start;
    while t < target_start + MAX_TARGET {
        let b = at(s, t);
        if b <= b' ' || b >= 0x7f {
            break;
        }
        t += 1;
    }
    s.put(C_T, t as u64);
    let t = s.take(C_T) as usize & (HEAD_WINDOW - 1);
    if t == target_start || t as u64 + 10 >= s.take(C_N) || at(s, t) != b' ' {
        return None;
    }
    let version = version_at(s, t + 1)?;
    if at(s, t + 9) != b'\r' {
        return None;
    }
    Some((method_id(s, m), target_start, t, version))
}

/// A status line at the start of the first `n` bytes: its status code, or None. (Sets the
/// captured length for [`head`].)
#[inline(always)]
pub fn status_line(s: &mut Scratch, n: usize) -> Option<u16> {
    s.put(C_N, n.min(HEAD_WINDOW) as u64);
    if n < 14 || version_at(s, 0).is_none() || at(s, 8) != b' ' {
        return None;
    }
    let (a, b, c) = (at(s, 9), at(s, 10), at(s, 11));
    if !a.is_ascii_digit() || !b.is_ascii_digit() || !c.is_ascii_digit() || a == b'0' {
        return None;
    }
    Some((a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16)
}

/// The rest of a head after its first line (as [`request_line`] or [`status_line`] left
/// the scratch): its framing and its length.
#[inline(always)]
pub fn head(s: &mut Scratch) -> Parse<(Framing, usize)> {
    if !scan(s) {
        return Parse::Slow;
    }
    match framing(s) {
        Parse::Complete(framing) => Parse::Complete((framing, s.take(C_LEN) as usize & (HEAD_WINDOW * 2 - 1))),
        Parse::Slow => Parse::Slow,
    }
}

/// A request head at the start of the first `n` bytes of the scratch buffer.
pub fn parse_request(s: &mut Scratch, n: usize) -> Parse<RequestHead> {
    let Some((method, target_start, target_end, version)) = request_line(s, n) else { return Parse::Slow };
    match head(s) {
        Parse::Complete((framing, len)) => Parse::Complete(RequestHead { method, version, target_start, target_end, len, framing }),
        Parse::Slow => Parse::Slow,
    }
}

/// A response head at the start of the first `n` bytes of the scratch buffer.
pub fn parse_response(s: &mut Scratch, n: usize) -> Parse<ResponseHead> {
    let Some(status) = status_line(s, n) else { return Parse::Slow };
    match head(s) {
        Parse::Complete((framing, len)) => Parse::Complete(ResponseHead { status, len, framing }),
        Parse::Slow => Parse::Slow,
    }
}

/// Does a write whose last bytes are `tail[..n]` close a chunked body?
#[inline(always)]
pub fn ends_chunked(tail: &[u8; 16], n: usize) -> bool {
    let last = |k: usize| if k <= n { tail[(n - k) & 15] } else { 0 };
    let terminator = last(5) == b'0' && last(4) == b'\r' && last(3) == b'\n' && last(2) == b'\r' && last(1) == b'\n';
    terminator && (n == 5 || (last(7) == b'\r' && last(6) == b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scratch with `s` captured, and garbage after it (as a reused buffer has).
    fn buf(s: &[u8]) -> (Scratch, usize) {
        let mut b = Scratch::new();
        b.buf.fill(b'\n');
        let n = s.len().min(HEAD_WINDOW);
        b.buf[..n].copy_from_slice(&s[..n]);
        (b, s.len())
    }

    fn req(s: &[u8]) -> Parse<RequestHead> {
        let (mut b, n) = buf(s);
        parse_request(&mut b, n)
    }

    fn resp(s: &[u8]) -> Parse<ResponseHead> {
        let (mut b, n) = buf(s);
        parse_response(&mut b, n)
    }

    /// Control bytes in a head are httparse's to refuse (the agent counts a malformed
    /// request); a tab or obs-text in a value is fine.
    #[test]
    fn control_bytes_send_a_head_to_the_agent() {
        assert_eq!(req(b"GET /hello HTTP/1.1\r\nHost: x\x00y\r\n\r\n"), Parse::Slow);
        assert_eq!(req(b"GET /hello HTTP/1.1\r\nHost: x\x7fy\r\n\r\n"), Parse::Slow);
        assert_eq!(req(b"GET /hello HTTP/1.1\r\nHost: x\x1by\r\n\r\n"), Parse::Slow);
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\nX: \x01\r\nContent-Length: 0\r\n\r\n"), Parse::Slow);
        assert!(matches!(req(b"GET /hello HTTP/1.1\r\nHost:\tx\xc3\xa9\r\n\r\n"), Parse::Complete(_)));
        assert_eq!(req(b"GET /hello HTTP/1.1\r\nHost: x\ny\r\n\r\n"), Parse::Slow, "a bare LF");
    }

    /// The Host value's key, as the kernel finds it in a head, is the key of its bytes.
    #[test]
    fn host_keys() {
        let key = |head: &[u8]| {
            let (mut b, n) = buf(head);
            assert!(matches!(parse_request(&mut b, n), Parse::Complete(_)), "{head:?}");
            host_key(&mut b)
        };
        let cases: &[(&[u8], &[u8])] = &[
            (b"GET / HTTP/1.1\r\nHost: api.example.com:8080\r\n\r\n", b"api.example.com:8080"),
            (b"GET / HTTP/1.1\r\nhost:Api.Example.com  \r\nAccept: */*\r\n\r\n", b"api.example.com"),
            (b"POST /x HTTP/1.1\r\nContent-Length: 0\r\nX: 1\r\nHOST:   app\r\n\r\n", b"app"),
        ];
        for (head, value) in cases {
            assert_eq!(key(head), host_key_of(value), "{:?}", core::str::from_utf8(head));
            assert_ne!(key(head), 0);
        }
        assert_eq!(key(b"GET / HTTP/1.0\r\n\r\n"), 0, "no Host");
        assert_eq!(key(b"GET / HTTP/1.1\r\nHost: \r\n\r\n"), 0, "an empty Host");
        assert_eq!(key(b"GET / HTTP/1.1\r\nHostname: x\r\n\r\n"), 0, "another header");
        let long = [b"GET / HTTP/1.1\r\nHost: ".as_slice(), &[b'a'; MAX_HOST + 1], b"\r\n\r\n"].concat();
        assert_eq!(key(&long), 0, "longer than MAX_HOST");
        assert_ne!(host_key_of(b"a"), host_key_of(b"b"));
        // Host and other h lines take none of the candidates' places.
        let many = b"GET / HTTP/1.1\r\nHost: a\r\nHX-Request: true\r\nHX-Target: x\r\nC1: 1\r\nC2: 2\r\nC3: 3\r\nC4: 4\r\nT5: 5\r\nT6: 6\r\nT7: 7\r\nCookie: 8\r\n\r\n";
        assert_eq!(key(many), host_key_of(b"a"));
    }

    #[test]
    fn plain_requests() {
        let r = b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
        let Parse::Complete(h) = req(r) else { panic!() };
        assert_eq!((h.method, h.version, &r[h.target_start..h.target_end], h.len, h.framing), (1, VERSION_11, &b"/hello?x=1"[..], r.len(), Framing::None));
        let r = b"POST /api HTTP/1.0\r\nContent-Length: 12\r\nX: y\r\n\r\nhello world!";
        let Parse::Complete(h) = req(r) else { panic!() };
        assert_eq!((h.method, h.version, h.framing, h.len), (3, VERSION_10, Framing::Length(12), r.len() - 12));
        let r = b"PUT /x HTTP/1.1\r\ntransfer-encoding: chunked\r\nCookie: a=1\r\nConnection: close\r\n\r\n";
        assert!(matches!(req(r), Parse::Complete(RequestHead { method: 4, framing: Framing::Chunked, .. })));
        let r = b"PROPFIND /x HTTP/1.1\r\n\r\n";
        assert!(matches!(req(r), Parse::Complete(RequestHead { method: METHOD_OTHER, len: 24, .. })));
        let r = b"get /x HTTP/1.1\r\n\r\n";
        assert!(matches!(req(r), Parse::Complete(RequestHead { method: METHOD_OTHER, .. })));
        let r = b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert!(matches!(req(r), Parse::Complete(RequestHead { method: METHOD_HEAD, len: 19, .. })));
        for (m, id) in [(&b"DELETE"[..], 5), (b"PATCH", 9), (b"OPTIONS", 7)] {
            let r = [m, b" /x HTTP/1.1\r\n\r\n"].concat();
            assert!(matches!(req(&r), Parse::Complete(RequestHead { method, .. }) if method == id));
        }
    }

    #[test]
    fn what_is_not_plain_is_slow() {
        let long = [&b"GET /x HTTP/1.1\r\nCookie: "[..], &[b'a'; 600], b"\r\n\r\n"].concat();
        for r in [
            &b"GET /hello HTTP/1.1\r\nHost: x\r\n"[..], // cut: the head goes on
            b"GET /hello HTTP/1.1\r\nHost: x",
            b"GET /hello HTTP/1.1\r\n\r",
            b"GET /a b HTTP/1.1\r\n\r\n", // a space in the target
            b"GET /a HTTP/2.0\r\n\r\n",
            b"GET /a HTTP/1.1\n\n", // bare LF
            b"GET /a HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n",
            b"GET /a HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", // a list: the agent's
            b"GET /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"\x16\x03\x01",
            b"",
            &long, // beyond the window
        ] {
            assert_eq!(req(r), Parse::Slow, "{:?}", r);
        }
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n";
        assert_eq!(resp(r), Parse::Complete(ResponseHead { status: 200, len: r.len() - 12, framing: Framing::Length(12) }));
        let r = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
        assert_eq!(resp(r), Parse::Complete(ResponseHead { status: 500, len: r.len() - 10, framing: Framing::Chunked }));
        let r = b"HTTP/1.0 200 OK\r\n\r\n";
        assert_eq!(resp(r), Parse::Complete(ResponseHead { status: 200, len: r.len(), framing: Framing::None }));
        let r = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert!(matches!(resp(r), Parse::Complete(ResponseHead { status: 100, len: 25, .. })));
        for r in [&b"HTTP/1.1 200 OK\r\nContent-"[..], b"HTTP/1.1 099 X\r\n\r\n", b"HTTP/2 200\r\n\r\n", b"hello"] {
            assert_eq!(resp(r), Parse::Slow, "{:?}", r);
        }
    }

    #[test]
    fn chunked_ends() {
        let t = |s: &[u8]| {
            let mut b = [0u8; 16];
            let n = s.len().min(16);
            b[..n].copy_from_slice(&s[s.len() - n..]);
            ends_chunked(&b, n)
        };
        assert!(t(b"0\r\n\r\n"));
        assert!(t(b"data\r\n0\r\n\r\n"));
        assert!(!t(b"10\r\n\r\n"));
        assert!(!t(b"\r\n"));
        assert!(!t(b"x0\r\n\r\n"));
    }
}
