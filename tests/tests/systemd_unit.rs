//! deploy/systemd/redprobe.service: the agent runs under exactly the unit's capabilities,
//! as a non-root user with no_new_privs (what DynamicUser= and NoNewPrivileges= give), with
//! the arguments of the unit's environment file, and attaches and counts. Without each of
//! those capabilities it fails, or warns, naming the one that is missing.
use std::{collections::BTreeMap, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail, ensure};
use testkit::{
    client::Conn,
    procs::{Agent, Server, agent_bin, run_agent_expecting_exit, status_field, workspace_root},
};

fn unit_path() -> PathBuf {
    workspace_root().join("deploy/systemd/redprobe.service")
}

/// `Key=value` settings of a unit file (the last one wins, as in systemd).
fn unit_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The unit's capabilities, e.g. ["CAP_BPF", "CAP_PERFMON"]. The bounding and ambient sets
/// must be the same: nothing is granted that is not used, nothing used that is not granted.
fn unit_capabilities() -> Result<Vec<String>> {
    let settings = unit_settings(&std::fs::read_to_string(unit_path())?);
    let set = |key: &str| -> Result<Vec<String>> {
        let v = settings.get(key).with_context(|| format!("{key}= missing from the unit"))?;
        let mut caps: Vec<String> = v.split_whitespace().map(str::to_string).collect();
        caps.sort();
        Ok(caps)
    };
    let (bounding, ambient) = (set("CapabilityBoundingSet")?, set("AmbientCapabilities")?);
    ensure!(bounding == ambient, "CapabilityBoundingSet {bounding:?} != AmbientCapabilities {ambient:?}");
    Ok(bounding)
}

/// The agent's arguments from the unit's environment file (REDPROBE_ARGS="..."), without
/// --listen (the test picks a free address).
fn environment_file_args() -> Result<Vec<String>> {
    let env = std::fs::read_to_string(workspace_root().join("deploy/systemd/redprobe.env"))?;
    let line = env.lines().find_map(|l| l.strip_prefix("REDPROBE_ARGS=")).context("no REDPROBE_ARGS= in redprobe.env")?;
    let words: Vec<String> = line.trim_matches('"').split_whitespace().map(str::to_string).collect();
    let mut out = vec![];
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        if w == "--listen" {
            it.next();
        } else {
            out.push(w);
        }
    }
    Ok(out)
}

/// The agent as the unit runs it: user nobody (DynamicUser=), no_new_privs, and exactly
/// `caps` as bounding, inheritable and ambient sets.
fn as_the_unit(caps: &[String]) -> Command {
    let list: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"])
        .arg(format!("--inh-caps={list}"))
        .arg(format!("--ambient-caps={list}"))
        .arg(format!("--bounding-set={list}"))
        .arg(agent_bin());
    cmd
}

/// The environment file's arguments, aimed at the test server's port.
fn args_for(port: u16) -> Result<Vec<String>> {
    let mut args = environment_file_args()?;
    let at = args.iter().position(|a| a == "--port").context("redprobe.env should select with --port")?;
    args[at + 1] = port.to_string();
    Ok(args)
}

fn cap_mask(caps: &[String]) -> Result<u64> {
    let number = |c: &str| -> Result<u32> {
        Ok(match c {
            "CAP_DAC_OVERRIDE" => 1,
            "CAP_DAC_READ_SEARCH" => 2,
            "CAP_NET_ADMIN" => 12,
            "CAP_SYS_PTRACE" => 19,
            "CAP_PERFMON" => 38,
            "CAP_BPF" => 39,
            other => bail!("the test does not know {other}: add its number"),
        })
    };
    caps.iter().try_fold(0u64, |m, c| Ok(m | 1 << number(c)?))
}

