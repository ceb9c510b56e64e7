//! Ring-buffer records -> typed events. The layouts are `probe_common`'s, the only
//! definition of them.
use crate::reason::{Protocol, TlsUnmeasured};
use probe_common::{
    CloseEvent, DataEvent, EVENT_CLOSE, EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_MEASURED, EVENT_PATH, EVENT_RECV,
    EVENT_SEND, EVENT_SENT, EVENT_SWITCH, EVENT_H2, H2_HEADER_LEN, H2Event, FLAG_H2_LAST, FLAG_H2_TRUNCATED, EventHeader, ExecEvent, ExitEvent, FLAG_AFTER_LOSS, FLAG_RESET, FLAG_CLIENT, FLAG_PEER_CLOSED, FLAG_SUPERSEDED, FLAG_TX_PENDING,
    FLAG_PLAIN_ON_TLS_PORT, FLAG_TLS_OPEN, FLAG_TLS_PLAIN_PORT, FLAG_TLS_PROBED, FLAG_TLS_UNMEASURED, FLAG_UNCLASSIFIED, ForkEvent, MeasuredEvent, PathEvent, SentEvent, SwitchEvent,
};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short for its kind")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Recv,
    Send,
}

/// A read or write, as the pairing sees it.
#[derive(Clone, Debug)]
pub struct Data {
    pub conn_id: u64,
    /// The process that did the I/O (the agent maps it to its service).
    pub tgid: u32,
    pub ts_ns: u64,
    /// Of a read: when its first byte arrived at the socket (`ts_ns` when not known).
    pub arrival_ns: u64,
    pub direction: Direction,
    pub family: u16,
    /// Bytes moved by the call.
    pub len: u64,
    /// The first captured bytes (at most `len`).
    pub head: Vec<u8>,
    /// The last bytes of the call, when they are beyond `head`.
    pub tail: Vec<u8>,
    pub after_loss: bool,
    pub unclassified: bool,
    /// Unclassified: a plaintext request on a port the target serves HTTPS on.
    pub on_tls_port: bool,
    /// Of a target's client connection: its writes are requests, its reads responses.
    pub client: bool,
    /// Of a write that left bytes unsent: the sequence number after its last byte, which
    /// a `Sent` event will announce as transmitted.
    pub tx_end_seq: Option<u32>,
}

/// A chunk of the bytes an HTTP/2 connection carried (`probe_common::H2Event`).
#[derive(Clone, Debug)]
pub struct H2Chunk {
    pub conn_id: u64,
    pub tgid: u32,
    pub ts_ns: u64,
    /// Of a read: when its first byte arrived (`ts_ns` when not known).
    pub arrival_ns: u64,
    pub direction: Direction,
    pub family: u16,
    /// Bytes the read or write moved in all, and where this chunk starts among them.
    pub len: u64,
    pub offset: u64,
    pub data: Vec<u8>,
    pub after_loss: bool,
    /// The call's last chunk: its bytes after this one were a DATA payload.
    pub last: bool,
    /// The kernel lost its place in the connection's frames at this call.
    pub truncated: bool,
}

