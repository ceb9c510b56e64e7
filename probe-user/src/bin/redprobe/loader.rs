//! Loads the embedded eBPF object, hands it the kernel offsets and settings, sizes its
//! maps, and attaches the hooks listed in [`HOOKS`].
use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, ProgramFd, SockOps, UProbe},
};
use probe_common::{
    AggKey, AggValue, ConnState, GLOBAL_CONFIG, GLOBAL_OFFSETS, GLOBAL_TIME_BOUNDS, KernelOffsets, MAP_AGG,
    MAP_ARRIVALS, MAP_CONNS, MAP_COUNTERS, MAP_EVENTS, MAP_ROUTES, MAP_SERVER_PORTS, MAP_SERVICES, MAP_TARGETS, MAP_TX_LATEST, MAP_TX_WAIT,
    MAP_TLS_CALLS, MAP_TLS_LAST, MAP_TLS_SSL, MAP_H2_FRAMES, MAP_GO_CALLS, MAP_GO_LAST, MAP_GO_TGIDS,
    ProbeConfig, RouteKey,
    buckets::TimeBounds,
};

use crate::{btf::Btf, privileges};

/// One kernel hook. The table drives attaching, error messages and `--help`.
pub struct Hook {
    /// Program name in the eBPF object (named after its tracepoint).
    pub program: &'static str,
    /// `category:event` of the tracepoint, for humans.
    pub tracepoint: &'static str,
    pub purpose: &'static str,
}

pub const HOOKS: &[Hook] = &[
    Hook {
        program: "sock_recv_length",
        tracepoint: "sock:sock_recv_length",
        purpose: "bytes a target reads from a socket (requests); a peer reading end-of-file of a target's UNIX connection",
    },
    Hook {
        program: "sock_send_length",
        tracepoint: "sock:sock_send_length",
        purpose: "bytes a target writes to a socket (responses)",
    },
    Hook {
        program: "inet_sock_set_state",
        tracepoint: "sock:inet_sock_set_state",
        purpose: "a target closing a TCP connection (close-delimited responses); a target starting to listen",
    },
    Hook {
        program: "sk_data_ready",
        tracepoint: "sock:sk_data_ready",
        purpose: "when the bytes of a request arrived on a target's port (the time it waited in the accept and receive queues)",
    },
    Hook {
        program: "sched_process_fork",
        tracepoint: "sched:sched_process_fork",
        purpose: "worker processes forked by a target become targets",
    },
    Hook {
        program: "sched_process_exec",
        tracepoint: "sched:sched_process_exec",
        purpose: "a target running a new program takes its name",
    },
    Hook {
        program: "sched_process_exit",
        tracepoint: "sched:sched_process_exit",
        purpose: "a target that exits stops being one",
    },
];

/// The sock_ops program: attached to the root of the cgroup v2 hierarchy, so that it sees
/// every TCP connection of the host (it acts on those accepted on the ports targets serve
/// on).
pub const SOCK_OPS: Hook = Hook {
    program: "tx_sock_ops",
    tracepoint: "sock_ops on the root cgroup v2",
    purpose: "when the last bytes of a response leave the host (a slow reader's full window, Nagle, cork)",
};

/// Sizes and settings chosen on the command line.
pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    pub max_connections: u32,
    pub wakeup_bytes: u32,
    /// The duration slots (`probe_user::metrics::scheme`).
    pub time_bounds: TimeBounds,
    /// The root of the cgroup v2 hierarchy, where the sock_ops program attaches.
    pub cgroup2_root: Option<std::path::PathBuf>,
    /// Load the TLS probes' programs.
    pub tls: bool,
    /// Send the targets' client connections' I/O to the agent (`--no-client-metrics`: not).
    pub client_metrics: bool,
}

/// Target processes the kernel knows the service of (`SERVICES`); beyond, a process's
/// connections are paired by the agent (reason no_service).
pub const MAX_SERVICE_PROCESSES: u32 = 65_536;
/// Path keys the kernel remembers the route of (`ROUTES`, least recently used go first).
pub const MAX_ROUTE_KEYS: u32 = 65_536;
/// Label sets the kernel aggregates (`AGG`); requests of further ones are sent as events,
/// counted in redprobe_kernel_measured_events_total.
pub const MAX_AGGREGATES: u32 = 16_384;

/// The maps of the kernel's fast path: `SERVICES` goes to `targets.rs`, `ROUTES` and `AGG`
/// to `fast_path.rs`.
pub struct FastMaps {
    pub services: HashMap<MapData, u32, u32>,
    pub routes: HashMap<MapData, RouteKey, u32>,
    pub agg: PerCpuHashMap<MapData, AggKey, AggValue>,
}

