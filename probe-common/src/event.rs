//! Records the eBPF programs write into the `EVENTS` ring buffer.
//!
//! Every record starts with an [`EventHeader`]; its `kind` says which struct follows.

/// Bytes captured from the start of each read/write buffer: enough for a request line
/// and the framing headers of a normal HTTP head.
pub const HEAD_WINDOW: usize = 512;
/// Bytes captured from the end of the data of each read or write, when it is longer than
/// the head window (the chunked terminator lives there).
pub const TAIL_WINDOW: usize = 16;

/// Data the target read from a tracked connection.
pub const EVENT_RECV: u32 = 1;
/// Data the target wrote to a tracked connection.
pub const EVENT_SEND: u32 = 2;
/// A tracked connection was closed (TCP state hook, or the peer of a UNIX one read EOF).
pub const EVENT_CLOSE: u32 = 3;
/// A target process forked a child process, which is now a target too.
pub const EVENT_FORK: u32 = 4;
/// A target process executed a new program (its command name changed).
pub const EVENT_EXEC: u32 = 5;
/// A target process exited (its last thread); the kernel already cleared its bit.
pub const EVENT_EXIT: u32 = 6;
/// The kernel handed a connection to the agent (`fast::SwitchEvent`).
pub const EVENT_SWITCH: u32 = 7;
/// A path whose route the kernel does not know yet (`fast::PathEvent`).
pub const EVENT_PATH: u32 = 8;
/// A request the kernel measured and did not aggregate (`fast::MeasuredEvent`).
pub const EVENT_MEASURED: u32 = 9;
/// The bytes a connection's writes left unsent went out (`SentEvent`).
pub const EVENT_SENT: u32 = 10;

/// Bytes an HTTP/2 connection carried (`H2Event`): all of them, in chunks, in order.
pub const EVENT_H2: u32 = 11;

/// `flags`: events of this connection were lost before this one (ring buffer full);
/// the agent must resynchronise the connection.
pub const FLAG_AFTER_LOSS: u32 = 2;
/// `flags`: the kernel saw this connection for the first time and could not classify
/// its first received bytes as an HTTP request (garbage, TLS, another protocol...).
/// Sent once per such connection so the agent can count it; nothing else follows unless a
/// read later starts with an HTTP request (the connection then becomes a server one).
pub const FLAG_UNCLASSIFIED: u32 = 4;

/// `flags` of a close: the connection was reset (it went straight from an open state to
/// CLOSE: a reset received, or an abortive close) rather than closed with a FIN.
pub const FLAG_RESET: u32 = 8;

/// `flags` of a write: it returned with bytes of it still unsent (in the socket's send
/// queue: a slow reader's full window, Nagle, cork), up to `DataEvent::tx_end_seq`. A
/// `SentEvent` for that sequence number follows when they have gone out.
pub const FLAG_TX_PENDING: u32 = 16;

/// `flags` of a `SentEvent`: the bytes had not gone out yet; a later write of the
/// connection left bytes unsent in turn, and this wait ended at that write.
pub const FLAG_SUPERSEDED: u32 = 32;

/// `flags` of a close: the connection carried TLS and never a request's plaintext. With
/// `FLAG_TLS_PROBED` if a TLS library call of the target was mapped to it, and
/// `FLAG_TLS_OPEN` if its handshake completed.
pub const FLAG_TLS_UNMEASURED: u32 = 64;
pub const FLAG_TLS_PROBED: u32 = 128;
pub const FLAG_TLS_OPEN: u32 = 256;
/// With `FLAG_TLS_UNMEASURED`: on a port no TLS handshake ever completed on (HTTPS sent to
/// a plain port, or a server whose TLS library is not probed).
pub const FLAG_TLS_PLAIN_PORT: u32 = 1024;
/// `flags` of an unclassified first read (with `FLAG_UNCLASSIFIED`): a plaintext request
/// on a port the target accepted TLS connections on (HTTP sent to an HTTPS port).
pub const FLAG_PLAIN_ON_TLS_PORT: u32 = 512;

/// `flags` of a read or write: of a target's outgoing HTTP client connection
/// (`ROLE_CLIENT`): its writes carry requests, its reads responses.
pub const FLAG_CLIENT: u32 = 8192;
/// `flags` of a close: the peer closed first (the target's side went from CLOSE_WAIT to
/// LAST_ACK): for a client connection, the server ended it.
pub const FLAG_PEER_CLOSED: u32 = 16384;

/// Bytes of an HTTP/2 connection one [`H2Event`] carries at most.
pub const H2_CHUNK: usize = 4096;
/// Steps of the programs' walk over one read or write: each copies a frame header, or a
/// frame's payload (or skips a DATA payload), up to the end of an iovec or of a chunk. A
/// call that needs more loses the connection's framing (`FLAG_H2_TRUNCATED`). The walk is a
/// `bpf_loop`, whose callback is verified once: the bound costs only the steps taken (a
/// 64 KiB read of 30-byte frames takes about 4,400).
pub const H2_MAX_STEPS: usize = 8192;

