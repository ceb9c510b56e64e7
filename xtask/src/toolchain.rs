//! The eBPF toolchain: the pinned rustc that builds probe-ebpf, and the check that bpf-linker
//! was built against the same LLVM major. `cargo xtask setup` uses it to install and check;
//! probe-user's build script includes this file (`#[path]`) to build with the same pin and to
//! stop with the same message before a link would fail. So it uses only std and anyhow.
//!
//! Why the check: bpf-linker reads the LLVM bitcode rustc emits. Bitcode from a newer LLVM than
//! bpf-linker's fails deep in the link with `ERROR llvm: Invalid record`, 300 lines down.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The one place the toolchain is named, relative to the workspace root.
pub const TOOLCHAIN_FILE: &str = "probe-ebpf/rust-toolchain.toml";

/// The bpf-linker release `cargo xtask setup` installs (`--locked`, so its own dependencies
/// are pinned too). Its `llvm-N` feature and Debian's `llvm-N-dev` follow the pinned rustc.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The `channel` of a rust-toolchain.toml.
pub fn parse_channel(toml: &str) -> Option<String> {
    toml.lines().map(str::trim).filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "channel").then(|| value.trim().trim_matches('"').to_string())
    })
}

/// The pinned toolchain, read from [`TOOLCHAIN_FILE`].
pub fn pinned_toolchain(workspace_root: &Path) -> Result<String> {
    let path = workspace_root.join(TOOLCHAIN_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let channel = parse_channel(&text).with_context(|| format!("{} names no `channel`", path.display()))?;
    if channel == "nightly" || channel == "stable" || channel == "beta" {
        bail!("{} pins the moving `{channel}`: name a dated toolchain (nightly-YYYY-MM-DD)", path.display());
    }
    Ok(channel)
}

/// The LLVM major in `rustc -vV` output ("LLVM version: 22.1.4").
pub fn parse_rustc_llvm(rustc_vv: &str) -> Option<(String, u32)> {
    let version = rustc_vv.lines().find_map(|l| l.strip_prefix("LLVM version:"))?.trim().to_string();
    let major = version.split('.').next()?.parse().ok()?;
    Some((version, major))
}

/// What `rustup run TOOLCHAIN rustc -vV` says, or None if the toolchain is not installed.
pub fn rustc_version(toolchain: &str) -> Option<String> {
    let out = Command::new("rustup").args(["run", toolchain, "rustc", "-vV"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The LLVM major of the pinned toolchain's rustc.
pub fn rustc_llvm(toolchain: &str) -> Result<(String, u32)> {
    let vv = rustc_version(toolchain)
        .with_context(|| format!("the eBPF toolchain {toolchain} is not installed: run `cargo xtask setup`"))?;
    parse_rustc_llvm(&vv).with_context(|| format!("`rustc -vV` of {toolchain} names no LLVM version:\n{vv}"))
}

/// The LLVM major a dynamically linked bpf-linker loads, from `ldd` output
/// (`libLLVM.so.22.1 => ...` on Debian, `libLLVM-22.so => ...` elsewhere).
pub fn parse_ldd_llvm(ldd: &str) -> Option<u32> {
    ldd.lines().find_map(|l| {
        let name = l.split_whitespace().next()?;
        let rest = name.strip_prefix("libLLVM.so.").or_else(|| name.strip_prefix("libLLVM-"))?;
        rest.split(['.', '-']).next()?.parse().ok()
    })
}

/// The bpf-linker the build would use (the first on PATH), as far as it can be known.
#[derive(Debug, PartialEq)]
pub enum Linker {
    Missing,
    Found {
        path: PathBuf,
        /// `bpf-linker --version`, e.g. "bpf-linker 0.13.0".
        version: String,
        /// The LLVM major it loads; None when it links LLVM statically, so ldd cannot tell.
        llvm: Option<u32>,
    },
}

pub fn find_linker() -> Linker {
    let path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("bpf-linker")).find(|p| p.is_file()));
    let Some(path) = path else { return Linker::Missing };
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Some(version) = version else { return Linker::Missing };
    let llvm = Command::new("ldd")
        .arg(&path)
        .output()
        .ok()
        .and_then(|o| parse_ldd_llvm(&String::from_utf8_lossy(&o.stdout)));
    Linker::Found { path, version, llvm }
}

/// Ok when the pinned rustc and bpf-linker share an LLVM major; otherwise the message that
/// names both and the fix. An LLVM that cannot be read is Ok(Some(warning)): the link itself
/// is then the judge.
pub fn check(toolchain: &str, rustc_llvm: &(String, u32), linker: &Linker) -> Result<Option<String>> {
    let (rustc_full, want) = rustc_llvm;
    match linker {
        Linker::Missing => bail!(
            "bpf-linker is not on PATH; the eBPF build needs bpf-linker {BPF_LINKER_VERSION} built against LLVM {want} \
             (the LLVM of {toolchain}): run `cargo xtask setup`"
        ),
        Linker::Found { path, version, llvm: None } => Ok(Some(format!(
            "cannot tell which LLVM {version} at {} was built with (it does not load a shared libLLVM); it must be LLVM \
             {want}, the LLVM of {toolchain}. If linking fails with `Invalid record`, run `cargo xtask setup`",
            path.display()
        ))),
        Linker::Found { path, version, llvm: Some(have) } if have != want => bail!(
            "eBPF toolchain mismatch: {toolchain} is built on LLVM {rustc_full} (major {want}), but {version} at {} \
             was built against LLVM {have}. bpf-linker cannot read bitcode from another LLVM major (the link fails \
             with `Invalid record`). Fix: run `cargo xtask setup`, which rebuilds bpf-linker against Debian's \
             llvm-{want}-dev; or move the pin in {TOOLCHAIN_FILE} to a nightly built on LLVM {have} (README, \
             \"Toolchain\")",
            path.display()
        ),
        Linker::Found { .. } => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_is_read_from_the_toolchain_file() {
        let toml = "# channel = \"nightly\"\n[toolchain]\nchannel = \"nightly-2026-05-19\"\ncomponents = [\"rust-src\"]\n";
        assert_eq!(parse_channel(toml).as_deref(), Some("nightly-2026-05-19"));
        assert_eq!(parse_channel("[toolchain]\n"), None);
    }

    #[test]
    fn the_repository_pins_a_dated_toolchain() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let channel = pinned_toolchain(root).unwrap();
        assert!(channel.starts_with("nightly-20"), "{channel}");
    }

    #[test]
    fn llvm_major_from_rustc() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(parse_rustc_llvm(vv), Some(("22.1.4".into(), 22)));
        assert_eq!(parse_rustc_llvm("rustc 1.0\n"), None);
    }

    #[test]
    fn llvm_major_from_ldd() {
        for (ldd, want) in [
            ("\tlinux-vdso.so.1 (0x7ff)\n\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x7f)\n", Some(22)),
            ("\tlibLLVM-21.so => /usr/lib/libLLVM-21.so (0x7f)\n", Some(21)),
            ("\tlibLLVM.so.23.1-rust-1.101.0-nightly => /x (0x7f)\n", Some(23)),
            ("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n", None),
        ] {
            assert_eq!(parse_ldd_llvm(ldd), want, "{ldd}");
        }
    }

    #[test]
    fn a_mismatched_linker_names_both_versions_and_the_fix() {
        let found = |llvm| Linker::Found { path: "/root/.cargo/bin/bpf-linker".into(), version: "bpf-linker 0.13.0".into(), llvm };
        let linker = found(Some(22));
        let err = check("nightly-2026-10-29", &("23.1.4".into(), 23), &linker).unwrap_err().to_string();
        for part in ["LLVM 23.1.4", "against LLVM 22", "cargo xtask setup", "llvm-23-dev", TOOLCHAIN_FILE, "Invalid record"] {
            assert!(err.contains(part), "{part:?} not in: {err}");
        }
        assert_eq!(check("nightly-2026-05-19", &("22.1.4".into(), 22), &linker).unwrap(), None);
        let unknown = found(None);
        assert!(check("nightly-2026-05-19", &("22.1.4".into(), 22), &unknown).unwrap().is_some());
        assert!(check("nightly-2026-05-19", &("22.1.4".into(), 22), &Linker::Missing).is_err());
    }
}
