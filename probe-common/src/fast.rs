//! The kernel's fast path: what it keeps per connection to pair requests with responses,
//! what it aggregates per request, and the events it sends when it hands a connection to
//! the agent (the slow path) or cannot aggregate a request it measured.

use crate::buckets::{Hist, SIZE_SLOTS, TIME_SLOTS};
use crate::event::EventHeader;
use crate::route::MAX_PATH;

/// Requests a fast connection may have waiting for their responses (pipelining); a deeper
/// pipeline goes to the agent.
pub const FAST_DEPTH: usize = 4;

/// `ConnState::mode` of a server connection: paired by the agent, from events.
pub const MODE_SLOW: u32 = 0;
/// Paired and measured by the kernel.
pub const MODE_FAST: u32 = 1;

/// `Pairing::req_state`: the next byte read starts a request head.
pub const REQ_HEAD: u8 = 0;
/// Inside a request body of `req_left` bytes more.
pub const REQ_BODY: u8 = 1;

/// `Pairing::resp_state`: no response started.
pub const RESP_IDLE: u8 = 0;
/// A body of `resp_left` bytes more.
pub const RESP_LENGTH: u8 = 1;
/// A chunked body: it ends with a write that ends with the last chunk.
pub const RESP_CHUNKED: u8 = 2;
/// A body that ends with the connection.
pub const RESP_UNTIL_CLOSE: u8 = 3;

/// One request waiting for its response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastRequest {
    /// When its first byte arrived at the socket (`probe_common::maps::Arrival`), or
    /// else when the read that brought it returned.
    pub start_ns: u64,
    /// From that arrival to the return of that read: the time the request waited in the
    /// socket's queues for the server to read it (0 when the arrival is not known).
    pub queued_ns: u64,
    /// `route::path_key` of its target (0: none).
    pub path_key: u64,
    pub body_bytes: u64,
    /// The agent's route id for `path_key`, if it was in `ROUTES` when the request came.
    pub route: u32,
    /// `http1::METHODS` id.
    pub method: u8,
    /// `http1::VERSION_*`.
    pub version: u8,
    pub _pad: [u8; 2],
}

/// The kernel's pairing state of one connection: a FIFO of requests, the request being
/// read, the response being written. Handed to the agent as it is when the connection
/// goes slow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    pub pending: [FastRequest; FAST_DEPTH],
    /// Request body bytes still to read (REQ_BODY).
    pub req_left: u64,
    /// When the response's first and latest writes returned.
    pub resp_first_ns: u64,
    pub resp_last_ns: u64,
    /// Response body bytes still to write (RESP_LENGTH).
    pub resp_left: u64,
    /// Response body bytes written so far.
    pub resp_bytes: u64,
    pub status: u16,
    /// FIFO: index of the oldest request, and how many wait.
    pub first: u8,
    pub len: u8,
    pub req_state: u8,
    pub resp_state: u8,
    /// Bytes of the next request head held from a short read (`held[..held_len]`): Go's
    /// net/http reads the first byte of each keep-alive request alone (its background
    /// read), then the rest.
    pub held_len: u8,
    pub _pad: u8,
    pub held: [u8; MAX_HELD],
    /// When the held bytes arrived (as `FastRequest::start_ns`)...
    pub held_ns: u64,
    /// ...and how long they waited to be read (as `FastRequest::queued_ns`).
    pub held_queued_ns: u64,
}

impl Pairing {
    /// The method ids of the requests read and not yet answered, oldest first: what
    /// `http_server_active_requests` counts for a fast connection. The agent reads them from
    /// `CONNS` (a connection the LRU map drops takes its requests with it, so a count kept
    /// beside the map would drift).
    pub fn in_flight(&self) -> impl Iterator<Item = u8> + '_ {
        self.waiting().map(|r| r.method)
    }

    /// The requests read and not yet answered, oldest first (the ring from `first`).
    pub fn waiting(&self) -> impl Iterator<Item = &FastRequest> + '_ {
        (0..self.len.min(FAST_DEPTH as u8)).map(|i| &self.pending[(self.first.wrapping_add(i) as usize) & (FAST_DEPTH - 1)])
    }
}

/// Bytes of a request head the kernel holds from short reads, at most.
pub const MAX_HELD: usize = 8;

