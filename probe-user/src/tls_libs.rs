//! Which TLS library a process uses, and where its calls start: pure functions over a
//! process's memory map and an ELF file's bytes (table-tested below; the binary's
//! `tls_probes.rs` attaches the uprobes).
//!
//! Covered: OpenSSL 1.1 and 3 and BoringSSL, as a shared `libssl` or linked into the
//! executable (Node ships OpenSSL inside `node` and exports its symbols). The probes are
//! `SSL_read`, `SSL_write` (required), `SSL_read_ex`, `SSL_write_ex` (OpenSSL 1.1.1 and
//! later) and `SSL_do_handshake` (optional), each at its entry and its return.
//!
//! Go's `crypto/tls` (Go 1.17 and later, whose register ABI passes arguments in registers
//! and keeps the goroutine in r14): `(*Conn).Read`, `(*Conn).Write` and
//! `(*Conn).handshakeContext`, at their entry and at each of their `ret` instructions (a
//! uretprobe rewrites the return address on the goroutine's stack, which Go moves when it
//! grows: it would return to garbage).
use iced_x86::Register;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::uprobe_placement::{Placement, place};

/// One uprobe: a symbol, the eBPF program its entry runs, and whether its return is probed
/// too (`rp_ssl_return`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    pub symbol: &'static str,
    pub program: &'static str,
    pub required: bool,
}

/// The eBPF program every probed OpenSSL call's return runs.
pub const RETURN_PROGRAM: &str = "rp_ssl_return";

/// Go's crypto/tls: (symbol, the program its entry runs, the program each of its `ret`
/// instructions runs). One return program per function: `Read` and `Write` call
/// `handshakeContext` on the same goroutine, so each has its own call slot.
pub const GO_POINTS: [(&str, &str, &str); 3] = [
    ("crypto/tls.(*Conn).Read", "rp_go_tls_read", "rp_go_tls_read_return"),
    ("crypto/tls.(*Conn).Write", "rp_go_tls_write", "rp_go_tls_write_return"),
    ("crypto/tls.(*Conn).handshakeContext", "rp_go_tls_handshake", "rp_go_tls_handshake_return"),
];

/// Every program the TLS probes use.
pub fn programs() -> impl Iterator<Item = &'static str> {
    PROBE_POINTS
        .iter()
        .map(|p| p.program)
        .chain([RETURN_PROGRAM])
        .chain(GO_POINTS.iter().flat_map(|(_, entry, ret)| [*entry, *ret]))
}

/// One uprobe to create: where, which program, and whether it is a return probe
/// (a uretprobe at the function's entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub symbol: &'static str,
    pub program: &'static str,
    pub offset: u64,
    pub uretprobe: bool,
}

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
    GoCryptoTls,
}

impl Flavor {
    pub fn label(self) -> &'static str {
        match self {
            Flavor::OpenSsl => "OpenSSL",
            Flavor::BoringSsl => "BoringSSL",
            Flavor::GoCryptoTls => "Go crypto/tls",
        }
    }
}

/// Where the probes go in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub flavor: Flavor,
    pub probes: Vec<Probe>,
}

/// Why a file that does TLS cannot be probed. Each is the `reason` label of
/// `redprobe_tls_unprobed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Unprobeable {
    /// A libssl (or an executable with TLS code) without the `SSL_read`/`SSL_write`
    /// symbols: stripped, or a library we do not know.
    #[error("no SSL_read/SSL_write symbols (stripped, or an unknown TLS library)")]
    SymbolsMissing,
    /// Go's crypto/tls in a program built by a Go older than 1.17 (stack-based calls), or
    /// whose functions could not be decoded.
    #[error("Go crypto/tls of a Go older than 1.17, or not decodable")]
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
            Unprobeable::GoCryptoTls => "go_unsupported",
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
    let mut found: Vec<(ProbePoint, u64, u64)> = Vec::new();
    let mut boring = false;
    let mut go_tls = false;
    let mut consider = |name: &[u8], address: u64, size: u64, defined: bool| {
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
            if name == p.symbol.as_bytes() && !found.iter().any(|(q, _, _)| q.symbol == p.symbol) {
                found.push((p, address, size));
            }
        }
    };
    for s in file.dynamic_symbols() {
        consider(s.name_bytes().unwrap_or_default(), s.address(), s.size(), s.is_definition());
    }
    for s in file.symbols() {
        consider(s.name_bytes().unwrap_or_default(), s.address(), s.size(), s.is_definition());
    }
    let has = |symbol: &str| found.iter().any(|(p, _, _)| p.symbol == symbol);
    if !has("SSL_read") || !has("SSL_write") {
        if go_tls {
            return resolve_go(&file).map(Some);
        }
        // A file named libssl with neither: stripped. An executable with one of them only,
        // or none: no TLS code we know.
        return if found.is_empty() { Ok(None) } else { Err(Unprobeable::SymbolsMissing) };
    }
    found.sort_by_key(|(p, _, _)| PROBE_POINTS.iter().position(|q| q == p));
    let mut probes = Vec::new();
    for (p, address, size) in found {
        let offset = |at: u64| file_offset(&file, at).ok_or(Unprobeable::NotElf);
        // Cheap points where the code allows (uprobe_placement); else the entry, and a
        // uretprobe for the return.
        let placed = function_bytes(&file, address, size)
            .and_then(|code| place(code, address, &[Register::RDI, Register::RSI, Register::RCX], Register::RAX));
        let (entry, returns) = match placed {
            Some(Placement { entry, returns }) => (entry, returns),
            None => (address, None),
        };
        probes.push(Probe { symbol: p.symbol, program: p.program, offset: offset(entry)?, uretprobe: false });
        match returns {
            Some(points) => {
                for at in points {
                    probes.push(Probe { symbol: p.symbol, program: RETURN_PROGRAM, offset: offset(at)?, uretprobe: false });
                }
            }
            None => probes.push(Probe { symbol: p.symbol, program: RETURN_PROGRAM, offset: offset(address)?, uretprobe: true }),
        }
    }
    let flavor = if boring { Flavor::BoringSsl } else { Flavor::OpenSsl };
    Ok(Some(Resolved { flavor, probes }))
}

