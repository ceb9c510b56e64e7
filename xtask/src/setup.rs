//! `cargo xtask setup`: installs the eBPF toolchain, idempotently. Every other command
//! calls it first. The recipe (versions, packages) is the one that works on these hosts:
//! see the README's "Toolchain" section.
use std::process::Command;

use anyhow::{Result, bail};
use xtask::{cargo, is_root, run, succeeds};

/// Debian packages bpf-linker needs to build and run against LLVM 22.
const APT_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"];
/// Test and bench dependencies from Debian, each for a real server or tool the tests run:
/// python3 (+venv) for the demo server and the Python servers, nginx, golang-go for the Go
/// server, prometheus for promtool and the real scrape loop, wrk for load, util-linux
/// (setpriv, unshare) and libcap2-bin (capsh) for the privilege and tracefs tests, iproute2
/// for network namespaces, systemd (systemd-analyze) to verify the unit file, python3-yaml
/// to read the Kubernetes manifests. Node.js is on the machine already (nodejs if it is not).
const APT_TEST_PACKAGES: &[&str] = &[
    "python3",
    "python3-venv",
    "python3-yaml",
    "util-linux",
    "libcap2-bin",
    "iproute2",
    "nginx",
    "golang-go",
    "prometheus",
    "wrk",
    "systemd",
];

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
    // The package lists are refreshed once per xtask run, however many installs follow.
    static UPDATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if UPDATED.get().is_none() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        let _ = UPDATED.set(());
    }
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
    apt_install(&missing_apt(APT_PACKAGES))?;
    if !bpf_linker_ok() {
        run(cargo()
            .args(["install", "bpf-linker", "--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    eprintln!("xtask: toolchain ready (nightly rust-src, LLVM 22, bpf-linker)");
    Ok(())
}

/// The test servers' dependencies: Debian packages, Node.js, and a Python venv at
/// `target/pyvenv` with the pinned packages of `tests/servers/requirements.txt`
/// (Django, gunicorn, uvicorn, django-prometheus). Idempotent; run by `test` and `bench`.
pub fn test_dependencies() -> Result<()> {
    let mut missing = missing_apt(APT_TEST_PACKAGES);
    if !succeeds(Command::new("node").arg("--version")) {
        missing.push("nodejs");
    }
    apt_install(&missing)?;
    let root = xtask::workspace_root();
    let requirements = root.join("tests/servers/requirements.txt");
    let venv = xtask::python_venv();
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(python).arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "-r"]).arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}
