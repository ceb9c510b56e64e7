//! Types shared by the eBPF programs (`probe-ebpf`) and the agent (`probe-user`).
//!
//! This is the only definition of each of them. Every struct is `#[repr(C)]`, made of
//! fixed-width integers only, with explicit padding fields, so both sides agree on the
//! layout byte for byte; `layout_tests` below pins sizes and offsets. With the `user`
//! feature the structs implement `aya::Pod` so the agent can put them in maps and globals.
#![no_std]

pub mod buckets;
pub mod classify;
pub mod event;
pub mod fast;
pub mod http1;
pub mod maps;
pub mod offsets;
pub mod route;
pub mod seq;
pub mod syscalls;

pub use event::*;
pub use fast::*;
pub use maps::*;
pub use offsets::*;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), contain only integers and arrays of integers,
    // and have no implicit padding (checked by the layout tests).
    unsafe impl aya::Pod for crate::KernelOffsets {}
    unsafe impl aya::Pod for crate::ConnState {}
    unsafe impl aya::Pod for crate::ProbeConfig {}
    unsafe impl aya::Pod for crate::AggKey {}
    unsafe impl aya::Pod for crate::AggValue {}
    unsafe impl aya::Pod for crate::RouteKey {}
    unsafe impl aya::Pod for crate::Arrival {}
    unsafe impl aya::Pod for crate::TxWait {}
    unsafe impl aya::Pod for crate::TxKey {}
    unsafe impl aya::Pod for crate::buckets::TimeBounds {}
    unsafe impl aya::Pod for crate::TlsCall {}
    unsafe impl aya::Pod for crate::TlsLast {}
    unsafe impl aya::Pod for crate::TlsSslKey {}
    unsafe impl aya::Pod for crate::TlsConn {}
    unsafe impl aya::Pod for crate::H2Walk {}
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn data_event_layout() {
        assert_eq!(size_of::<EventHeader>(), 16);
        assert_eq!(offset_of!(DataEvent, header), 0);
        assert_eq!(offset_of!(DataEvent, conn_id), 16);
        assert_eq!(offset_of!(DataEvent, tgid), 24);
        assert_eq!(offset_of!(DataEvent, len), 28);
        assert_eq!(offset_of!(DataEvent, family), 32);
        assert_eq!(offset_of!(DataEvent, head_len), 34);
        assert_eq!(offset_of!(DataEvent, tail_len), 36);
        assert_eq!(offset_of!(DataEvent, arrival_ns), 40);
        assert_eq!(offset_of!(DataEvent, tx_end_seq), 48);
        assert_eq!(offset_of!(DataEvent, head), 56);
        assert_eq!(offset_of!(DataEvent, tail), 56 + HEAD_WINDOW);
        assert_eq!(size_of::<DataEvent>(), 56 + HEAD_WINDOW + TAIL_WINDOW);
        assert_eq!(align_of::<DataEvent>(), 8);
        const { assert!(HEAD_WINDOW >= 256) };
        assert!(HEAD_WINDOW.is_power_of_two());
    }

    #[test]
    fn h2_event_layout() {
        assert_eq!(offset_of!(H2Event, conn_id), 16);
        assert_eq!(offset_of!(H2Event, tgid), 24);
        assert_eq!(offset_of!(H2Event, len), 28);
        assert_eq!(offset_of!(H2Event, offset), 32);
        assert_eq!(offset_of!(H2Event, chunk_len), 36);
        assert_eq!(offset_of!(H2Event, family), 38);
        assert_eq!(offset_of!(H2Event, arrival_ns), 40);
        assert_eq!(offset_of!(H2Event, recv), 48);
        assert_eq!(H2_HEADER_LEN, 56);
        assert_eq!(size_of::<H2Event>(), 56 + H2_CHUNK);
        assert!(H2_CHUNK.is_power_of_two() && H2_CHUNK <= u16::MAX as usize);
        assert_eq!(size_of::<H2Dir>(), 40);
        assert_eq!(offset_of!(H2Dir, hdr), 8);
        assert_eq!(size_of::<H2Walk>(), 80);
    }

    #[test]
    fn small_event_layouts() {
        assert_eq!(size_of::<CloseEvent>(), 24);
        assert_eq!(offset_of!(CloseEvent, conn_id), 16);
        assert_eq!(size_of::<ForkEvent>(), 32);
        assert_eq!(offset_of!(ForkEvent, child_tgid), 20);
        assert_eq!(offset_of!(ForkEvent, child_start_ns), 24);
        assert_eq!(size_of::<ExecEvent>(), 40);
        assert_eq!(offset_of!(ExecEvent, comm), 24);
        assert_eq!(size_of::<ExitEvent>(), 24);
        assert_eq!(offset_of!(ExitEvent, tgid), 16);
        assert_eq!(size_of::<SentEvent>(), 32);
        assert_eq!(offset_of!(SentEvent, end_seq), 24);
    }

    #[test]
    fn map_value_layouts() {
        assert_eq!(size_of::<ConnState>(), 40 + size_of::<Pairing>());
        assert_eq!(size_of::<TlsCall>(), 32);
        assert_eq!(size_of::<TlsLast>(), 24);
        assert_eq!(size_of::<TlsSslKey>(), 16);
        assert_eq!(size_of::<TlsConn>(), 16);
        assert_eq!(size_of::<KernelOffsets>(), 4 * 29);
        assert_eq!(size_of::<ProbeConfig>(), 16);
        assert_eq!(size_of::<Arrival>(), 16);
        assert_eq!((offset_of!(Arrival, start_seq), offset_of!(Arrival, end_seq)), (8, 12));
        assert_eq!(size_of::<buckets::TimeBounds>(), 8 * buckets::TIME_SLOTS);
        assert_eq!(size_of::<TxWait>(), 8 + size_of::<MeasuredEvent>());
        assert_eq!(offset_of!(TxWait, measured), 8);
        assert_eq!(size_of::<TxKey>(), 16);
    }

    #[test]
    fn kinds_are_distinct() {
        let kinds = [EVENT_RECV, EVENT_SEND, EVENT_CLOSE, EVENT_FORK, EVENT_EXEC, EVENT_EXIT, EVENT_SWITCH, EVENT_PATH, EVENT_MEASURED, EVENT_SENT];
        for (i, a) in kinds.iter().enumerate() {
            for b in &kinds[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
