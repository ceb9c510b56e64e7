//! Load and exhaustion: 10,000 idle connections (slowloris) against nginx, and a burst
//! that overflows the ring buffer while the agent is stalled. The agent's memory and the
//! kernel map's fill level are reported; the counts of well-formed traffic stay exact.
use std::{io::Write, net::TcpStream, sync::Arc};

use anyhow::{Context, Result, bail};
use testkit::{
    client::Conn,
    procs::{Agent, Server},
    scrape::Metrics,
    servers::{self, Bind, NginxSite},
};

fn raise_fd_limit() -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

fn rss_mib(m: &Metrics) -> f64 {
    m.sum("process_resident_memory_bytes", &[]) / (1024.0 * 1024.0)
}

/// 200 requests on one keep-alive connection, checked for status.
fn well_formed(port: u16, n: usize) -> Result<()> {
    let mut conn = Conn::open(port)?;
    conn.get_ok("/hello", n)?;
    Ok(())
}

#[test]
fn slowloris_ten_thousand_idle_connections() -> Result<()> {
    const IDLE: usize = 10_000;
    const BOUNDED: u32 = 4096;
    let limit = raise_fd_limit()?;
    assert!(limit as usize > IDLE + 100, "RLIMIT_NOFILE hard limit {limit} is too low for {IDLE} connections");
    let site = NginxSite { workers: 1, idle_clients: IDLE as u32, ..Default::default() };
    let nginx = servers::nginx(Bind::V4, &site)?;
    let pid = nginx.pid().to_string();
    // One agent with the default table (65536), one with a table smaller than the attack.
    let roomy = Agent::attach(nginx.pid())?;
    let small = Agent::start(&["--pid".into(), pid, "--max-connections".into(), BOUNDED.to_string()])?;
    let before = [roomy.metrics()?, small.metrics()?];

    // Each idle connection sends half a request head, then nothing.
    let port = nginx.endpoint.port().context("nginx on TCP")?;
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("idle connection {i}"))?;
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")?;
        idle.push(s);
    }
    // Well-formed traffic while they are all open.
    let clients: Vec<_> = (0..2).map(|_| std::thread::spawn(move || well_formed(port, 200))).collect();
    for c in clients {
        c.join().expect("client")?;
    }
    let full = |m: &Metrics, n: f64| m.sum("redprobe_map_entries", &[("map", "CONNS")]) >= n;
    let roomy_m = roomy.wait_metrics("400 requests and the idle connections in CONNS", |m| {
        m.requests("GET", 200, "/hello") == 400 && full(m, IDLE as f64)
    })?;
    let small_m = small.wait_metrics("400 requests and a full CONNS", |m| {
        m.requests("GET", 200, "/hello") == 400 && full(m, BOUNDED as f64 * 0.9)
    })?;
    for m in [&roomy_m, &small_m] {
        assert_eq!(m.request_counts().values().sum::<u64>(), 400, "{:?}", m.request_counts());
        assert_eq!(m.sum("redprobe_events_lost_total", &[]), 0.0);
    }
    // The small table stays within its bound, in the kernel and in the agent.
    let entries = small_m.sum("redprobe_map_entries", &[("map", "CONNS")]);
    assert!(entries <= BOUNDED as f64, "CONNS holds {entries} > {BOUNDED}");
    assert_eq!(small_m.sum("redprobe_map_capacity", &[("map", "CONNS")]), BOUNDED as f64);
    assert!(small_m.sum("redprobe_connections_tracked", &[]) <= BOUNDED as f64);
    let evicted = small_m.sum("redprobe_requests_unparsed_total", &[("reason", "connection_table_full")]);
    assert!(evicted >= (IDLE - BOUNDED as usize) as f64, "{evicted} evictions counted");
    let grew = |b: &Metrics, a: &Metrics| rss_mib(a) - rss_mib(b);
    assert!(grew(&before[0], &roomy_m) < 64.0, "the agent grew by {:.1} MiB", grew(&before[0], &roomy_m));
    assert!(grew(&before[1], &small_m) < 32.0, "the bounded agent grew by {:.1} MiB", grew(&before[1], &small_m));
    eprintln!(
        "slowloris {IDLE} idle connections:\n  default table: RSS {:.1} -> {:.1} MiB, CONNS {} / {}, tracked {}\n  \
         --max-connections {BOUNDED}: RSS {:.1} -> {:.1} MiB, CONNS {} / {}, tracked {}, evicted {evicted}",
        rss_mib(&before[0]),
        rss_mib(&roomy_m),
        roomy_m.sum("redprobe_map_entries", &[("map", "CONNS")]),
        roomy_m.sum("redprobe_map_capacity", &[("map", "CONNS")]),
        roomy_m.sum("redprobe_connections_tracked", &[]),
        rss_mib(&before[1]),
        rss_mib(&small_m),
        entries,
        BOUNDED,
        small_m.sum("redprobe_connections_tracked", &[]),
    );
    drop(idle);
    Ok(())
}

