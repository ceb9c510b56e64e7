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
mod head;
mod piece;
mod recv;
mod send;

use std::{collections::HashMap, sync::Arc};

use conn::Conn;
use piece::Piece;

use crate::{
    decode::{Data, Direction},
    http::Version,
    reason::{Inference, Protocol, Reason},
};

/// A request whose response was sent completely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    pub target: Vec<u8>,
    pub version: Version,
    pub status: u16,
    pub family: u16,
    pub service: Arc<str>,
    /// Return of the read that brought the request's first byte.
    pub start_ns: u64,
    /// Return of the write that sent the response's first byte.
    pub first_byte_ns: u64,
    /// Return of the write that sent the response's last byte.
    pub end_ns: u64,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
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
}

/// Requests a connection may have waiting for their responses; deeper pipelines are
/// counted as `pipeline_too_deep` instead of growing the agent's memory.
pub const MAX_PENDING: usize = 256;

/// Per-connection pairing of everything the probe captured.
pub struct Pairer {
    conns: HashMap<u64, Conn>,
    max_conns: usize,
}

impl Pairer {
    pub fn new(max_conns: usize) -> Self {
        Pairer { conns: HashMap::new(), max_conns }
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Requests read and not yet answered, by (service, method).
    pub fn active_requests(&self) -> HashMap<(Arc<str>, String), i64> {
        let mut active = HashMap::new();
        for c in self.conns.values() {
            for p in c.pending.iter().filter(|p| p.unparsed.is_none()) {
                *active.entry((c.service.clone(), p.method.clone())).or_insert(0) += 1;
            }
        }
        active
    }

    /// Tracked connections by service.
    pub fn connections_by_service(&self) -> HashMap<Arc<str>, i64> {
        let mut by = HashMap::new();
        for c in self.conns.values() {
            *by.entry(c.service.clone()).or_insert(0) += 1;
        }
        by
    }

    /// `service` names the `service_name` of the process that did the I/O; it is asked
    /// only for a connection seen for the first time.
    pub fn on_data(&mut self, d: &Data, service: impl FnOnce() -> Arc<str>, out: &mut Vec<Output>) {
        if d.unclassified {
            // Not HTTP from its first bytes: counted among the connections, not tracked.
            out.push(Output::OtherProtocol(Protocol::of(&d.head)));
            if let Some(conn) = self.conns.get_mut(&d.conn_id) {
                conn.recv = conn::RecvState::Desync;
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
        match d.direction {
            Direction::Recv => recv::on_recv(conn, &piece, d.ts_ns, out),
            Direction::Send => send::on_send(conn, &piece, d.ts_ns, out),
        }
    }

    /// The connection was closed.
    pub fn on_close(&mut self, conn_id: u64, out: &mut Vec<Output>) {
        if let Some(conn) = self.conns.remove(&conn_id) {
            conn.close(out);
        }
    }

    /// Forgets connections idle for longer than `idle_ns` (closed without a close event,
    /// e.g. UNIX sockets), finishing what can be finished.
    pub fn evict_idle(&mut self, now_ns: u64, idle_ns: u64, out: &mut Vec<Output>) {
        let stale: Vec<u64> =
            self.conns.iter().filter(|(_, c)| now_ns.saturating_sub(c.last_ns) > idle_ns).map(|(k, _)| *k).collect();
        for id in stale {
            self.on_close(id, out);
        }
    }

    fn evict_oldest(&mut self, out: &mut Vec<Output>) {
        if let Some(id) = self.conns.iter().min_by_key(|(_, c)| c.last_ns).map(|(k, _)| *k) {
            out.push(Output::Unparsed(Reason::ConnectionTableFull));
            self.on_close(id, out);
        }
    }
}

#[cfg(test)]
mod tests;
