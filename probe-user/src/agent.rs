//! The running agent: kernel -> decode -> pair -> aggregate, while `/metrics` is served.
use std::{sync::Arc, time::Duration};

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use prometheus_client::registry::Registry;
use probe_common::{
    COUNTER_CLIENT_CONNS, COUNTER_CONN_INSERT_FAILED, COUNTER_FD_MISMATCH, COUNTER_FOREIGN_CONTEXT,
    COUNTER_LOST, COUNTER_SERVER_CONNS,
};
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
    metrics::{Metrics, ReasonLabels, RoleLabels},
    pairing::Pairer,
    targets::{self, ProcInfo, TargetSet},
};

/// Connections with no event for this long are forgotten (UNIX sockets have no close hook).
const IDLE_CONNECTION: Duration = Duration::from_secs(600);

/// (pid, start time) of a target that exited.
type ExitNotice = (u32, u64);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Starts measuring `info` and watching for its exit.
fn add_target(set: &mut TargetSet, info: ProcInfo, exits: &mpsc::UnboundedSender<ExitNotice>) -> Result<()> {
    let (pid, start) = (info.pid, info.start_time);
    info!(pid, comm = %info.comm, "measuring process");
    set.add(info)?;
    let exits = exits.clone();
    tokio::spawn(async move {
        // The pidfd refers to whatever has the PID now: check that it is still our process.
        let watch = targets::pidfd_open(pid).ok().filter(|_| targets::proc_info(pid).is_some_and(|p| p.start_time == start));
        if let Some(fd) = watch {
            // SAFETY: the OwnedFd is moved into the AsyncFd and stays open while it lives.
            if let Ok(fd) = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                let _ = fd.readable().await;
            }
        }
        let _ = exits.send((pid, start));
    });
    Ok(())
}

/// Kernel-side counters, turned into deltas for the agent's counters.
struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
    last: [u64; 8],
}

impl KernelCounters {
    fn poll(&mut self, m: &Metrics) {
        for slot in [COUNTER_LOST, COUNTER_FOREIGN_CONTEXT, COUNTER_FD_MISMATCH, COUNTER_CONN_INSERT_FAILED, COUNTER_SERVER_CONNS, COUNTER_CLIENT_CONNS] {
            let Ok(values) = self.map.get(&slot, 0) else { continue };
            let total: u64 = values.iter().sum();
            let delta = total.saturating_sub(self.last[slot as usize]);
            self.last[slot as usize] = total;
            if delta == 0 {
                continue;
            }
            let reason = |r: &str| ReasonLabels { reason: r.into() };
            let role = |r: &str| RoleLabels { role: r.into() };
            match slot {
                COUNTER_LOST => m.events_lost.inc_by(delta),
                COUNTER_FOREIGN_CONTEXT => m.kernel_skipped.get_or_create(&reason("foreign_context")).inc_by(delta),
                COUNTER_FD_MISMATCH => m.kernel_skipped.get_or_create(&reason("fd_mismatch")).inc_by(delta),
                COUNTER_CONN_INSERT_FAILED => m.kernel_skipped.get_or_create(&reason("conn_map_full")).inc_by(delta),
                COUNTER_SERVER_CONNS => m.connections_classified.get_or_create(&role("server")).inc_by(delta),
                _ => m.connections_classified.get_or_create(&role("client")).inc_by(delta),
            };
        }
    }
}

struct Pipeline {
    pairer: Pairer,
    metrics: Metrics,
    outputs: Vec<crate::pairing::Output>,
    forks: Vec<u32>,
}

impl Pipeline {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            self.metrics.events_received.inc();
            match decode(&item) {
                Ok(Event::Data(d)) => self.pairer.on_data(&d, &mut self.outputs),
                Ok(Event::Close { conn_id }) => self.pairer.on_close(conn_id, &mut self.outputs),
                Ok(Event::Fork { parent_tgid, child_tgid }) => {
                    tracing::debug!(parent_tgid, child_tgid, "target forked");
                    self.forks.push(child_tgid)
                }
                Err(e) => {
                    self.metrics.events_undecodable.inc();
                    warn!("undecodable event: {e}");
                }
            }
            for o in self.outputs.drain(..) {
                self.metrics.observe(&o);
            }
        }
        self.metrics.connections_tracked.set(self.pairer.connections() as i64);
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let roots = cli.pids.iter().map(|p| targets::inspect(*p)).collect::<Result<Vec<_>>>()?;
    let listener = exposition::bind(cli.listen).await?;
    let Probe { ebpf: _ebpf, events, targets: target_map, counters, target_words } = loader::load(&LoadOptions {
        ring_buffer_bytes: cli.ring_buffer_bytes,
        max_connections: cli.max_connections,
        wakeup_bytes: cli.wakeup_bytes,
    })?;

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry, cli.max_routes);
    let mut set = TargetSet::new(target_map, target_words);
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<ExitNotice>();
    for root in roots {
        let pid = root.pid;
        add_target(&mut set, root, &exit_tx)?;
        for child in targets::descendants(pid) {
            add_target(&mut set, child, &exit_tx)?;
        }
    }
    metrics.targets.set(set.len() as i64);

    let addr = exposition::local_addr(&listener).unwrap_or(cli.listen);
    tokio::spawn(exposition::serve(listener, Arc::new(registry)));
    info!("probe attached; metrics at http://{addr}/metrics");

    // SAFETY: the ring buffer's map fd is owned by `events`, which the AsyncFd owns.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {}", e))?;
    let mut pipeline =
        Pipeline { pairer: Pairer::new(cli.max_connections as usize), metrics: metrics.clone(), outputs: vec![], forks: vec![] };
    let mut kernel = KernelCounters { map: counters, last: [0; 8] };
    let mut drain_tick = interval(Duration::from_millis(cli.drain_interval_ms.max(1)));
    let mut housekeeping = interval(Duration::from_secs(1));
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                pipeline.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = drain_tick.tick() => pipeline.drain(ring.get_mut()),
            _ = housekeeping.tick() => {
                kernel.poll(&metrics);
                let mut outs = vec![];
                pipeline.pairer.evict_idle(monotonic_ns(), IDLE_CONNECTION.as_nanos() as u64, &mut outs);
                outs.iter().for_each(|o| metrics.observe(o));
            }
            Some((pid, start)) = exit_rx.recv() => {
                pipeline.drain(ring.get_mut());
                if set.get(pid).is_some_and(|p| p.start_time == start) {
                    if let Some(gone) = set.remove(pid)? {
                        info!(pid, comm = %gone.comm, "target exited; what it served stays in the metrics");
                        metrics.target_exits.inc();
                    }
                }
                metrics.targets.set(set.len() as i64);
                if cli.exit_with_target && set.len() == 0 {
                    info!("every target exited (--exit-with-target): stopping");
                    break;
                }
            }
            _ = sigterm.recv() => { info!("SIGTERM: detaching and exiting"); break; }
            _ = sigint.recv() => { info!("SIGINT: detaching and exiting"); break; }
        }
        for child in std::mem::take(&mut pipeline.forks) {
            match targets::proc_info(child) {
                Some(info) => add_target(&mut set, info, &exit_tx)?,
                None => {
                    set.remove(child)?; // exited already; clear the bit the kernel set
                }
            }
            metrics.targets.set(set.len() as i64);
        }
    }
    pipeline.drain(ring.get_mut());
    kernel.poll(&metrics);
    Ok(())
}
