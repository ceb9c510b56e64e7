//! The upstream of a client request: `server_address` and `server_port`, from the request's
//! `Host` header (OpenTelemetry's HTTP client conventions take them from the URL's host,
//! which is what the client puts in `Host`), bounded per service by `--max-peers`.
//!
//! The Host header names the dependency as the calling code knows it (`api.example.com`,
//! `backend:8000`), stable across the IPs a load balancer or DNS hands out; the peer's IP
//! would make a new series with every address change.
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use super::Service;

/// `--max-peers`'s default: upstreams kept per service.
pub const DEFAULT_MAX_PEERS: usize = 50;

/// `server_address` once a service has `--max-peers` distinct upstreams.
pub const OTHER_PEER: &str = "_other";
/// `server_address` of a request without a (valid) Host header: HTTP/1.0 without one, or a
/// head cut short before it.
pub const UNKNOWN_PEER: &str = "_unknown";

/// Longest host name kept (DNS names are at most 253 bytes; longer is not a host).
const MAX_HOST: usize = 253;

/// The `server_address` and `server_port` of a Host header value (`None`: no header).
/// The port is the default one of the scheme when the header has none.
pub fn of_host(host: Option<&[u8]>, https: bool) -> (String, String) {
    let default_port = if https { "443" } else { "80" };
    let unknown = || (UNKNOWN_PEER.to_string(), String::new());
    let Some(host) = host else { return unknown() };
    let Ok(host) = std::str::from_utf8(host) else { return unknown() };
    let host = host.trim();
    // `[v6]:port`, `[v6]`, `name:port`, `name`.
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return unknown() };
        match after.strip_prefix(':') {
            Some(port) => (v6, port),
            None if after.is_empty() => (v6, ""),
            None => return unknown(),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, port),
            None => (host, ""),
        }
    };
    let port = if port.is_empty() {
        default_port.to_string()
    } else {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => p.to_string(),
            _ => return unknown(),
        }
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if name.is_empty() || name.len() > MAX_HOST || !name.chars().all(valid) {
        return unknown();
    }
    (name.to_ascii_lowercase(), port)
}

/// The per-service cap on upstreams: the first `max` (address, port) pairs a service calls
/// are kept; further ones become [`OTHER_PEER`] (the port dropped), counted by the caller.
pub struct Peers {
    max: usize,
    seen: Mutex<HashMap<Service, HashSet<(String, String)>>>,
}

/// A bounded upstream label pair, and whether the cap folded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLabel {
    pub address: String,
    pub port: String,
    pub folded: bool,
}

impl Peers {
    pub fn new(max: usize) -> Self {
        Peers { max, seen: Default::default() }
    }

    /// The labels of a request of `service` to `(address, port)` (from [`of_host`]).
    /// [`UNKNOWN_PEER`] takes no place under the cap.
    pub fn label(&self, service: &Service, address: String, port: String) -> PeerLabel {
        if address == UNKNOWN_PEER {
            return PeerLabel { address, port, folded: false };
        }
        let Ok(mut seen) = self.seen.lock() else { return PeerLabel { address, port, folded: false } };
        let known = seen.entry(service.clone()).or_default();
        let key = (address, port);
        if known.contains(&key) || known.len() < self.max {
            known.insert(key.clone());
            return PeerLabel { address: key.0, port: key.1, folded: false };
        }
        PeerLabel { address: OTHER_PEER.to_string(), port: String::new(), folded: true }
    }

    /// Forgets a service's upstreams (its series went: `Metrics::forget`).
    pub fn forget(&self, service: &Service) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(service);
        }
    }
}

/// Upstream ids the kernel's fast path labels client requests with: the agent names one
/// for each (service id, `Host` key) the kernel announces (`ROUTES` under
/// `probe_common::CLIENT_ROUTES`), and reads the Host value back from it. A service gets at
/// most `--max-peers` ids (each is a label set in the kernel's `AGG`, shared with the
/// servers' requests); its further Host values all get [`FOLDED_ID`].
pub struct PeerIds {
    max_per_service: usize,
    inner: Mutex<PeerIdTable>,
}

#[derive(Default)]
struct PeerIdTable {
    by_key: HashMap<(u32, u64), u32>,
    /// The Host value of id `i + 1`; None: [`FOLDED_ID`]'s.
    hosts: Vec<Vec<u8>>,
    per_service: HashMap<u32, usize>,
}

/// Keys the table remembers in all, folded ones included (the kernel's `ROUTES` map holds
/// them with the route ids); a key past it gets no id and its requests the kernel sends
/// one by one are `_unknown`.
const MAX_KEYS: usize = 32_768;
/// The id of a Host value past the table's bounds: reported as [`OTHER_PEER`].
pub const FOLDED_ID: u32 = u32::MAX;

impl PeerIds {
    /// At most `max_per_service` ids per service (`--max-peers`).
    pub fn new(max_per_service: usize) -> Self {
        PeerIds { max_per_service, inner: Default::default() }
    }

    /// The id of service `service_id`'s Host value `host` of key `key` (new if need be).
    pub fn id(&self, service_id: u32, key: u64, host: &[u8]) -> u32 {
        let Ok(mut t) = self.inner.lock() else { return FOLDED_ID };
        if let Some(id) = t.by_key.get(&(service_id, key)) {
            return *id;
        }
        if t.by_key.len() >= MAX_KEYS {
            return FOLDED_ID;
        }
        let n = t.per_service.get(&service_id).copied().unwrap_or(0);
        if n >= self.max_per_service {
            t.by_key.insert((service_id, key), FOLDED_ID);
            return FOLDED_ID;
        }
        t.hosts.push(host.to_vec());
        let id = t.hosts.len() as u32;
        t.by_key.insert((service_id, key), id);
        t.per_service.insert(service_id, n + 1);
        id
    }

