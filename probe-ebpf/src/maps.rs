//! Maps and globals. Sizes here are placeholders: the agent sets the real ones at load
//! time (`EbpfLoader::map_max_entries`) from its flags and from the kernel's pid_max.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use probe_common::{
    buckets::{TimeBounds, TIME_SLOTS},
    AggKey, AggValue, Arrival, ConnState, TxKey, TxWait, KernelOffsets, ProbeConfig, RouteKey, TlsCall, TlsConn,
    TlsLast, TlsSslKey, COUNTER_SLOTS, H2Walk,
};

use crate::fast::Work;

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
pub static TARGETS: Array<u64> = Array::with_max_entries(1, aya_ebpf::bindings::BPF_F_MMAPABLE);

#[map]
pub static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(1, 0);

/// Per-CPU scratch for gathering a vectored head window of a data event: twice the
/// window, so that a copy of at most one window at an offset below one window is always in
/// bounds.
#[map]
pub static SCRATCH: PerCpuArray<probe_common::http1::Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory of the fast path (`fast::Work`), for the programs that run in the
/// targets' syscalls.
#[map]
pub static WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(1, 0);

/// The same for the close hook, which may run in softirq while a syscall's program was
/// interrupted on the same CPU.
#[map]
pub static CLOSE_WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for the HTTP/2 chunk being sent (`h2`): too large for the stack.
#[map]
pub static H2_BUF: PerCpuArray<crate::h2::H2Buf> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU state of the chunking loop (`h2`): in map memory, read back as unknown scalars,
/// so that the verifier sees one state per step instead of one per path to it.
#[map]
pub static H2_WALK: PerCpuArray<[u64; crate::h2::WALK_CELLS]> = PerCpuArray::with_max_entries(1, 0);

/// Socket cookie -> where each direction of an HTTP/2 connection is in its frames.
#[map]
pub static H2_FRAMES: LruHashMap<u64, H2Walk> = LruHashMap::with_max_entries(1, 0);

/// A zeroed connection state, the template of new `CONNS` entries (never written).
#[map]
pub static ZERO_CONN: Array<ConnState> = Array::with_max_entries(1, 0);

/// tgid -> service id (probe_common::MAP_SERVICES says who writes it when).
#[map]
pub static SERVICES: HashMap<u32, u32> = HashMap::with_max_entries(1, 0);

/// (service, path key) -> route id (the agent writes it; the least recent go when full).
#[map]
pub static ROUTES: LruHashMap<RouteKey, u32> = LruHashMap::with_max_entries(1, 0);

/// The kernel's aggregates of the requests it measured. Entries are allocated as label
/// sets appear (no preallocation: a value is per CPU), and never deleted.
#[map]
pub static AGG: PerCpuHashMap<AggKey, AggValue> =
    PerCpuHashMap::with_max_entries(1, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Socket cookie -> when its unread bytes began to arrive (`probe_common::Arrival`).
#[map]
pub static ARRIVALS: HashMap<u64, Arrival> = HashMap::with_max_entries(1, 0);

/// One byte per TCP port: `PORT_SERVER` where a target served an HTTP request
/// (`arrival::mark_port`), `PORT_TLS` where it accepted a TLS connection (`tls`).
#[map]
pub static SERVER_PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// (socket cookie, end sequence number) -> bytes a write left unsent (`tx`).
#[map]
pub static TX_WAIT: HashMap<TxKey, TxWait> = HashMap::with_max_entries(1, 0);

/// Socket cookie -> its pending wait's end (`tx`).
#[map]
pub static TX_LATEST: HashMap<u64, u64> = HashMap::with_max_entries(1, 0);

/// Thread -> the TLS library call it is in (`tls`). LRU: the call of a thread killed in
/// it never returns, and its entry must not stay forever.
#[map]
pub static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(1, 0);

/// Thread -> the TLS connection it last did socket I/O on (`tls`).
#[map]
pub static TLS_LAST: LruHashMap<u64, TlsLast> = LruHashMap::with_max_entries(1, 0);

/// (process, SSL object or Go `*tls.Conn`) -> its connection (`tls`).
#[map]
pub static TLS_SSL: LruHashMap<TlsSslKey, TlsConn> = LruHashMap::with_max_entries(1, 0);

/// (process, goroutine, function) -> the Go crypto/tls call it is in (`tls`). LRU, as
/// `TLS_CALLS`.
#[map]
pub static GO_CALLS: LruHashMap<TlsSslKey, TlsCall> = LruHashMap::with_max_entries(1, 0);

/// (process, goroutine) -> the TLS connection it last did socket I/O on (`tls`).
#[map]
pub static GO_LAST: LruHashMap<TlsSslKey, TlsLast> = LruHashMap::with_max_entries(1, 0);

/// Processes whose Go crypto/tls is probed (the agent writes it): their TLS socket I/O is
/// also remembered by goroutine (`GO_LAST`).
#[map]
pub static GO_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_flags: 0,
    task_tgid: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    sk_family: 0,
    sk_num: 0,
    sk_type: 0,
    regs_syscall: 0,
    regs_arg1: 0,
    regs_arg2: 0,
    regs_arg3: 0,
    task_start_boottime: 0,
    task_signal: 0,
    signal_live: 0,
    valid: 0,
    unix_addr: 0,
    unix_peer: 0,
    sk_cookie: 0,
    sk_state: 0,
    tcp_copied_seq: 0,
    tcp_rcv_nxt: 0,
    tcp_snd_nxt: 0,
    tcp_write_seq: 0,
    tcp_cb_flags: 0,
    regs_r14: 0,
};

#[unsafe(no_mangle)]
pub static CONFIG: ProbeConfig = ProbeConfig { wakeup_bytes: 0, target_words: 0, client_metrics: 0, _pad: 0 };

/// The duration slots' upper bounds (`probe_common::buckets`), patched in by the agent.
#[unsafe(no_mangle)]
pub static TIME_BOUNDS: TimeBounds = TimeBounds { ns: [u64::MAX; TIME_SLOTS] };

/// Reads one field of a global the agent patched in at load time. The volatile read keeps
/// the compiler from folding the placeholder value.
macro_rules! global {
    ($g:ident . $f:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::maps::$g.$f) }
    };
}
pub(crate) use global;

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        unsafe { *p += 1 };
    }
}
