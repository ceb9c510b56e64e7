//! HTTP/2 server connections (`ROLE_H2` in the kernel, which sends all their bytes): frames
//! (`frames`), header blocks and streams (`conn`), and the table of connections (here).
//! Each stream is a request, measured as an `Exchange` like an HTTP/1 one, plus an
//! `RpcCall` for gRPC.
pub mod conn;
pub mod frames;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};

use conn::H2Conn;

use crate::{
    decode::H2Chunk,
    labels::Service,
    pairing::{H2cUpgrade, Output},
};

/// No connection is forgotten for being idle: HTTP/2 connections live long (an idle gRPC
/// channel), the kernel reports every close, and forgetting one would lose its compression
/// state. The table's bound (`max_conns`) holds them.
pub struct H2Conns {
    conns: HashMap<u64, H2Conn>,
    max_conns: usize,
    /// Connections evicted to make room, until their close: their later bytes cannot be
    /// decoded (counted once, at the eviction). The oldest are forgotten past `max_conns`.
    evicted: HashSet<u64>,
    evicted_order: VecDeque<u64>,
}

impl H2Conns {
    pub fn new(max_conns: usize) -> Self {
        H2Conns { conns: HashMap::new(), max_conns, evicted: HashSet::new(), evicted_order: VecDeque::new() }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// `service` names the service of the process that did the I/O; it is asked only for
    /// a connection seen for the first time, as is `upgraded`: the h2c upgrade the HTTP/1
    /// pairing holds for it, if any (with the service of its connection).
    pub fn on_chunk(
        &mut self,
        c: &H2Chunk,
        service: impl FnOnce() -> Service,
        upgraded: impl FnOnce() -> Option<(H2cUpgrade, Service, u16)>,
        out: &mut Vec<Output>,
    ) {
        if self.evicted.contains(&c.conn_id) {
            return;
        }
        if !self.conns.contains_key(&c.conn_id)
            && self.conns.len() >= self.max_conns
            && let Some(id) = self.conns.iter().min_by_key(|(_, c)| c.last_ns).map(|(k, _)| *k)
            && let Some(old) = self.conns.remove(&id)
        {
            old.evict(out);
            self.evicted.insert(id);
            self.evicted_order.push_back(id);
            if self.evicted_order.len() > self.max_conns
                && let Some(gone) = self.evicted_order.pop_front()
            {
                self.evicted.remove(&gone);
            }
        }
        let family = c.family;
        let conn = self.conns.entry(c.conn_id).or_insert_with(|| match upgraded() {
            Some((up, service, family)) => H2Conn::upgraded(service, family, up, out),
            None => H2Conn::new(service(), family),
        });
        conn.on_chunk(c, out);
    }

    /// The connection closed; false if it is not an HTTP/2 one.
    pub fn on_close(&mut self, conn_id: u64, reset: bool, ts_ns: u64, out: &mut Vec<Output>) -> bool {
        if self.evicted.remove(&conn_id) {
            self.evicted_order.retain(|id| *id != conn_id);
            return true;
        }
        match self.conns.remove(&conn_id) {
            Some(conn) => {
                conn.close(reset, ts_ns, out);
                true
            }
            None => false,
        }
    }

    /// An h2c connection that closed before the server read the client's preface: what
    /// the server wrote after its 101 may have answered the upgraded request.
    pub fn close_upgraded(up: (H2cUpgrade, Service, u16), reset: bool, ts_ns: u64, out: &mut Vec<Output>) {
        let (up, service, family) = up;
        H2Conn::upgraded(service, family, up, out).close(reset, ts_ns, out);
    }

    /// Requests read and not yet answered, by (service, method); connections by service.
    pub fn add_gauges(&self, active: &mut HashMap<(Service, String), i64>, open: &mut HashMap<Service, i64>) {
        for c in self.conns.values() {
            for method in c.in_flight() {
                *active.entry((c.service.clone(), crate::labels::method(method).to_string())).or_insert(0) += 1;
            }
            *open.entry(c.service.clone()).or_insert(0) += 1;
        }
    }
}
