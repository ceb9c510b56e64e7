//! `cargo xtask image`: the agent as an OCI image, built with Debian's buildah. The image
//! holds one file: the agent, linked statically against musl (the eBPF object is embedded
//! in it), on an empty base, so nothing is pulled and nothing else is in it.
//! The size is printed: about 7 MB, most of it the agent and rustls.
use std::process::Command;

use anyhow::{Context, Result, bail};
use xtask::{IMAGE, cargo, run, workspace_root};

/// The Rust target of the static binary.
const MUSL: &str = "x86_64-unknown-linux-musl";

/// The port the agent serves /metrics on in the image (`--listen 0.0.0.0:9464` in the
/// DaemonSet).
const METRICS_PORT: &str = "9464";

pub fn image(archive: bool) -> Result<()> {
    crate::setup::setup(false)?;
    crate::setup::image_dependencies()?;
    run(cargo().args(["build", "--release", "--package", "probe-user", "--bin", "redprobe", "--target", MUSL]))?;
    let built = workspace_root().join("target").join(MUSL).join("release/redprobe");
    let dir = workspace_root().join("target/image");
    std::fs::create_dir_all(&dir)?;
    let binary = dir.join("redprobe");
    run(Command::new("strip").arg("-o").arg(&binary).arg(&built))?;

    let out = Command::new("buildah").args(["from", "scratch"]).output().context("running buildah")?;
    if !out.status.success() {
        bail!("buildah from scratch: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let container = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let result = (|| {
        run(Command::new("buildah").args(["copy", "--chmod", "0755", &container]).arg(&binary).arg("/redprobe"))?;
        let version = env!("CARGO_PKG_VERSION");
        run(Command::new("buildah").args([
            "config",
            "--entrypoint",
            r#"["/redprobe"]"#,
            "--cmd",
            "--help",
            "--port",
            METRICS_PORT,
            "--env",
            "RUST_LOG=info",
            "--label",
            "org.opencontainers.image.title=redprobe",
            "--label",
            &format!("org.opencontainers.image.version={version}"),
            "--label",
            "org.opencontainers.image.description=RED metrics for HTTP servers, measured from the kernel with eBPF",
            "--label",
            "org.opencontainers.image.licenses=MIT OR Apache-2.0",
            &container,
        ]))?;
        run(Command::new("buildah").args(["commit", "--quiet", &container, IMAGE]))
    })();
    let _ = Command::new("buildah").args(["rm", &container]).output();
    result?;

    if archive {
        let tar = dir.join(format!("redprobe-{}.oci.tar", env!("CARGO_PKG_VERSION")));
        let _ = std::fs::remove_file(&tar);
        run(Command::new("buildah").args(["push", IMAGE]).arg(format!("oci-archive:{}", tar.display())))?;
        eprintln!("xtask: wrote {}", tar.display());
    }
    let size = Command::new("buildah").args(["images", "--format", "{{.Size}}", IMAGE]).output()?;
    let binary_mb = std::fs::metadata(&binary)?.len() as f64 / 1e6;
    println!(
        "image {IMAGE}: {} (one file: /redprobe, {binary_mb:.1} MB, static, {MUSL})",
        String::from_utf8_lossy(&size.stdout).trim()
    );
    println!("push it to your registry:  podman push {IMAGE} docker://REGISTRY/redprobe:{}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
