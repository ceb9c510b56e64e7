//! Which path segments are identifiers (`42`, a UUID, a hex digest, a date, an e-mail, a
//! random token), and the hash of a path with them folded to `{id}`. One definition for
//! both sides: the agent's route heuristic folds the segments this says are identifiers,
//! and the kernel's fast path keys a request's route by the hash of its folded path, so
//! `/users/1` and `/users/2` share one key, which the agent maps to `/users/{id}`.
//! Pure and `no_std`, with table tests on the host.

use crate::http1::Scratch;

/// What an identifier test needs to know of a segment, gathered a byte at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentStats {
    len: u32,
    digits: u32,
    upper: u32,
    lower: u32,
    not_hex: u32,
    not_token: u32,
    at: u32,
    dot: u32,
    not_uuid: u32,
    not_date: u32,
}

const DIGIT: u16 = 1;
const UPPER: u16 = 2;
const LOWER: u16 = 4;
const HEX: u16 = 8;
const TOKEN: u16 = 16;
const AT: u16 = 32;
const DOT: u16 = 64;
const SEP: u16 = 128; // `-`, `_` or `.`: a date's separators
const DASH: u16 = 256;

/// Each byte's classes, looked up instead of compared: the kernel's loop over a path then
/// has no branch per class (the verifier would explore each).
static CLASSES: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_digit() {
            c |= DIGIT;
        }
        if b.is_ascii_uppercase() {
            c |= UPPER;
        }
        if b.is_ascii_lowercase() {
            c |= LOWER;
        }
        if b.is_ascii_hexdigit() {
            c |= HEX;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.' | b'~' | b'+' | b'%') {
            c |= TOKEN;
        }
        if b == b'@' {
            c |= AT;
        }
        if b == b'.' {
            c |= DOT;
        }
        if matches!(b, b'-' | b'_' | b'.') {
            c |= SEP;
        }
        if b == b'-' {
            c |= DASH;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Where a UUID has a `-` (1) and where a hex digit (1): no position past 36 has either,
/// so a longer segment is no UUID. A date likewise: separators at 4 and 7, digits else.
const fn positions(len: usize, seps: [usize; 4]) -> ([u8; 64], [u8; 64]) {
    let (mut sep, mut other) = ([0u8; 64], [0u8; 64]);
    let mut i = 0;
    while i < len {
        if i == seps[0] || i == seps[1] || i == seps[2] || i == seps[3] {
            sep[i] = 1;
        } else {
            other[i] = 1;
        }
        i += 1;
    }
    (sep, other)
}
static UUID_AT: ([u8; 64], [u8; 64]) = positions(36, [8, 13, 18, 23]);
static DATE_AT: ([u8; 64], [u8; 64]) = positions(10, [4, 7, 99, 99]);

impl SegmentStats {
    /// One more byte of the segment: arithmetic only, no branch.
    #[inline(always)]
    pub fn push(&mut self, b: u8) {
        let c = CLASSES[b as usize] as u32;
        let bit = |m: u16| (c >> m.trailing_zeros()) & 1;
        // Past 63 the position wraps: the segment failed both shapes by then, for good.
        let pos = self.len as usize & 63;
        self.len += 1;
        self.digits += bit(DIGIT);
        self.upper += bit(UPPER);
        self.lower += bit(LOWER);
        self.not_hex += 1 - bit(HEX);
        self.not_token += 1 - bit(TOKEN);
        self.at += bit(AT);
        self.dot += bit(DOT);
        // A uuid: a dash where one goes, a hex digit elsewhere, nothing past 36.
        let uuid_ok = UUID_AT.0[pos] as u32 * bit(DASH) + UUID_AT.1[pos] as u32 * bit(HEX);
        self.not_uuid += 1 - uuid_ok;
        let date_ok = DATE_AT.0[pos] as u32 * bit(SEP) + DATE_AT.1[pos] as u32 * bit(DIGIT);
        self.not_date += 1 - date_ok;
    }

    pub fn of(segment: &[u8]) -> Self {
        let mut s = SegmentStats::default();
        for b in segment {
            s.push(*b);
        }
        s
    }

    /// Does the segment look like an identifier rather than a name?
    #[inline(always)]
    pub fn is_identifier(&self) -> bool {
        let (len, digits) = (self.len, self.digits);
        let token = self.not_token == 0;
        len > 0
            && (digits == len                                                   // 42
                || (len == 36 && self.not_uuid == 0)                            // 123e4567-e89b-...
                || (len >= 8 && digits > 0 && self.not_hex == 0)                // deadbeef01, a sha
                || (len == 10 && self.not_date == 0)                            // 2024-01-31
                || (self.at > 0 && self.dot > 0)                                // someone@example.com
                || (len >= 16 && digits > 0 && token)                           // ab12cd34ef56gh78
                || (len >= 20 && self.upper > 0 && self.lower > 0 && token)     // base64 / random
                || (digits * 2 >= len && digits >= 3 && token))                 // ord-20240131-77
    }
}

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
pub(crate) fn fnv(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(FNV_PRIME)
}

/// The hash of `{id}` after a `/`, from `h`.
#[inline(always)]
fn folded(h: u64) -> u64 {
    fnv(fnv(fnv(fnv(fnv(h, b'/'), b'{'), b'i'), b'd'), b'}')
}

/// Longest path (to its `?` or `#`) the kernel hashes; longer ones have no key (0) and
/// are routed by the agent each time.
pub const MAX_PATH: usize = 192;

/// The key of the path in `buf[start..end]` (an origin-form target): the hash of the path
/// (up to its `?` or `#`) with its identifier segments folded to `{id}`; 0 when there is no
/// key (not origin form, or longer than [`MAX_PATH`]). The hash goes through the scratch's
/// cells, so that the verifier sees one state per byte.
#[inline(always)]
pub fn path_key(s: &mut Scratch, start: usize, end: usize) -> u64 {
    s.put(C_H, FNV_OFFSET);
    s.put(C_SEG_H, fnv(FNV_OFFSET, b'/'));
    s.put_stats(SegmentStats::default());
    s.put(C_END, end as u64);
    if s.byte(start) != b'/' {
        return 0;
    }
    let mut k = 1;
    while k < MAX_PATH + 1 {
        let i = start + k;
        let b = s.byte(i);
        let at_end = i as u64 >= s.take(C_END) || b == b'?' || b == b'#';
        if at_end || b == b'/' {
            // The segment ends: folded, or as it was.
            let h = if s.stats().is_identifier() { folded(s.take(C_H)) } else { s.take(C_SEG_H) };
            if at_end {
                return h | 1; // never 0
            }
            s.put(C_H, h);
            s.put(C_SEG_H, fnv(h, b'/'));
            s.put_stats(SegmentStats::default());
        } else {
            s.put(C_SEG_H, fnv(s.take(C_SEG_H), b));
            let mut st = s.stats();
            st.push(b);
            s.put_stats(st);
        }
        k += 1;
    }
    0
}

/// The key the agent computes for a path it was told of, to check the kernel's (tests).
pub fn path_key_of(path: &[u8]) -> u64 {
    let mut s = Scratch::new();
    let n = path.len().min(s.buf.len() - 1);
    s.buf[..n].copy_from_slice(&path[..n]);
    path_key(&mut s, 0, n)
}

const C_H: usize = 32;
const C_SEG_H: usize = 33;
const C_END: usize = 34;
const C_STATS: usize = 35;

impl Scratch {
    #[inline(always)]
    fn stats(&self) -> SegmentStats {
        let w = |i| self.take(C_STATS + i);
        SegmentStats {
            len: w(0) as u32,
            digits: (w(0) >> 32) as u32,
            upper: w(1) as u32,
            lower: (w(1) >> 32) as u32,
            not_hex: w(2) as u32,
            not_token: (w(2) >> 32) as u32,
            at: w(3) as u32,
            dot: (w(3) >> 32) as u32,
            not_uuid: w(4) as u32,
            not_date: (w(4) >> 32) as u32,
        }
    }

    #[inline(always)]
    fn put_stats(&mut self, st: SegmentStats) {
        let pair = |a: u32, b: u32| a as u64 | (b as u64) << 32;
        self.put(C_STATS, pair(st.len, st.digits));
        self.put(C_STATS + 1, pair(st.upper, st.lower));
        self.put(C_STATS + 2, pair(st.not_hex, st.not_token));
        self.put(C_STATS + 3, pair(st.at, st.dot));
        self.put(C_STATS + 4, pair(st.not_uuid, st.not_date));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for (seg, want) in [
            ("42", true),
            ("123e4567-e89b-12d3-a456-426614174000", true),
            ("9fceb02d0ae598e95dc970b74767f19372d61af8", true),
            ("2024-01-31", true),
            ("jane.doe@example.com", true),
            ("ab12cd34ef56gh78", true),
            ("aGVsbG8gd29ybGQ9PT1zZWNyZXQx", true),
            ("ord-20240131-77", true),
            ("hello", false),
            ("app.3f2a9c1b.js", false),
            ("v1", false),
            ("deadbeef", false),
            ("userProfileSettings", false),
            ("", false),
        ] {
            assert_eq!(SegmentStats::of(seg.as_bytes()).is_identifier(), want, "{seg}");
        }
    }

    #[test]
    fn keys_fold_identifiers_and_keep_names() {
        let k = path_key_of;
        assert_eq!(k(b"/users/1"), k(b"/users/22"));
        assert_eq!(k(b"/users/1?tab=x"), k(b"/users/2#f"));
        assert_eq!(k(b"/orders/123e4567-e89b-12d3-a456-426614174000/items"), k(b"/orders/00000000-0000-0000-0000-000000000000/items"));
        assert_ne!(k(b"/users/1"), k(b"/users/me"));
        assert_ne!(k(b"/hello"), k(b"/hello/"));
        assert_ne!(k(b"/a/b"), k(b"/ab"));
        assert_ne!(k(b"/"), 0);
        assert_eq!(k(b"*"), 0);
        assert_eq!(k(b"http://h/x"), 0);
        assert_eq!(k(&[b"/".as_slice(), &[b'a'; 300]].concat()), 0, "too long");
    }
}