/// Go's crypto/tls: each function's entry, and each of its `ret` instructions, found by
/// decoding its machine code (a `ret` byte inside another instruction is not one).
fn resolve_go(file: &object::File<'_>) -> Result<Resolved, Unprobeable> {
    if go_minor(file).is_some_and(|minor| minor < 17) {
        return Err(Unprobeable::GoCryptoTls);
    }
    let mut probes = Vec::new();
    for (symbol, program, ret_program) in GO_POINTS {
        let s = file.symbols().find(|s| s.name_bytes().ok() == Some(symbol.as_bytes())).ok_or(Unprobeable::GoCryptoTls)?;
        let (address, size) = (s.address(), s.size());
        let code = function_bytes(file, address, size).ok_or(Unprobeable::GoCryptoTls)?;
        let placed = place(code, address, &[Register::RAX, Register::RBX, Register::R14], Register::RAX)
            .ok_or(Unprobeable::GoCryptoTls)?;
        let entry = file_offset(file, placed.entry).ok_or(Unprobeable::NotElf)?;
        // Each return's cheap point, or each `ret` itself.
        let rets = placed.returns.unwrap_or_else(|| ret_offsets(code, address));
        if rets.is_empty() {
            return Err(Unprobeable::GoCryptoTls);
        }
        probes.push(Probe { symbol, program, offset: entry, uretprobe: false });
        for at in rets {
            let offset = file_offset(file, at).ok_or(Unprobeable::NotElf)?;
            probes.push(Probe { symbol, program: ret_program, offset, uretprobe: false });
        }
    }
    Ok(Resolved { flavor: Flavor::GoCryptoTls, probes })
}

/// The addresses of the `ret` instructions of x86-64 code at `address`.
pub fn ret_offsets(code: &[u8], address: u64) -> Vec<u64> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut rets = Vec::new();
    for insn in &mut decoder {
        if insn.is_invalid() {
            return Vec::new();
        }
        if insn.mnemonic() == Mnemonic::Ret {
            rets.push(insn.ip());
        }
    }
    rets
}

/// A function's bytes, from the section that holds it.
fn function_bytes<'a>(file: &object::File<'a>, address: u64, size: u64) -> Option<&'a [u8]> {
    let section = file.sections().find(|s| address >= s.address() && address + size <= s.address() + s.size())?;
    let data = section.data().ok()?;
    let start = (address - section.address()) as usize;
    data.get(start..start + size as usize)
}

/// The minor version of the Go that built the program (`go1.19.8` -> 19), from
/// `.go.buildinfo`.
fn go_minor(file: &object::File<'_>) -> Option<u32> {
    let data = file.section_by_name(".go.buildinfo")?.data().ok()?;
    let at = data.windows(4).position(|w| w == b"go1.")?;
    let digits: String = data[at + 4..].iter().take_while(|b| b.is_ascii_digit()).map(|b| *b as char).collect();
    digits.parse().ok()
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
        let mut names: Vec<_> = r.probes.iter().filter(|p| p.program != RETURN_PROGRAM).map(|p| p.symbol).collect();
        names.dedup();
        assert_eq!(names, ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_do_handshake"]);
        // Every function's return is probed: by a uretprobe, or at cheap points.
        for name in names {
            assert!(r.probes.iter().any(|p| p.symbol == name && p.program == RETURN_PROGRAM), "{name}'s return");
        }
        assert!(r.probes.iter().all(|p| (p.offset as usize) < data.len()));
    }

    #[test]
    fn ret_instructions_are_decoded_not_matched() {
        // mov eax, 0xc3 (a c3 byte inside an instruction); add rsp, 8; ret; nop; ret 8
        let code = [0xb8, 0xc3, 0x00, 0x00, 0x00, 0x48, 0x83, 0xc4, 0x08, 0xc3, 0x90, 0xc2, 0x08, 0x00];
        assert_eq!(ret_offsets(&code, 0x1000), [0x1009, 0x100b]);
        // Undecodable bytes: no offsets at all (a probe in the middle of an instruction
        // would corrupt the program).
        assert_eq!(ret_offsets(&[0x0f, 0xff], 0), Vec::<u64>::new());
    }

    #[test]
    fn files_without_tls_code() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(resolve(&own), Ok(None));
        assert_eq!(resolve(b"not an elf"), Err(Unprobeable::NotElf));
    }
}