/// The loaded, attached probe and the maps the agent talks to.
pub struct Probe {
    /// Owns programs and links: dropping it detaches everything.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    /// The bitmap of targets, to be mapped into memory (`targets::TargetBits`).
    pub targets: MapData,
    pub counters: PerCpuArray<MapData, u64>,
    pub conns: HashMap<MapData, u64, ConnState>,
    pub fast: FastMaps,
    pub target_words: u32,
    /// `SERVER_PORTS`: the agent marks the ports its targets listen on already.
    pub server_ports: Array<MapData, u8>,
    /// Why responses end when their last write returns, if the sock_ops program could not
    /// be attached (no cgroup v2 hierarchy in sight, say).
    pub tx_off: Option<String>,
    /// The TLS probes' programs, loaded, for `tls_probes.rs` to attach per process; or why
    /// they could not be loaded.
    pub tls_programs: std::result::Result<std::collections::HashMap<&'static str, ProgramFd>, String>,
    /// `GO_TGIDS`, which `tls_probes.rs` writes.
    pub go_tgids: HashMap<MapData, u32, u32>,
}

/// Threads in a TLS library call at once (`TLS_CALLS`), and threads remembered with the
/// TLS connection they last did socket I/O on (`TLS_LAST`).
pub const MAX_TLS_THREADS: u32 = 16_384;
/// Processes whose Go crypto/tls is probed at once (`GO_TGIDS`).
pub const MAX_GO_PROCESSES: u32 = 4_096;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redprobe"));

fn pid_max() -> Result<u32> {
    Ok(procfs::sys::kernel::pid_max().context("reading /proc/sys/kernel/pid_max")? as u32)
}

pub fn load(opts: &LoadOptions) -> Result<Probe> {
    if OBJECT.is_empty() {
        bail!("this redprobe was built with AYA_BUILD_SKIP=1 and embeds no eBPF programs: build it with `cargo xtask build`");
    }
    privileges::check()?;
    let offsets: KernelOffsets = Btf::from_sys_fs()?.kernel_offsets()?;
    // The programs read the syscall's registers in one go: dx, si, di, orig_ax in a row.
    let r = &offsets;
    if (r.regs_arg2, r.regs_arg1, r.regs_syscall) != (r.regs_arg3 + 8, r.regs_arg3 + 16, r.regs_arg3 + 24) {
        bail!("this kernel's struct pt_regs does not have dx, si, di and orig_ax in a row (x86-64's layout); redprobe supports x86-64 only");
    }
    let target_words = pid_max()?.div_ceil(64);
    let config = ProbeConfig { wakeup_bytes: opts.wakeup_bytes, target_words, client_metrics: opts.client_metrics as u32, _pad: 0 };
    if !opts.ring_buffer_bytes.is_power_of_two() || opts.ring_buffer_bytes < 4096 {
        bail!("--ring-buffer-bytes must be a power of two of at least 4096 (got {})", opts.ring_buffer_bytes);
    }
    let mut ebpf = EbpfLoader::new()
        .override_global(GLOBAL_OFFSETS, &offsets, true)
        .override_global(GLOBAL_CONFIG, &config, true)
        .override_global(GLOBAL_TIME_BOUNDS, &opts.time_bounds, true)
        .map_max_entries(MAP_EVENTS, opts.ring_buffer_bytes)
        .map_max_entries(MAP_TARGETS, target_words)
        .map_max_entries(MAP_CONNS, opts.max_connections)
        .map_max_entries(MAP_ARRIVALS, opts.max_connections)
        .map_max_entries(MAP_TX_WAIT, opts.max_connections)
        .map_max_entries(MAP_TX_LATEST, opts.max_connections)
        .map_max_entries(MAP_SERVICES, MAX_SERVICE_PROCESSES)
        .map_max_entries(MAP_ROUTES, MAX_ROUTE_KEYS)
        .map_max_entries(MAP_AGG, MAX_AGGREGATES)
        .map_max_entries(MAP_TLS_CALLS, MAX_TLS_THREADS)
        .map_max_entries(MAP_TLS_LAST, MAX_TLS_THREADS)
        .map_max_entries(MAP_TLS_SSL, opts.max_connections)
        .map_max_entries(MAP_H2_FRAMES, opts.max_connections)
        .map_max_entries(MAP_GO_CALLS, MAX_TLS_THREADS)
        .map_max_entries(MAP_GO_LAST, MAX_TLS_THREADS)
        .map_max_entries(MAP_GO_TGIDS, MAX_GO_PROCESSES)
        .load(OBJECT)
        .map_err(privileges::explain_load_error)
        .context("loading the eBPF object")?;
    // Parsed kernel BTF is large (about 12 MB here): it is dropped before the ring buffer
    // is mapped (16 MB of the agent's RSS: the data pages are mapped twice), so the two
    // never add up in the agent's peak RSS.
    attach(&mut ebpf)?;
    let tx_off = attach_sock_ops(&mut ebpf, opts.cgroup2_root.as_deref()).err().map(|e| format!("{e:#}"));
    let tls_programs = if opts.tls { load_tls(&mut ebpf).map_err(|e| format!("{e:#}")) } else { Err("--no-tls".into()) };
    let take = |ebpf: &mut Ebpf, name: &str| {
        ebpf.take_map(name).with_context(|| format!("map {name} missing from the eBPF object"))
    };
    let events = RingBuf::try_from(take(&mut ebpf, MAP_EVENTS)?)?;
    let targets = match take(&mut ebpf, MAP_TARGETS)? {
        Map::Array(data) => data,
        _ => bail!("map {MAP_TARGETS} is not an array"),
    };
    let counters = PerCpuArray::try_from(take(&mut ebpf, MAP_COUNTERS)?)?;
    let conns = HashMap::try_from(take(&mut ebpf, MAP_CONNS)?)?;
    let fast = FastMaps {
        services: HashMap::try_from(take(&mut ebpf, MAP_SERVICES)?)?,
        routes: HashMap::try_from(take(&mut ebpf, MAP_ROUTES)?)?,
        agg: PerCpuHashMap::try_from(take(&mut ebpf, MAP_AGG)?)?,
    };
    let server_ports = Array::try_from(take(&mut ebpf, MAP_SERVER_PORTS)?)?;
    let go_tgids = HashMap::try_from(take(&mut ebpf, MAP_GO_TGIDS)?)?;
    Ok(Probe { ebpf, events, targets, counters, conns, fast, target_words, server_ports, tx_off, tls_programs, go_tgids })
}

