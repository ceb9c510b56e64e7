//! The geometry of one event's bytes: how many moved, and which of them were captured (the
//! head window from the start, the tail window at the end).
use crate::chunked::{Blind, ChunkParser};

/// Where the captured bytes of one event are, relative to its start.
pub(super) struct Piece<'a> {
    pub len: u64,
    pub head: &'a [u8],
    pub tail: &'a [u8],
}

impl<'a> Piece<'a> {
    /// Captured bytes of the head window at `pos` and after.
    pub fn head_at(&self, pos: u64) -> Option<&'a [u8]> {
        (pos < self.head.len() as u64).then(|| &self.head[pos as usize..])
    }

    fn tail_start(&self) -> u64 {
        self.len - self.tail.len() as u64
    }

    /// Captured bytes (head or tail window) at `pos` and after.
    pub fn known_at(&self, pos: u64) -> Option<&'a [u8]> {
        if let Some(head) = self.head_at(pos) {
            return Some(head);
        }
        let start = self.tail_start();
        (!self.tail.is_empty() && pos >= start && pos < self.len).then(|| &self.tail[(pos - start) as usize..])
    }

    /// The next position after `pos` where captured bytes start (or the end).
    pub fn next_known(&self, pos: u64) -> u64 {
        let start = self.tail_start();
        if !self.tail.is_empty() && pos < start { start } else { self.len }
    }

    /// The last captured bytes: the tail, or the head when it was captured whole.
    pub fn end(&self) -> &'a [u8] {
        if !self.tail.is_empty() {
            self.tail
        } else if self.head.len() as u64 == self.len {
            self.head
        } else {
            &[]
        }
    }

    /// Runs a chunk parser over the piece from `pos`; returns where the body ended (or the
    /// piece's end). Fails if a chunk-size line falls where nothing was captured.
    pub fn run_chunks(&self, parser: &mut ChunkParser, mut pos: u64) -> Result<u64, Blind> {
        while pos < self.len && !parser.is_done() {
            match self.known_at(pos) {
                Some(known) => pos += parser.feed(known)? as u64,
                None => {
                    let next = self.next_known(pos);
                    parser.skip(next - pos)?;
                    pos = next;
                }
            }
        }
        Ok(pos)
    }
}
