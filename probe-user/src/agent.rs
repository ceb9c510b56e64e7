//! The running agent: kernel -> decode -> pair -> aggregate, while `/metrics` is served.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use probe_common::{
    COUNTER_CLIENT_CONNS, COUNTER_CONN_INSERT_FAILED, COUNTER_FD_MISMATCH, COUNTER_FOREIGN_CONTEXT,
    COUNTER_LOST, COUNTER_SERVER_CONNS, ConnState,
};
use prometheus_client::registry::Registry;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::interval,
};
use tracing::{info, warn};

use crate::{
    cli::Cli,
    decode::{Event, decode},
    exposition,
    loader::{self, LoadOptions, Probe},
    metrics::{
        Metrics,
        health::{Health, ServiceLabels},
        process::SelfCollector,
        saturation::{Member, Saturation},
    },
    pairing::Pairer,
    privileges,
    routes::{self, Router, Template},
    selectors::Selectors,
    targets::{self, ProcInfo, TargetSet},
};

/// Connections with no event for this long are forgotten (a UNIX connection whose peer
/// never read to its end has no close event).
const IDLE_CONNECTION: Duration = Duration::from_secs(600);
/// How often the fill level of the kernel connection map is counted (one syscall a key).
const MAP_COUNT_EVERY: Duration = Duration::from_secs(5);

/// (pid, start time) of a target that exited.
type ExitNotice = (u32, u64);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn router(cli: &Cli) -> Result<Router> {
    let mut templates = cli.routes.iter().map(|t| Template::parse(t)).collect::<Result<Vec<_>>>()?;
    if let Some(path) = &cli.routes_file {
        let content =
            std::fs::read_to_string(path).with_context(|| format!("reading --routes-file {}", path.display()))?;
        templates.extend(routes::parse_routes_file(&content).with_context(|| format!("in {}", path.display()))?);
    }
    Ok(Router::new(templates))
}

/// The measured processes and what the agent knows of each.
struct Targets {
    set: TargetSet,
    services: HashMap<u32, Arc<str>>,
    saturation: Arc<Saturation>,
    exits: mpsc::UnboundedSender<ExitNotice>,
    health: Health,
}

impl Targets {
    /// Starts measuring `info` as part of `service`, and watches for its exit.
    fn add(&mut self, info: ProcInfo, service: Arc<str>, root: bool) -> Result<()> {
        let (pid, start) = (info.pid, info.start_time);
        if self.set.contains(pid, start) {
            // Seen twice: forked between attach and the /proc scan of descendants.
            return Ok(());
        }
        info!(pid, comm = %info.comm, service = %service, "measuring process");
        self.set.add(info)?;
        self.services.insert(pid, service.clone());
        if let Ok(mut m) = self.saturation.members.lock() {
            m.push(Member { pid, start_time: start, service, root });
        }
        self.health.target_attaches.inc();
        self.health.targets.set(self.set.len() as i64);
        let exits = self.exits.clone();
        tokio::spawn(async move {
            // The pidfd refers to whatever has the PID now: check that it is still our process.
            if let Ok(fd) = targets::pidfd_open(pid) {
                if targets::is_running(pid, start) {
                    // SAFETY: the OwnedFd is moved into the AsyncFd and stays open while it lives.
                    if let Ok(fd) = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                        let _ = fd.readable().await;
                    }
                }
            }
            // Only a real exit is reported: a watch that could not be set up (or ended
            // early) falls back to checking /proc.
            if targets::is_running(pid, start) {
                warn!(pid, "cannot watch the process's exit through a pidfd; checking /proc every second");
                while targets::is_running(pid, start) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let _ = exits.send((pid, start));
        });
        Ok(())
    }

    fn exited(&mut self, pid: u32, start: u64) -> Result<()> {
        if let Ok(mut m) = self.saturation.members.lock() {
            m.retain(|m| !(m.pid == pid && m.start_time == start));
        }
        if !self.set.contains(pid, start) {
            return Ok(()); // already gone, or the PID now belongs to another process
        }
        if let Some(gone) = self.set.remove(pid)? {
            info!(pid, comm = %gone.comm, "target exited; what it served stays in the metrics");
            self.health.target_exits.inc();
        }
        self.services.remove(&pid);
        self.health.targets.set(self.set.len() as i64);
        Ok(())
    }

