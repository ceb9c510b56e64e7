//! The deployment files in deploy/ are checked by the tools that read them: promtool for the
//! Prometheus configuration and rules (with the rules' unit tests), a JSON parser for the
//! Grafana dashboard, a YAML parser for the Kubernetes manifests, and the agent itself for
//! the DaemonSet's arguments. (Every expression of the rules and of the dashboard is run
//! against a real Prometheus in prometheus_loop.rs.)
use std::{collections::BTreeSet, process::Command};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use testkit::{
    client::Conn,
    deploy::{deploy, manifests},
    procs::{Agent, Server},
};

/// Runs promtool; fails with its output.
fn promtool(args: &[&str]) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .context("running promtool (Debian package prometheus; `cargo xtask test` installs it)")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    Ok(text)
}

#[test]
fn promtool_checks_the_config_and_the_rules() -> Result<()> {
    let config = promtool(&["check", "config", "prometheus.yml"])?;
    assert!(config.contains("SUCCESS"), "{config}");
    let rules = promtool(&["check", "rules", "rules.yml"])?;
    assert!(rules.contains("SUCCESS: 37 rules found"), "{rules}");
    Ok(())
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() -> Result<()> {
    let out = promtool(&["test", "rules", "tests.yml"])?;
    assert!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

/// Names given by `record:` in rules.yml.
fn recorded_names() -> Result<BTreeSet<String>> {
    let rules = std::fs::read_to_string(deploy("prometheus/rules.yml"))?;
    Ok(rules.lines().filter_map(|l| l.trim().strip_prefix("- record:")).map(|n| n.trim().to_string()).collect())
}

#[test]
fn the_dashboard_parses_and_uses_the_recording_rules() -> Result<()> {
    let path = deploy("grafana/redprobe-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let recorded = recorded_names()?;
    let panels = dash["panels"].as_array().context("panels")?;
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("");
        assert!(ids.insert(p["id"].as_i64().context("panel id")?), "duplicate panel id in {title}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title}: the data source variable");
        let targets =
            p["targets"].as_array().filter(|t| !t.is_empty()).with_context(|| format!("panel {title} has no query"))?;
        for t in targets {
            let expr = t["expr"].as_str().with_context(|| format!("panel {title}: target without expr"))?;
            // Any level:metric:operation name must be a recording rule of rules.yml.
            for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                if word.matches(':').count() == 2 {
                    assert!(recorded.contains(word), "panel {title} uses {word}, which rules.yml does not record");
                    used.insert(word.to_string());
                }
            }
        }
    }
    // RED per route and status, gRPC, saturation and health all have panels.
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Requests per second by route",
        "Requests per second by status",
        "Error ratio by route",
        "p99 latency by route",
        "Active requests",
        "Target CPU",
        "Kernel events",
        "Routes folded into _other",
        "gRPC error ratio (server errors)",
        "gRPC p99 latency",
    ] {
        assert!(titles.contains(&want), "no panel {want:?} in {titles:?}");
    }
    assert!(used.len() >= 10, "the dashboard should be built on the recording rules; it uses {used:?}");
    Ok(())
}

#[test]
fn the_daemonset_is_least_privilege_and_its_arguments_work() -> Result<()> {
    let docs = manifests("kubernetes/daemonset.yaml")?;
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").context("no DaemonSet")?;
    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"], true, "the kernel reports host PIDs");
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    // The same capabilities as the systemd unit (tests/tests/systemd_unit.rs proves each).
    let unit = std::fs::read_to_string(deploy("systemd/redprobe.service"))?;
    let unit_caps: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("unit capabilities")?
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    let pod_caps: BTreeSet<String> = sc["capabilities"]["add"]
        .as_array()
        .context("capabilities.add")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(pod_caps, unit_caps, "DaemonSet capabilities != systemd unit capabilities");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert!(sc.get("privileged").is_none_or(|p| p == false), "not privileged");
    // BTF mounted; probes and scrape annotations on the metrics port.
    let mounts = c["volumeMounts"].as_array().context("volumeMounts")?;
    assert!(mounts.iter().any(|m| m["mountPath"] == "/sys/kernel/btf" && m["readOnly"] == true), "{mounts:?}");
    let port = c["ports"][0]["containerPort"].as_u64().context("containerPort")?;
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/metrics", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], c["ports"][0]["name"], "{probe}");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    for (kind, what) in [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")] {
        assert!(c["resources"][kind][what].is_string(), "resources.{kind}.{what}");
    }
    let args: Vec<String> =
        c["args"].as_array().context("args")?.iter().filter_map(|a| a.as_str().map(str::to_string)).collect();
    let listen = args.iter().position(|a| a == "--listen").context("--listen in args")?;
    assert_eq!(args[listen + 1], format!("0.0.0.0:{port}"), "the agent must listen on the pod's port");
    // PodMonitor: the same pods and port.
    let pm = manifests("kubernetes/podmonitor.yaml")?;
    let pm = pm.iter().find(|d| d["kind"] == "PodMonitor").context("no PodMonitor")?;
    assert_eq!(pm["spec"]["selector"]["matchLabels"], ds["spec"]["selector"]["matchLabels"]);
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], c["ports"][0]["name"]);

    // The DaemonSet's arguments, aimed at a test server and a free address, select and count.
    let server = Server::start_python()?;
    let mut run_args = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => {
                it.next();
            }
            "--port" => {
                it.next();
                run_args.extend(["--port".to_string(), server.port.to_string()]);
            }
            _ => run_args.push(a.clone()),
        }
    }
    let agent = Agent::start(&run_args)?;
    let mut conn = Conn::open(server.port)?;
    conn.get_ok("/hello", 3)?;
    let m = agent.wait_metrics("3 requests", |m| m.requests("GET", 200, "/hello") == 3)?;
    assert_eq!(m.request_counts().values().sum::<u64>(), 3);
    Ok(())
}

/// deploy/web/web-config.yml, beside a certificate, works as documented: the agent serves
/// /metrics over TLS to the password its comment names, and refuses a scrape without it.
#[test]
fn the_example_web_config_serves_tls_with_its_documented_password() -> Result<()> {
    use testkit::tls::{Ca, scrape};
    let dir = tempfile::tempdir()?;
    std::fs::copy(deploy("web/web-config.yml"), dir.path().join("web-config.yml"))?;
    let ca = Ca::new(dir.path(), "ca")?;
    let (crt, key) = ca.sign("server", true)?;
    std::fs::rename(crt, dir.path().join("tls.crt"))?;
    std::fs::rename(key, dir.path().join("tls.key"))?;
    let server = Server::start_python()?;
    let config = dir.path().join("web-config.yml").display().to_string();
    let cacert = ca.crt().display().to_string();
    let user = |password: &str| ["--cacert".to_string(), cacert.clone(), "-u".into(), format!("prometheus:{password}")];
    let good = user("change-me");
    let args = ["--pid".to_string(), server.pid().to_string(), "--web.config.file".into(), config];
    let ready = good.clone();
    let agent = testkit::procs::Agent::start_until(Command::new(testkit::procs::agent_bin()), &args, move |addr| {
        scrape(addr, &ready.iter().map(String::as_str).collect::<Vec<_>>()).is_ok_and(|s| s == 200)
    })?;
    let status = |args: &[String]| scrape(&agent.addr, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(status(&good)?, 200);
    assert_eq!(status(&user("wrong"))?, 401);
    Ok(())
}
