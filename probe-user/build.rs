//! Builds the eBPF programs (crate `probe-ebpf`) with aya-build, on the toolchain pinned in
//! probe-ebpf/rust-toolchain.toml, so that the agent can embed them. Before building, it checks
//! that bpf-linker shares that toolchain's LLVM major, and stops with a message naming both if
//! not. `AYA_BUILD_SKIP=1` skips all of this: the agent then embeds an empty object and says
//! so if it is ever run, so that the library's tests and lints build on any machine.
use std::path::Path;

use aya_build::{Package, Toolchain};

#[path = "../xtask/src/toolchain.rs"]
#[allow(dead_code)]
mod toolchain;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("probe-user is in the workspace");
    println!("cargo:rerun-if-changed={}", root.join(toolchain::TOOLCHAIN_FILE).display());
    // aya-build watches probe-ebpf; the programs are also made of probe-common (the shared
    // types and the classifier), whose change must rebuild them too.
    println!("cargo:rerun-if-changed={}", root.join("probe-common").display());
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=PATH");
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = std::env::var("OUT_DIR")?;
        std::fs::write(Path::new(&out).join("redprobe"), [])?;
        println!("cargo:warning=AYA_BUILD_SKIP is set: the agent embeds no eBPF object and cannot attach");
        return Ok(());
    }
    // A toolchain problem is reported as cargo's own error, one line, instead of a link failure.
    let checked = toolchain::pinned_toolchain(root).and_then(|pinned| {
        let rustc = toolchain::rustc_llvm(&pinned)?;
        toolchain::check(&pinned, &rustc, &toolchain::find_linker()).map(|warning| (pinned, warning))
    });
    let pinned = match checked {
        Ok((pinned, warning)) => {
            if let Some(warning) = warning {
                println!("cargo::warning={warning}");
            }
            pinned
        }
        Err(e) => {
            println!("cargo::error={e:#}");
            std::process::exit(1);
        }
    };
    let ebpf = Package { name: "probe-ebpf", root_dir: "../probe-ebpf", ..Default::default() };
    aya_build::build_ebpf([ebpf], Toolchain::Custom(&pinned))
}
