//! Ring-buffer records as the kernel writes them, built for tests (decode, the golden
//! fixtures, the fuzzer): the same bytes the agent reads.
use probe_common::{
    CloseEvent, DataEvent, EventHeader, ExecEvent, ExitEvent, ForkEvent, MeasuredEvent, PathEvent, SwitchEvent,
    EVENT_CLOSE, EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_MEASURED, EVENT_PATH, EVENT_SWITCH, FLAG_RESET, HEAD_WINDOW,
    TAIL_WINDOW, route::MAX_PATH,
};

pub const AF_INET: u16 = 2;
pub const AF_UNIX: u16 = 1;

/// The bytes of a `#[repr(C)]` record.
pub fn raw<T>(v: &T) -> Vec<u8> {
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
}

/// A data record for I/O of `len` bytes by `tgid`, of which `bytes` are what the probe
/// would capture (the head window from the start and, when `len` is larger than the
/// window, the last `TAIL_WINDOW` bytes of `bytes` as the tail).
pub fn data(kind: u32, conn: u64, tgid: u32, ts_ns: u64, family: u16, flags: u32, bytes: &[u8]) -> Vec<u8> {
    let mut ev = DataEvent {
        header: EventHeader { kind, flags, ts_ns },
        conn_id: conn,
        tgid,
        len: bytes.len() as u32,
        family,
        head_len: bytes.len().min(HEAD_WINDOW) as u16,
        tail_len: 0,
        _pad: 0,
        arrival_ns: 0,
        tx_end_seq: 0,
        _pad2: 0,
        head: [0; HEAD_WINDOW],
        tail: [0; TAIL_WINDOW],
    };
    ev.head[..bytes.len().min(HEAD_WINDOW)].copy_from_slice(&bytes[..bytes.len().min(HEAD_WINDOW)]);
    if bytes.len() > HEAD_WINDOW {
        ev.tail.copy_from_slice(&bytes[bytes.len() - TAIL_WINDOW..]);
        ev.tail_len = TAIL_WINDOW as u16;
    }
    raw(&ev)
}

pub fn close(conn: u64, ts_ns: u64) -> Vec<u8> {
    raw(&CloseEvent { header: EventHeader { kind: EVENT_CLOSE, flags: 0, ts_ns }, conn_id: conn })
}

/// A close by a reset (the client gave up).
pub fn reset(conn: u64, ts_ns: u64) -> Vec<u8> {
    raw(&CloseEvent { header: EventHeader { kind: EVENT_CLOSE, flags: FLAG_RESET, ts_ns }, conn_id: conn })
}

pub fn fork(parent: u32, child: u32, ts_ns: u64) -> Vec<u8> {
    raw(&ForkEvent {
        header: EventHeader { kind: EVENT_FORK, flags: 0, ts_ns },
        parent_tgid: parent,
        child_tgid: child,
        child_start_ns: ts_ns,
    })
}

pub fn exec(tgid: u32, comm: &str, ts_ns: u64) -> Vec<u8> {
    let mut name = [0u8; 16];
    let n = comm.len().min(15);
    name[..n].copy_from_slice(&comm.as_bytes()[..n]);
    raw(&ExecEvent { header: EventHeader { kind: EVENT_EXEC, flags: 0, ts_ns }, tgid, _pad: 0, comm: name })
}

pub fn exit(tgid: u32, ts_ns: u64) -> Vec<u8> {
    raw(&ExitEvent { header: EventHeader { kind: EVENT_EXIT, flags: 0, ts_ns }, tgid, _pad: 0 })
}

/// The kernel sent `path` under `key` for service id `service`.
pub fn path(key: u64, service: u32, path: &[u8], ts_ns: u64) -> Vec<u8> {
    let mut ev = PathEvent {
        header: EventHeader { kind: EVENT_PATH, flags: 0, ts_ns },
        key,
        service,
        len: path.len().min(MAX_PATH) as u32,
        path: [0; MAX_PATH],
    };
    ev.path[..path.len().min(MAX_PATH)].copy_from_slice(&path[..path.len().min(MAX_PATH)]);
    raw(&ev)
}

/// A request the kernel measured and sent as an event.
pub fn measured(mut ev: MeasuredEvent) -> Vec<u8> {
    ev.header = EventHeader { kind: EVENT_MEASURED, flags: 0, ts_ns: ev.end_ns };
    raw(&ev)
}

/// The kernel handed a connection to the agent.
pub fn switch(mut ev: SwitchEvent) -> Vec<u8> {
    ev.header.kind = EVENT_SWITCH;
    raw(&ev)
}

/// One HTTP/2 chunk record: `data` at `offset` of a read (`recv`) or write of `len` bytes
/// by `tgid`.
pub fn h2(conn: u64, tgid: u32, ts_ns: u64, recv: bool, len: usize, offset: usize, data: &[u8], flags: u32) -> Vec<u8> {
    use probe_common::{EVENT_H2, H2_CHUNK, H2_HEADER_LEN, H2Event};
    let mut ev = H2Event {
        header: EventHeader { kind: EVENT_H2, flags, ts_ns },
        conn_id: conn,
        tgid,
        len: len as u32,
        offset: offset as u32,
        chunk_len: data.len() as u16,
        family: AF_INET,
        arrival_ns: 0,
        recv: recv as u32,
        _pad: 0,
        data: [0; H2_CHUNK],
    };
    ev.data[..data.len()].copy_from_slice(data);
    raw(&ev)[..H2_HEADER_LEN + data.len()].to_vec()
}