/// Loads the sock_ops program and attaches it to the root of the cgroup v2 hierarchy,
/// alongside any other program there: aya attaches it with a BPF link, which the kernel
/// always adds to the others (a link takes no attach flags; `Single` asks for none).
fn attach_sock_ops(ebpf: &mut Ebpf, root: Option<&std::path::Path>) -> Result<()> {
    if let Some(cap) = privileges::missing_for_sock_ops() {
        bail!("loading a sock_ops program needs {cap} (grant it, or run as root)");
    }
    let Some(root) = root else {
        bail!("no cgroup v2 hierarchy is mounted with its root visible here (mount -t cgroup2 none /sys/fs/cgroup)");
    };
    let program: &mut SockOps = ebpf
        .program_mut(SOCK_OPS.program)
        .with_context(|| format!("program {} missing from the eBPF object", SOCK_OPS.program))?
        .try_into()?;
    program.load().map_err(|e| privileges::explain_program_error(SOCK_OPS.tracepoint, e))?;
    let dir = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    program
        .attach(dir, CgroupAttachMode::Single)
        .map_err(|e| privileges::explain_program_error(SOCK_OPS.tracepoint, e))
        .with_context(|| format!("attaching to {}", root.display()))?;
    tracing::debug!(cgroup = %root.display(), purpose = SOCK_OPS.purpose, "attached sock_ops");
    Ok(())
}

/// Loads the TLS probes' programs (`probe_user::tls_libs`), which `tls_probes.rs` attaches
/// per target process.
fn load_tls(ebpf: &mut Ebpf) -> Result<std::collections::HashMap<&'static str, ProgramFd>> {
    let mut fds = std::collections::HashMap::new();
    for name in probe_user::tls_libs::programs() {
        let program: &mut UProbe = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()?;
        program.load().map_err(|e| privileges::explain_program_error("uprobe", e))?;
        fds.insert(name, program.fd()?.try_clone()?);
    }
    Ok(fds)
}

/// Loads and attaches every program of [`HOOKS`].
fn attach(ebpf: &mut Ebpf) -> Result<()> {
    let kernel_btf = aya::Btf::from_sys_fs().context("reading kernel BTF for attaching")?;
    for hook in HOOKS {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(hook.program)
            .with_context(|| format!("program {} missing from the eBPF object", hook.program))?
            .try_into()?;
        let event = hook.tracepoint.split(':').nth(1).unwrap_or(hook.tracepoint);
        program
            .load(event, &kernel_btf)
            .map_err(|e| privileges::explain_program_error(hook.tracepoint, e))?;
        program
            .attach()
            .map_err(|e| privileges::explain_program_error(hook.tracepoint, e))?;
        let verified = program.info().ok().and_then(|i| i.verified_instruction_count());
        tracing::debug!(tracepoint = hook.tracepoint, purpose = hook.purpose, verified_insns = ?verified, "attached");
    }
    Ok(())
}