#[derive(Clone, Debug)]
pub enum Event {
    Data(Data),
    H2(H2Chunk),
    /// `reset`: by a reset rather than a FIN; `ts_ns`: when.
    /// `tls`: a TLS connection that carried no request's plaintext, and why: a reason, or
    /// another protocol (`Err(Protocol::Tls)`: HTTPS sent to a plain port).
    /// `peer_closed`: the peer's FIN came first.
    Close { conn_id: u64, reset: bool, peer_closed: bool, ts_ns: u64, tls: Option<Result<TlsUnmeasured, Protocol>> },
    /// `child_start_ns`: the child's start, ns since boot.
    Fork { parent_tgid: u32, child_tgid: u32, child_start_ns: u64 },
    /// The process runs a new program, now called `comm`.
    Exec { tgid: u32, comm: String },
    Exit { tgid: u32 },
    /// The kernel handed a connection to the agent, with its pairing state.
    Switch(SwitchEvent),
    /// A path whose route the kernel does not know yet.
    Path { key: u64, service: u32, path: Vec<u8> },
    /// A request the kernel measured and did not aggregate.
    Measured(MeasuredEvent),
    /// A connection's bytes up to `end_seq` went out at `ts_ns` (or stopped being waited
    /// for then).
    /// `superseded`: they had not gone out; a later write left bytes unsent in turn.
    Sent { conn_id: u64, end_seq: u32, ts_ns: u64, superseded: bool },
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; T is a plain repr(C) integer struct from probe_common.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes)?;
    match header.kind {
        EVENT_RECV | EVENT_SEND => {
            let ev: DataEvent = read(bytes)?;
            let head_len = (ev.head_len as usize).min(ev.head.len()).min(ev.len as usize);
            let tail_len = (ev.tail_len as usize).min(ev.tail.len());
            let tail = if (ev.len as usize) > head_len { ev.tail[..tail_len].to_vec() } else { vec![] };
            Ok(Event::Data(Data {
                conn_id: ev.conn_id,
                tgid: ev.tgid,
                ts_ns: header.ts_ns,
                arrival_ns: if ev.arrival_ns == 0 { header.ts_ns } else { ev.arrival_ns },
                direction: if header.kind == EVENT_RECV { Direction::Recv } else { Direction::Send },
                family: ev.family,
                len: ev.len as u64,
                head: ev.head[..head_len].to_vec(),
                tail,
                after_loss: header.flags & FLAG_AFTER_LOSS != 0,
                unclassified: header.flags & FLAG_UNCLASSIFIED != 0,
                on_tls_port: header.flags & FLAG_PLAIN_ON_TLS_PORT != 0,
                client: header.flags & FLAG_CLIENT != 0,
                tx_end_seq: (header.flags & FLAG_TX_PENDING != 0).then_some(ev.tx_end_seq),
            }))
        }
        EVENT_H2 => {
            // A record of the header and `chunk_len` bytes: shorter than the struct.
            if bytes.len() < H2_HEADER_LEN {
                return Err(DecodeError::Short(bytes.len()));
            }
            let mut full = [0u8; size_of::<H2Event>()];
            let n = bytes.len().min(full.len());
            full[..n].copy_from_slice(&bytes[..n]);
            let ev: H2Event = read(&full)?;
            let chunk = ev.chunk_len as usize;
            if chunk > ev.data.len() || H2_HEADER_LEN + chunk > bytes.len() {
                return Err(DecodeError::Short(bytes.len()));
            }
            Ok(Event::H2(H2Chunk {
                conn_id: ev.conn_id,
                tgid: ev.tgid,
                ts_ns: header.ts_ns,
                arrival_ns: if ev.arrival_ns == 0 { header.ts_ns } else { ev.arrival_ns },
                direction: if ev.recv != 0 { Direction::Recv } else { Direction::Send },
                family: ev.family,
                len: ev.len as u64,
                offset: ev.offset as u64,
                data: ev.data[..chunk].to_vec(),
                after_loss: header.flags & FLAG_AFTER_LOSS != 0,
                last: header.flags & FLAG_H2_LAST != 0,
                truncated: header.flags & FLAG_H2_TRUNCATED != 0,
            }))
        }
        EVENT_CLOSE => {
            let ev: CloseEvent = read(bytes)?;
            let f = header.flags;
            let tls = (f & FLAG_TLS_UNMEASURED != 0).then(|| {
                TlsUnmeasured::of(f & FLAG_TLS_PROBED != 0, f & FLAG_TLS_OPEN != 0, f & FLAG_TLS_PLAIN_PORT != 0)
                    .ok_or(Protocol::Tls)
            });
            Ok(Event::Close {
                conn_id: ev.conn_id,
                reset: f & FLAG_RESET != 0,
                peer_closed: f & FLAG_PEER_CLOSED != 0,
                ts_ns: header.ts_ns,
                tls,
            })
        }
        EVENT_FORK => {
            let ev: ForkEvent = read(bytes)?;
            Ok(Event::Fork { parent_tgid: ev.parent_tgid, child_tgid: ev.child_tgid, child_start_ns: ev.child_start_ns })
        }
        EVENT_EXEC => {
            let ev: ExecEvent = read(bytes)?;
            let len = ev.comm.iter().position(|&b| b == 0).unwrap_or(ev.comm.len());
            Ok(Event::Exec { tgid: ev.tgid, comm: String::from_utf8_lossy(&ev.comm[..len]).into_owned() })
        }
        EVENT_EXIT => {
            let ev: ExitEvent = read(bytes)?;
            Ok(Event::Exit { tgid: ev.tgid })
        }
        EVENT_SWITCH => Ok(Event::Switch(read(bytes)?)),
        EVENT_PATH => {
            let ev: PathEvent = read(bytes)?;
            let len = (ev.len as usize).min(ev.path.len());
            Ok(Event::Path { key: ev.key, service: ev.service, path: ev.path[..len].to_vec() })
        }
        EVENT_MEASURED => Ok(Event::Measured(read(bytes)?)),
        EVENT_SENT => {
            let ev: SentEvent = read(bytes)?;
            Ok(Event::Sent {
                conn_id: ev.conn_id,
                end_seq: ev.end_seq,
                ts_ns: header.ts_ns,
                superseded: header.flags & FLAG_SUPERSEDED != 0,
            })
        }
        other => Err(DecodeError::Kind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::{HEAD_WINDOW, TAIL_WINDOW};

    use crate::wire::raw;


    #[test]
    fn data_event_round_trip() {
        let mut ev = DataEvent {
            header: EventHeader { kind: EVENT_SEND, flags: FLAG_AFTER_LOSS, ts_ns: 77 },
            conn_id: 9,
            tgid: 1,
            len: 2000,
            family: 2,
            head_len: HEAD_WINDOW as u16,
            tail_len: TAIL_WINDOW as u16,
            _pad: 0,
            arrival_ns: 0,
            tx_end_seq: 0,
            _pad2: 0,
            head: [b'a'; HEAD_WINDOW],
            tail: [b'z'; TAIL_WINDOW],
        };
        ev.head[0] = b'H';
        let Event::Data(d) = decode(&raw(&ev)).unwrap() else { panic!() };
        assert_eq!((d.conn_id, d.ts_ns, d.len, d.direction), (9, 77, 2000, Direction::Send));
        assert_eq!(d.head.len(), HEAD_WINDOW);
        assert_eq!(d.head[0], b'H');
        assert_eq!(d.tail, vec![b'z'; TAIL_WINDOW]);
        assert!(d.after_loss && !d.unclassified);
    }

    #[test]
    fn lengths_are_clamped_and_bad_records_rejected() {
        let ev = DataEvent {
            header: EventHeader { kind: EVENT_RECV, flags: 0, ts_ns: 1 },
            conn_id: 1, tgid: 1, len: 3, family: 2,
            head_len: 60000, tail_len: 60000, _pad: 0, arrival_ns: 0, tx_end_seq: 0, _pad2: 0,
            head: [0; HEAD_WINDOW], tail: [0; TAIL_WINDOW],
        };
        let Event::Data(d) = decode(&raw(&ev)).unwrap() else { panic!() };
        assert_eq!(d.head.len(), 3);
        assert!(d.tail.is_empty());
        assert!(matches!(decode(&[1, 0, 0]), Err(DecodeError::Short(3))));
        assert!(matches!(decode(&raw(&EventHeader { kind: 99, flags: 0, ts_ns: 0 })), Err(DecodeError::Kind(99))));
        assert!(matches!(decode(&raw(&EventHeader { kind: EVENT_RECV, flags: 0, ts_ns: 0 })), Err(DecodeError::Short(16))));
    }

    #[test]
    fn process_events() {
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(b"gunicorn");
        let exec = ExecEvent { header: EventHeader { kind: EVENT_EXEC, flags: 0, ts_ns: 1 }, tgid: 7, _pad: 0, comm };
        assert!(matches!(decode(&raw(&exec)), Ok(Event::Exec { tgid: 7, comm }) if comm == "gunicorn"));
        let fork = ForkEvent { header: EventHeader { kind: EVENT_FORK, flags: 0, ts_ns: 1 }, parent_tgid: 7, child_tgid: 8, child_start_ns: 5 };
        assert!(matches!(decode(&raw(&fork)), Ok(Event::Fork { parent_tgid: 7, child_tgid: 8, child_start_ns: 5 })));
        let exit = ExitEvent { header: EventHeader { kind: EVENT_EXIT, flags: 0, ts_ns: 1 }, tgid: 8, _pad: 0 };
        assert!(matches!(decode(&raw(&exit)), Ok(Event::Exit { tgid: 8 })));
    }
}