    /// The id named for a key, if any (a request measured before its id reached the kernel).
    pub fn id_of_key(&self, service_id: u32, key: u64) -> Option<u32> {
        self.inner.lock().ok()?.by_key.get(&(service_id, key)).copied()
    }

    /// The Host value of a request the kernel read: by its upstream id (`route`), or, 0,
    /// by the id named for its key since. Some(None) for [`FOLDED_ID`]; None when no id is
    /// known (the event that announced its key was lost).
    pub fn host_of_request(&self, service_id: u32, route: u32, key: u64) -> Option<Option<Vec<u8>>> {
        let id = if route != 0 { route } else { self.id_of_key(service_id, key)? };
        self.host(id)
    }

    /// The Host value of an id: Some(None) for [`FOLDED_ID`], None for an unknown id.
    pub fn host(&self, id: u32) -> Option<Option<Vec<u8>>> {
        if id == FOLDED_ID {
            return Some(None);
        }
        let t = self.inner.lock().ok()?;
        t.hosts.get((id as usize).checked_sub(1)?).map(|h| Some(h.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let cases: &[(Option<&str>, bool, (&str, &str))] = &[
            (Some("localhost:8081"), false, ("localhost", "8081")),
            (Some("API.Example.com"), false, ("api.example.com", "80")),
            (Some("api.example.com"), true, ("api.example.com", "443")),
            (Some("127.0.0.1:9000"), false, ("127.0.0.1", "9000")),
            (Some("[::1]:8080"), false, ("::1", "8080")),
            (Some("[::1]"), false, ("::1", "80")),
            (Some(" backend "), false, ("backend", "80")),
            (Some("upstream_pool"), false, ("upstream_pool", "80")),
            (None, false, (UNKNOWN_PEER, "")),
            (Some(""), false, (UNKNOWN_PEER, "")),
            (Some("host:0"), false, (UNKNOWN_PEER, "")),
            (Some("host:99999"), false, (UNKNOWN_PEER, "")),
            (Some("host:80x"), false, (UNKNOWN_PEER, "")),
            (Some("[::1"), false, (UNKNOWN_PEER, "")),
            (Some("[::1]x"), false, (UNKNOWN_PEER, "")),
            (Some("a\"b"), false, (UNKNOWN_PEER, "")),
            (Some("a/b"), false, (UNKNOWN_PEER, "")),
            (Some("héllo"), false, (UNKNOWN_PEER, "")),
        ];
        for (host, https, (address, port)) in cases {
            let got = of_host(host.map(str::as_bytes), *https);
            assert_eq!(got, (address.to_string(), port.to_string()), "{host:?}");
        }
        let long = "a".repeat(MAX_HOST + 1);
        assert_eq!(of_host(Some(long.as_bytes()), false).0, UNKNOWN_PEER);
        assert_eq!(of_host(Some(&[0xff, b'a']), false).0, UNKNOWN_PEER);
    }

    #[test]
    fn peer_ids() {
        let ids = PeerIds::new(3);
        let a = ids.id(1, 10, b"app:80");
        assert_eq!(ids.id(1, 10, b"app:80"), a, "known key");
        let b = ids.id(2, 10, b"app:80");
        assert_ne!(a, b, "per service");
        assert_eq!(ids.host(a), Some(Some(b"app:80".to_vec())));
        assert_eq!(ids.id_of_key(2, 10), Some(b));
        assert_eq!(ids.id_of_key(3, 10), None);
        assert_eq!(ids.host(0), None);
        assert_eq!(ids.host(999), None);
        for k in 0..3 {
            assert_ne!(ids.id(5, 100 + k, b"h"), FOLDED_ID);
        }
        assert_eq!(ids.id(5, 1, b"one too many"), FOLDED_ID);
        assert_eq!(ids.id_of_key(5, 1), Some(FOLDED_ID), "a folded key is known as folded");
        assert_eq!(ids.host(FOLDED_ID), Some(None));
        assert_eq!(ids.host_of_request(5, 0, 1), Some(None));
        assert_eq!(ids.host_of_request(2, 0, 10), Some(Some(b"app:80".to_vec())));
        assert_eq!(ids.host_of_request(9, 0, 10), None);
    }

    #[test]
    fn cap_per_service() {
        let peers = Peers::new(2);
        let (a, b) = (Service::named("a"), Service::named("b"));
        let l = |s: &Service, host: &str| peers.label(s, host.to_string(), "80".to_string());
        assert!(!l(&a, "x").folded);
        assert!(!l(&a, "y").folded);
        assert!(!l(&a, "x").folded, "a known upstream stays");
        let folded = l(&a, "z");
        assert_eq!((folded.address.as_str(), folded.port.as_str(), folded.folded), (OTHER_PEER, "", true));
        assert!(!l(&b, "z").folded, "the cap is per service");
        assert!(!l(&a, UNKNOWN_PEER).folded, "no Host takes no place under the cap");
        peers.forget(&a);
        assert!(!l(&a, "z").folded);
    }
}
