//! Map names, value types and indices shared by both sides.

/// Ring buffer of events (`EventHeader`-prefixed records).
pub const MAP_EVENTS: &str = "EVENTS";
/// Array of u64 words: bit `tgid % 64` of word `tgid / 64` is set for target processes.
pub const MAP_TARGETS: &str = "TARGETS";
/// LRU hash: socket cookie -> [`ConnState`].
pub const MAP_CONNS: &str = "CONNS";
/// Hash: socket cookie -> [`Arrival`]. Written only by the `sk_data_ready` hook; an entry is
/// removed when its socket reaches TCP_CLOSE (the TCP state hook).
pub const MAP_ARRIVALS: &str = "ARRIVALS";
/// Array of 65536 bytes, one per TCP port: `PORT_SERVER` for a port a target listens or
/// served an HTTP request on, `PORT_TLS` for one a target accepted a TLS connection on.
/// Bits are only ever set (atomically: by the kernel at a target's listen, at a
/// connection's classification, and by the agent), never cleared; read by `sk_data_ready`
/// and the classification of a first request.
pub const MAP_SERVER_PORTS: &str = "SERVER_PORTS";
/// Hash: [`TxKey`] -> [`TxWait`], a response (or write) whose last bytes were still in the
/// send queue when the server's last write returned. Not an LRU: nothing in it is dropped
/// unseen (`tx::take` ends each one, exactly once).
pub const MAP_TX_WAIT: &str = "TX_WAIT";
/// Hash: socket cookie -> the connection's latest wait (`TX_PENDING` | end sequence
/// number, 0 when it ended), which the sock_ops program looks for. Written by the hook
/// that stores a wait; cleared (compare-and-swap) by whoever ends it; removed at TCP_CLOSE.
pub const MAP_TX_LATEST: &str = "TX_LATEST";
/// Per-CPU array of u64 counters, indexed by the `COUNTER_*` constants.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Hash: tgid -> service id. The agent writes it for each target it attaches or that
/// executes a new program; the kernel copies the parent's at a fork, and deletes it at an
/// exec (until the agent names the new program) and at the exit.
pub const MAP_SERVICES: &str = "SERVICES";
/// LRU hash: `fast::RouteKey` -> route id, written by the agent for each path key it
/// routed. The kernel inserts a 0 (only where the key is absent) when it sends the agent a
/// new path, so that it asks once; the agent's write replaces it.
pub const MAP_ROUTES: &str = "ROUTES";
/// Per-CPU hash: `fast::AggKey` -> `fast::AggValue`, the kernel's aggregates.
pub const MAP_AGG: &str = "AGG";
/// Global with the kernel struct offsets read from BTF at load time.
pub const GLOBAL_OFFSETS: &str = "OFFSETS";
/// Global with run-time settings.
pub const GLOBAL_CONFIG: &str = "CONFIG";
/// Global with the duration slots (`buckets::TimeBounds`), built by the agent.
pub const GLOBAL_TIME_BOUNDS: &str = "TIME_BOUNDS";

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
/// Connections classified as client connections of the target (HTTP or TLS sent first).
pub const COUNTER_CLIENT_CONNS: u32 = 5;
/// Requests the kernel measured that did not fit in `AGG` (sent as events instead).
pub const COUNTER_AGG_FULL: u32 = 6;
/// Writes that left bytes unsent whose transmission could not be waited for (`TX_WAIT`
/// full): they end when the write returned.
pub const COUNTER_TX_WAIT_FULL: u32 = 7;
/// Waits ended before their bytes went out: a later write of the same connection left
/// bytes unsent in turn (pipelined responses behind a slow reader).
pub const COUNTER_TX_SUPERSEDED: u32 = 8;
/// Waits stored for responses of the fast path whose last bytes were still unsent when
/// their last write returned (the agent counts those of the connections it pairs).
pub const COUNTER_TX_WAITS: u32 = 9;
/// Batches of bytes arriving on a target's port that could not be stamped (`ARRIVALS`
/// full): their requests start at their read.
pub const COUNTER_ARRIVALS_FULL: u32 = 10;
/// Plaintext a TLS library call returned or took whose connection could not be found (no
/// socket I/O of the call's thread on a TLS connection yet): not measured.
pub const COUNTER_TLS_UNMAPPED: u32 = 11;
/// TLS library calls that could not be remembered between their entry and return
/// (`TLS_CALLS` full): their plaintext is not measured.
pub const COUNTER_TLS_CALLS_FULL: u32 = 12;
/// Plaintext of a connection whose socket carries it already (kernel TLS, or a connection
/// the socket hooks classified as plain HTTP): measured there, once, not again.
pub const COUNTER_TLS_PLAIN_SOCKET: u32 = 13;
/// TLS library calls whose return came without their entry (a probe attached during the
/// call, or an entry evicted from `TLS_CALLS`/`GO_CALLS`): their plaintext is not measured.
pub const COUNTER_TLS_NO_ENTRY: u32 = 14;
pub const COUNTER_SLOTS: u32 = 16;

