//! Servers in real containers (podman), and the agent in one: every series says which
//! container and pod served it.
//! - Two containers serve on port 8000, one of them laid out as a Kubernetes pod (its
//!   cgroup under `kubepods/besteffort/pod<uid>`, its hostname the pod's name, the
//!   service-account namespace file mounted where the kubelet mounts it); `--port 8000`
//!   shows two sets of series, each exact against its own client; `--container` and
//!   `--cgroup` select one each.
//! - The agent runs from its image (`cargo xtask image`) with the DaemonSet's image,
//!   arguments and capabilities, in cgroup and mount namespaces of its own, and counts a
//!   server in another container exactly.
//! - A container that restarts keeps its series; 200 short-lived containers each count
//!   exactly, and their series go once they are gone (`--forget-after`), so the page stays
//!   bounded.
use std::{collections::BTreeMap, process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use testkit::{
    IMAGE, REDPROBE_PYTHON,
    client::Conn,
    containers::{CONTAINER_PORT, Container, wait_listening},
    deploy::daemonset_agent,
    procs::{Agent, free_port},
    scrape::{self, Metrics},
    wait_for,
};

const POD_UID: &str = "5b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
const POD_NAME: &str = "shop-7d9f8b6c5d-x2x7k";
const NAMESPACE: &str = "checkout";

fn python() -> String {
    std::env::var(REDPROBE_PYTHON).unwrap_or_else(|_| "python3".into())
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// gunicorn + Django with `workers` workers, on [`CONTAINER_PORT`] in its container.
fn gunicorn(workers: u32) -> Vec<String> {
    let mut cmd = vec![python()];
    cmd.extend(strings(&["-m", "gunicorn", "--no-control-socket", "--workers"]));
    cmd.push(workers.to_string());
    cmd.extend(strings(&["--bind", &format!("0.0.0.0:{CONTAINER_PORT}"), "djangoapp.wsgi"]));
    cmd
}

/// The Python test server (app.py).
fn app() -> Vec<String> {
    let mut cmd = vec![python()];
    cmd.extend(strings(&["app.py", "--port", &CONTAINER_PORT.to_string(), "--bind", "0.0.0.0"]));
    cmd
}

/// podman options that lay a container out as a Kubernetes pod's: the kubelet's cgroup
/// parent (cgroupfs driver), the pod's name as hostname, and the service-account namespace
/// file (mounted at /var/run/secrets/..., behind the image's absolute /var/run -> /run).
fn as_pod(dir: &std::path::Path) -> Result<Vec<String>> {
    let ns = dir.join("namespace");
    std::fs::write(&ns, NAMESPACE)?;
    Ok(vec![
        "--cgroup-parent".into(),
        format!("/kubepods/besteffort/pod{POD_UID}"),
        "--hostname".into(),
        POD_NAME.into(),
        "-v".into(),
        format!("{}:/var/run/secrets/kubernetes.io/serviceaccount/namespace:ro", ns.display()),
    ])
}

/// `n` GETs, each on a connection of its own (gunicorn's sync workers close each one).
fn get(port: u16, path: &str, n: usize, status: u16) -> Result<()> {
    for _ in 0..n {
        let r = Conn::open(port)?.get(path)?;
        ensure!(r.status == status, "GET {path} on port {port} answered {} (wanted {status})", r.status);
    }
    Ok(())
}

/// Who served a series: its container id, or its pod (`pod:namespace/name`), which is
/// what the default labels say of a pod.
fn who(s: &testkit::scrape::Sample) -> String {
    match s.label("container_id") {
        "" if !s.label("k8s_pod_name").is_empty() => {
            format!("pod:{}/{}", s.label("k8s_namespace_name"), s.label("k8s_pod_name"))
        }
        id => id.to_string(),
    }
}

/// Request counts by (who served them, method, status, route).
fn by_container(m: &Metrics) -> BTreeMap<(String, String, String, String), u64> {
    let mut out = BTreeMap::new();
    for s in m.series("http_server_request_duration_seconds_count") {
        let key = (
            who(s),
            s.label("http_request_method").to_string(),
            s.label("http_response_status_code").to_string(),
            s.label("http_route").to_string(),
        );
        *out.entry(key).or_default() += s.value as u64;
    }
    out
}

fn counts(entries: &[(&str, &str, &str, &str, u64)]) -> BTreeMap<(String, String, String, String), u64> {
    entries.iter().map(|(c, m, s, r, n)| ((c.to_string(), m.to_string(), s.to_string(), r.to_string()), *n)).collect()
}

fn targets(m: &Metrics) -> f64 {
    m.sum("redprobe_targets", &[])
}

#[test]
fn two_containers_on_one_port_are_two_sets_of_series_each_exact() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (plain, plain_port) = Container::server("plain", &[], &gunicorn(2))?;
    let (pod, pod_port) = Container::server("pod", &as_pod(dir.path())?, &gunicorn(2))?;
    wait_listening(plain_port)?;
    wait_listening(pod_port)?;

    let agent = Agent::start(&strings(&["--port", "8000"]))?;
    // Each gunicorn: a master and two workers.
    agent.wait_metrics("both gunicorns and their workers", |m| targets(m) == 6.0)?;
    get(plain_port, "/hello", 7, 200)?;
    get(plain_port, "/error", 2, 500)?;
    get(pod_port, "/users/42", 5, 200)?;
    get(pod_port, "/hello", 3, 200)?;
    let the_pod = format!("pod:{NAMESPACE}/{POD_NAME}");
    let want = counts(&[
        (&plain.id, "GET", "200", "/hello", 7),
        (&plain.id, "GET", "500", "/error", 2),
        (&the_pod, "GET", "200", "/users/{id}", 5),
        (&the_pod, "GET", "200", "/hello", 3),
    ]);
    let m = agent.wait_metrics("17 requests", |m| by_container(m).values().sum::<u64>() >= 17)?;
    ensure!(by_container(&m) == want, "counts by container: {:#?}\nwanted {want:#?}", by_container(&m));

    // By default the pod's series carry its namespace and name, and its workload as
    // service_name; the plain container's carry its id alone.
    for s in m.series("http_server_request_duration_seconds_count") {
        if who(s) == the_pod {
            let want = [("service_name", "shop"), ("k8s_pod_name", POD_NAME), ("k8s_namespace_name", NAMESPACE)];
            ensure!(s.has(&want), "the pod's series: {:?}", s.labels);
            ensure!(s.label("container_id").is_empty() && s.label("k8s_pod_uid").is_empty(), "{:?}", s.labels);
        } else {
            ensure!(
                s.label("k8s_pod_name").is_empty() && s.label("k8s_pod_uid").is_empty(),
                "not a pod: {:?}",
                s.labels
            );
            ensure!(s.label("service_name") != "shop", "{:?}", s.labels);
        }
    }
    agent.stop()?;

    // --container selects the plain one, by the 12 characters `podman ps` shows.
    let agent = Agent::start(&strings(&["--container", &plain.id[..12]]))?;
    agent.wait_metrics("the plain container's gunicorn", |m| targets(m) == 3.0)?;
    get(pod_port, "/hello", 2, 200)?;
    get(plain_port, "/hello", 4, 200)?;
    let m = agent.wait_metrics("4 requests", |m| by_container(m).values().sum::<u64>() >= 4)?;
    let want = counts(&[(&plain.id, "GET", "200", "/hello", 4)]);
    ensure!(by_container(&m) == want, "--container: {:#?}", by_container(&m));
    agent.stop()?;

    // --cgroup selects the pod, by its cgroup (as the kubelet names it); with every label.
    let agent = Agent::start(&strings(&[
        "--cgroup",
        &format!("/kubepods/besteffort/pod{POD_UID}"),
        "--container-labels",
        "all",
    ]))?;
    agent.wait_metrics("the pod's gunicorn", |m| targets(m) == 3.0)?;
    get(plain_port, "/hello", 2, 200)?;
    get(pod_port, "/users/7", 6, 200)?;
    let m = agent.wait_metrics("6 requests", |m| by_container(m).values().sum::<u64>() >= 6)?;
    let want = counts(&[(&pod.id, "GET", "200", "/users/{id}", 6)]);
    ensure!(by_container(&m) == want, "--cgroup: {:#?}", by_container(&m));
    for s in m.series("http_server_request_duration_seconds_count") {
        let want = [
            ("service_name", "shop"),
            ("container_id", pod.id.as_str()),
            ("k8s_pod_uid", POD_UID),
            ("k8s_pod_name", POD_NAME),
            ("k8s_namespace_name", NAMESPACE),
        ];
        ensure!(s.has(&want), "--container-labels all: {:?}", s.labels);
    }
    Ok(())
}

#[test]
fn the_agent_runs_from_its_image_as_the_daemonset_runs_it() -> Result<()> {
    let ds = daemonset_agent()?;
    ensure!(ds.image == IMAGE, "the DaemonSet's image is {}, `cargo xtask image` builds {IMAGE}", ds.image);
    let exists = Command::new("podman").args(["image", "exists", IMAGE]).status()?;
    ensure!(exists.success(), "no image {IMAGE}: build it with `cargo xtask image` (`cargo xtask test` does)");

    let (server, server_port) = Container::server("server", &[], &gunicorn(1))?;
    wait_listening(server_port)?;
    // An HTTPS one too: its libssl is read through /proc/PID/root from the agent's container.
    let (cert, key) = testkit::servers::certificate()?;
    let mut https = gunicorn(1);
    let at = https.len() - 1;
    https.splice(at..at, [cert, key].iter().zip(["--certfile", "--keyfile"]).flat_map(|(p, f)| [f.to_string(), p.display().to_string()]));
    let (tls_server, tls_port) = Container::server("https", &[], &https)?;
    wait_listening(tls_port)?;
    // The DaemonSet's pod: the host's PID namespace, everything else its own (cgroup
    // namespace included), a read-only root, the DaemonSet's capabilities and nothing
    // else, and the host's BTF. podman's own seccomp profile (4.3) refuses bpf() to
    // anything but CAP_SYS_ADMIN, where Kubernetes' RuntimeDefault takes CAP_BPF: the
    // profile is left out here (docs/deploy.md).
    let metrics_port = free_port();
    let mut options = strings(&[
        "--pid=host",
        "--cgroupns=private",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        "/sys/kernel/btf:/sys/kernel/btf:ro",
        "-v",
        "/sys/kernel/tracing:/sys/kernel/tracing",
        "-p",
    ]);
    options.push(format!("127.0.0.1:{metrics_port}:9464"));
    options.push(format!("--cap-add={}", ds.capabilities.join(",")));
    let agent = Container::run("agent", &options, IMAGE, &ds.args)?;
    let addr = format!("127.0.0.1:{metrics_port}");
    let scrape = |what: &str, ok: &dyn Fn(&Metrics) -> bool| -> Result<Metrics> {
        wait_for(what, Duration::from_secs(60), || scrape::fetch(&addr).ok().filter(|m| ok(m)))
            .with_context(|| format!("agent log:\n{}", agent.logs()))
    };
    scrape("the agent in its container, measuring both servers' master and worker", &|m| targets(m) == 4.0)?;

    // Its cgroup namespace is its own: other processes' cgroups read `/../..` from there.
    let agent_pid = agent.pid()?;
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/cgroup")).ok();
    ensure!(ns(agent_pid) != ns(std::process::id()), "the agent shares the host's cgroup namespace");
    let seen = Command::new("nsenter")
        .args(["-C", "-t", &agent_pid.to_string(), "cat"])
        .arg(format!("/proc/{}/cgroup", server.pid()?))
        .output()?;
    let seen = String::from_utf8_lossy(&seen.stdout);
    ensure!(seen.contains("/.."), "the server's cgroup from the agent's namespace: {seen}");

    get(server_port, "/hello", 11, 200)?;
    get(server_port, "/missing", 2, 404)?;
    let tls = testkit::client::Endpoint::Tls(std::net::SocketAddr::from(([127, 0, 0, 1], tls_port)));
    for _ in 0..5 {
        let r = Conn::connect(&tls)?.get("/hello")?;
        ensure!(r.status == 200, "GET /hello over HTTPS answered {}", r.status);
    }
    let m = scrape("18 requests", &|m| by_container(m).values().sum::<u64>() >= 18)?;
    let want = counts(&[
        (&server.id, "GET", "200", "/hello", 11),
        (&server.id, "GET", "404", "/missing", 2),
        (&tls_server.id, "GET", "200", "/hello", 5),
    ]);
    ensure!(by_container(&m) == want, "counts by container: {:#?}", by_container(&m));
    let https_counted = m.sum("http_server_request_duration_seconds_count", &[("url_scheme", "https")]);
    ensure!(https_counted == 5.0, "{https_counted} requests with url_scheme=https");
    // From its container it found the host's cgroup v2 root: responses end when their last
    // byte leaves (sock_ops), not at the write.
    let log = agent.logs();
    ensure!(log.contains("responses end when their last byte leaves the host"), "agent log:\n{log}");
    ensure!(log.contains("HTTPS: the TLS libraries of targets are probed"), "agent log:\n{log}");
    Ok(())
}

#[test]
fn a_restarted_container_keeps_its_series_and_churn_stays_bounded() -> Result<()> {
    const FORGET_AFTER_S: u64 = 6;
    let agent = Agent::start(&strings(&["--port", "8000", "--forget-after", &FORGET_AFTER_S.to_string()]))?;
    let (kept, kept_port) = Container::server("kept", &[], &app())?;
    wait_listening(kept_port)?;
    agent.wait_metrics("the server", |m| targets(m) == 1.0)?;
    get(kept_port, "/hello", 4, 200)?;
    agent.wait_metrics("4 requests", |m| by_container(m).values().sum::<u64>() >= 4)?;

    kept.restart()?;
    wait_listening(kept_port)?;
    agent.wait_metrics("the restarted server", |m| {
        targets(m) == 1.0 && m.sum("redprobe_target_attaches_total", &[]) == 2.0
    })?;
    get(kept_port, "/hello", 3, 200)?;
    let m = agent.wait_metrics("7 requests", |m| by_container(m).values().sum::<u64>() >= 7)?;
    let want = counts(&[(&kept.id, "GET", "200", "/hello", 7)]);
    ensure!(by_container(&m) == want, "across the restart: {:#?}", by_container(&m));

    // 200 short-lived containers, 10 at a time: each serves 2 requests, counted exactly
    // under its own id, and goes away.
    let mut forgotten_before = 0.0;
    for batch in 0..20 {
        let started: Vec<(Container, u16)> =
            (0..10).map(|i| Container::server(&format!("churn{batch}-{i}"), &[], &app())).collect::<Result<_>>()?;
        for (_, port) in &started {
            wait_listening(*port)?;
        }
        agent.wait_metrics("the batch's servers", |m| targets(m) == 11.0)?;
        for (_, port) in &started {
            get(*port, "/hello", 2, 200)?;
        }
        let m = agent.wait_metrics("the batch's requests", |m| {
            started.iter().all(|(c, _)| {
                by_container(m).get(&(c.id.clone(), "GET".into(), "200".into(), "/hello".into())) == Some(&2)
            })
        })?;
        let series = by_container(&m).len();
        ensure!(series <= 11 + 10 * (batch + 1), "series pile up: {series}");
        forgotten_before = m.sum("redprobe_services_forgotten_total", &[]);
        for (c, _) in started {
            c.remove()?;
        }
    }
    // Once they are gone for --forget-after, only the restarted container's series are left.
    let m = agent.wait_metrics("the short-lived containers forgotten", |m| {
        m.sum("redprobe_services_forgotten_total", &[]) >= 200.0 && by_container(m).len() == 1
    })?;
    ensure!(forgotten_before <= 190.0, "services forgotten while their containers ran: {forgotten_before}");
    ensure!(by_container(&m) == want, "the kept container's series changed: {:#?}", by_container(&m));
    ensure!(m.sum("redprobe_routes_folded_total", &[]) == 0.0, "nothing had to fold");
    let agg = m.sum("redprobe_map_entries", &[("map", "AGG")]);
    ensure!(agg <= 2.0, "the kernel's aggregates of the gone containers are still there: {agg}");
    Ok(())
}
