//! Real processes for tests and the demo: the demo/test HTTP server and the agent.
//! Every process is killed when its handle is dropped.
use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{scrape, wait_for};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// The agent binary: `$REDPROBE_BIN`, else the workspace's release build.
pub fn agent_bin() -> PathBuf {
    std::env::var_os(crate::REDPROBE_BIN)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/redprobe"))
}

/// The agent's command in a private mount namespace (`unshare --mount`), run once the
/// shell commands `setup` have succeeded (e.g. a mount over /sys/kernel/btf).
pub fn agent_in_private_mounts(setup: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{setup} && exec \"$0\" \"$@\""))
        .arg(agent_bin());
    cmd
}

/// The value of a `/proc/PID/status` line (`key` with its colon, e.g. "VmRSS:"), trimmed.
pub fn status_field(pid: u32, key: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// A `/proc/PID/status` size (VmRSS:, VmHWM:, ...) in KiB.
pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let v = status_field(pid, key)?;
    v.trim_end_matches("kB").trim().parse().with_context(|| format!("{key} {v:?}"))
}

/// `/proc/PID/stat`, read once. Its fields are numbered as proc(5) numbers them, from 1
/// (the PID); the `STAT_*` constants name the ones the test side reads.
#[derive(Clone, Debug)]
pub struct Stat {
    text: String,
}

/// Field 14 of `/proc/PID/stat`: user CPU time, in clock ticks.
pub const STAT_UTIME: usize = 14;
/// Field 15: system CPU time, in clock ticks.
pub const STAT_STIME: usize = 15;

impl Stat {
    pub fn read(pid: u32) -> Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        Ok(Stat { text })
    }

    /// Field `n` (1: pid, 2: comm without its parentheses, 3: state, ...). The command
    /// name may hold spaces and parentheses: it ends at the last ')'.
    pub fn field(&self, n: usize) -> Result<&str> {
        let (head, rest) = self.text.rsplit_once(')').context("malformed /proc/PID/stat")?;
        let (pid, comm) = head.split_once(" (").context("malformed /proc/PID/stat")?;
        match n {
            0 => bail!("/proc/PID/stat fields are numbered from 1"),
            1 => Ok(pid),
            2 => Ok(comm),
            _ => rest.split_whitespace().nth(n - 3).with_context(|| format!("no field {n} in /proc/PID/stat")),
        }
    }

    /// Field `n` as a number.
    pub fn number(&self, n: usize) -> Result<u64> {
        let v = self.field(n)?;
        v.parse().with_context(|| format!("/proc/PID/stat field {n} {v:?}"))
    }
}

/// The child processes of `pid` (of its main thread: servers fork from it).
pub fn children(pid: u32) -> Vec<u32> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// A port nobody listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

pub(crate) fn terminate(child: &mut Child) {
    terminate_within(child, Duration::from_secs(2));
}

/// SIGTERM, then SIGKILL if the child has not exited within `grace`.
pub(crate) fn terminate_within(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return; // reaped already: its PID may belong to another process now
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = crate::wait_for("the child to exit", grace, || child.try_wait().ok().flatten());
    let _ = child.kill();
    let _ = child.wait();
}

