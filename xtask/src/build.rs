//! `cargo xtask build`: the release agent, with the eBPF object embedded.
use anyhow::Result;
use xtask::{agent_path, cargo, run};

pub fn build() -> Result<()> {
    crate::setup::setup(false)?;
    run(cargo().args(["build", "--release", "--package", "probe-user"]))?;
    eprintln!("xtask: built {}", agent_path().display());
    Ok(())
}
