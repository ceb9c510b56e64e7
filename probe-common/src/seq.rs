//! TCP sequence numbers, compared modulo 2^32 (RFC 793's arithmetic): the kernel's arrival
//! stamps and waits for the last byte sent, and the agent's parked exchanges, all order
//! them with this one function.

/// Is sequence number `a` before `b`, modulo 2^32?
#[inline(always)]
pub fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::before;

    #[test]
    fn sequence_numbers_wrap() {
        for (a, b, want) in [
            (5, 5, false),
            (4, 5, true),
            (10, 9, false),
            (u32::MAX - 2, 3, true),
            (3, u32::MAX - 2, false),
            (0, (1 << 31) - 1, true), // just under half the space ahead
            ((1 << 31) + 1, 0, true), // just over half the space behind: wrapped
        ] {
            assert_eq!(before(a, b), want, "before({a}, {b})");
        }
    }
}
