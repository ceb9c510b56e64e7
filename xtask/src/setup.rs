//! `cargo xtask setup`: installs the eBPF toolchain, idempotently, and checks it before
//! anything builds. Every other command calls it first. `cargo xtask setup --check` only
//! checks. The pin and the check live in `xtask::toolchain` (README, "Toolchain").
use std::process::Command;

use anyhow::{Result, bail};
use xtask::{
    cargo, is_root, run, succeeds,
    toolchain::{self, BPF_LINKER_VERSION, Linker},
    workspace_root,
};

/// Debian packages bpf-linker needs to build and run against LLVM `major`.
fn llvm_packages(major: u32) -> Vec<String> {
    vec![format!("llvm-{major}-dev"), format!("libpolly-{major}-dev"), "libzstd-dev".into(), "zlib1g-dev".into()]
}
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
    // Servers that write headers and body apart (tests/tests/nagle.rs): WEBrick, and the
    // JDK's HttpServer (javac is checked below: the machine may have a JDK of its own).
    "ruby",
    "ruby-webrick",
    // Real containers (tests/tests/containers.rs): podman runs them, buildah builds the
    // agent's image (`cargo xtask image`) and the test servers' image.
    "podman",
    "buildah",
    // --web.config.file (tests/tests/web_config.rs): certificates, a bcrypt hash and a
    // TLS scraper, made with the tools an operator uses.
    "openssl",
    "apache2-utils",
    "curl",
    // HTTP/2 (h2c and over TLS): h2load, the load generator whose counts are the client
    // truth, and nghttp (nghttp2-client); nghttpd, nghttp2's own server (nghttp2-server).
    "nghttp2-client",
    // `redprobe top` (tests/tests/top.rs) runs in a tmux pane the test reads back.
    "tmux",
    "nghttp2-server",
];

/// What `cargo xtask image` needs: buildah, strip (binutils), musl's gcc wrapper (for the C
/// of ring, rustls' cryptography) and Rust's musl target.
pub fn image_dependencies() -> Result<()> {
    apt_install(&missing_apt(&["buildah", "binutils", "musl-tools"]))?;
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output()?;
    if !String::from_utf8_lossy(&installed.stdout).lines().any(|l| l == "x86_64-unknown-linux-musl") {
        run(Command::new("rustup").args(["target", "add", "x86_64-unknown-linux-musl"]))?;
    }
    Ok(())
}

/// Lets the container runtime (crun) run on a host with both cgroup v1 hierarchies and a
/// cgroup v2 one (the "hybrid" layout): crun refuses while a controller is left in the v2
/// hierarchy, so any such controller gets a v1 hierarchy of its own, as on systemd's hybrid
/// hosts. A host on cgroup v2 alone, or hybrid without a stray controller, is left as it is.
fn container_host() -> Result<()> {
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let Ok(stray) = std::fs::read_to_string(unified.join("cgroup.controllers")) else {
        return Ok(());
    };
    for controller in stray.split_whitespace() {
        let dir = std::path::Path::new("/sys/fs/cgroup").join(controller);
        eprintln!(
            "xtask: hybrid cgroups: mounting the {controller} controller's v1 hierarchy at {} (crun needs it out of the v2 one)",
            dir.display()
        );
        std::fs::create_dir_all(&dir)?;
        run(Command::new("mount").args(["-t", "cgroup", "-o", controller, "cgroup"]).arg(&dir))?;
    }
    let left = std::fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
    if !left.trim().is_empty() {
        bail!(
            "hybrid cgroups: the v2 hierarchy still holds {} after mounting it as v1; crun will refuse to run \
             containers (tests/tests/containers.rs). A reboot, or unmounting the v2 hierarchy's users, clears it",
            left.trim()
        );
    }
    Ok(())
}

fn missing_apt<'a>(packages: &[&'a str]) -> Vec<&'a str> {
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

/// The pinned toolchain with rust-src (aya-build builds `core` for the BPF target from it).
fn install_toolchain(toolchain: &str) -> Result<()> {
    let has_src = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("rust-src")))
        .unwrap_or(false);
    if !has_src {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    Ok(())
}