    /// Starts measuring `root` and its children, unless it is measured already.
    fn add_tree(&mut self, root: ProcInfo, service: Option<&str>) -> Result<()> {
        let service: Arc<str> = routes::label_safe(service.unwrap_or(&root.comm).to_string()).into();
        let pid = root.pid;
        self.add(root, service.clone(), true)?;
        for child in targets::descendants(pid) {
            self.add(child, service.clone(), false)?;
        }
        Ok(())
    }

    /// Adds the processes the selectors match now and that are not measured yet.
    fn rescan(&mut self, selectors: &Selectors, service: Option<&str>, warned: &mut bool) -> Result<()> {
        let scan = selectors.scan(std::process::id());
        for m in scan.matches {
            if self.set.contains(m.info.pid, m.info.start_time) {
                continue;
            }
            info!(pid = m.info.pid, comm = %m.info.comm, "selected by {}", m.selector);
            self.add_tree(m.info, service)?;
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
        Ok(())
    }

    /// A target forked `child` (the kernel already measures it).
    fn forked(&mut self, parent: u32, child: u32) -> Result<()> {
        let service = self.services.get(&parent).cloned().unwrap_or_else(|| "unknown".into());
        match targets::proc_info(child) {
            Some(info) => self.add(info, service, false),
            None => self.set.remove(child).map(|_| ()), // exited already: clear the kernel's bit
        }
    }
}

/// Kernel-side counters, turned into deltas for the agent's counters.
struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
    last: [u64; 8],
}

impl KernelCounters {
    fn poll(&mut self, h: &Health) {
        for slot in [
            COUNTER_LOST,
            COUNTER_FOREIGN_CONTEXT,
            COUNTER_FD_MISMATCH,
            COUNTER_CONN_INSERT_FAILED,
            COUNTER_SERVER_CONNS,
            COUNTER_CLIENT_CONNS,
        ] {
            let Ok(values) = self.map.get(&slot, 0) else { continue };
            let total: u64 = values.iter().sum();
            let delta = total.saturating_sub(self.last[slot as usize]);
            self.last[slot as usize] = total;
            if delta == 0 {
                continue;
            }
            match slot {
                COUNTER_LOST => {
                    h.events_lost.inc_by(delta);
                }
                COUNTER_FOREIGN_CONTEXT => h.kernel_skipped("foreign_context", delta),
                COUNTER_FD_MISMATCH => h.kernel_skipped("fd_mismatch", delta),
                COUNTER_CONN_INSERT_FAILED => h.kernel_skipped("conn_map_full", delta),
                COUNTER_SERVER_CONNS => h.classified("server", delta),
                _ => h.classified("client", delta),
            };
        }
    }
}

struct Pipeline {
    pairer: Pairer,
    metrics: Metrics,
    outputs: Vec<crate::pairing::Output>,
    /// (parent, child) forks seen, handled after the drain.
    forks: Vec<(u32, u32)>,
}

impl Pipeline {
    fn drain(&mut self, ring: &mut RingBuf<MapData>, services: &HashMap<u32, Arc<str>>) {
        let health = &self.metrics.health;
        while let Some(item) = ring.next() {
            health.events_received.inc();
            match decode(&item) {
                Ok(Event::Data(d)) => {
                    let service = || services.get(&d.tgid).cloned().unwrap_or_else(|| "".into());
                    self.pairer.on_data(&d, service, &mut self.outputs)
                }
                Ok(Event::Close { conn_id }) => self.pairer.on_close(conn_id, &mut self.outputs),
                Ok(Event::Fork { parent_tgid, child_tgid }) => self.forks.push((parent_tgid, child_tgid)),
                Err(e) => {
                    health.events_undecodable.inc();
                    warn!("undecodable event: {e}");
                }
            }
            for o in self.outputs.drain(..) {
                self.metrics.observe(&o);
            }
        }
        health.connections_tracked.set(self.pairer.connections() as i64);
    }

