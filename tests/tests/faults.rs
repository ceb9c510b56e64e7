//! Faults around the agent: the target dying or its PID being reused, the agent killed
//! or stopped, two agents at once, missing BTF, and the privileges left after attach.
use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use testkit::{
    client::Conn,
    procs::{Agent, Server, agent_fails_with, agent_in_private_mounts, pid_args},
    wait_for,
};

/// BPF programs, maps and links a process holds, from its fdinfo.
#[derive(Debug, Default)]
struct BpfObjects {
    progs: BTreeSet<u32>,
    maps: BTreeSet<u32>,
    links: BTreeSet<u32>,
}

fn bpf_objects_of(pid: u32) -> Result<BpfObjects> {
    let mut o = BpfObjects::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else { continue };
        for line in info.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let Ok(id) = v.trim().parse::<u32>() else { continue };
            match k {
                "prog_id" => o.progs.insert(id),
                "map_id" => o.maps.insert(id),
                "link_id" => o.links.insert(id),
                _ => false,
            };
        }
    }
    Ok(o)
}

/// Which of `o`'s objects the kernel still has.
fn still_loaded(o: &BpfObjects) -> BpfObjects {
    BpfObjects {
        progs: aya::programs::loaded_programs().flatten().map(|p| p.id()).filter(|id| o.progs.contains(id)).collect(),
        maps: aya::maps::loaded_maps().flatten().map(|m| m.id()).filter(|id| o.maps.contains(id)).collect(),
        links: aya::programs::loaded_links().flatten().map(|l| l.id()).filter(|id| o.links.contains(id)).collect(),
    }
}

/// The agent's programs, maps and links, checked to be really there.
fn agent_objects(agent: &Agent) -> Result<BpfObjects> {
    let o = bpf_objects_of(agent.child.id())?;
    let live = still_loaded(&o);
    assert!(o.progs.len() >= 4 && o.links.len() >= 4 && o.maps.len() >= 4, "the agent holds {o:?}");
    assert_eq!((live.progs.len(), live.maps.len(), live.links.len()), (o.progs.len(), o.maps.len(), o.links.len()));
    Ok(o)
}

fn wait_all_gone(o: &BpfObjects) -> Result<()> {
    let mut left = BpfObjects::default();
    wait_for("the agent's BPF objects to be freed", Duration::from_secs(15), || {
        left = still_loaded(o);
        (left.progs.is_empty() && left.maps.is_empty() && left.links.is_empty()).then_some(())
    })
    .with_context(|| format!("still loaded: {left:?}"))
}

#[test]
fn sigterm_is_a_clean_shutdown_that_detaches_everything() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let objects = agent_objects(&agent)?;
    let status = agent.stop()?;
    assert_eq!(status.code(), Some(0), "SIGTERM ends the agent with status 0");
    wait_all_gone(&objects)?;
    eprintln!("SIGTERM: {} programs, {} links, {} maps, all freed", objects.progs.len(), objects.links.len(), objects.maps.len());
    Ok(())
}

#[test]
fn sigkill_under_load_leaves_nothing_attached_and_a_restart_counts() -> Result<()> {
    let server = Server::start_python()?;
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut conn = Conn::open(port)?;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(conn.get("/hello")?.status, 200);
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let mut first = Agent::attach(server.pid())?;
    first.wait_metrics("load counted", |m| m.requests("GET", 200, "/hello") >= 50)?;
    let objects = agent_objects(&first)?;
    first.child.kill()?; // SIGKILL: no chance to clean up
    first.child.wait()?;
    wait_all_gone(&objects)?;

    let second = Agent::attach(server.pid())?;
    // The load goes on through the restart; a known batch after it is counted exactly,
    // on the old keep-alive connection's neighbour and on a fresh one.
    let mut fresh = Conn::open(port)?;
    for id in 0..20 {
        assert_eq!(fresh.get(&format!("/users/{id}"))?.status, 200);
    }
    let m = second.wait_metrics("the batch and the load counted again", |m| {
        m.requests("GET", 200, "/users/{id}") == 20 && m.requests("GET", 200, "/hello") >= 50
    })?;
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread")?;
    assert_eq!(m.sum("redprobe_events_lost_total", &[]), 0.0);
    eprintln!(
        "SIGKILL: {} programs, {} links, {} maps freed; after the restart: {} load requests counted of {} sent in all",
        objects.progs.len(),
        objects.links.len(),
        objects.maps.len(),
        m.requests("GET", 200, "/hello"),
        sent.load(Ordering::Relaxed)
    );
    Ok(())
}

#[test]
fn two_agents_on_one_target_both_count_exactly() -> Result<()> {
    // Each agent loads its own programs and maps: both work, independently.
    let server = Server::start_python()?;
    let a = Agent::attach(server.pid())?;
    let b = Agent::attach(server.pid())?;
    let mut conn = Conn::open(server.port)?;
    conn.get_ok("/hello", 30)?;
    for agent in [&a, &b] {
        let m = agent.wait_metrics("30 requests", |m| m.requests("GET", 200, "/hello") == 30)?;
        assert_eq!(m.request_counts().values().sum::<u64>(), 30);
    }
    // One stops; the other goes on counting exactly.
    assert_eq!(a.stop()?.code(), Some(0));
    for _ in 0..10 {
        assert_eq!(conn.get("/missing")?.status, 404);
    }
    let m = b.wait_metrics("10 more", |m| m.requests("GET", 404, "/missing") == 10)?;
    assert_eq!(m.requests("GET", 200, "/hello"), 30);
    Ok(())
}