/// `flags` of an `H2Event`: the last chunk of its read or write; the bytes after it, up to
/// the call's `len`, were a DATA frame's payload, not sent. May carry no data.
pub const FLAG_H2_LAST: u32 = 2048;
/// `flags` of an `H2Event`: the walk of the call's frames ran out of steps: the kernel
/// lost its place in the connection's frames, and sends nothing more of it.
pub const FLAG_H2_TRUNCATED: u32 = 4096;

/// Iovecs of a vectored read or write that the programs gather the head window from (a
/// bounded loop; servers put a response head in the first one or two).
pub const MAX_IOVECS: usize = 8;
/// Iovecs walked to find the last one the data reaches, whose end is the tail window. A
/// writev of more reaches no tail (its chunked end is then inferred at the next request).
pub const MAX_IOVECS_WALKED: usize = 64;

/// `TASK_COMM_LEN`: a command name, NUL-padded.
pub const COMM_LEN: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `EVENT_*` constants.
    pub kind: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the data was copied, i.e. at the
    /// return of the socket read/write inside the syscall.
    pub ts_ns: u64,
}

/// One read or write on a tracked server connection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub header: EventHeader,
    /// Socket cookie: unique for the socket's life, never reused, independent of fds.
    pub conn_id: u64,
    /// The process that did the I/O (its service is the registry's).
    pub tgid: u32,
    /// Bytes moved by this call (the syscall's return value, > 0).
    pub len: u32,
    /// `AF_INET`, `AF_INET6` or `AF_UNIX`.
    pub family: u16,
    /// Valid bytes in `head`: the data's first bytes, gathered across up to
    /// [`MAX_IOVECS`] iovecs for vectored I/O (min(len, HEAD_WINDOW) unless a fault; 0 for
    /// sendfile and splice, whose bytes come from a file).
    pub head_len: u16,
    /// Valid bytes in `tail`: `tail[..tail_len]` are the data's last bytes; 0 if not
    /// captured (the data fit in `head`, or ended beyond the iovecs we walk).
    pub tail_len: u16,
    pub _pad: u16,
    /// Of a read: when its first byte arrived at the socket (see `maps::Arrival`); 0 when
    /// not known, and for writes.
    pub arrival_ns: u64,
    /// Of a write with `FLAG_TX_PENDING`: the TCP sequence number after its last byte
    /// (`tcp_sock.write_seq` when it returned).
    pub tx_end_seq: u32,
    pub _pad2: u32,
    pub head: [u8; HEAD_WINDOW],
    pub tail: [u8; TAIL_WINDOW],
}

/// A tracked connection was closed: the target closed (or shut down) its side of a TCP
/// connection, or the peer of a UNIX connection read end-of-file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloseEvent {
    pub header: EventHeader,
    pub conn_id: u64,
}

/// The bytes of a connection up to `end_seq` have been transmitted (the segment that
/// carried the last of them left at `header.ts_ns`), or will not be waited for any more: a
/// later write left bytes unsent in turn, or the connection closed (`tx::take`). One per
/// write that was sent with `FLAG_TX_PENDING`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SentEvent {
    pub header: EventHeader,
    pub conn_id: u64,
    pub end_seq: u32,
    pub _pad: u32,
}

/// A target forked: `child_tgid` is now a target too (the kernel already marked it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub parent_tgid: u32,
    pub child_tgid: u32,
    /// The child's `task_struct.start_boottime` (ns since boot, suspend included): what
    /// /proc/PID/stat's start time counts in clock ticks.
    pub child_start_ns: u64,
}

/// A target executed a new program: `comm` is its new command name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub tgid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// The last thread of a target exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub tgid: u32,
    pub _pad: u32,
}

/// A chunk of the bytes an HTTP/2 server connection read or wrote (its role is
/// `ROLE_H2`): the agent decodes its frames and header blocks. A call's bytes come as
/// chunks at increasing `offset`s, all but DATA frames' payloads (the gaps), the last with
/// `FLAG_H2_LAST`; the record is `H2_HEADER_LEN + chunk_len` bytes long.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct H2Event {
    pub header: EventHeader,
    pub conn_id: u64,
    pub tgid: u32,
    /// Bytes the read or write moved in all.
    pub len: u32,
    /// Where this chunk starts among them.
    pub offset: u32,
    /// Valid bytes in `data`.
    pub chunk_len: u16,
    /// As in [`DataEvent`], with `FAMILY_TLS` for plaintext from a TLS library.
    pub family: u16,
    /// Of a read's first chunk: when its first byte arrived (0 when not known).
    pub arrival_ns: u64,
    /// 1 for a read, 0 for a write.
    pub recv: u32,
    pub _pad: u32,
    pub data: [u8; H2_CHUNK],
}

/// The bytes of an [`H2Event`] before its data.
pub const H2_HEADER_LEN: usize = core::mem::offset_of!(H2Event, data);
