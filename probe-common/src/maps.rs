//! Map names, value types and indices shared by both sides.

/// Ring buffer of events (`EventHeader`-prefixed records).
pub const MAP_EVENTS: &str = "EVENTS";
/// Array of u64 words: bit `tgid % 64` of word `tgid / 64` is set for target processes.
pub const MAP_TARGETS: &str = "TARGETS";
/// LRU hash: socket cookie -> [`ConnState`].
pub const MAP_CONNS: &str = "CONNS";
/// Per-CPU array of u64 counters, indexed by the `COUNTER_*` constants.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Global with the kernel struct offsets read from BTF at load time.
pub const GLOBAL_OFFSETS: &str = "OFFSETS";
/// Global with run-time settings.
pub const GLOBAL_CONFIG: &str = "CONFIG";

/// Events that did not fit in the ring buffer (lost; the connection is resynchronised).
pub const COUNTER_LOST: u32 = 0;
/// Socket I/O of a target that ran outside the task's own syscall (io_uring worker,
/// task_work, kernel thread) and was therefore not captured.
pub const COUNTER_FOREIGN_CONTEXT: u32 = 1;
/// Socket I/O whose fd did not resolve to the socket the tracepoint fired for.
pub const COUNTER_FD_MISMATCH: u32 = 2;
/// New connections that could not be inserted in `CONNS`.
pub const COUNTER_CONN_INSERT_FAILED: u32 = 3;
/// Connections classified as HTTP server connections.
pub const COUNTER_SERVER_CONNS: u32 = 4;
/// Connections classified as client connections of the target (ignored).
pub const COUNTER_CLIENT_CONNS: u32 = 5;
pub const COUNTER_SLOTS: u32 = 8;

/// `ConnState::role`: the target receives HTTP requests on it.
pub const ROLE_SERVER: u32 = 1;
/// Not classified yet (no entry, or fewer than four bytes received).
pub const ROLE_UNKNOWN: u32 = 0;
/// The target sent an HTTP request on it first: an outgoing client connection.
pub const ROLE_CLIENT: u32 = 2;
/// Its first received bytes were not an HTTP request; watched until one arrives.
pub const ROLE_OTHER: u32 = 3;

/// `ConnState::flags`: an event of this connection was lost.
pub const CONN_LOST_EVENTS: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub role: u32,
    pub flags: u32,
    /// While the role is unknown: the first bytes received so far (little-endian, up to
    /// four), for clients that send a request line in pieces of under four bytes.
    pub prefix: u32,
    /// How many bytes of `prefix` are valid (0..=3 while the role is unknown).
    pub prefix_len: u32,
}

/// Settings the agent writes into the programs' read-only data at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Pending ring-buffer bytes above which a submit wakes the reader up; below it,
    /// submits do not wake anybody (the agent also drains on a short timer).
    pub wakeup_bytes: u32,
    /// Number of u64 words in `TARGETS` (pid_max / 64, rounded up).
    pub target_words: u32,
}
