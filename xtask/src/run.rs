//! `cargo xtask run -- ARGS`: build, then run the agent with ARGS.
use std::process::Command;

use anyhow::Result;
use xtask::{agent_path, run as run_cmd};

pub fn run(args: &[String]) -> Result<()> {
    crate::build::build()?;
    run_cmd(Command::new(agent_path()).args(args))
}
