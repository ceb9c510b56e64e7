//! Incremental parser of chunked transfer coding (RFC 9112 §7.1), fed with the bytes we
//! captured and told how many bytes we did not capture.

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line; holds the hex digits seen so far.
    Size { value: u64, digits: u32, in_extension: bool },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after chunk data, this many bytes left.
    DataEnd(u8),
    /// Trailer section; `line_empty` is true at the start of a line.
    Trailer { line_empty: bool },
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkParser {
    state: State,
}

/// The parser needed to see bytes that were not captured.
#[derive(Debug, PartialEq, Eq)]
pub struct Blind;

impl Default for ChunkParser {
    fn default() -> Self {
        ChunkParser { state: State::Size { value: 0, digits: 0, in_extension: false } }
    }
}

impl ChunkParser {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds captured bytes; returns how many were part of the body (the rest follow
    /// the body's end).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, Blind> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match &mut self.state {
                State::Size { value, digits, in_extension } => {
                    if b == b'\n' {
                        if *digits == 0 {
                            return Err(Blind); // malformed: treat like lost sync
                        }
                        self.state = if *value == 0 {
                            State::Trailer { line_empty: true }
                        } else {
                            State::Data(*value)
                        };
                    } else if !*in_extension && b.is_ascii_hexdigit() {
                        *value = value.saturating_mul(16).saturating_add((b as char).to_digit(16).unwrap_or(0) as u64);
                        *digits += 1;
                    } else if b == b';' {
                        *in_extension = true;
                    }
                    i += 1;
                }
                State::Data(left) => {
                    let take = (*left).min((bytes.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        self.state = State::DataEnd(2);
                    }
                }
                State::DataEnd(left) => {
                    *left -= 1;
                    i += 1;
                    if *left == 0 || b == b'\n' {
                        self.state = State::Size { value: 0, digits: 0, in_extension: false };
                    }
                }
                State::Trailer { line_empty } => {
                    i += 1;
                    if b == b'\n' {
                        if *line_empty {
                            self.state = State::Done;
                            return Ok(i);
                        }
                        *line_empty = true;
                    } else if b != b'\r' {
                        *line_empty = false;
                    }
                }
                State::Done => return Ok(i),
            }
        }
        Ok(i)
    }

    /// Skips `n` bytes we did not capture. Possible only inside chunk data.
    pub fn skip(&mut self, n: u64) -> Result<(), Blind> {
        if n == 0 {
            return Ok(());
        }
        match &mut self.state {
            State::Data(left) if *left >= n => {
                *left -= n;
                if *left == 0 {
                    self.state = State::DataEnd(2);
                }
                Ok(())
            }
            _ => Err(Blind),
        }
    }
}

/// When the chunk boundaries were not captured, the end of the body is recognised by the
/// last-chunk marker at the very end of a write.
pub fn ends_with_last_chunk(bytes: &[u8]) -> bool {
    bytes == b"0\r\n\r\n" || bytes.ends_with(b"\r\n0\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_body_in_pieces() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET /next";
        for split in 0..body.len() {
            let mut p = ChunkParser::default();
            let a = p.feed(&body[..split]).unwrap();
            assert_eq!(a, split.min(32));
            if !p.is_done() {
                let b = p.feed(&body[split..]).unwrap();
                assert_eq!(a + b, 32, "split at {split}");
            }
            assert!(p.is_done());
        }
    }

    #[test]
    fn trailers_and_skips() {
        let mut p = ChunkParser::default();
        assert_eq!(p.feed(b"a\r\n0123"), Ok(7));
        assert_eq!(p.skip(6), Ok(()));
        assert_eq!(p.feed(b"\r\n0\r\nX-T: 1\r\n\r\n"), Ok(15));
        assert!(p.is_done());
        let mut p = ChunkParser::default();
        assert_eq!(p.feed(b"10\r\n"), Ok(4));
        assert_eq!(p.skip(17), Err(Blind));
        assert_eq!(ChunkParser::default().feed(b"\r\n"), Err(Blind));
    }

    #[test]
    fn a_chunk_size_beyond_u64_saturates() {
        let mut p = ChunkParser::default();
        assert_eq!(p.feed(b"ffffffffffffffff1\r\n"), Ok(19));
        assert!(!p.is_done());
    }

    #[test]
    fn last_chunk_marker() {
        assert!(ends_with_last_chunk(b"0\r\n\r\n"));
        assert!(ends_with_last_chunk(b"abc\r\n0\r\n\r\n"));
        assert!(!ends_with_last_chunk(b"10\r\n\r\n"));
    }
}
