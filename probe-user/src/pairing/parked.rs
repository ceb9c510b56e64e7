//! Responses whose last bytes a write left unsent (in the socket's send queue: a slow
//! reader, Nagle, cork) end when those bytes go out, not when the write returned. The
//! kernel flags such writes (`Data::tx_end_seq`) and tells when the bytes up to that
//! sequence number went out (`Event::Sent`); the exchanges that ended at such a write wait
//! here until then.
use std::collections::HashMap;

use super::{Exchange, Output};
use probe_common::seq::before;

use crate::reason::TxFallback;

/// An exchange waiting for the transmission of the bytes up to `end_seq`.
#[derive(Debug)]
struct Waiting {
    end_seq: u32,
    exchange: Exchange,
}

/// The waiting exchanges, by connection.
#[derive(Debug, Default)]
pub(super) struct Parked {
    by_conn: HashMap<u64, Vec<Waiting>>,
}

impl Parked {
    /// Moves the exchanges that `out[from..]` holds and that ended at the write of `ts_ns`
    /// (whose bytes up to `end_seq` were unsent then) here, each leaving an
    /// `Output::WaitsForTransmission` in its place. Exchanges cut by a reset end at the
    /// reset: they are left.
    pub fn hold(&mut self, conn_id: u64, end_seq: u32, ts_ns: u64, from: usize, out: &mut Vec<Output>) {
        let mut i = from;
        while i < out.len() {
            if matches!(&out[i], Output::Exchange(x) if x.end_ns == ts_ns && !x.reset) {
                let Output::Exchange(exchange) = std::mem::replace(&mut out[i], Output::WaitsForTransmission) else {
                    unreachable!("matched above")
                };
                self.by_conn.entry(conn_id).or_default().push(Waiting { end_seq, exchange });
                i += 1;
            } else {
                i += 1;
            }
        }
    }

    /// The bytes of `conn_id` up to `end_seq` went out at `ts_ns` (or, `superseded`, a
    /// later write left bytes unsent before they did): the exchanges waiting for them end
    /// then.
    pub fn sent(&mut self, conn_id: u64, end_seq: u32, ts_ns: u64, superseded: bool, out: &mut Vec<Output>) {
        let Some(waiting) = self.by_conn.get_mut(&conn_id) else { return };
        let mut i = 0;
        while i < waiting.len() {
            if !before(end_seq, waiting[i].end_seq) {
                let mut x = waiting.remove(i).exchange;
                x.end_ns = x.end_ns.max(ts_ns);
                if superseded {
                    out.push(Output::EndAtWrite(TxFallback::Superseded));
                }
                out.push(Output::Exchange(x));
            } else {
                i += 1;
            }
        }
        if waiting.is_empty() {
            self.by_conn.remove(&conn_id);
        }
    }

    /// Exchanges waiting since before `before_ns` (the kernel's news was lost: a full ring
    /// buffer) end at their write, counted.
    pub fn expire(&mut self, before_ns: u64, out: &mut Vec<Output>) {
        self.by_conn.retain(|_, waiting| {
            waiting.retain(|w| {
                if w.exchange.end_ns >= before_ns {
                    return true;
                }
                out.push(Output::EndAtWrite(TxFallback::NotSeen));
                out.push(Output::Exchange(w.exchange.clone()));
                false
            });
            !waiting.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.by_conn.values().map(Vec::len).sum()
    }
}
