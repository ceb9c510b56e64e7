//! A head (request or response) accumulated across events until it parses: the part both
//! sides of a connection share.
use super::piece::Piece;
use crate::http::{HeadParse, MAX_HEAD};

/// What feeding a piece to a head gave.
pub(super) enum Fed<T> {
    /// The head is complete; the body (or the next head) starts at `end` in the piece.
    Complete { head: T, end: u64 },
    /// The head continues in the next event.
    More,
    /// The rest of the head was not captured (beyond the window), or it outgrew
    /// [`MAX_HEAD`]: only its first line can be read, from `buf`.
    Cut,
    /// Not a head.
    Invalid,
}

/// The bytes of a head so far.
#[derive(Debug, Default)]
pub(super) struct HeadBuf {
    pub buf: Vec<u8>,
}

impl HeadBuf {
    /// Adds what the piece captured from `pos` (which must be captured: `known`) and parses.
    pub fn feed<T>(&mut self, p: &Piece<'_>, pos: u64, known: &[u8], parse: fn(&[u8]) -> HeadParse<T>) -> Fed<T> {
        let prev = self.buf.len();
        self.buf.extend_from_slice(&known[..known.len().min(MAX_HEAD.saturating_sub(prev))]);
        match parse(&self.buf) {
            HeadParse::Complete(head, n) => Fed::Complete { head, end: pos + (n - prev) as u64 },
            HeadParse::Partial => {
                let captured_all = pos + known.len() as u64 >= p.len;
                if captured_all && self.buf.len() < MAX_HEAD { Fed::More } else { Fed::Cut }
            }
            HeadParse::Invalid => Fed::Invalid,
        }
    }
}
