//! Builds the eBPF programs (crate `probe-ebpf`) with aya-build so that the agent can
//! embed them; `AYA_BUILD_SKIP=1` skips this for lint-only runs.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf = Package { name: "probe-ebpf", root_dir: "../probe-ebpf", ..Default::default() };
    aya_build::build_ebpf([ebpf], Toolchain::default())
}
