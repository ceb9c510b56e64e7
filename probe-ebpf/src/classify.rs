//! First-bytes classification of a connection. Only the start of a request line is
//! checked here; the agent parses everything with httparse.

/// The first four bytes of every standard HTTP/1.x request method, as little-endian u32.
const METHOD_PREFIXES: [u32; 9] = [
    u32::from_le_bytes(*b"GET "),
    u32::from_le_bytes(*b"POST"),
    u32::from_le_bytes(*b"PUT "),
    u32::from_le_bytes(*b"HEAD"),
    u32::from_le_bytes(*b"DELE"),
    u32::from_le_bytes(*b"PATC"),
    u32::from_le_bytes(*b"OPTI"),
    u32::from_le_bytes(*b"CONN"),
    u32::from_le_bytes(*b"TRAC"),
];

/// Does a buffer starting with `first4` (little-endian) look like an HTTP request?
#[inline(always)]
pub fn starts_request(first4: u32) -> bool {
    let mut i = 0;
    while i < METHOD_PREFIXES.len() {
        if METHOD_PREFIXES[i] == first4 {
            return true;
        }
        i += 1;
    }
    false
}
