//! `cargo xtask setup`: installs the eBPF toolchain, idempotently. Every other command
//! calls it first. The recipe (versions, packages) is the one that works on these hosts:
//! see the README's "Toolchain" section.
use std::process::Command;

use anyhow::{Result, bail};
use xtask::{cargo, is_root, run, succeeds};

/// Debian packages bpf-linker needs to build and run against LLVM 22.
const APT_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"];
/// Test dependencies from Debian: python3 runs the demo/test server; util-linux provides
/// setpriv and unshare for the privilege and tracefs tests.
const APT_TEST_PACKAGES: &[&str] = &["python3", "util-linux"];

fn have_nightly_rust_src() -> bool {
    let out = Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]).output();
    out.map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("rust-src")))
        .unwrap_or(false)
}

fn missing_apt(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !out.map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed")).unwrap_or(false)
        })
        .collect()
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {packages:?}; install them as root: apt-get install -y {}", packages.join(" "));
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(packages).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn bpf_linker_ok() -> bool {
    succeeds(Command::new("bpf-linker").arg("--version"))
}

pub fn setup() -> Result<()> {
    if !have_nightly_rust_src() {
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    let mut missing = missing_apt(APT_PACKAGES);
    missing.extend(missing_apt(APT_TEST_PACKAGES));
    apt_install(&missing)?;
    if !bpf_linker_ok() {
        run(cargo()
            .args(["install", "bpf-linker", "--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    eprintln!("xtask: toolchain ready (nightly rust-src, LLVM 22, bpf-linker)");
    Ok(())
}