/// Why a connection went to the agent: the `reason` label of
/// `redprobe_agent_paired_requests_total`.
pub const SLOW_NONE: u32 = 0;
/// The request head did not come whole in one read.
pub const SLOW_HEAD_SPLIT: u32 = 1;
/// The request head was larger than the capture window.
pub const SLOW_HEAD_BEYOND_WINDOW: u32 = 2;
/// A request the kernel does not read itself (folded headers, a Content-Length list, a
/// chunked body, not HTTP...).
pub const SLOW_REQUEST: u32 = 3;
/// More requests waiting than the kernel keeps, or a body and the next head in one read.
pub const SLOW_PIPELINE: u32 = 4;
/// A response head the kernel does not read itself (split, beyond the window, not plain).
pub const SLOW_RESPONSE: u32 = 5;
/// `101 Switching Protocols`.
pub const SLOW_UPGRADE: u32 = 6;
/// A write with no request waiting, or more than the response held.
pub const SLOW_UNEXPECTED_WRITE: u32 = 7;
/// The connection closed with requests waiting (the agent counts them).
pub const SLOW_CLOSE: u32 = 8;
/// The process's service was not known yet when the connection was classified.
pub const SLOW_NO_SERVICE: u32 = 9;
/// Bytes the kernel needed and could not read (sendfile or recvmmsg at a head).
pub const SLOW_UNREADABLE: u32 = 10;
/// An event of the connection was lost.
pub const SLOW_LOST: u32 = 11;
pub const SLOW_REASONS: u32 = 12;

/// The kernel handed a connection to the agent: its pairing state as it was; every later
/// read and write of it is an event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SwitchEvent {
    pub header: EventHeader,
    pub conn_id: u64,
    pub tgid: u32,
    /// One of `SLOW_*`.
    pub reason: u32,
    pub service: u32,
    pub family: u16,
    pub _pad: u16,
    pub pairing: Pairing,
}

/// A path the kernel saw whose key is not in `ROUTES` yet: the agent routes it and fills
/// the map. With `FLAG_CLIENT`: the `Host` value of a client request (`CLIENT_ROUTES`),
/// which the agent names an upstream id for.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathEvent {
    pub header: EventHeader,
    pub key: u64,
    pub service: u32,
    /// Valid bytes in `path`.
    pub len: u32,
    pub path: [u8; MAX_PATH],
}

/// A request the kernel paired and timed but did not aggregate (its route was not known
/// yet, or `AGG` was full): the agent counts it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MeasuredEvent {
    pub header: EventHeader,
    pub conn_id: u64,
    pub request: FastRequest,
    pub first_byte_ns: u64,
    pub end_ns: u64,
    pub response_bytes: u64,
    pub service: u32,
    pub status: u16,
    pub family: u16,
}

/// `ROUTES` key: a service and a path key (or, with [`CLIENT_ROUTES`], a Host key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub service: u32,
    pub _pad: u32,
    pub path_key: u64,
}

/// `AGG` key: the labels of a request, as small ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggKey {
    pub service: u32,
    /// The agent's route id (from `ROUTES`).
    pub route: u32,
    pub status: u16,
    pub method: u8,
    pub version: u8,
    pub family: u16,
    /// `AGG_SERVER`, or `AGG_CLIENT` for the requests a target sent: `route` is then the
    /// agent's upstream id (`ROUTES` under `CLIENT_ROUTES | service`).
    pub kind: u16,
}

/// `AggKey::kind`: requests a target served...
pub const AGG_SERVER: u16 = 0;
/// ...and requests it sent, on its client connections.
pub const AGG_CLIENT: u16 = 1;

/// Set in `RouteKey::service` for the keys of client requests' `Host` values
/// (`http1::host_key`), whose ids are upstreams, not routes.
pub const CLIENT_ROUTES: u32 = 1 << 31;

/// One `AGG` value (per CPU): the four histograms of a label set, by slot (`buckets`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggValue {
    pub duration: Hist<TIME_SLOTS>,
    pub first_byte: Hist<TIME_SLOTS>,
    pub request_body: Hist<SIZE_SLOTS>,
    pub response_body: Hist<SIZE_SLOTS>,
    /// `FastRequest::queued_ns`.
    pub queue: Hist<TIME_SLOTS>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_walks_the_ring_from_the_oldest() {
        let mut p = Pairing::default();
        assert_eq!(p.in_flight().count(), 0);
        for (i, m) in [3u8, 1, 2, 9].into_iter().enumerate() {
            p.pending[i].method = m;
        }
        p.first = 3;
        p.len = 2;
        assert!(p.in_flight().eq([9, 3]));
        p.len = 200; // never more than the ring holds
        assert_eq!(p.in_flight().count(), FAST_DEPTH);
    }

    #[test]
    fn layouts() {
        use core::mem::size_of;
        assert_eq!(size_of::<FastRequest>(), 40);
        assert_eq!(size_of::<Pairing>(), 40 * FAST_DEPTH + 72);
        assert_eq!(size_of::<SwitchEvent>(), 40 + size_of::<Pairing>());
        assert_eq!(size_of::<PathEvent>(), 32 + MAX_PATH);
        assert_eq!(size_of::<MeasuredEvent>(), 24 + 40 + 24 + 8);
        assert_eq!(size_of::<AggKey>(), 16);
        assert_eq!(size_of::<RouteKey>(), 16);
        assert_eq!(size_of::<AggValue>(), 8 * 5 + 4 * (3 * TIME_SLOTS + 2 * SIZE_SLOTS));
    }
}
