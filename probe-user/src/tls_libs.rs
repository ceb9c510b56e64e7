//! Which TLS library a process uses, and where its calls start: pure functions over a
//! process's memory map and an ELF file's bytes (table-tested below; the binary's
//! `tls_probes.rs` attaches the uprobes).
//!
//! Covered: OpenSSL 1.1 and 3 and BoringSSL, as a shared `libssl` or linked into the
//! executable (Node ships OpenSSL inside `node` and exports its symbols). The probes are
//! `SSL_read`, `SSL_write` (required), `SSL_read_ex`, `SSL_write_ex` (OpenSSL 1.1.1 and
//! later) and `SSL_do_handshake` (optional). Go's `crypto/tls` is recognised and reported as
//! not covered yet.
use object::{Object, ObjectSegment, ObjectSymbol};

/// One uprobe: a symbol, the eBPF program its entry runs, and whether its return is probed
/// too (`rp_ssl_return`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    pub symbol: &'static str,
    pub program: &'static str,
    pub required: bool,
}

/// The eBPF program every probed call's return runs.
pub const RETURN_PROGRAM: &str = "rp_ssl_return";

pub const PROBE_POINTS: [ProbePoint; 5] = [
    ProbePoint { symbol: "SSL_read", program: "rp_ssl_read", required: true },
    ProbePoint { symbol: "SSL_write", program: "rp_ssl_write", required: true },
    ProbePoint { symbol: "SSL_read_ex", program: "rp_ssl_read_ex", required: false },
    ProbePoint { symbol: "SSL_write_ex", program: "rp_ssl_write_ex", required: false },
    ProbePoint { symbol: "SSL_do_handshake", program: "rp_ssl_handshake", required: false },
];

/// Which library an ELF file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    OpenSsl,
    BoringSsl,
}

impl Flavor {
    pub fn label(self) -> &'static str {
        match self {
            Flavor::OpenSsl => "openssl",
            Flavor::BoringSsl => "boringssl",
        }
    }
}

/// Where the probes go in one file: (probe point, file offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub flavor: Flavor,
    pub points: Vec<(ProbePoint, u64)>,
}

/// Why a file that does TLS cannot be probed. Each is the `reason` label of
/// `redprobe_tls_unprobed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Unprobeable {
    /// A libssl (or an executable with TLS code) without the `SSL_read`/`SSL_write`
    /// symbols: stripped, or a library we do not know.
    #[error("no SSL_read/SSL_write symbols (stripped, or an unknown TLS library)")]
    SymbolsMissing,
    /// Go's crypto/tls: not covered yet.
    #[error("Go crypto/tls is not covered yet")]
    GoCryptoTls,
    /// Not an ELF file we can read.
    #[error("not a readable ELF file")]
    NotElf,
    /// The kernel refused the uprobe (tracefs, perf_event_open or the program's attach).
    #[error("the uprobes could not be attached")]
    AttachFailed,
}

impl Unprobeable {
    pub const ALL: [Unprobeable; 4] =
        [Unprobeable::SymbolsMissing, Unprobeable::GoCryptoTls, Unprobeable::NotElf, Unprobeable::AttachFailed];

    pub fn label(self) -> &'static str {
        match self {
            Unprobeable::SymbolsMissing => "symbols_missing",
            Unprobeable::GoCryptoTls => "go_crypto_tls",
            Unprobeable::NotElf => "not_elf",
            Unprobeable::AttachFailed => "attach_failed",
        }
    }
}

/// Whether a mapped file's name says it is a TLS library worth reading: `libssl.so*`
/// (OpenSSL, and BoringSSL as Android and some distributions name it).
pub fn is_tls_library_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libssl.so") || name.starts_with("libssl-") && name.contains(".so")
}

/// The probe points of an ELF file: `Ok(None)` if it has no TLS code at all (most
/// executables), an error if it has TLS code we cannot probe.
pub fn resolve(data: &[u8]) -> Result<Option<Resolved>, Unprobeable> {
    let file = object::File::parse(data).map_err(|_| Unprobeable::NotElf)?;
    let mut found: Vec<(ProbePoint, u64)> = Vec::new();
    let mut boring = false;
    let mut go_tls = false;
    let mut consider = |name: &[u8], address: u64, defined: bool| {
        if !defined || address == 0 {
            return;
        }
        if name == b"OPENSSL_is_boringssl" || name == b"BORINGSSL_self_test" {
            boring = true;
        }
        if name == b"crypto/tls.(*Conn).Read" {
            go_tls = true;
        }
        for p in PROBE_POINTS {
            if name == p.symbol.as_bytes() && !found.iter().any(|(q, _)| q.symbol == p.symbol) {
                found.push((p, address));
            }
        }
    };
    for s in file.dynamic_symbols() {
        consider(s.name_bytes().unwrap_or_default(), s.address(), s.is_definition());
    }
    for s in file.symbols() {
        consider(s.name_bytes().unwrap_or_default(), s.address(), s.is_definition());
    }
    let has = |symbol: &str| found.iter().any(|(p, _)| p.symbol == symbol);
    if !has("SSL_read") || !has("SSL_write") {
        if go_tls {
            return Err(Unprobeable::GoCryptoTls);
        }
        // A file named libssl with neither: stripped. An executable with one of them only,
        // or none: no TLS code we know.
        return if found.is_empty() { Ok(None) } else { Err(Unprobeable::SymbolsMissing) };
    }
    let mut points = Vec::new();
    for (p, address) in found {
        let Some(offset) = file_offset(&file, address) else { return Err(Unprobeable::NotElf) };
        points.push((p, offset));
    }
    points.sort_by_key(|(p, _)| PROBE_POINTS.iter().position(|q| q == p));
    let flavor = if boring { Flavor::BoringSsl } else { Flavor::OpenSsl };
    Ok(Some(Resolved { flavor, points }))
}

/// The file offset of a virtual address: the loadable segment that holds it.
fn file_offset(file: &object::File<'_>, address: u64) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (offset, size) = seg.file_range();
        let start = seg.address();
        (address >= start && address < start + size).then(|| address - start + offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        for (path, tls) in [
            ("/usr/lib/x86_64-linux-gnu/libssl.so.3", true),
            ("/lib/libssl.so.1.1", true),
            ("/usr/lib/libssl-3.so", true),
            ("/usr/lib/x86_64-linux-gnu/libcrypto.so.3", false),
            ("/usr/lib/libssl3.so", false),
            ("/usr/bin/node", false),
        ] {
            assert_eq!(is_tls_library_name(path), tls, "{path}");
        }
    }

    #[test]
    fn system_libssl_resolves() {
        // The host's own libssl, when there is one: every required point, at offsets
        // inside the file.
        let Some(path) = ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/lib/x86_64-linux-gnu/libssl.so.3"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            return;
        };
        let data = std::fs::read(path).unwrap();
        let r = resolve(&data).unwrap().expect("libssl has TLS symbols");
        assert_eq!(r.flavor, Flavor::OpenSsl);
        let names: Vec<_> = r.points.iter().map(|(p, _)| p.symbol).collect();
        assert_eq!(names, ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_do_handshake"]);
        assert!(r.points.iter().all(|(_, o)| (*o as usize) < data.len()));
    }

    #[test]
    fn files_without_tls_code() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(resolve(&own), Ok(None));
        assert_eq!(resolve(b"not an elf"), Err(Unprobeable::NotElf));
    }
}
