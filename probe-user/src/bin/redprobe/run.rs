//! The running agent: every ring-buffer record goes to the pipeline while `/metrics` is
//! served. Blocking work (selector rescans, the /proc reconciliation) runs off this thread,
//! so draining the kernel never waits for /proc, and the scrape side cannot stall it.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use probe_common::ConnState;
use probe_user::{
    exposition,
    labels::{Router, Routes, Template, parse_routes_file},
    metrics::{
        Metrics, Naming,
        process::AgentProcess,
        saturation::Saturation,
        scheme::{DEFAULT_DURATION_BUCKETS, Scheme},
        scrape::ScrapeCollectors,
    },
    pipeline::{Notice, Pipeline},
    proc_root::ProcRoot,
    registry::{Registry, lock},
};
use prometheus_client::registry::Registry as Prometheus;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::interval,
};
use tracing::{debug, info, warn};

use crate::{
    cli::AgentArgs as Cli,
    conn_map,
    counters::KernelCounters,
    fast_path::{Aggregates, FastPath, reader},
    loader::{self, LoadOptions, Probe},
    privileges,
    selectors::{Scan, Selectors},
    targets::{TargetBits, Targets, inspect},
    tls_probes::TlsProbes,
};

/// Connections with no event for this long are forgotten (a UNIX connection whose peer
/// never read to its end has no close event).
const IDLE_CONNECTION: Duration = Duration::from_secs(600);
/// The kernel connection map is read every second (its fill level, and the fast
/// connections' gauges: `conn_map`) while it holds at most this many entries...
const READ_CONNS_EACH_SECOND_UP_TO: usize = 8192;
/// ...and every 5 s when it holds more.
const READ_BIG_CONNS_EVERY: Duration = Duration::from_secs(5);
/// How often the registry is checked against /proc, for exits whose event was lost; the
/// next second after a loss anyway.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// The kernel's aggregates are read at each scrape and at least this often, so that no
/// u32 slot count wraps twice between two reads, scrapes or not.
const READ_AGGREGATES_EVERY: Duration = Duration::from_secs(10);
/// Every target's memory map is looked at again for TLS libraries loaded since it was
/// attached (Python loads libssl at `import ssl`).
const TLS_RESCAN_EVERY: Duration = Duration::from_secs(10);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn routes(cli: &Cli) -> Result<Routes> {
    let mut templates = cli.routes.iter().map(|t| Template::parse(t)).collect::<Result<Vec<_>>>()?;
    if let Some(path) = &cli.routes_file {
        let content =
            std::fs::read_to_string(path).with_context(|| format!("reading --routes-file {}", path.display()))?;
        templates.extend(parse_routes_file(&content).with_context(|| format!("in {}", path.display()))?);
    }
    Ok(Routes::new(Router::new(templates), cli.max_routes))
}

/// Raises the soft limit of open files to the hard one: every scrape connection and every
/// pidfd is a file, and systemd's default soft limit is 1024.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a plain get/set of this process's own limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Logs what happened to a target.
fn log_notice(notice: &Notice) {
    match notice {
        Notice::Forked { parent, child, service } => {
            tracing::debug!(parent, pid = child, service = %service, "measuring forked process")
        }
        Notice::Execed { pid, comm, service } => {
            info!(pid, comm = %comm, service = %service, "target runs a new program")
        }
        Notice::Exited(t) => {
            info!(pid = t.pid, comm = %t.comm, "target exited; what it served stays in the metrics")
        }
        Notice::Route { service_id, key, route } => tracing::debug!(service_id, key, route, "route of a path key"),
    }
}

/// Whether the kernel pairs and aggregates (and why not).
fn fast_path_off(cli: &Cli, metrics: &Metrics) -> Option<&'static str> {
    if cli.no_fast_path {
        Some("--no-fast-path")
    } else if !metrics.kernel_can_aggregate() {
        Some("--naming django-prometheus (its buckets are not the kernel's)")
    } else if !metrics.routes().kernel_can_route() {
        Some("a route template has a literal segment that looks like an identifier")
    } else {
        None
    }
}

