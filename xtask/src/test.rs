//! `cargo xtask test`: the whole suite. Unit and table tests first (no kernel), then the
//! integration tests, which load the real probe and so run as root, one at a time
//! (they share kernel state).
use anyhow::{Result, bail};
use xtask::{REDPROBE_BIN, REDPROBE_PYTHON, agent_path, cargo, is_root, python_venv, run};

/// Crates whose unit tests need no kernel (probe-ebpf only builds for the BPF target).
/// (The test kit's own unit tests run with the integration tests: `--tests` includes them.)
const UNIT_PACKAGES: &[&str] = &["probe-common", "probe-user", "xtask"];

pub fn test(filter: Option<&str>) -> Result<()> {
    crate::build::build()?;
    let mut unit = cargo();
    unit.args(["test", "--release", "--lib", "--bins"]);
    for p in UNIT_PACKAGES {
        unit.args(["--package", p]);
    }
    run(&mut unit)?;
    if !is_root() {
        bail!("the integration tests load eBPF programs: run `cargo xtask test` as root (sudo -E cargo xtask test)");
    }
    crate::setup::test_dependencies()?;
    // tests/tests/containers.rs runs the agent from its image, as the DaemonSet does.
    crate::image::image(false)?;
    let mut integration = cargo();
    integration.args(["test", "--release", "--no-fail-fast", "--package", "redprobe-tests", "--tests", "--"]);
    if let Some(f) = filter {
        integration.arg(f);
    }
    integration
        .arg("--test-threads=1")
        .env(REDPROBE_BIN, agent_path())
        .env(REDPROBE_PYTHON, python_venv().join("bin/python"));
    // The tests that assert exact counts also record who paired the requests.
    let share = xtask::workspace_root().join("target/fast-path-share.txt");
    let _ = std::fs::remove_file(&share);
    let result = run(&mut integration);
    if let Ok(text) = std::fs::read_to_string(&share) {
        println!("\nWho paired the requests of each exact-count test (the kernel's fast path, or the agent and why):");
        print!("{text}");
    }
    result
}
