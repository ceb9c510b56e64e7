//! Pairs requests with responses per connection and times them.
//!
//! Requests are read from the received byte stream (`recv`), responses from the sent one
//! (`send`); both are followed byte by byte (Content-Length, chunked, close-delimited) so
//! that a response ends at the write that carried its last byte, never at its first.
//! Requests wait in a FIFO per connection (`conn`: keep-alive and pipelining). `piece`
//! says which bytes of an event were captured, `head` accumulates a head across events.
//! This module owns the table of connections.
//!
//! Duration = from the read that brought a request's first byte to the write that sent
//! its response's last byte (both kernel timestamps).
mod conn;
pub use conn::{H2cPiece, H2cUpgrade};
mod head;
mod parked;
mod piece;
mod recv;
mod send;

use std::collections::HashMap;
use crate::labels::Service;

use probe_common::SwitchEvent;

use conn::{Closed, Conn};
use piece::Piece;

use crate::{
    decode::{Data, Direction},
    http::Version,
    reason::{Inference, Protocol, Reason, SlowReason, TxFallback},
};

/// A request's first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub target: Vec<u8>,
    pub version: Version,
    /// The `Host` header, if captured (a client request's upstream).
    pub host: Option<Vec<u8>>,
}

/// A request head the kernel read, as its ids (`labels::kernel_ids`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHead {
    pub method: u8,
    pub version: u8,
    /// The route id, if the kernel's `ROUTES` map had the path key (0: not).
    pub route: u32,
    pub path_key: u64,
    /// The service id the path key is known under.
    pub service_id: u32,
}

impl KernelHead {
    /// What the kernel read of request `r` on a connection of service id `service_id`.
    pub fn of(r: &probe_common::FastRequest, service_id: u32) -> Self {
        KernelHead { method: r.method, version: r.version, route: r.route, path_key: r.path_key, service_id }
    }
}

/// What was read of a measured request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    Read(RequestLine),
    /// Read by the kernel (before it handed the connection to the agent, or measured there).
    Kernel(KernelHead),
    /// Its head was not captured (the reason), but its response was: it is measured with
    /// its status and duration, under placeholder method and route labels.
    Unread(Reason),
}

/// A measured request: its response was sent completely, or the connection was reset
/// before it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub head: Head,
    /// None: the connection was reset before a status line was sent.
    pub status: Option<u16>,
    /// The connection was reset before the response was complete (a client that gave up);
    /// `end_ns` is then the reset.
    pub reset: bool,
    pub family: u16,
    pub service: Service,
    /// When the request's first byte arrived at the socket (the kernel's arrival stamp), or
    /// else the return of the read that brought it.
    pub start_ns: u64,
    /// From that arrival to that read: the time the request waited in the socket's queues.
    pub queued_ns: u64,
    /// Return of the write that sent the response's first byte.
    pub first_byte_ns: u64,
    /// Return of the write that sent the response's last byte.
    pub end_ns: u64,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    pub paired_by: PairedBy,
}

/// Who paired a request with its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairedBy {
    /// The kernel's fast path.
    Kernel,
    /// The agent, from events, on a connection the kernel handed over for this reason.
    Agent(SlowReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Exchange(Exchange),
    /// A request (or bytes on an HTTP connection) that could not be measured.
    Unparsed(Reason),
    /// A response whose end had to be inferred; it is measured up to its last write before
    /// the next request or close.
    Inferred(Inference),
    /// A connection whose first bytes were not an HTTP/1.x request: another protocol.
    OtherProtocol(Protocol),
    /// A TLS connection that carried no request's plaintext, closed.
    TlsUnmeasured(crate::reason::TlsUnmeasured),
    /// A response whose last bytes were unsent when its last write returned: it is
    /// measured when they go out (`parked`).
    WaitsForTransmission,
    /// A response whose last bytes were unsent when its last write returned ends at a
    /// write instead of at their transmission (`TxFallback`).
    EndAtWrite(TxFallback),
    /// A gRPC call (an HTTP/2 stream with `content-type: application/grpc`); its stream is
    /// an `Exchange` too.
    Rpc(RpcCall),
    /// An HTTP/2 connection that could not be decoded from some point on, and why.
    H2Undecodable(crate::reason::H2Undecodable),
    /// An HTTP/2 stream reset (RST_STREAM) by the client or the server, with its error code.
    H2Reset { by_client: bool, code: u32 },
    /// A request a target sent on one of its client connections, with its response (or
    /// what came of it before the connection closed).
    Client(ClientCall),
    /// A request a target sent that could not be measured, and why.
    ClientUnmeasured(Reason),
}

/// A client request: its exchange's head is the request the target wrote (with its `Host`),
/// its status the response it read; times are the calls' returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCall {
    pub exchange: Exchange,
    /// Why the response was not read completely (`exchange.reset`), if it was not.
    pub cut: Option<ClientCut>,
}