/// Runs the agent until a signal (or, with --exit-with-target, its targets' exit). `ready`
/// gets the /metrics address once every program is attached (`redprobe top` waits for it).
pub async fn run(cli: Cli, ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>) -> Result<()> {
    raise_fd_limit();
    let proc = ProcRoot::default();
    let routes = routes(&cli)?;
    let durations = Scheme::time(&cli.buckets)?;
    if cli.naming == Naming::DjangoPrometheus && cli.buckets != DEFAULT_DURATION_BUCKETS {
        anyhow::bail!(
            "--buckets sets the OpenTelemetry duration buckets; --naming django-prometheus keeps django-prometheus's own"
        );
    }
    let roots = cli.pids.iter().map(|p| inspect(&proc, *p)).collect::<Result<Vec<_>>>()?;
    let selectors = Arc::new(Selectors::new(&proc, &cli.ports, &cli.exes, &cli.cgroups, &cli.containers)?);
    let web = match &cli.web_config_file {
        Some(path) => Some(Arc::new(
            probe_user::web_config::WebConfig::open(path)
                .with_context(|| format!("--web.config.file {}", path.display()))?,
        )),
        None => None,
    };
    let listener = exposition::bind(cli.listen_addr()).await?;
    let Probe { ebpf: _ebpf, events, targets: target_map, counters, conns, fast, target_words, server_ports, tx_off, tls_programs, go_tgids } =
        loader::load(&LoadOptions {
            ring_buffer_bytes: cli.ring_buffer_bytes,
            max_connections: cli.max_connections,
            wakeup_bytes: cli.wakeup_bytes,
            time_bounds: durations.kernel_table(),
            cgroup2_root: proc.cgroup2_root(),
            tls: !cli.no_tls,
            client_metrics: !cli.no_client_metrics,
        })?;
    match &tx_off {
        None => info!("responses end when their last byte leaves the host (sock_ops on the root cgroup v2)"),
        Some(why) => {
            warn!("responses end when the server's last write returns, not when their last byte leaves: {why}")
        }
    }

    let mut prometheus = Prometheus::default();
    let metrics = Metrics::with_options(&mut prometheus, cli.naming, routes, durations, cli.http_options());
    let registry = Registry::with_labels(cli.service.as_deref(), cli.placement_labels()).shared();
    prometheus.register_collector(Box::new(ScrapeCollectors::new(
        Saturation::new(registry.clone(), proc.clone()),
        AgentProcess::new(proc.clone()),
    )));
    let health = metrics.health.clone();
    let off = fast_path_off(&cli, &metrics);
    match off {
        None => info!("fast path on: the kernel pairs and aggregates plain HTTP/1.x requests"),
        Some(why) => {
            info!("fast path off ({why}): every request is paired by the agent, from events")
        }
    }
    let services = off.is_none().then(|| std::sync::Mutex::new(fast.services));
    let targets = Targets {
        bits: TargetBits::new(target_map, target_words)?,
        registry: registry.clone(),
        proc: proc.clone(),
        health: health.clone(),
        services,
        server_ports: std::sync::Mutex::new(server_ports),
        tls: std::sync::Mutex::new(None),
        tls_rescan: std::sync::Mutex::new(Vec::new()),
    };
    match tls_programs.and_then(|p| TlsProbes::new(p, go_tgids, health.clone()).map_err(|e| format!("{e:#}"))) {
        Ok(t) => {
            info!("HTTPS: the TLS libraries of targets are probed (uprobes on the targets only)");
            *targets.tls.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(t);
        }
        Err(why) if cli.no_tls => debug!("HTTPS not measured: {why}"),
        Err(why) => warn!("HTTPS is not measured: {why}"),
    }
    privileges::drop_dac_override();
    let mut fast_path = FastPath::new(fast.routes, metrics.clone());
    let aggregates = Aggregates::new(fast.agg, metrics.clone(), registry.clone());
    for root in &roots {
        targets.attach_tree(root);
    }
    let mut warned_denied = false;
    if !selectors.is_empty() {
        let scan = selectors.scan(std::process::id());
        apply_scan(&targets, &selectors, scan, &mut warned_denied);
        if lock(&registry).is_empty() {
            info!("no process matches {selectors} yet; checking every {} ms", cli.rescan_interval_ms);
        }
    }

    // Everything is loaded, attached and open: what is left needs no privileges but
    // reading /proc.
    match privileges::drop_after_attach(targets.tls_on()) {
        Ok(dropped) => info!(dropped = %dropped.join(","), "capabilities dropped after attaching"),
        Err(e) => warn!("could not drop capabilities after attaching: {e:#}"),
    }
    let addr = listener.local_addr().unwrap_or(cli.listen_addr());
    let (tls, auth) = web
        .as_ref()
        .map(|w| w.current().0)
        .map(|c| (c.tls.is_some(), c.requires_auth() || c.requires_client_cert))
        .unwrap_or_default();
    if !addr.ip().is_loopback() && !(tls && auth) {
        warn!(
            %addr,
            "/metrics is served beyond loopback without TLS and authentication (basic auth or client certificates): keep the port behind a firewall, or set them up with --web.config.file"
        );
    }
    let scheme = if tls { "https" } else { "http" };
    let read_aggregates = reader(aggregates.clone());
    let forget_after = Duration::from_secs(cli.forget_after);
    tokio::spawn(exposition::serve(listener, Arc::new(prometheus), health.clone(), Some(read_aggregates.clone()), web));
    info!(tls, authentication = auth, "probe attached; metrics at {scheme}://{addr}/metrics");
    if let Some(ready) = ready {
        let _ = ready.send(addr);
    }

    // SAFETY: the ring buffer's map fd is owned by `events`, which the AsyncFd owns.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let mut pipeline = Pipeline::new(metrics.clone(), registry.clone(), cli.max_connections as usize);
    pipeline.set_fast_path(off.is_none());

    let mut kernel = KernelCounters::new(counters);
    // The fast server connections in `CONNS`, as last read: the gauges of the fast path.
    let read_conns = |conns: &BpfHashMap<MapData, u64, ConnState>| {
        let read = conn_map::read(conns);
        health.set_map("CONNS", read.entries as i64, cli.max_connections as i64);
        read
    };
    let mut conns_read = read_conns(&conns);
    let mut last_conns_read = Instant::now();
    let mut last_reconcile = Instant::now();
    let mut last_tls_rescan = Instant::now();
    let mut last_aggregates_read = Instant::now();
    let mut drain_tick = interval(Duration::from_millis(cli.drain_interval_ms.max(1)));
    let mut housekeeping = interval(Duration::from_secs(1));
    let mut rescan = interval(Duration::from_millis(cli.rescan_interval_ms.max(10)));
    let (scan_tx, mut scan_rx) = mpsc::channel::<Scan>(1);
    let mut scanning = false;
    let (gone_tx, mut gone_rx) = mpsc::channel::<Vec<(u32, u64)>>(1);
    let mut reconciling = false;
    let mut reconcile_soon = false;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let exit_when_none = |registry_empty: bool| cli.exit_with_target && registry_empty;
    loop {
        let mut stop = false;
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                stop = drain(&mut pipeline, guard.get_inner_mut(), cli.exit_with_target, &targets, &mut fast_path);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => stop = drain(&mut pipeline, ring.get_mut(), cli.exit_with_target, &targets, &mut fast_path),
            _ = housekeeping.tick() => {
                reconcile_soon |= kernel.poll(&health);
                let all = last_tls_rescan.elapsed() >= TLS_RESCAN_EVERY;
                if all {
                    last_tls_rescan = Instant::now();
                }
                targets.tls_rescan(all);
                if conns_read.entries <= READ_CONNS_EACH_SECOND_UP_TO || last_conns_read.elapsed() >= READ_BIG_CONNS_EVERY {
                    conns_read = read_conns(&conns);
                    last_conns_read = Instant::now();
                }
                pipeline.housekeeping(monotonic_ns(), IDLE_CONNECTION.as_nanos() as u64, &conns_read.fast);
                health.set_map("TARGETS", targets.bits.marked() as i64, targets.bits.capacity() as i64);
                let forgotten = lock(&registry).forget_idle(Instant::now(), forget_after);
                // One read and one walk of the kernel's aggregates for all the ids forgotten
                // at once (a node's pods often go together).
                let ids: std::collections::HashSet<u32> = forgotten.iter().map(|(id, _)| *id).filter(|id| *id != 0).collect();
                if !ids.is_empty() {
                    aggregates.lock().unwrap_or_else(std::sync::PoisonError::into_inner).forget(&ids);
                }
                for (_, service) in forgotten {
                    let sets = metrics.forget(&service);
                    info!(service = %service, label_sets = sets, "no process of this service for --forget-after: its series are removed");
                }
                if last_aggregates_read.elapsed() >= READ_AGGREGATES_EVERY {
                    last_aggregates_read = Instant::now();
                    let read = read_aggregates.clone();
                    tokio::task::spawn_blocking(move || read());
                }
                if !reconciling && (reconcile_soon || last_reconcile.elapsed() >= RECONCILE_EVERY) {
                    reconciling = true;
                    reconcile_soon = false;
                    last_reconcile = Instant::now();
                    let running: Vec<(u32, u64)> = lock(&registry).targets().map(|t| (t.pid, t.start_time)).collect();
                    let (proc, tx) = (proc.clone(), gone_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let gone = running.into_iter().filter(|(pid, start)| !proc.is_running(*pid, *start)).collect();
                        let _ = tx.blocking_send(gone);
                    });
                }
            }
            _ = rescan.tick(), if !selectors.is_empty() && !scanning => {
                scanning = true;
                let (selectors, tx) = (selectors.clone(), scan_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let _ = tx.blocking_send(selectors.scan(std::process::id()));
                });
            }
            Some(scan) = scan_rx.recv() => {
                scanning = false;
                apply_scan(&targets, &selectors, scan, &mut warned_denied);
            }
            Some(gone) = gone_rx.recv() => {
                reconciling = false;
                // Exits whose event was lost: drain first, so that an exit event already
                // queued is the one that counts.
                stop = drain(&mut pipeline, ring.get_mut(), cli.exit_with_target, &targets, &mut fast_path);
                let mut r = lock(&registry);
                for (pid, start) in gone {
                    if r.contains(pid, start) && let Some(t) = r.exited(pid) {
                        health.target_exits.inc();
                        info!(pid = t.pid, comm = %t.comm, "target gone (its exit event was lost); what it served stays in the metrics");
                    }
                }
                health.targets.set(r.len() as i64);
                stop |= exit_when_none(r.is_empty());
            }
            _ = sigterm.recv() => { info!("SIGTERM: detaching and exiting"); break; }
            _ = sigint.recv() => { info!("SIGINT: detaching and exiting"); break; }
        }
        if stop {
            info!("every target exited (--exit-with-target): stopping");
            break;
        }
    }
    drain(&mut pipeline, ring.get_mut(), false, &targets, &mut fast_path);
    kernel.poll(&health);
    Ok(())
}

