//! Every label value redprobe exports is made here, bounded: methods, routes (templates,
//! the heuristic and the per-service cap), services, `error_type`, transports, versions,
//! and django-prometheus's spellings of them. The metric families in `metrics/` only place
//! these values.
pub mod container;
pub mod kernel_ids;
pub mod peer;
pub mod route;
pub mod rpc;
pub mod service;

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

pub use route::{Router, Template, parse_routes_file};
pub use service::{Placement, PlacementLabels, Service};

use crate::http::Version;

/// Route label used once `--max-routes` distinct routes were seen for a service.
pub const OTHER_ROUTE: &str = "_other";

/// Route and method of a request measured by its response alone: its head was beyond the
/// capture window (`redprobe_requests_unread_total`).
pub const UNREAD_ROUTE: &str = "_unknown";
pub const OTHER_METHOD: &str = "_OTHER";

/// OTel's `error.type` of a request the client gave up on (the connection was reset
/// before the response was complete).
pub const CONNECTION_RESET: &str = "connection_reset";

/// The service of a process the registry does not know. That happens only after the ring
/// buffer lost the event that announced it (`redprobe_events_lost_total`).
pub const UNKNOWN_SERVICE: &str = "unknown";

/// The nine standard methods, kept as they are; anything else is `_OTHER` (methods are
/// case-sensitive tokens: `get` is not `GET`).
const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// The `http_request_method` label.
pub fn method(method: &str) -> &'static str {
    METHODS.iter().find(|m| **m == method).copied().unwrap_or(OTHER_METHOD)
}

/// `network_transport` from the socket family (with `probe_common::FAMILY_TLS` or not).
pub fn transport(family: u16) -> &'static str {
    if family & !probe_common::FAMILY_TLS == libc::AF_UNIX as u16 { "unix" } else { "tcp" }
}

/// `url_scheme`: `https` for plaintext a TLS library carried (`probe_common::FAMILY_TLS`).
pub fn scheme(family: u16) -> &'static str {
    if family & probe_common::FAMILY_TLS != 0 { "https" } else { "http" }
}

/// `network_protocol_version`.
pub fn version(v: Version) -> &'static str {
    match v {
        Version::Http10 => "1.0",
        Version::Http11 => "1.1",
        Version::Http2 => "2",
    }
}

/// `http_response_status_code`: empty (absent) when no status line was sent.
pub fn status(status: Option<u16>) -> String {
    status.map(|s| s.to_string()).unwrap_or_default()
}

/// OTel's `error_type`: [`CONNECTION_RESET`] for a request the client gave up on, the status
/// code for 5xx, empty (absent) otherwise.
pub fn error_type(status: Option<u16>, reset: bool) -> String {
    match status {
        _ if reset => CONNECTION_RESET.to_string(),
        Some(s) if (500..600).contains(&s) => s.to_string(),
        _ => String::new(),
    }
}

/// OTel's `error_type` of a client request: how its connection ended if the response was
/// not read completely, else the status code for 4xx and 5xx (a client's errors include its
/// requests' 4xx), empty (absent) otherwise.
pub fn client_error_type(status: Option<u16>, cut: Option<crate::pairing::ClientCut>) -> String {
    use crate::pairing::ClientCut;
    match (cut, status) {
        (Some(ClientCut::Reset), _) => CONNECTION_RESET.to_string(),
        (Some(ClientCut::PeerClosed), _) => "connection_closed".to_string(),
        (Some(ClientCut::GaveUp), _) => "timeout".to_string(),
        (None, Some(s)) if (400..600).contains(&s) => s.to_string(),
        _ => String::new(),
    }
}

/// django-prometheus's `method` label: its spelling of a method it does not know.
pub fn django_method(method_label: &'static str) -> &'static str {
    if method_label == OTHER_METHOD { "<invalid method>" } else { method_label }
}

/// django-prometheus's `transport` label: it only ever says `http`.
pub const DJANGO_TRANSPORT: &str = "http";

/// A label value that every Prometheus parser reads back as it is: the client library
/// writes label values unescaped, so `"`, `\` and control characters (possible in a
/// request target or a process name) are percent-encoded, as they would be in a URL.
pub fn label_safe(s: String) -> String {
    let escaped = |c: char| c == '"' || c == '\\' || c.is_control();
    if !s.chars().any(escaped) {
        return s; // the usual case: no copy
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' | '\u{7f}' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() => out.push_str(&format!("%{:02X}", c as u32 & 0xff)),
            c => out.push(c),
        }
    }
    out
}

/// The node-wide cap on request label sets (`--max-label-sets`): each costs a series per
/// histogram bucket on every scrape, so the page of a node with many services stays small.
/// A request whose label set would be a new one past the cap is reported under its
/// service's [`OTHER_ROUTE`] (its method, status and the rest kept): those sets are few
/// (services x methods x statuses) and are always admitted.
pub struct LabelSetCap {
    max: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl LabelSetCap {
    pub fn new(max: usize) -> Self {
        LabelSetCap { max, used: Default::default() }
    }

    /// May one more label set be made? Counts it if so.
    pub fn admit(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.used.fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1)).is_ok()
    }

    /// Label sets that went away (a forgotten service's) leave room for others.
    pub fn release(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = self.used.fetch_update(Relaxed, Relaxed, |used| Some(used.saturating_sub(n)));
    }

    /// The route to report a request under when its own label set was not admitted.
    pub fn folded_route(&self) -> &'static str {
        OTHER_ROUTE
    }
}

