//! Selectors that survive restarts: `--port`, `--exe` and `--cgroup`. For each, a server is
//! selected, counted exactly, killed and started again under a new PID; the agent picks
//! the new process up by itself and the counters continue where they were. A second
//! server that the selector does not name takes traffic at the same time and must not
//! show up.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, ensure};
use testkit::{
    client::Conn,
    procs::{Agent, Server, free_port},
    scrape::Metrics,
};

use testkit::workload::Counts;

fn gauge(m: &Metrics, name: &str) -> f64 {
    m.sum(name, &[])
}

fn get(port: u16, path: &str, n: usize, status: u16) -> Result<()> {
    let mut conn = Conn::open(port)?;
    for _ in 0..n {
        let r = conn.get(path)?;
        ensure!(r.status == status, "GET {path} answered {} (wanted {status})", r.status);
    }
    Ok(())
}

/// The scenario shared by every selector. `start(port)` starts the selected server on
/// `port` (each start gets a new PID); `selector` are the agent's flags that name it.
fn follows_a_restarted_server(port: u16, selector: &[&str], start: impl Fn(u16) -> Result<Server>) -> Result<()> {
    let mut server = start(port)?;
    let other = Server::start_python()?; // named by no selector
    let mut args: Vec<String> = selector.iter().map(|s| s.to_string()).collect();
    args.extend(["--service".to_string(), "shop".to_string()]);
    let agent = Agent::start(&args)?;
    agent.wait_metrics("the server selected at start-up", |m| {
        gauge(m, "redprobe_targets") == 1.0 && gauge(m, "redprobe_target_attaches_total") == 1.0
    })?;

    get(server.port, "/hello", 3, 200)?;
    get(other.port, "/users/not-selected", 2, 200)?;
    agent.wait_metrics("3 requests", |m| m.requests("GET", 200, "/hello") == 3)?;

    let first_pid = server.pid();
    server.child.kill()?;
    server.child.wait()?;
    agent.wait_metrics("the exit recorded", |m| {
        gauge(m, "redprobe_target_exits_total") == 1.0 && gauge(m, "redprobe_targets") == 0.0
    })?;
    let server = start(port)?;
    ensure!(server.pid() != first_pid, "the restarted server has the same PID {first_pid}");
    let m = agent.wait_metrics("the restarted server selected again", |m| {
        gauge(m, "redprobe_targets") == 1.0 && gauge(m, "redprobe_target_attaches_total") == 2.0
    })?;
    ensure!(m.requests("GET", 200, "/hello") == 3, "counts changed across the restart: {:?}", m.request_counts());

    get(server.port, "/hello", 4, 200)?;
    get(server.port, "/error", 1, 500)?;
    get(other.port, "/users/not-selected", 2, 200)?;
    let m = agent.wait_metrics("7 + 1 requests", |m| {
        m.requests("GET", 200, "/hello") >= 7 && m.requests("GET", 500, "/error") >= 1
    })?;
    let want: Counts = [(("GET".to_string(), 200, "/hello".to_string()), 7), (("GET".to_string(), 500, "/error".to_string()), 1)]
        .into_iter()
        .collect();
    assert_eq!(m.request_counts(), want, "counts must continue across the restart, and only the selected server counts");
    assert_eq!(m.sum("http_server_request_duration_seconds_count", &[("service_name", "shop")]), 8.0);
    assert!(!m.text.contains("not-selected"), "the server no selector names leaked into the metrics");
    let log = agent.stderr();
    assert_eq!(log.matches("selected by").count(), 2, "one 'selected by' line per start:\n{log}");
    Ok(())
}

#[test]
fn port_selector_follows_a_restarted_server() -> Result<()> {
    let port = free_port();
    follows_a_restarted_server(port, &["--port", &port.to_string()], |port| {
        Server::start(Server::python_command("python3", port))
    })
}

#[test]
fn exe_selector_follows_a_restarted_server() -> Result<()> {
    // A symlink to python3 under a name of our own: the kernel names the process after
    // it, so no other python3 on the machine (other tests, other users) matches.
    let name = format!("rpexe{}", std::process::id() % 1_000_000);
    let dir = TempDir::new("exe")?;
    let python = real_python()?;
    let link = dir.0.join(&name);
    std::os::unix::fs::symlink(&python, &link)?;
    let port = free_port();
    follows_a_restarted_server(port, &["--exe", &name], |port| Server::start(Server::python_command(&link, port)))
}

#[test]
fn cgroup_selector_follows_a_restarted_server() -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let Some(mount) = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        right.starts_with("cgroup2 ").then(|| PathBuf::from(point))
    }) else {
        anyhow::bail!("no cgroup v2 filesystem is mounted: this test (and --cgroup) need one");
    };
    let name = format!("redprobe-test-{}", std::process::id());
    let cgroup = CgroupDir::create(mount.join(&name))?;
    let procs = cgroup.0.join("cgroup.procs");
    let port = free_port();
    // The server enters the cgroup before it execs, as a systemd unit's processes do.
    let start = |port: u16| {
        let python = Server::python_command("python3", port);
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(format!("echo $$ > {} && exec \"$0\" \"$@\"", procs.display()));
        sh.arg(python.get_program()).args(python.get_args());
        Server::start(sh)
    };
    // Relative to the cgroup v2 mount, the way systemd and /proc/PID/cgroup write it.
    follows_a_restarted_server(port, &["--cgroup", &format!("/{name}")], start)
}

/// The python3 interpreter itself (python3 on PATH may be a wrapper script, e.g. pyenv's).
fn real_python() -> Result<PathBuf> {
    let out = Command::new("python3").args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"]).output()?;
    ensure!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A directory removed with its content when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("redprobe-{what}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cgroup directory, removed when dropped (once its processes have exited: the servers
/// are dropped first, as they are declared later).
struct CgroupDir(PathBuf);

impl CgroupDir {
    fn create(path: PathBuf) -> Result<Self> {
        std::fs::create_dir(&path).with_context(|| format!("creating the cgroup {}", path.display()))?;
        Ok(CgroupDir(path))
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        // A killed process leaves its cgroup a moment after it is reaped.
        let _ = testkit::wait_for("the test cgroup to empty", std::time::Duration::from_secs(5), || {
            std::fs::remove_dir(&self.0).ok()
        });
    }
}
