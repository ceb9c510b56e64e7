//! `cargo xtask bench`: overhead measured side by side (see the README's overhead table).
use anyhow::Result;

pub fn bench() -> Result<()> {
    crate::build::build()?;
    anyhow::bail!("bench: not implemented yet")
}