/// The newest `llvm-N-dev` Debian offers here, for the message when the pin needs another.
fn debian_llvm_majors() -> Vec<u32> {
    let out = Command::new("apt-cache").args(["search", "--names-only", "^llvm-[0-9]+-dev$"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let mut majors: Vec<u32> =
        text.lines().filter_map(|l| l.strip_prefix("llvm-")?.split_once("-dev")?.0.parse().ok()).collect();
    majors.sort_unstable();
    majors
}

fn install_llvm(toolchain: &str, major: u32) -> Result<()> {
    let packages = llvm_packages(major);
    let wanted: Vec<&str> = packages.iter().map(String::as_str).collect();
    let missing = missing_apt(&wanted);
    if missing.is_empty() {
        return Ok(());
    }
    if let Err(e) = apt_install(&missing) {
        let offered = debian_llvm_majors();
        if !offered.contains(&major) {
            bail!(
                "{toolchain} (pinned in {}) is built on LLVM {major}, but this Debian offers no llvm-{major}-dev \
                 (it has LLVM {offered:?}); bpf-linker must be built on the same LLVM major as rustc. Move the pin to \
                 a nightly built on one of those (README, \"Toolchain\")",
                toolchain::TOOLCHAIN_FILE
            );
        }
        return Err(e);
    }
    Ok(())
}

/// `cargo install bpf-linker` against Debian's LLVM `major`, replacing any other build.
fn install_linker(major: u32) -> Result<()> {
    let feature = format!("llvm-{major}");
    run(cargo()
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force"])
        .args(["--no-default-features", "--features", &feature])
        .env("LLVM_PREFIX", format!("/usr/lib/llvm-{major}")))
}

/// `check_only`: report, install nothing (`cargo xtask setup --check`).
pub fn setup(check_only: bool) -> Result<()> {
    let toolchain = toolchain::pinned_toolchain(&workspace_root())?;
    if !check_only {
        install_toolchain(&toolchain)?;
    }
    let rustc = toolchain::rustc_llvm(&toolchain)?;
    let major = rustc.1;
    if !check_only {
        install_llvm(&toolchain, major)?;
        let rebuild = match toolchain::find_linker() {
            Linker::Missing => true,
            Linker::Found { llvm: Some(have), .. } if have == major => false,
            Linker::Found { path, version, llvm } => {
                let built = llvm.map_or("an LLVM ldd cannot name".to_string(), |l| format!("LLVM {l}"));
                eprintln!(
                    "xtask: {version} at {} was built against {built}; {toolchain} needs LLVM {major}: rebuilding it",
                    path.display()
                );
                true
            }
        };
        if rebuild {
            install_linker(major)?;
        }
    }
    let linker = toolchain::find_linker();
    if let Some(warning) = toolchain::check(&toolchain, &rustc, &linker)? {
        eprintln!("xtask: warning: {warning}");
    }
    if let Linker::Found { path, version, .. } = &linker {
        let pinned = format!("bpf-linker {BPF_LINKER_VERSION}");
        if *version != pinned {
            eprintln!(
                "xtask: note: {version} at {} is not the pinned {pinned}; its LLVM matches, so it is used",
                path.display()
            );
        }
        eprintln!(
            "xtask: eBPF toolchain ready: {toolchain} (LLVM {}), {version} (LLVM {major}) at {}",
            rustc.0,
            path.display()
        );
    }
    Ok(())
}

/// The test servers' dependencies: Debian packages, Node.js and npm, a Python venv at
/// `target/pyvenv` with the pinned packages of `tests/servers/requirements.txt` (Django,
/// gunicorn, uvicorn, django-prometheus, hypercorn, grpcio), and the Node packages of
/// `tests/servers/package-lock.json` (@grpc/grpc-js) in `tests/servers/node_modules`.
/// Idempotent; run by `test` and `bench`.
pub fn test_dependencies() -> Result<()> {
    let mut missing = missing_apt(APT_TEST_PACKAGES);
    if !succeeds(Command::new("node").arg("--version")) {
        missing.push("nodejs");
    }
    if !succeeds(Command::new("npm").arg("--version")) {
        missing.push("npm");
    }
    if !succeeds(Command::new("java").arg("-version")) {
        missing.push("default-jdk-headless");
    }
    apt_install(&missing)?;
    container_host()?;
    python_packages()?;
    node_packages()
}

/// The venv, made again with the packages of requirements.txt whenever that file is not the
/// copy its last install left in the venv.
fn python_packages() -> Result<()> {
    let requirements = workspace_root().join("tests/servers/requirements.txt");
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

/// `npm ci` in tests/servers (exactly the versions of package-lock.json, without their
/// install scripts) whenever the lock is not the copy its last install left in node_modules.
fn node_packages() -> Result<()> {
    let dir = workspace_root().join("tests/servers");
    let stamp = dir.join("node_modules/.redprobe-package-lock.json");
    let wanted = std::fs::read_to_string(dir.join("package-lock.json"))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    run(Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(&dir))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}