/// How a client request's connection ended before its response was read completely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCut {
    /// A reset (received from the server, or the target's abortive close).
    Reset,
    /// The server closed the connection (its FIN came first).
    PeerClosed,
    /// The target closed it without the response, or the connection stayed idle for ten
    /// minutes (the agent's idle timeout) waiting for it: the target gave up, or waits still.
    GaveUp,
}

/// A gRPC call that ended: its response's END_STREAM, or a reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcCall {
    pub service: Service,
    /// `:path`: `/package.Service/Method`.
    pub path: Vec<u8>,
    /// `grpc-status` from the trailers (or a trailers-only response); None if none came.
    pub code: Option<u32>,
    pub duration_ns: u64,
}

/// Requests a connection may have waiting for their responses; deeper pipelines are
/// counted as `pipeline_too_deep` instead of growing the agent's memory.
pub const MAX_PENDING: usize = 256;

/// Per-connection pairing of everything the probe captured.
pub struct Pairer {
    conns: HashMap<u64, Conn>,
    max_conns: usize,
    parked: parked::Parked,
    /// The targets' client connections (`Pairer::client`), not their server ones.
    client: bool,
}

impl Pairer {
    pub fn new(max_conns: usize) -> Self {
        Pairer { conns: HashMap::new(), max_conns, parked: Default::default(), client: false }
    }

    /// The pairer of the targets' client connections: the requests are their writes, the
    /// responses their reads, each timed at its call's return (from the write of a
    /// request's first byte to the read of its response's last byte). A request left
    /// unanswered when its connection closes is measured up to the close, as cut short.
    pub fn client(max_conns: usize) -> Self {
        Pairer { client: true, ..Pairer::new(max_conns) }
    }

    /// Measured requests waiting for their last bytes to go out.
    pub fn waiting_for_transmission(&self) -> usize {
        self.parked.len()
    }

