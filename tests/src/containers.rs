//! Real containers for the tests, run by podman (Debian's; `cargo xtask setup` installs it):
//! each has its own network, mount, PID, UTS and IPC namespaces and its own cgroup, as the
//! runtime lays them out.
//!
//! The test servers' image is built here with buildah, from nothing: an empty base with the
//! usual `/bin -> usr/bin` links. The host's `/usr` and the workspace are mounted read-only
//! into each container, so the servers run the host's Python and the test venv without an
//! image to pull (the machine reaches no image registry).
use std::{
    path::Path,
    process::{Command, Output},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{procs::workspace_root, wait_for};

/// The servers' image: empty, but for the directories and links the host's /usr needs.
pub const HOST_IMAGE: &str = "localhost/redprobe-test-host:1";

/// The port every test server listens on inside its container.
pub const CONTAINER_PORT: u16 = 8000;

fn run(cmd: &mut Command) -> Result<Output> {
    let what = crate::describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("running {what} (is podman installed? `cargo xtask setup` installs it)"))?;
    ensure!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(out)
}

fn stdout(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Limits for `podman run`: the host's own. podman's defaults (a million open files, and
/// more processes than some hosts allow) would need CAP_SYS_RESOURCE to raise the limits,
/// which not every host gives root.
pub fn ulimits() -> Vec<String> {
    let hard = |resource| {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: a plain getrlimit into a local.
        unsafe { libc::getrlimit(resource, &mut l) };
        l.rlim_max
    };
    let files = hard(libc::RLIMIT_NOFILE).min(1 << 20);
    let procs = hard(libc::RLIMIT_NPROC).min(32768);
    vec!["--ulimit".into(), format!("nofile={files}:{files}"), "--ulimit".into(), format!("nproc={procs}:{procs}")]
}

/// Builds the servers' image once per test process (buildah), if podman does not have it.
pub fn host_image() -> Result<&'static str> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let have = Command::new("podman").args(["image", "exists", HOST_IMAGE]).status().is_ok_and(|s| s.success());
        if have {
            return Ok(());
        }
        build_host_image().map_err(|e| format!("{e:#}"))
    });
    match built {
        Ok(()) => Ok(HOST_IMAGE),
        Err(e) => bail!("building {HOST_IMAGE}: {e}"),
    }
}

fn build_host_image() -> Result<()> {
    let c = stdout(run(Command::new("buildah").args(["from", "scratch"]))?);
    let result = (|| {
        let root = stdout(run(Command::new("buildah").args(["mount", &c]))?);
        let root = Path::new(&root);
        for dir in ["usr", "etc", "tmp", "proc", "sys", "dev", "run", "var"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        for (link, to) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
            std::os::unix::fs::symlink(to, root.join(link))?;
        }
        // As in most images: an absolute link, which must resolve inside the container.
        std::os::unix::fs::symlink("/run", root.join("var/run"))?;
        std::fs::set_permissions(root.join("tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
        run(Command::new("buildah").args(["umount", &c]))?;
        run(Command::new("buildah").args(["commit", "--quiet", &c, HOST_IMAGE]))?;
        Ok(())
    })();
    let _ = Command::new("buildah").args(["rm", &c]).output();
    result
}

/// A running container, removed (`podman rm -f`) when dropped.
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Container {
    /// `podman run -d` with `options` (before the image) and `args` (after it). The name is
    /// made unique.
    pub fn run(name: &str, options: &[String], image: &str, args: &[String]) -> Result<Self> {
        let name = format!("{name}-{}-{}", std::process::id(), crate::procs::free_port());
        let out = run(Command::new("podman")
            .args(["run", "-d", "--name", &name])
            .args(ulimits())
            .args(options)
            .arg(image)
            .args(args));
        match out {
            Ok(out) => Ok(Container { id: stdout(out), name }),
            Err(e) => {
                // A container podman created but could not start is removed too.
                let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &name]).output();
                Err(e)
            }
        }
    }

    /// A server from the workspace in the servers' image, listening on [`CONTAINER_PORT`]
    /// inside its own network namespace, published on a free loopback port of the host.
    /// `options` add to podman's (e.g. a cgroup parent, a hostname, mounts).
    pub fn server(name: &str, options: &[String], command: &[String]) -> Result<(Self, u16)> {
        let host_port = crate::procs::free_port();
        let ws = workspace_root();
        let mut opts: Vec<String> = vec![
            "-v".into(),
            "/usr:/usr:ro".into(),
            "-v".into(),
            format!("{}:{}:ro", ws.display(), ws.display()),
            "-w".into(),
            ws.join("tests/servers").display().to_string(),
            "-p".into(),
            format!("127.0.0.1:{host_port}:{CONTAINER_PORT}"),
        ];
        // The interpreter behind the test venv, where it is not the host's /usr one (pyenv).
        let python = std::env::var(crate::REDPROBE_PYTHON).unwrap_or_else(|_| "python3".into());
        if let Ok(real) = std::fs::canonicalize(&python)
            && let Some(prefix) = real.parent().and_then(Path::parent)
            && !prefix.starts_with("/usr")
        {
            opts.extend(["-v".into(), format!("{}:{}:ro", prefix.display(), prefix.display())]);
        }
        opts.extend_from_slice(options);
        let c = Container::run(name, &opts, host_image()?, command)?;
        Ok((c, host_port))
    }

    /// The PID (on the host) of the container's first process.
    pub fn pid(&self) -> Result<u32> {
        let out = run(Command::new("podman").args(["inspect", "-f", "{{.State.Pid}}", &self.id]))?;
        let pid: u32 = stdout(out).parse().context("podman inspect: no PID")?;
        ensure!(pid != 0, "container {} is not running:\n{}", self.name, self.logs());
        Ok(pid)
    }

    pub fn logs(&self) -> String {
        Command::new("podman")
            .args(["logs", &self.id])
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }

    /// `podman restart`: the same container (and id), new processes.
    pub fn restart(&self) -> Result<()> {
        run(Command::new("podman").args(["restart", "-t", "2", &self.id]))?;
        Ok(())
    }

    /// Stops and removes the container now.
    pub fn remove(self) -> Result<()> {
        run(Command::new("podman").args(["rm", "-f", "-t", "0", &self.id]))?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &self.id]).output();
    }
}

/// Waits until the server in a container accepts connections on its published host
/// port. Only connects: a request would be counted.
pub fn wait_listening(port: u16) -> Result<()> {
    wait_for(&format!("a server on published port {port}"), Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
}