/// `ConnState::role`: the target receives HTTP requests on it.
pub const ROLE_SERVER: u32 = 1;
/// Not classified yet (no entry, or fewer than four bytes received).
pub const ROLE_UNKNOWN: u32 = 0;
/// The target sent an HTTP/1.x request on it first (or received an HTTP response first:
/// one opened before the agent attached): an outgoing client connection. With client
/// metrics on, its requests are paired in the kernel (`fast::rp_client_io`) or, where it
/// hands them over, by the agent (`FLAG_CLIENT` events).
pub const ROLE_CLIENT: u32 = 2;
/// The target sent a TLS handshake record on it first: an outgoing TLS client connection,
/// counted and not measured.
pub const ROLE_CLIENT_TLS: u32 = 5;
/// Its first received bytes were not an HTTP request; watched until one arrives.
pub const ROLE_OTHER: u32 = 3;
/// Its first received bytes were the HTTP/2 connection preface (prior knowledge, or after
/// a `101` to `h2c`): every byte of it goes to the agent (`EVENT_H2`), which decodes it.
pub const ROLE_H2: u32 = 4;

/// `ConnState::flags`: an event of this connection was lost.
pub const CONN_LOST_EVENTS: u32 = 1;
/// `ConnState::flags`: the sock_ops program turned on the socket's per-segment callback
/// (read once, at classification: the callback is turned on at PASSIVE_ESTABLISHED, before
/// any read), so a response's last bytes can be waited for (`tx`).
pub const CONN_TX_WATCHED: u32 = 2;
/// `ConnState::flags`: the socket carries TLS records (its first bytes were one): its
/// socket I/O is ciphertext, never parsed; the plaintext comes from the TLS library's
/// probes (`probe-ebpf/src/tls.rs`).
pub const CONN_TLS: u32 = 4;
/// `ConnState::flags`: a TLS library call of the target was mapped to this connection.
pub const CONN_TLS_PROBED: u32 = 8;
/// `ConnState::flags`: its TLS handshake completed (a handshake call returned 1, or
/// plaintext moved).
pub const CONN_TLS_OPEN: u32 = 16;
/// `ConnState::flags` of a client connection: whether the kernel pairs it (`mode`) was
/// decided, at its first request.
pub const CONN_CLIENT_DECIDED: u32 = 32;

/// Added to a socket family (`Work::family`, the events' and `AggKey`'s `family`) for
/// plaintext that went through a TLS library: the request's `url_scheme` is `https`.
pub const FAMILY_TLS: u16 = 0x8000;

/// `SERVER_PORTS` bits: a target served HTTP (or listens) on the port...
pub const PORT_SERVER: u8 = 1;
/// ...and a TLS handshake completed on it (the TLS probes saw it): a plaintext request
/// there is HTTP sent to an HTTPS port, not a request.
pub const PORT_TLS: u8 = 2;

/// LRU hash: thread (pid_tgid) -> [`TlsCall`], a TLS library call between its entry and
/// its return.
pub const MAP_TLS_CALLS: &str = "TLS_CALLS";
/// LRU hash: thread (pid_tgid) -> [`TlsLast`], the TLS connection the thread last did
/// socket I/O on.
pub const MAP_TLS_LAST: &str = "TLS_LAST";
/// LRU hash: [`TlsSslKey`] (process, SSL object) -> [`TlsConn`], the connection an SSL
/// object was mapped to at its first call.
pub const MAP_TLS_SSL: &str = "TLS_SSL";

/// LRU hash: (process, goroutine, function) -> [`TlsCall`], a Go crypto/tls call in
/// progress.
pub const MAP_GO_CALLS: &str = "GO_CALLS";
/// LRU hash: (process, goroutine) -> [`TlsLast`].
pub const MAP_GO_LAST: &str = "GO_LAST";
/// Hash: tgid -> 1, the processes whose Go crypto/tls is probed. The agent alone writes it
/// (inserted when it attaches the probes, removed at the process's exit).
pub const MAP_GO_TGIDS: &str = "GO_TGIDS";

/// `TlsCall::kind`.
pub const TLS_READ: u32 = 1;
pub const TLS_WRITE: u32 = 2;
pub const TLS_HANDSHAKE: u32 = 3;

/// A TLS library call in progress on a thread: `SSL_read(ssl, buf, num)`,
/// `SSL_read_ex(ssl, buf, num, &readbytes)` (`len_ptr`), the same for writes, or
/// `SSL_do_handshake(ssl)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCall {
    pub ssl: u64,
    pub buf: u64,
    /// `_ex` variants: where the library stores the bytes moved (0 otherwise: the return
    /// value is the count).
    pub len_ptr: u64,
    pub kind: u32,
    pub _pad: u32,
}