#[test]
fn ring_buffer_burst_while_the_agent_is_stalled() -> Result<()> {
    // The agent pairs every request (--no-fast-path: each read and write is an event). It
    // is stopped (SIGSTOP) while 4 clients send 3000 requests: the 1 MiB ring fills up,
    // losses are counted, and after SIGCONT the agent catches up and counts a fresh batch
    // exactly.
    let server = Server::start_python()?;
    let agent = Agent::start(&[
        "--pid".into(),
        server.pid().to_string(),
        "--ring-buffer-bytes".into(),
        (1 << 20).to_string(),
        "--no-fast-path".into(),
    ])?;
    let agent_pid = agent.child.id() as i32;
    unsafe { libc::kill(agent_pid, libc::SIGSTOP) };
    let port = server.port;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let sent = sent.clone();
            std::thread::spawn(move || -> Result<()> {
                let mut conn = Conn::open(port)?;
                for _ in 0..750 {
                    assert_eq!(conn.get("/hello")?.status, 200);
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let joined: Result<Vec<()>> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    unsafe { libc::kill(agent_pid, libc::SIGCONT) };
    joined?;
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let m = agent.wait_metrics("losses counted", |m| m.sum("redprobe_events_lost_total", &[]) > 0.0)?;
    // Recovery: the burst's connections are resynchronised at their next request, and
    // new connections are exact.
    let mut fresh = Conn::open(port)?;
    for id in 0..50 {
        assert_eq!(fresh.get(&format!("/users/{id}"))?.status, 200);
    }
    let after = agent.wait_metrics("the batch after the burst", |m| m.requests("GET", 200, "/users/{id}") == 50)?;
    let lost = after.sum("redprobe_events_lost_total", &[]);
    let received = after.sum("redprobe_events_received_total", &[]);
    let counted = after.requests("GET", 200, "/hello");
    let unparsed_lost = after.sum("redprobe_requests_unparsed_total", &[("reason", "events_lost")]);
    assert!(counted < sent, "with {lost} events lost, not all {sent} requests can be counted ({counted})");
    assert!(counted as f64 + unparsed_lost <= sent as f64, "{counted} counted + {unparsed_lost} lost > {sent} sent");
    assert_eq!(after.request_counts().values().sum::<u64>(), counted + 50, "no request invented");
    assert!(m.sum("redprobe_events_lost_total", &[]) <= lost);
    eprintln!(
        "burst: {sent} requests while the agent was stopped, 1 MiB ring: {received} events received, {lost} lost; \
         {counted} requests counted, {unparsed_lost} counted as events_lost; the next 50 exact"
    );
    Ok(())
}

/// The same burst with the kernel's fast path: it pairs and aggregates in the kernel,
/// which needs no agent; the one path is sent once, and each request the kernel measured
/// before the agent routed that path is one small event. Nothing is lost, and the count is
/// exact once the agent runs again.
#[test]
fn a_stalled_agent_loses_nothing_on_the_fast_path() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::start(&["--pid".into(), server.pid().to_string(), "--ring-buffer-bytes".into(), (1 << 20).to_string()])?;
    let agent_pid = agent.child.id() as i32;
    // /users/{id} is routed before the stall; /hello is new during it.
    let mut warm = Conn::open(server.port)?;
    assert_eq!(warm.get("/users/1")?.status, 200);
    agent.wait_metrics("the first request", |m| m.requests("GET", 200, "/users/{id}") == 1)?;
    unsafe { libc::kill(agent_pid, libc::SIGSTOP) };
    let port = server.port;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            std::thread::spawn(move || -> Result<()> {
                let mut conn = Conn::open(port)?;
                for i in 0..750 {
                    let path = if i % 2 == 0 { "/hello".to_string() } else { format!("/users/{}", c * 1000 + i) };
                    assert_eq!(conn.get(&path)?.status, 200);
                }
                Ok(())
            })
        })
        .collect();
    let joined: Result<Vec<()>> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    unsafe { libc::kill(agent_pid, libc::SIGCONT) };
    joined?;
    let m = agent.wait_metrics("every request of the burst", |m| {
        m.requests("GET", 200, "/hello") == 1500 && m.requests("GET", 200, "/users/{id}") == 1501
    })?;
    assert_eq!(m.sum("redprobe_events_lost_total", &[]), 0.0);
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    assert_eq!(m.sum("redprobe_requests_paired_total", &[("pairer", "kernel")]), 3001.0);
    // Only the first /users request and /hello's before the agent could route it came as
    // events.
    let measured = m.sum("redprobe_kernel_measured_events_total", &[]);
    assert!(measured <= 1501.0, "{measured} requests sent one by one");
    eprintln!("stalled agent, fast path: 3001 requests exact, {measured} of them sent as events, 0 lost");
    Ok(())
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = testkit::procs::Stat::read(pid)?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((stat.number(testkit::procs::STAT_UTIME)? + stat.number(testkit::procs::STAT_STIME)?) as f64 / ticks)
}

/// 1,000 idle connections to the metrics port of an agent started with systemd's default
/// limit of 1,024 open files: the agent neither spins nor stops measuring, and serves
/// scrapes again once they are gone.
#[test]
fn a_thousand_idle_scrape_connections_neither_spin_nor_blind_the_agent() -> Result<()> {
    const IDLE: usize = 1000;
    raise_fd_limit()?;
    let server = Server::start_python()?;
    let mut prlimit = std::process::Command::new("prlimit");
    prlimit.arg("--nofile=1024:1024").arg(testkit::procs::agent_bin());
    let agent = Agent::start_with(prlimit, &testkit::procs::pid_args(&[server.pid()]))?;
    let agent_pid = agent.child.id();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(&agent.addr)?);
    }
    // Measuring goes on while the metrics port is crowded.
    let cpu_before = cpu_seconds(agent_pid)?;
    let started = std::time::Instant::now();
    well_formed(server.port, 200)?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let busy = (cpu_seconds(agent_pid)? - cpu_before) / started.elapsed().as_secs_f64();
    drop(idle);
    let m = agent.wait_metrics("the 200 requests, once the idle clients left", |m| m.requests("GET", 200, "/hello") == 200)?;
    println!("1000 idle scrape connections: agent CPU {:.1} % of a core; 200 requests counted", busy * 100.0);
    assert!(busy < 0.5, "the agent spun at {:.0} % of a core with idle scrape connections", busy * 100.0);
    assert_eq!(m.sum("redprobe_events_lost_total", &[]), 0.0);
    Ok(())
}
