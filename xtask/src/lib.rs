//! Helpers shared by the xtask subcommands.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

pub mod toolchain;

pub use testkit::{IMAGE, REDPROBE_BIN, REDPROBE_PYTHON, describe, procs::workspace_root};

/// The release agent built by `cargo xtask build`.
pub fn agent_path() -> PathBuf {
    workspace_root().join("target/release/redprobe")
}

/// The Python venv with the test servers' packages (made by `setup::test_dependencies`);
/// the tests find it through `REDPROBE_PYTHON`.
pub fn python_venv() -> PathBuf {
    workspace_root().join("target/pyvenv")
}

/// Runs a command in the workspace root, echoing it; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(workspace_root());
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd.status().with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", describe(cmd));
    }
    Ok(())
}

/// True if the command runs and exits 0 (its output is discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