/// The TLS connection a thread last did socket I/O on, and when the bytes its last reads
/// brought began to arrive (0 once a plaintext read took it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsLast {
    pub cookie: u64,
    pub sk: u64,
    pub arrival_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsSslKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsConn {
    pub cookie: u64,
    pub sk: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub role: u32,
    pub flags: u32,
    /// While the role is unknown: the classifier's state (`classify::Classifier`): the
    /// first four bytes received, little-endian...
    pub prefix: u32,
    /// ...and how far it got.
    pub prefix_len: u32,
    /// Of a server or client connection: `fast::MODE_FAST` or `MODE_SLOW`.
    pub mode: u32,
    /// The service id of the process that classified it (`SERVICES`).
    pub service: u32,
    /// The fd a syscall of process `fd_tgid` was checked to reach this socket through
    /// (`fd_tgid` 0: none yet): the next syscall of that process on that fd needs no walk
    /// of its fd table (an fd reaches another socket only after a close, and a socket's
    /// I/O never runs in a syscall on another fd).
    pub fd_tgid: u32,
    pub fd: u32,
    /// The socket's address family, read once at classification.
    pub family: u32,
    pub _pad: u32,
    pub pairing: crate::fast::Pairing,
}

impl ConnState {
    /// A server connection the kernel's fast path pairs.
    pub fn is_fast_server(&self) -> bool {
        self.role == ROLE_SERVER && self.mode == crate::fast::MODE_FAST
    }

    /// A client connection the kernel's fast path pairs.
    pub fn is_fast_client(&self) -> bool {
        self.role == ROLE_CLIENT && self.mode == crate::fast::MODE_FAST
    }
}

/// LRU hash: socket cookie -> [`H2Walk`], where each direction of an HTTP/2 connection
/// is in its frames (`ROLE_H2`; written by the programs in the connection's syscalls).
pub const MAP_H2_FRAMES: &str = "H2_FRAMES";

/// Where one direction of an HTTP/2 connection's byte stream is: in a frame's payload (or
/// the client preface) with `left` bytes to go, else in a frame header, `have` bytes of
/// which are in `hdr`. A DATA frame's payload is not sent to the agent (`skip`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Dir {
    pub left: u32,
    pub skip: u8,
    pub have: u8,
    pub _pad: [u8; 2],
    /// Room for a header copied at an offset below 16: 32 bytes.
    pub hdr: [u8; 32],
}

/// Both directions of a connection: `[received, sent]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Walk {
    pub dirs: [H2Dir; 2],
}

/// The client preface's length (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
pub const H2_PREFACE_LEN: u32 = 24;

/// When the bytes a TCP socket has not been read yet began to arrive: the data that came
/// while the socket's receive queue was empty opens a batch (`start_seq`, at `ts_ns`), and
/// each delivery while bytes of it remain unread extends it (`end_seq`). A read whose first
/// byte is `start_seq` returned data that waited since `ts_ns`. One writer: the
/// `sk_data_ready` hook (a new batch rewrites the value in place, `start_seq` last; an
/// extension writes `end_seq` alone, which readers do not use).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arrival {
    pub ts_ns: u64,
    pub start_seq: u32,
    pub end_seq: u32,
}

/// `TxWait::kind`: the fast path's measurement of a response, sent as a
/// `fast::MeasuredEvent` when its last byte goes out.
pub const TX_FAST: u32 = 1;
/// `TxWait::kind`: a write of a connection the agent pairs, announced by a `SentEvent`.
pub const TX_SLOW: u32 = 2;

/// `MAP_TX_WAIT`'s key: a connection, and the sequence number after the last byte a wait
/// is for. Unique: a connection's sequence numbers only grow, so a key deleted is never
/// inserted again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxKey {
    pub cookie: u64,
    pub end_seq: u32,
    pub _pad: u32,
}

/// `MAP_TX_LATEST`'s value of a connection with a wait: [`TX_PENDING`] | its end sequence
/// number; 0 once that wait ended.
pub const TX_PENDING: u64 = 1 << 32;

/// Bytes a server's write left in the socket's send queue, waited for (`MAP_TX_WAIT`).
/// Inserted whole, once, with `BPF_NOEXIST`, by the hook of the write that left them
/// (`tx::wait`), and never changed: whoever deletes it ends it (`tx::take`), so it ends
/// exactly once. The contenders: the transmission of its last byte (`sock_ops`), a later
/// write that leaves bytes unsent in turn, and the close.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TxWait {
    /// The TCP sequence number after the last byte waited for.
    pub end_seq: u32,
    /// `TX_FAST` or `TX_SLOW`.
    pub kind: u32,
    /// `TX_FAST`: the measurement, whose `end_ns` (and header time) the take sets. Of
    /// either kind, `measured.end_ns` holds the return of the write when it is stored.
    pub measured: crate::fast::MeasuredEvent,
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
    /// 1: the requests of the targets' HTTP client connections (`ROLE_CLIENT`) are measured
    /// (`--no-client-metrics` sets 0: those connections are only counted).
    pub client_metrics: u32,
    pub _pad: u32,
}