    fn housekeeping(&mut self) {
        self.pairer.evict_idle(monotonic_ns(), IDLE_CONNECTION.as_nanos() as u64, &mut self.outputs);
        for o in self.outputs.drain(..) {
            self.metrics.observe(&o);
        }
        self.metrics.set_active_requests(&self.pairer.active_requests());
        let health = &self.metrics.health;
        health.open_connections.set(
            self.pairer
                .connections_by_service()
                .into_iter()
                .map(|(service, n)| (ServiceLabels { service_name: service.to_string() }, n)),
        );
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let router = router(&cli)?;
    let roots = cli.pids.iter().map(|p| targets::inspect(*p)).collect::<Result<Vec<_>>>()?;
    let selectors = Selectors::new(&cli.ports, &cli.exes, &cli.cgroups)?;
    let listener = exposition::bind(cli.listen).await?;
    let Probe { ebpf: _ebpf, events, targets: target_map, counters, conns, target_words } =
        loader::load(&LoadOptions {
            ring_buffer_bytes: cli.ring_buffer_bytes,
            max_connections: cli.max_connections,
            wakeup_bytes: cli.wakeup_bytes,
        })?;

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry, cli.naming, router, cli.max_routes);
    let saturation = Arc::new(Saturation::default());
    registry.register_collector(Box::new(saturation.clone()));
    registry.register_collector(Box::new(SelfCollector));
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<ExitNotice>();
    let mut targets = Targets {
        set: TargetSet::new(target_map, target_words),
        services: HashMap::new(),
        saturation,
        exits: exit_tx,
        health: metrics.health.clone(),
    };
    for root in roots {
        targets.add_tree(root, cli.service.as_deref())?;
    }
    let mut warned_denied = false;
    if !selectors.is_empty() {
        targets.rescan(&selectors, cli.service.as_deref(), &mut warned_denied)?;
        if targets.set.len() == 0 {
            info!("no process matches {selectors} yet; checking every {} ms", cli.rescan_interval_ms);
        }
    }

    // Everything is loaded, attached and open: what is left needs no privileges but
    // reading /proc.
    match crate::privileges::drop_after_attach() {
        Ok(dropped) => info!(dropped = %dropped.join(","), "capabilities dropped after attaching"),
        Err(e) => warn!("could not drop capabilities after attaching: {e:#}"),
    }
    let addr = listener.local_addr().unwrap_or(cli.listen);
    if !addr.ip().is_loopback() {
        warn!(%addr, "/metrics is served beyond loopback: keep the port behind a firewall or a reverse proxy");
    }
    tokio::spawn(exposition::serve(listener, Arc::new(registry)));
    info!("probe attached; metrics at http://{addr}/metrics");

    // SAFETY: the ring buffer's map fd is owned by `events`, which the AsyncFd owns.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let mut pipeline =
        Pipeline { pairer: Pairer::new(cli.max_connections as usize), metrics: metrics.clone(), outputs: vec![], forks: vec![] };
    let mut kernel = KernelCounters { map: counters, last: [0; 8] };
    let health = metrics.health.clone();
    let count_conns = |conns: &BpfHashMap<MapData, u64, ConnState>| {
        health.set_map("CONNS", conns.keys().filter(Result::is_ok).count() as i64, cli.max_connections as i64);
    };
    count_conns(&conns);
    let mut last_map_count = Instant::now();
    let mut drain_tick = interval(Duration::from_millis(cli.drain_interval_ms.max(1)));
    let mut housekeeping = interval(Duration::from_secs(1));
    let mut rescan = interval(Duration::from_millis(cli.rescan_interval_ms.max(10)));
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                pipeline.drain(guard.get_inner_mut(), &targets.services);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => pipeline.drain(ring.get_mut(), &targets.services),
            _ = housekeeping.tick() => {
                kernel.poll(&health);
                pipeline.housekeeping();
                health.set_map("TARGETS", targets.set.len() as i64, target_words as i64 * 64);
                if last_map_count.elapsed() >= MAP_COUNT_EVERY {
                    count_conns(&conns);
                    last_map_count = Instant::now();
                }
            }
            _ = rescan.tick(), if !selectors.is_empty() => {
                targets.rescan(&selectors, cli.service.as_deref(), &mut warned_denied)?;
            }
            Some((pid, start)) = exit_rx.recv() => {
                pipeline.drain(ring.get_mut(), &targets.services);
                targets.exited(pid, start)?;
                if cli.exit_with_target && targets.set.len() == 0 {
                    info!("every target exited (--exit-with-target): stopping");
                    break;
                }
            }
            _ = sigterm.recv() => { info!("SIGTERM: detaching and exiting"); break; }
            _ = sigint.recv() => { info!("SIGINT: detaching and exiting"); break; }
        }
        for (parent, child) in std::mem::take(&mut pipeline.forks) {
            targets.forked(parent, child)?;
        }
    }
    pipeline.drain(ring.get_mut(), &targets.services);
    kernel.poll(&health);
    Ok(())
}