/// Feeds every pending record to the pipeline. Returns true when `exit_with_target` is
/// set and the last target just exited.
fn drain(
    pipeline: &mut Pipeline,
    ring: &mut aya::maps::RingBuf<MapData>,
    exit_with_target: bool,
    targets: &Targets,
    fast_path: &mut FastPath,
) -> bool {
    let mut exited = false;
    while let Some(item) = ring.next() {
        if let Some(notice) = pipeline.record(&item) {
            log_notice(&notice);
            // The kernel's maps follow what the pipeline decided.
            match &notice {
                Notice::Forked { parent, child, .. } => {
                    targets.sync_service(*child);
                    targets.tls_forked(*parent, *child);
                }
                Notice::Execed { pid, .. } => {
                    targets.sync_service(*pid);
                    targets.tls_rescan_soon(*pid);
                }
                Notice::Exited(t) => {
                    targets.sync_service(t.pid);
                    targets.tls_exited(t.pid);
                    exited = true;
                }
                Notice::Route { service_id, key, route } => fast_path.set_route(*service_id, *key, *route),
            }
        }
    }
    exit_with_target && exited && pipeline.metrics().health.targets.get() == 0
}

/// Attaches the processes a selector scan matched that are not measured yet.
fn apply_scan(targets: &Targets, selectors: &Selectors, scan: Scan, warned: &mut bool) {
    for m in scan.matches {
        let known = lock(&targets.registry).contains(m.info.pid, m.info.start_time);
        if !known {
            info!(pid = m.info.pid, comm = %m.info.comm, "selected by {}", m.selector);
            targets.attach_tree(&m.info);
        }
    }
    if scan.denied > 0 && !selectors.ports.is_empty() && !*warned {
        let missing = privileges::missing_for_port_selector();
        if !missing.is_empty() {
            let missing = missing.join(" and ");
            warn!(
                "--port: the sockets of {} processes could not be read (/proc/PID/fd) without {missing}; \
                 a server among them is not measured. Grant {missing}, or select the server with --exe or --cgroup",
                scan.denied
            );
            *warned = true;
        }
    }
}