/// The `http_route` of a request: the router's route, capped at `max` distinct routes per
/// service (later ones become [`OTHER_ROUTE`]).
pub struct Routes {
    router: Router,
    max: usize,
    seen: Mutex<HashMap<Service, HashSet<String>>>,
    /// The ids of the routes the kernel labels requests with.
    kernel: Mutex<kernel_ids::RouteIds>,
}

/// A route label, and whether the cap folded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteLabel {
    pub route: String,
    pub folded: bool,
}

impl Routes {
    pub fn new(router: Router, max: usize) -> Self {
        Routes { router, max, seen: Mutex::default(), kernel: Mutex::default() }
    }

    /// Forgets what was seen of a forgotten service: its routes count anew if it returns.
    pub fn forget(&self, service: &Service) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(service);
        }
        if let Ok(mut kernel) = self.kernel.lock() {
            kernel.forget(service);
        }
    }

    /// Can the kernel label requests by path key? Its keys fold identifier segments, so a
    /// template with an identifier as a literal segment (`/v/2024-01-31`) needs every path.
    pub fn kernel_can_route(&self) -> bool {
        self.router.folds_like_kernel()
    }

    /// The route id of a path the kernel sent under `key` (service id `service_id`), routed
    /// now if it is new: the id, and whether the key is new (the kernel's `ROUTES` map then
    /// needs it).
    pub fn route_key(&self, service_id: u32, service: &Service, key: u64, path: &[u8]) -> (u32, bool) {
        let known = self.kernel.lock().ok().and_then(|ids| ids.of_key(service_id, key));
        if let Some(id) = known {
            return (id, false);
        }
        let label = self.label(service, path);
        let Ok(mut ids) = self.kernel.lock() else {
            return (0, false);
        };
        let id = ids.id(service, label);
        ids.set_key(service_id, key, id);
        (id, true)
    }

    /// The route of a kernel route id (0, or one never given out: None).
    pub fn of_id(&self, id: u32) -> Option<RouteLabel> {
        self.kernel.lock().ok()?.route(id).cloned()
    }

    /// The route id of a path key the agent routed.
    pub fn id_of_key(&self, service_id: u32, key: u64) -> Option<u32> {
        self.kernel.lock().ok()?.of_key(service_id, key)
    }

    pub fn label(&self, service: &Service, target: &[u8]) -> RouteLabel {
        let route = self.router.route(target);
        let folded = RouteLabel { route: OTHER_ROUTE.to_string(), folded: true };
        let Ok(mut seen) = self.seen.lock() else {
            return folded;
        };
        let routes = seen.entry(service.clone()).or_default();
        if !routes.contains(&route) {
            if routes.len() >= self.max {
                return folded;
            }
            routes.insert(route.clone());
        }
        RouteLabel { route, folded: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_error_types() {
        use crate::pairing::ClientCut::*;
        let cases = [
            (Some(200), None, ""),
            (Some(302), None, ""),
            (Some(404), None, "404"),
            (Some(503), None, "503"),
            (None, Some(Reset), "connection_reset"),
            (Some(200), Some(Reset), "connection_reset"),
            (None, Some(PeerClosed), "connection_closed"),
            (Some(200), Some(GaveUp), "timeout"),
        ];
        for (status, cut, want) in cases {
            assert_eq!(client_error_type(status, cut), want, "{status:?} {cut:?}");
        }
    }

    #[test]
    fn values_are_safe_to_expose() {
        assert_eq!(label_safe("my \"svc\"\n".into()), "my %22svc%22%0A");
        assert_eq!(Service::named("a\\b").name(), "a%5Cb");
    }

    #[test]
    fn methods() {
        assert_eq!(method("GET"), "GET");
        assert_eq!(method("PATCH"), "PATCH");
        assert_eq!(method("get"), "_OTHER");
        assert_eq!(method("BREW"), "_OTHER");
        assert_eq!(method(&"A".repeat(1024)), "_OTHER");
        assert_eq!(django_method(method("PROPFIND")), "<invalid method>");
        assert_eq!(django_method(method("GET")), "GET");
    }

    #[test]
    fn error_type_is_set_for_5xx_only() {
        assert_eq!(error_type(Some(500), false), "500");
        assert_eq!(error_type(Some(599), false), "599");
        assert_eq!(error_type(Some(404), false), "");
        assert_eq!(error_type(Some(600), false), "");
        assert_eq!(error_type(Some(200), true), CONNECTION_RESET);
        assert_eq!(error_type(None, true), CONNECTION_RESET);
        assert_eq!(status(None), "");
    }

    #[test]
    fn routes_are_capped_per_service() {
        let routes = Routes::new(Router::default(), 2);
        let (a, b): (Service, Service) = ("a".into(), "b".into());
        let labels: Vec<(String, bool)> = ["/x", "/y", "/z", "/x"]
            .iter()
            .map(|p| routes.label(&a, p.as_bytes()))
            .map(|l| (l.route, l.folded))
            .collect();
        assert_eq!(
            labels,
            [("/x".into(), false), ("/y".into(), false), (OTHER_ROUTE.into(), true), ("/x".into(), false)]
        );
        assert!(!routes.label(&b, b"/z").folded, "the cap is per service");
    }
}