/// The Python demo/test server (`tests/servers/app.py`), on a port it picks itself.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub fn start_python() -> Result<Self> {
        Self::start(Self::python_command("python3", 0))
    }

    /// `program tests/servers/app.py --port PORT` (0: the server picks a free port).
    /// `program` is python3, or another name for it (a symlink gives the process that
    /// command name).
    pub fn python_command(program: impl AsRef<std::ffi::OsStr>, port: u16) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg(workspace_root().join("tests/servers/app.py")).args(["--port", &port.to_string()]);
        cmd
    }

    /// Starts a server that prints `LISTENING <port>` on stdout once it accepts
    /// connections (app.py, possibly through a wrapper), and waits for that line.
    pub fn start(mut cmd: Command) -> Result<Self> {
        let what = crate::describe(&cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {what} (is python3 installed?)"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let port = line.trim().strip_prefix("LISTENING ").and_then(|p| p.parse().ok());
        match port {
            Some(port) => Ok(Server { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what} did not report its port (got {line:?})")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The agent's arguments to measure `pids`: `--pid P` for each.
pub fn pid_args(pids: &[u32]) -> Vec<String> {
    pids.iter().flat_map(|p| ["--pid".to_string(), p.to_string()]).collect()
}

/// A running agent, serving /metrics on `addr`.
pub struct Agent {
    pub child: Child,
    pub addr: String,
    stderr_path: PathBuf,
}

impl Agent {
    /// Starts `redprobe` with `args` (plus `--listen` on a free port) and waits until
    /// /metrics answers, which happens only once every program is attached.
    pub fn start(args: &[String]) -> Result<Self> {
        Self::start_with(Command::new(agent_bin()), args)
    }

    /// Starts `redprobe --pid PID` (`start` with `pid_args`).
    pub fn attach(pid: u32) -> Result<Self> {
        Self::start(&pid_args(&[pid]))
    }

    /// Like `start`, with a prepared command (e.g. a wrapper such as `unshare`).
    pub fn start_with(cmd: Command, args: &[String]) -> Result<Self> {
        Self::start_until(cmd, args, |addr| scrape::fetch(addr).is_ok())
    }

    /// Like `start_with`, ready when `ready(addr)` says so (e.g. over TLS).
    pub fn start_until(cmd: Command, args: &[String], ready: impl Fn(&str) -> bool) -> Result<Self> {
        Self::start_at(cmd, args, &format!("127.0.0.1:{}", free_port()), ready)
    }

    /// Like `start_until`, serving /metrics on `addr` (host:port).
    pub fn start_at(mut cmd: Command, args: &[String], addr: &str, ready: impl Fn(&str) -> bool) -> Result<Self> {
        let addr = addr.to_string();
        let stderr_path =
            std::env::temp_dir().join(format!("redprobe-agent-{}-{}.log", std::process::id(), free_port()));
        let log = std::fs::File::create(&stderr_path)?;
        let child = cmd
            .args(args)
            .args(["--listen", &addr])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (build it with `cargo xtask build`)", agent_bin().display()))?;
        let mut agent = Agent { child, addr, stderr_path };
        let ready = wait_for("the agent's /metrics", Duration::from_secs(60), || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                return Some(Err(status));
            }
            ready(&agent.addr).then_some(Ok(()))
        })?;
        if let Err(status) = ready {
            bail!("agent exited with {status} before it was ready:\n{}", agent.stderr());
        }
        Ok(agent)
    }

    pub fn metrics(&self) -> Result<scrape::Metrics> {
        scrape::fetch(&self.addr)
    }

    /// Waits until the metrics satisfy `check` (the agent drains the kernel every 20 ms).
    pub fn wait_metrics(&self, what: &str, check: impl Fn(&scrape::Metrics) -> bool) -> Result<scrape::Metrics> {
        let mut last = None;
        let result = wait_for(what, Duration::from_secs(20), || {
            let m = self.metrics().ok()?;
            if check(&m) {
                return Some(m);
            }
            last = Some(m);
            None
        });
        result.map_err(|e| {
            // With the agent's own counters that are not 0: where the rest went.
            let health = last
                .as_ref()
                .map(|m| {
                    let lines = m.text.lines().filter(|l| l.starts_with("redprobe_") && !l.ends_with(" 0"));
                    lines.filter(|l| !l.contains("_bytes") && !l.contains("map_")).collect::<Vec<_>>().join("\n")
                })
                .unwrap_or_default();
            let counts = last.map(|m| format!("{:#?}", m.request_counts())).unwrap_or_default();
            anyhow::anyhow!("{e}; last request counts: {counts}\nagent counters:\n{health}\nagent log:\n{}", self.stderr())
        })
    }

    pub fn stderr(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.stderr_path).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        terminate(&mut self.child);
        Ok(self.child.wait()?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        terminate(&mut self.child);
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// Runs the agent, expecting it to exit by itself within 30 s (error cases), and returns
/// (status, stderr). An agent still running after that is killed and reported.
pub fn run_agent_expecting_exit(mut cmd: Command, args: &[&str]) -> Result<(ExitStatus, String)> {
    let mut child = cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_for("the agent to exit", Duration::from_secs(30), || child.try_wait().ok().flatten());
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{e}: the agent kept running:\n{}", reader.join().unwrap_or_default());
        }
    };
    Ok((status, reader.join().unwrap_or_default()))
}

/// `run_agent_expecting_exit` for an agent that must fail: asserts that it exited with
/// `code`, and returns its stderr.
pub fn agent_fails_with(cmd: Command, args: &[&str], code: i32) -> Result<String> {
    let (status, stderr) = run_agent_expecting_exit(cmd, args)?;
    assert_eq!(status.code(), Some(code), "{stderr}");
    Ok(stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_mounts_run_the_agent_after_the_setup() {
        let cmd = agent_in_private_mounts("mount -t tmpfs none /x");
        assert_eq!(
            crate::describe(&cmd),
            format!(
                "unshare --mount --propagation private sh -c mount -t tmpfs none /x && exec \"$0\" \"$@\" {}",
                agent_bin().display()
            )
        );
    }

    #[test]
    fn pid_args_name_each_pid() {
        assert_eq!(pid_args(&[7, 42]), ["--pid", "7", "--pid", "42"]);
        assert!(pid_args(&[]).is_empty());
    }

    #[test]
    fn stat_fields_are_numbered_as_proc_5() {
        let stat = Stat { text: "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1 0 99 1 2\n".into() };
        assert_eq!(stat.field(1).unwrap(), "4242");
        assert_eq!(stat.field(2).unwrap(), "a) b (c");
        assert_eq!(stat.field(3).unwrap(), "S");
        assert_eq!(stat.field(4).unwrap(), "1");
        assert_eq!((stat.number(STAT_UTIME).unwrap(), stat.number(STAT_STIME).unwrap()), (7, 3));
        assert!(stat.field(0).is_err() && stat.field(99).is_err());
        let me = Stat::read(std::process::id()).unwrap();
        assert_eq!(me.number(1).unwrap(), std::process::id() as u64);
        assert_eq!(me.field(2).unwrap(), std::fs::read_to_string("/proc/self/comm").unwrap().trim_end());
    }
}
