//! The lifecycle hooks (sched_process_fork, _exec, _exit) and the target registry: every
//! process a target forks is measured from its fork on, whatever order the agent learns of
//! forks and exits in, and every request carries the service of the process that served
//! it: after workers are recycled, after an exec, after the ancestors exited.
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use testkit::{
    client::{Endpoint, Stream, one_shot, one_shot_to},
    procs::{Agent, Server, free_port, workspace_root},
    servers::{Bind, gunicorn, python},
    wait_for,
    workload::{Counts, add},
};

/// The services that appear on the request series, with their request counts.
fn services(m: &testkit::scrape::Metrics) -> Vec<(String, u64)> {
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for s in m.series("http_server_request_duration_seconds_count") {
        *by.entry(s.label("service_name").to_string()).or_default() += s.value as u64;
    }
    by.into_iter().collect()
}

/// A child process killed when dropped (a daemon, a shell), by PID if it left its parent.
struct Killed(u32);

impl Drop for Killed {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// The command name of the Python interpreter the test servers run under.
fn python_comm() -> String {
    let name = python().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.chars().take(15).collect()
}

fn process_models(mode: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(workspace_root().join("tests/servers/process_models.py")).arg(mode);
    cmd
}

/// One child per connection, short-lived, 8 clients at once, while a selector rescans
/// every 10 ms: no child may be lost, whatever the order of forks, exits and rescans.
#[test]
fn a_forking_server_with_a_child_per_connection_loses_no_child() -> Result<()> {
    let server = Server::start(process_models("forking"))?;
    let port = server.port;
    let agent = Agent::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--port".into(),
        port.to_string(),
        "--rescan-interval-ms".into(),
        "10".into(),
    ])?;
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 250;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || -> Result<Counts> {
                let mut truth = Counts::new();
                for i in 0..PER_CLIENT {
                    let path = if (c + i) % 10 == 0 { "/error" } else { "/hello" };
                    let r = one_shot(port, "GET", path, "HTTP/1.1")?;
                    add(&mut truth, "GET", r.status, path);
                }
                Ok(truth)
            })
        })
        .collect();
    let mut truth = Counts::new();
    for c in clients {
        for (k, n) in c.join().expect("client thread")? {
            *truth.entry(k).or_default() += n;
        }
    }
    let total: u64 = truth.values().sum();
    let processes = 1.0 + (CLIENTS * PER_CLIENT) as f64; // the server and a child per connection
    let m = agent.wait_metrics("every request and every child counted", |m| {
        m.request_counts().values().sum::<u64>() >= total && m.sum("redprobe_target_attaches_total", &[]) >= processes
    })?;
    println!(
        "forking server: requests sent {total}, counted {}; processes {processes}, attaches {}",
        m.request_counts().values().sum::<u64>(),
        m.sum("redprobe_target_attaches_total", &[])
    );
    assert_eq!(m.request_counts(), truth, "probe counts != client truth");
    assert_eq!(m.sum("redprobe_target_attaches_total", &[]), processes, "every process attached once");
    assert_eq!(m.sum("redprobe_events_lost_total", &[]), 0.0);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    assert_eq!(services(&m), vec![(python_comm(), total)], "children carry the server's service");
    // Every child exited: only the server is left.
    agent.wait_metrics("children gone", |m| m.sum("redprobe_targets", &[]) == 1.0)?;
    Ok(())
}

