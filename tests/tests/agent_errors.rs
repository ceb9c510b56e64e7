//! Every way the agent can be started wrong ends with a clear message and a non-zero
//! exit, and the target keeping on while the agent runs is handled.
use std::{net::TcpListener, process::Command};

use anyhow::Result;
use testkit::{
    client::Conn,
    procs::{Agent, Server, agent_bin, agent_fails_with, agent_in_private_mounts, pid_args},
};

#[test]
fn pid_that_does_not_exist() -> Result<()> {
    let stderr = agent_fails_with(Command::new(agent_bin()), &["--pid", "4000000", "--listen", "127.0.0.1:0"], 1)?;
    assert!(stderr.contains("no process with PID 4000000"), "{stderr}");
    Ok(())
}

#[test]
fn cgroup_that_does_not_exist() -> Result<()> {
    let stderr =
        agent_fails_with(Command::new(agent_bin()), &["--cgroup", "/no-such-redprobe-cgroup", "--listen", "127.0.0.1:0"], 1)?;
    assert!(stderr.contains("--cgroup /no-such-redprobe-cgroup") && stderr.contains("no such cgroup"), "{stderr}");
    Ok(())
}

#[test]
fn unknown_flag_and_missing_pid() -> Result<()> {
    let stderr = agent_fails_with(Command::new(agent_bin()), &["--pid", "1", "--bogus"], 2)?;
    assert!(stderr.contains("--bogus"), "{stderr}");
    let stderr = agent_fails_with(Command::new(agent_bin()), &[], 2)?;
    assert!(stderr.contains("--pid"), "{stderr}");
    Ok(())
}

#[test]
fn listen_address_in_use() -> Result<()> {
    let server = Server::start_python()?;
    let busy = TcpListener::bind("127.0.0.1:0")?;
    let addr = busy.local_addr()?.to_string();
    let stderr = agent_fails_with(Command::new(agent_bin()), &["--pid", &server.pid().to_string(), "--listen", &addr], 1)?;
    assert!(stderr.contains("already in use"), "{stderr}");
    Ok(())
}

#[test]
fn not_root_names_the_missing_capabilities() -> Result<()> {
    let server = Server::start_python()?;
    // setpriv (util-linux) drops to nobody with no capabilities.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]).arg(agent_bin());
    let stderr = agent_fails_with(cmd, &["--pid", &server.pid().to_string(), "--listen", "127.0.0.1:0"], 1)?;
    assert!(stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"), "{stderr}");
    Ok(())
}

#[test]
fn works_without_tracefs() -> Result<()> {
    // In a private mount namespace with tracefs and debugfs unmounted, the agent still
    // attaches (tp_btf programs attach by BTF id, not through tracefs).
    let server = Server::start_python()?;
    let cmd = agent_in_private_mounts(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
         if grep -q tracefs /proc/self/mounts; then echo 'tracefs still mounted' >&2; exit 99; fi",
    );
    let agent = Agent::start_with(cmd, &pid_args(&[server.pid()]))?;
    let mut conn = Conn::open(server.port)?;
    assert_eq!(conn.get("/hello")?.status, 200);
    agent.wait_metrics("a request counted without tracefs", |m| m.requests("GET", 200, "/hello") == 1)?;
    Ok(())
}

#[test]
fn target_exit_is_logged_and_counts_are_kept() -> Result<()> {
    let mut server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let mut conn = Conn::open(server.port)?;
    conn.get_ok("/hello", 3)?;
    agent.wait_metrics("3 requests", |m| m.requests("GET", 200, "/hello") == 3)?;
    server.child.kill()?;
    server.child.wait()?;
    let m = agent.wait_metrics("the exit recorded", |m| m.sum("redprobe_target_exits_total", &[]) == 1.0)?;
    assert_eq!(m.requests("GET", 200, "/hello"), 3, "counts survive the target's exit");
    assert_eq!(m.sum("redprobe_targets", &[]), 0.0);
    assert!(agent.stderr().contains("target exited"), "{}", agent.stderr());
    Ok(())
}

#[test]
fn exit_with_target_stops_the_agent() -> Result<()> {
    let mut server = Server::start_python()?;
    let mut agent = Agent::start(&["--pid".into(), server.pid().to_string(), "--exit-with-target".into()])?;
    server.child.kill()?;
    server.child.wait()?;
    let status = testkit::wait_for("the agent to exit", std::time::Duration::from_secs(20), || agent.child.try_wait().ok().flatten())?;
    assert!(status.success(), "{status}: {}", agent.stderr());
    Ok(())
}

#[test]
fn bad_route_templates_and_missing_routes_file() -> Result<()> {
    let server = Server::start_python()?;
    let pid = server.pid().to_string();
    let stderr =
        agent_fails_with(Command::new(agent_bin()), &["--pid", &pid, "--route", "api/{id}", "--listen", "127.0.0.1:0"], 1)?;
    assert!(stderr.contains("must start with '/'"), "{stderr}");
    let stderr = agent_fails_with(
        Command::new(agent_bin()),
        &["--pid", &pid, "--routes-file", "/nonexistent/routes.txt", "--listen", "127.0.0.1:0"],
        1,
    )?;
    assert!(stderr.contains("--routes-file /nonexistent/routes.txt"), "{stderr}");
    Ok(())
}