#[test]
fn the_units_settings_are_least_privilege() -> Result<()> {
    let text = std::fs::read_to_string(unit_path())?;
    let s = unit_settings(&text);
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("EnvironmentFile", "/etc/default/redprobe"),
        ("ExecStart", "/usr/local/bin/redprobe $REDPROBE_ARGS"),
    ] {
        assert_eq!(s.get(key).map(String::as_str), Some(want), "{key}= in {}", unit_path().display());
    }
    assert_eq!(
        s.get("ReadWritePaths").map(String::as_str),
        Some("/sys/kernel/tracing"),
        "the agent writes no file but tracefs's uprobe_events (HTTPS)"
    );
    assert_eq!(
        unit_capabilities()?,
        ["CAP_BPF", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_PTRACE"]
    );
    // systemd's own check of the syntax, with ExecStart= aimed at the built agent.
    let dir = std::env::temp_dir().join(format!("redprobe-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let unit = dir.join("redprobe.service");
    let exec = format!("ExecStart={} $REDPROBE_ARGS", agent_bin().display());
    std::fs::write(&unit, text.replace("ExecStart=/usr/local/bin/redprobe $REDPROBE_ARGS", &exec))?;
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().context("running systemd-analyze")?;
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Outside a systemd-booted machine it may mention the missing /etc/default/redprobe.
    let problems: Vec<&str> = stderr.lines().filter(|l| l.contains("redprobe.service") && !l.contains("/etc/default/redprobe")).collect();
    assert!(out.status.success() && problems.is_empty(), "systemd-analyze verify: {stderr}");
    Ok(())
}

#[test]
fn the_units_capabilities_are_enough_to_attach_and_count() -> Result<()> {
    let caps = unit_capabilities()?;
    let server = Server::start_python()?;
    let agent = Agent::start_with(as_the_unit(&caps), &args_for(server.port)?)?;
    let pid = agent.child.id();
    // The agent runs as nobody with the unit's capabilities, and no more; once attached it
    // has dropped CAP_BPF, CAP_DAC_OVERRIDE and CAP_NET_ADMIN, and keeps what reading /proc
    // and attaching the HTTPS probes to targets found later need.
    assert_eq!(status_field(pid, "Uid:")?.split_whitespace().next(), Some("65534"));
    let kept: Vec<String> = caps
        .iter()
        .filter(|c| ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_PERFMON"].contains(&c.as_str()))
        .cloned()
        .collect();
    assert_eq!(u64::from_str_radix(&status_field(pid, "CapEff:")?, 16)?, cap_mask(&kept)?, "effective capabilities");
    assert_eq!(u64::from_str_radix(&status_field(pid, "CapPrm:")?, 16)?, cap_mask(&kept)?, "permitted capabilities");
    // Without CAP_SETPCAP the bounding set cannot shrink further: it stays the unit's.
    let bounding = u64::from_str_radix(&status_field(pid, "CapBnd:")?, 16)?;
    assert_eq!(bounding & !cap_mask(&caps)?, 0, "bounding set {bounding:#x} beyond the unit's");
    assert_eq!(status_field(pid, "NoNewPrivs:")?, "1");

    let mut conn = Conn::open(server.port)?;
    conn.get_ok("/hello", 5)?;
    assert_eq!(conn.get("/error")?.status, 500);
    let m = agent.wait_metrics("6 requests", |m| m.request_counts().values().sum::<u64>() >= 6)?;
    assert_eq!(m.requests("GET", 200, "/hello"), 5, "{:?}", m.request_counts());
    assert_eq!(m.requests("GET", 500, "/error"), 1, "{:?}", m.request_counts());
    assert_eq!(m.sum("http_server_request_duration_seconds_count", &[("service_name", "shop")]), 6.0);
    assert!(!agent.stderr().contains("WARN"), "no warning expected:\n{}", agent.stderr());
    Ok(())
}

/// Under `caps` the agent runs and counts 3 requests exactly, and warns with `warning`,
/// naming the capability `dropped`.
fn counts_and_warns(caps: &[String], args: &[String], port: u16, dropped: &str, warning: &str) -> Result<()> {
    let agent = Agent::start_with(as_the_unit(caps), args)?;
    let mut conn = Conn::open(port)?;
    conn.get_ok("/hello", 3)?;
    let m = agent.wait_metrics("3 requests", |m| m.requests("GET", 200, "/hello") >= 3)?;
    assert_eq!(m.requests("GET", 200, "/hello"), 3, "without {dropped}: {:?}", m.request_counts());
    let log = agent.stderr();
    assert!(log.contains(warning) && log.contains(dropped), "without {dropped}, a warning should name it:\n{log}");
    Ok(())
}

#[test]
fn without_each_of_the_units_capabilities_the_agent_names_it() -> Result<()> {
    let caps = unit_capabilities()?;
    let server = Server::start_python()?;
    let args = args_for(server.port)?;
    for dropped in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != dropped).cloned().collect();
        match dropped.as_str() {
            // Loading eBPF: the agent stops with status 1 and names the capability.
            "CAP_BPF" | "CAP_PERFMON" => {
                let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
                a.extend(["--listen", "127.0.0.1:0"]);
                let (status, stderr) = run_agent_expecting_exit(as_the_unit(&fewer), &a)?;
                assert_eq!(status.code(), Some(1), "without {dropped}: {stderr}");
                assert!(stderr.contains(dropped.as_str()), "without {dropped}, the message should name it: {stderr}");
            }
            // No sock_ops program: the agent runs and counts, its responses end at the
            // server's last write, and it says which capability that takes.
            "CAP_NET_ADMIN" => counts_and_warns(&fewer, &args, server.port, dropped, "last byte leaves")?,
            // --port cannot see the server's sockets: the agent runs, measures nothing,
            // and says which capability is missing.
            "CAP_SYS_PTRACE" | "CAP_DAC_READ_SEARCH" => {
                let agent = Agent::start_with(as_the_unit(&fewer), &args)?;
                let m = agent.metrics()?;
                assert_eq!(m.sum("redprobe_targets", &[]), 0.0, "without {dropped} the server cannot be found by port");
                let log = agent.stderr();
                assert!(
                    log.contains("--port: the sockets of") && log.contains(dropped.as_str()),
                    "without {dropped}, a warning should name it:\n{log}"
                );
            }
            // No HTTPS: the agent runs and counts plain HTTP, and says what HTTPS needs.
            "CAP_DAC_OVERRIDE" => counts_and_warns(&fewer, &args, server.port, dropped, "HTTPS is not measured")?,
            other => bail!("the unit grants {other}: this test should show what fails without it"),
        }
    }
    Ok(())
}