    /// The bytes of `conn_id` up to `end_seq` went out at `ts_ns`; or, `superseded`, a
    /// later write left bytes unsent before they did.
    pub fn on_sent(&mut self, conn_id: u64, end_seq: u32, ts_ns: u64, superseded: bool, out: &mut Vec<Output>) {
        self.parked.sent(conn_id, end_seq, ts_ns, superseded, out);
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether the connection is in the table.
    pub fn tracks(&self, conn_id: u64) -> bool {
        self.conns.contains_key(&conn_id)
    }

    /// Client requests written and not yet answered, by (service, method, Host header);
    /// `host_of` gives the Host of a request the kernel read (before it handed the
    /// connection over).
    pub fn client_active_requests(
        &self,
        host_of: impl Fn(&KernelHead) -> Option<Vec<u8>>,
    ) -> HashMap<(Service, String, Option<Vec<u8>>), i64> {
        let mut active = HashMap::new();
        for c in self.conns.values() {
            for p in &c.pending {
                let (method, host) = match &p.head {
                    Head::Read(line) => (line.method.clone(), line.host.clone()),
                    Head::Kernel(k) => (crate::labels::kernel_ids::method(k.method).to_string(), host_of(k)),
                    Head::Unread(_) => continue,
                };
                *active.entry((c.service.clone(), method, host)).or_insert(0) += 1;
            }
        }
        active
    }

    /// Requests read and not yet answered, by (service, method).
    pub fn active_requests(&self) -> HashMap<(Service, String), i64> {
        let mut active = HashMap::new();
        for c in self.conns.values() {
            for method in c.pending.iter().filter_map(|p| p.method()) {
                *active.entry((c.service.clone(), method.to_string())).or_insert(0) += 1;
            }
        }
        active
    }

    /// Tracked connections by service.
    pub fn connections_by_service(&self) -> HashMap<Service, i64> {
        let mut by = HashMap::new();
        for c in self.conns.values() {
            *by.entry(c.service.clone()).or_insert(0) += 1;
        }
        by
    }

    /// `service` names the `service_name` of the process that did the I/O; it is asked
    /// only for a connection seen for the first time.
    pub fn on_data(&mut self, d: &Data, service: impl FnOnce() -> Service, out: &mut Vec<Output>) {
        if d.unclassified {
            // Not HTTP from its first bytes: counted among the connections, not tracked.
            // What the agent held of it was bytes undecided so far, not a request; a request
            // waiting on it (the kernel's map had lost the connection) is never answered.
            out.push(Output::OtherProtocol(if d.on_tls_port { Protocol::HttpOnTlsPort } else { Protocol::of_first(&d.head) }));
            if let Some(conn) = self.conns.remove(&d.conn_id)
                && !conn.pending.is_empty()
            {
                conn.close(Closed::Normally, out);
            }
            return;
        }
        if !self.conns.contains_key(&d.conn_id) && self.conns.len() >= self.max_conns {
            self.evict_oldest(out);
        }
        let conn = self.conns.entry(d.conn_id).or_insert_with(|| Conn::new(d.family, service()));
        conn.last_ns = d.ts_ns;
        if d.after_loss {
            conn.resync(Reason::EventsLost, out);
        }
        let piece = Piece { len: d.len, head: &d.head, tail: &d.tail };
        let from = out.len();
        if self.client {
            match d.direction {
                Direction::Send => recv::on_recv(conn, &piece, d.ts_ns, d.ts_ns, out),
                Direction::Recv => send::on_send(conn, &piece, d.ts_ns, out),
            }
            return;
        }
        match d.direction {
            Direction::Recv => recv::on_recv(conn, &piece, d.ts_ns, d.arrival_ns, out),
            Direction::Send => {
                send::on_send(conn, &piece, d.ts_ns, out);
                conn.tx_last = d.tx_end_seq.map(|seq| (d.ts_ns, seq));
                if let Some(seq) = d.tx_end_seq {
                    self.parked.hold(d.conn_id, seq, d.ts_ns, from, out);
                }
            }
        }
    }

    /// The kernel hands a connection over (`sw`: its pairing state then): the agent pairs it
    /// from now on, from the state the kernel left. `service` names the service of id
    /// `sw.service`.
    pub fn adopt(&mut self, sw: &SwitchEvent, service: Service, reason: SlowReason, out: &mut Vec<Output>) {
        let k = &sw.pairing;
        let kernel_empty =
            k.len == 0 && k.req_state == probe_common::REQ_HEAD && k.resp_state == probe_common::RESP_IDLE && k.held_len == 0;
        if kernel_empty && let Some(conn) = self.conns.get_mut(&sw.conn_id) {
            // Slow from its start, and the agent holds its first bytes already (a request
            // line that came in pieces before the kernel could classify it).
            conn.slow = reason;
            return;
        }
        if let Some(old) = self.conns.remove(&sw.conn_id) {
            // The kernel classified the connection anew (its map had lost it): what the
            // agent held of it is over.
            old.close(Closed::Normally, out);
        }
        if self.conns.len() >= self.max_conns {
            self.evict_oldest(out);
        }
        let conn = Conn::from_kernel(sw, service, reason);
        self.conns.insert(sw.conn_id, conn);
    }

    /// An h2c connection the HTTP/2 decoder takes over: its upgraded request and the frames
    /// the server sent after the 101. The connection leaves this table.
    pub fn take_h2c(&mut self, conn_id: u64) -> Option<(H2cUpgrade, Service, u16)> {
        if self.conns.get(&conn_id)?.h2c.is_none() {
            return None;
        }
        let mut conn = self.conns.remove(&conn_id)?;
        Some((conn.h2c.take()?, conn.service.clone(), conn.family))
    }

    /// The connection was closed at `ts_ns`; `reset`: by a reset rather than a FIN.
    pub fn on_close(&mut self, conn_id: u64, reset: bool, ts_ns: u64, out: &mut Vec<Output>) {
        if let Some(conn) = self.conns.remove(&conn_id) {
            // A response that ends with the close ends at its last write, or when the bytes
            // that write left unsent go out.
            let (from, tx_last) = (out.len(), conn.tx_last);
            let how = match (reset, self.client) {
                (true, _) => Closed::Reset(ts_ns),
                (false, true) => Closed::Abandoned(ts_ns),
                (false, false) => Closed::Normally,
            };
            conn.close(how, out);
            if let Some((write_ns, seq)) = tx_last {
                self.parked.hold(conn_id, seq, write_ns, from, out);
            }
        }
    }

    /// Forgets connections idle for longer than `idle_ns` (closed without a close event,
    /// e.g. UNIX sockets), finishing what can be finished.
    pub fn evict_idle(&mut self, now_ns: u64, idle_ns: u64, out: &mut Vec<Output>) {
        let stale: Vec<u64> =
            self.conns.iter().filter(|(_, c)| now_ns.saturating_sub(c.last_ns) > idle_ns).map(|(k, _)| *k).collect();
        for id in stale {
            self.on_close(id, false, now_ns, out);
        }
        self.parked.expire(now_ns.saturating_sub(idle_ns), out);
    }

    /// Makes room: the connection idle the longest is forgotten. Only what was waiting on
    /// it is lost (each request once, as `connection_table_full`); an idle keep-alive
    /// connection loses nothing, and is tracked again from its next request.
    fn evict_oldest(&mut self, out: &mut Vec<Output>) {
        if let Some(id) = self.conns.iter().min_by_key(|(_, c)| c.last_ns).map(|(k, _)| *k)
            && let Some(conn) = self.conns.remove(&id)
        {
            conn.close(Closed::Evicted, out);
        }
    }
}

#[cfg(test)]
mod tests;