#[test]
fn target_killed_mid_request() -> Result<()> {
    let mut server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let mut conn = Conn::open(server.port)?;
    conn.get_ok("/hello", 5)?;
    let port = server.port;
    let slow = std::thread::spawn(move || Conn::open(port).and_then(|mut c| c.get("/sleep?ms=5000")).map(|r| r.status));
    // The slow request has reached the server: its connection was classified (the /hello
    // connection was the first). The in-flight gauge alone is refreshed every second and
    // may still show a /hello caught between its read and its answer.
    agent.wait_metrics("the request in flight", |m| {
        m.sum("redprobe_connections_classified_total", &[("role", "server")]) == 2.0
            && m.sum("http_server_active_requests", &[("http_request_method", "GET")]) == 1.0
    })?;
    server.child.kill()?;
    server.child.wait()?;
    assert!(slow.join().expect("slow client").is_err(), "the killed server cannot answer");
    // The gauge is refreshed every second.
    let m = agent.wait_metrics("the exit, the lost request counted, nothing in flight", |m| {
        m.sum("redprobe_target_exits_total", &[]) == 1.0
            && m.sum("redprobe_requests_unparsed_total", &[("reason", "no_response")]) == 1.0
            && m.sum("http_server_active_requests", &[("http_request_method", "GET")]) == 0.0
    })?;
    assert_eq!(m.request_counts().values().sum::<u64>(), 5);
    assert_eq!(m.requests("GET", 200, "/hello"), 5);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 1.0);
    Ok(())
}

/// Starts the Python server at PID `pid` (free now), by setting the kernel's last PID
/// just before the fork. Other processes on the host may fork in between: retried.
fn python_server_at_pid(pid: u32) -> Result<Server> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())?;
        let server = Server::start_python()?;
        if server.pid() == pid {
            return Ok(server);
        }
    }
    bail!("could not get PID {pid} back");
}

#[test]
fn a_reused_target_pid_is_not_measured() -> Result<()> {
    let mut old = Server::start_python()?;
    let witness = Server::start_python()?; // a second target that stays
    let old_pid = old.pid();
    let agent = Agent::start(&pid_args(&[old_pid, witness.pid()]))?;
    old.child.kill()?;
    old.child.wait()?;
    agent.wait_metrics("the exit", |m| m.sum("redprobe_target_exits_total", &[]) == 1.0)?;
    let impostor = python_server_at_pid(old_pid)?;
    let mut conn = Conn::open(impostor.port)?;
    conn.get_ok("/hello", 5)?;
    // The witness's request comes after the impostor's: once it is counted, the
    // impostor's traffic would have been too, had it been measured.
    assert_eq!(Conn::open(witness.port)?.get("/users/1")?.status, 200);
    let m = agent.wait_metrics("the witness's request", |m| m.requests("GET", 200, "/users/{id}") == 1)?;
    assert_eq!(m.request_counts().values().sum::<u64>(), 1, "the process now at PID {old_pid} was measured");
    assert_eq!(m.sum("redprobe_targets", &[]), 1.0);
    Ok(())
}

#[test]
fn missing_btf_is_a_clear_error() -> Result<()> {
    // A private mount namespace with an empty tmpfs over /sys/kernel/btf.
    let server = Server::start_python()?;
    let cmd = agent_in_private_mounts("mount -t tmpfs none /sys/kernel/btf");
    let stderr = agent_fails_with(cmd, &["--pid", &server.pid().to_string(), "--listen", "127.0.0.1:0"], 1)?;
    assert!(stderr.contains("cannot read /sys/kernel/btf/vmlinux") && stderr.contains("BTF"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

fn caps(pid: u32, field: &str) -> Result<u64> {
    Ok(u64::from_str_radix(&testkit::procs::status_field(pid, field)?, 16)?)
}

#[test]
fn capabilities_are_dropped_after_attach_and_counting_goes_on() -> Result<()> {
    // CAP_PERFMON stays for the HTTPS probes (attached to targets found later); with
    // --no-tls it goes too (below).
    const DROPPED: [(u32, &str); 4] = [(39, "CAP_BPF"), (21, "CAP_SYS_ADMIN"), (12, "CAP_NET_ADMIN"), (24, "CAP_SYS_RESOURCE")];
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let pid = agent.child.id();
    for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let set = caps(pid, field)?;
        for (bit, name) in DROPPED {
            assert_eq!(set & (1 << bit), 0, "{name} still in {field} {set:016x}");
        }
        eprintln!("agent {field} {set:016x}");
    }
    assert!(agent.stderr().contains("capabilities dropped after attaching"), "{}", agent.stderr());
    // Maps, the ring buffer and /proc reads keep working without them.
    let mut conn = Conn::open(server.port)?;
    conn.get_ok("/hello", 10)?;
    let m = agent.wait_metrics("10 requests", |m| m.requests("GET", 200, "/hello") == 10)?;
    assert!(m.sum("redprobe_target_resident_memory_bytes", &[]) > 0.0);
    agent.wait_metrics("CONNS counted", |m| m.sum("redprobe_map_entries", &[("map", "CONNS")]) >= 1.0)?;
    assert_ne!(caps(pid, "CapEff:")? & (1 << 38), 0, "CAP_PERFMON kept for the HTTPS probes");
    // Without HTTPS, CAP_PERFMON goes as well.
    let args = [testkit::procs::pid_args(&[server.pid()]), vec!["--no-tls".to_string()]].concat();
    let agent = Agent::start(&args)?;
    for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(caps(agent.child.id(), field)? & (1 << 38), 0, "CAP_PERFMON still in {field} with --no-tls");
    }
    Ok(())
}
