//! Reading /proc/PID/stat, shared by target selection and the process metrics.

/// A parsed /proc/PID/stat line. The command name is in parentheses and may itself hold
/// spaces and parentheses, so the other fields are counted from the last ')'.
pub struct Stat<'a> {
    pub comm: &'a str,
    /// Fields 3 and after.
    rest: Vec<&'a str>,
}

impl<'a> Stat<'a> {
    pub fn parse(stat: &'a str) -> Option<Self> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        Some(Stat { comm: stat.get(open + 1..close)?, rest: stat.get(close + 1..)?.split_whitespace().collect() })
    }

    /// Field `n` as numbered in proc(5) (1-based; `n >= 3`).
    pub fn field<T: std::str::FromStr>(&self, n: usize) -> Option<T> {
        self.rest.get(n.checked_sub(3)?)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_after_an_odd_command_name() {
        let s = Stat::parse("7 (a (b) c) S 1 7 7 0 -1 0 0 0 0 0 200 100").unwrap();
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.field::<u32>(4), Some(1));
        assert_eq!(s.field::<u64>(15), Some(100));
        assert_eq!(s.field::<u64>(16), None);
        assert!(Stat::parse("garbage").is_none());
    }
}