/// gunicorn with every worker recycled after one request: each new worker serves its one
/// request under the master's service, never a nameless or unknown one.
#[test]
fn recycled_workers_keep_the_service_name() -> Result<()> {
    // --preload: workers fork with the app loaded and serve at once, so a worker's fork and
    // its first request reach the agent together.
    let server = gunicorn(Bind::V4, 3, &["--max-requests", "1", "--preload"], &[])?;
    let agent = Agent::attach(server.pid())?;
    let master_comm = std::fs::read_to_string(format!("/proc/{}/comm", server.pid()))?.trim().to_string();
    // 6 clients at once, 50 requests each: workers are replaced while others serve.
    const CLIENTS: u64 = 6;
    const N: u64 = 300;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let to = server.endpoint.clone();
            std::thread::spawn(move || -> Result<()> {
                for _ in 0..N / CLIENTS {
                    let r = one_shot_to(&to, "GET", "/hello", "HTTP/1.1")?;
                    ensure!(r.status == 200, "status {}", r.status);
                }
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread")?;
    }
    let m = agent.wait_metrics("300 requests", |m| m.requests("GET", 200, "/hello") >= N)?;
    assert_eq!(m.requests("GET", 200, "/hello"), N);
    assert_eq!(services(&m), vec![(master_comm.clone(), N)], "one service for every recycled worker");
    let open: Vec<String> = m
        .series("redprobe_target_open_connections")
        .map(|s| s.label("service_name").to_string())
        .filter(|s| *s != master_comm)
        .collect();
    assert!(open.is_empty(), "connection gauges under other services: {open:?}");
    Ok(())
}

/// Starts `sh -c 'read go; exec gunicorn ...'`: the agent attaches to the shell, then the
/// shell executes gunicorn (the Docker entrypoint pattern).
fn gunicorn_behind_exec(port: u16) -> Result<Child> {
    let gunicorn = python().parent().context("the venv's bin directory")?.join("gunicorn");
    ensure!(gunicorn.exists(), "{} missing (cargo xtask test installs the venv)", gunicorn.display());
    let script = format!(
        "read go; exec {} --no-control-socket --workers 2 --bind 127.0.0.1:{port} djangoapp.wsgi",
        gunicorn.display()
    );
    Ok(Command::new("sh")
        .args(["-c", &script])
        .current_dir(workspace_root().join("tests/servers"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

#[test]
fn a_shell_that_execs_the_server_takes_the_servers_name() -> Result<()> {
    let port = free_port();
    let mut shell = gunicorn_behind_exec(port)?;
    let _guard = Killed(shell.id());
    let agent = Agent::attach(shell.id())?;
    shell.stdin.take().context("stdin")?.write_all(b"go\n")?;
    let to = Endpoint::v4(port);
    wait_for("gunicorn to accept", Duration::from_secs(60), || Stream::connect(&to).ok())?;
    const N: u64 = 40;
    for _ in 0..N {
        let r = one_shot_to(&to, "GET", "/hello", "HTTP/1.1")?;
        ensure!(r.status == 200, "status {}", r.status);
    }
    let m = agent.wait_metrics("40 requests", |m| m.requests("GET", 200, "/hello") >= N)?;
    assert_eq!(services(&m), vec![("gunicorn".to_string(), N)], "the shell's name must not stick");
    Ok(())
}

/// fork, setsid, fork, the parents exit: the daemon, found through the PID it was started
/// as, keeps that process's name although every ancestor is gone.
#[test]
fn a_double_forking_daemon_keeps_its_name() -> Result<()> {
    let mut original = process_models("daemon").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let comm = python_comm();
    let pid = original.id();
    wait_for("the daemon's interpreter", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().filter(|c| c.trim() == comm)
    })?;
    let agent = Agent::attach(original.id())?;
    original.stdin.take().context("stdin")?.write_all(b"go\n")?;
    let mut line = String::new();
    BufReader::new(original.stdout.take().context("stdout")?).read_line(&mut line)?;
    let _ = original.wait();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (pid, port): (u32, u16) = match fields.as_slice() {
        ["DAEMON", pid, port] => (pid.parse()?, port.parse()?),
        _ => bail!("the daemon did not report itself: {line:?}"),
    };
    let _guard = Killed(pid);
    const N: u64 = 120;
    for i in 0..N {
        let path = if i % 4 == 0 { "/error" } else { "/hello" };
        one_shot(port, "GET", path, "HTTP/1.1")?;
    }
    let m = agent.wait_metrics("120 requests", |m| m.request_counts().values().sum::<u64>() >= N)?;
    assert_eq!(m.requests("GET", 200, "/hello") + m.requests("GET", 500, "/error"), N);
    assert_eq!(services(&m), vec![(comm, N)], "the daemon keeps the name it was started under");
    Ok(())
}
