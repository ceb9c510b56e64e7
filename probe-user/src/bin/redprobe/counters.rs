//! The kernel's own counters (per-CPU, `COUNTERS`), turned into the agent's counters.
use aya::maps::{MapData, PerCpuArray};
use probe_common::{
    COUNTER_AGG_FULL, COUNTER_CLIENT_CONNS, COUNTER_CONN_INSERT_FAILED, COUNTER_FD_MISMATCH, COUNTER_FOREIGN_CONTEXT, COUNTER_LOST,
    COUNTER_SERVER_CONNS, COUNTER_SLOTS, COUNTER_ARRIVALS_FULL, COUNTER_TX_SUPERSEDED, COUNTER_TX_WAITS, COUNTER_TX_WAIT_FULL,
    COUNTER_TLS_CALLS_FULL, COUNTER_TLS_NO_ENTRY, COUNTER_TLS_PLAIN_SOCKET, COUNTER_TLS_UNMAPPED,
};
use probe_user::{
    metrics::health::{Health, ROLE_CLIENT, ROLE_SERVER},
    reason::{KernelSkip, TxFallback},
};

pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
    last: [u64; COUNTER_SLOTS as usize],
}

impl KernelCounters {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        KernelCounters { map, last: [0; COUNTER_SLOTS as usize] }
    }

    /// Adds what the kernel counted since the last poll; true if events were lost meanwhile.
    pub fn poll(&mut self, h: &Health) -> bool {
        let mut lost = false;
        for slot in [
            COUNTER_LOST,
            COUNTER_FOREIGN_CONTEXT,
            COUNTER_FD_MISMATCH,
            COUNTER_CONN_INSERT_FAILED,
            COUNTER_SERVER_CONNS,
            COUNTER_CLIENT_CONNS,
            COUNTER_AGG_FULL,
            COUNTER_TX_WAITS,
            COUNTER_TX_WAIT_FULL,
            COUNTER_TX_SUPERSEDED,
            COUNTER_ARRIVALS_FULL,
            COUNTER_TLS_UNMAPPED,
            COUNTER_TLS_CALLS_FULL,
            COUNTER_TLS_NO_ENTRY,
            COUNTER_TLS_PLAIN_SOCKET,
        ] {
            let Ok(values) = self.map.get(&slot, 0) else { continue };
            let total: u64 = values.iter().sum();
            let delta = total.saturating_sub(self.last[slot as usize]);
            self.last[slot as usize] = total;
            if delta == 0 {
                continue;
            }
            match slot {
                COUNTER_LOST => {
                    h.events_lost.inc_by(delta);
                    lost = true;
                }
                COUNTER_FOREIGN_CONTEXT => h.kernel_skipped(KernelSkip::ForeignContext, delta),
                COUNTER_FD_MISMATCH => h.kernel_skipped(KernelSkip::FdMismatch, delta),
                COUNTER_CONN_INSERT_FAILED => h.kernel_skipped(KernelSkip::ConnMapFull, delta),
                COUNTER_TLS_UNMAPPED => h.kernel_skipped(KernelSkip::TlsUnmapped, delta),
                COUNTER_TLS_CALLS_FULL => h.kernel_skipped(KernelSkip::TlsCallsFull, delta),
                COUNTER_TLS_NO_ENTRY => h.kernel_skipped(KernelSkip::TlsNoEntry, delta),
                COUNTER_TLS_PLAIN_SOCKET => h.kernel_skipped(KernelSkip::TlsPlainSocket, delta),
                COUNTER_SERVER_CONNS => h.classified(ROLE_SERVER, delta),
                COUNTER_AGG_FULL => {
                    h.aggregates_full.inc_by(delta);
                }
                COUNTER_TX_WAITS => {
                    h.tx_waits.inc_by(delta);
                }
                COUNTER_TX_WAIT_FULL => h.tx_fallback(TxFallback::WaitMapFull, delta),
                COUNTER_TX_SUPERSEDED => h.tx_fallback(TxFallback::Superseded, delta),
                COUNTER_ARRIVALS_FULL => {
                    h.arrivals_full.inc_by(delta);
                }
                COUNTER_CLIENT_CONNS => h.classified(ROLE_CLIENT, delta),
                _ => {}
            }
        }
        lost
    }
}
