//! OpenTelemetry's HTTP client semantic conventions, as Prometheus renders them: the
//! requests the targets send on their own connections (`http_client_*`), by upstream
//! (`labels::peer`), with the client side's own health (`redprobe_http_client_*`).
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::{Registry, Unit},
};

use super::{
    SnapshotGauge,
    health::ReasonLabels,
    histogram::{Buckets, OnScheme},
    scheme::Scheme,
};
use crate::{
    labels::{
        Service,
        peer::{OTHER_PEER, PeerLabel, Peers},
    },
    reason::Reason,
};
use probe_common::AggValue;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    pub http_request_method: String,
    /// Empty (absent) when no status line was read.
    pub http_response_status_code: String,
    pub server_address: String,
    pub server_port: String,
    pub network_protocol_version: String,
    /// `connection_reset`, `connection_closed` or `timeout` for a response not read
    /// completely; the status code for 4xx and 5xx responses; empty (absent) otherwise.
    pub error_type: String,
    #[prometheus(flatten)]
    pub service: Service,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientActiveLabels {
    pub http_request_method: String,
    pub server_address: String,
    pub server_port: String,
    #[prometheus(flatten)]
    pub service: Service,
}

/// One finished client request, with every label already bounded but the upstream's
/// (`address` [`OTHER_PEER`]: folded already).
pub struct ClientRequest<'a> {
    pub service: &'a Service,
    pub method: &'static str,
    pub status: Option<u16>,
    pub version: &'static str,
    /// `server_address` and `server_port` (`labels::peer::of_host`), before the cap.
    pub address: String,
    pub port: String,
    pub error_type: String,
    pub duration_ns: u64,
    pub request_body: u64,
    pub response_body: u64,
}

pub struct HttpClient {
    peers: Peers,
    duration: Family<ClientLabels, Buckets, OnScheme>,
    request_size: Family<ClientLabels, Buckets, OnScheme>,
    response_size: Family<ClientLabels, Buckets, OnScheme>,
    active: SnapshotGauge<ClientActiveLabels>,
    /// The label sets made, so that a forgotten service's can be removed.
    made: Mutex<HashSet<ClientLabels>>,
    unmeasured: Family<ReasonLabels, Counter>,
    peers_folded: Counter,
    paired: Family<PairerLabels, Counter>,
}

/// Who paired a client request: `kernel` (the fast path) or `agent` (from events).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairerLabels {
    pub pairer: String,
}

impl HttpClient {
    /// `durations`: the duration scheme (`--buckets`); `max_peers`: `--max-peers`.
    pub fn register(registry: &mut Registry, durations: Arc<Scheme>, max_peers: usize) -> Self {
        let sizes = Scheme::size();
        let m = HttpClient {
            peers: Peers::new(max_peers),
            duration: Family::new_with_constructor(OnScheme(durations)),
            request_size: Family::new_with_constructor(OnScheme(sizes.clone())),
            response_size: Family::new_with_constructor(OnScheme(sizes)),
            active: SnapshotGauge::default(),
            made: Default::default(),
            unmeasured: Family::default(),
            peers_folded: Counter::default(),
            paired: Family::default(),
        };
        registry.register_with_unit(
            "http_client_request_duration",
            "Duration of the HTTP requests the targets send: from the write of the request's first byte to the read of its response's last byte (or to the close that cut it short)",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register_with_unit(
            "http_client_request_body_size",
            "Size of the bodies of the HTTP requests the targets send, as transferred (chunk framing included), without headers",
            Unit::Bytes,
            m.request_size.clone(),
        );
        registry.register_with_unit(
            "http_client_response_body_size",
            "Size of the bodies of the HTTP responses the targets read, as transferred (chunk framing included), without headers",
            Unit::Bytes,
            m.response_size.clone(),
        );
        registry.register(
            "http_client_active_requests",
            "HTTP requests the targets sent and have not read the response of yet",
            m.active.family.clone(),
        );
        let r = registry.sub_registry_with_prefix("redprobe");
        r.register(
            "http_client_requests_unmeasured",
            "Requests the targets sent that could not be measured, by reason (as redprobe_requests_unparsed_total's reasons)",
            m.unmeasured.clone(),
        );
        r.register(
            "http_client_peers_folded",
            "Client requests reported as server_address=\"_other\" because --max-peers distinct upstreams were already seen for their service",
            m.peers_folded.clone(),
        );
        r.register(
            "http_client_requests_paired",
            "Client requests measured, by who paired the request with its response: the kernel's fast path, or the agent from events (a connection of a process whose service was not known yet, a request the kernel does not read itself, one cut short by its connection's end...)",
            m.paired.clone(),
        );
        for pairer in ["kernel", "agent"] {
            let _ = m.paired.get_or_create(&PairerLabels { pairer: pairer.to_string() });
        }
        for reason in Reason::ALL {
            let _ = m.unmeasured.get_or_create(&ReasonLabels { reason: reason.label().to_string() });
        }
        m
    }

    /// The label set of a request (its upstream within the cap), made known for `forget`,
    /// and whether its upstream was folded into `_other`.
    fn labels(&self, r: ClientRequest<'_>) -> (ClientLabels, bool) {
        let peer = if r.address == OTHER_PEER {
            // Folded already (`labels::peer::FOLDED_ID`).
            PeerLabel { address: r.address, port: String::new(), folded: true }
        } else {
            self.peers.label(r.service, r.address, r.port)
        };
        let folded = peer.folded;
        let labels = ClientLabels {
            http_request_method: r.method.to_string(),
            http_response_status_code: crate::labels::status(r.status),
            server_address: peer.address,
            server_port: peer.port,
            network_protocol_version: r.version.to_string(),
            error_type: r.error_type,
            service: r.service.clone(),
        };
        if let Ok(mut made) = self.made.lock()
            && !made.contains(&labels)
        {
            made.insert(labels.clone());
        }
        (labels, folded)
    }

    /// `n` requests paired by the kernel (`kernel`) or the agent.
    pub fn paired(&self, kernel: bool, n: u64) {
        let pairer = if kernel { "kernel" } else { "agent" };
        self.paired.get_or_create(&PairerLabels { pairer: pairer.to_string() }).inc_by(n);
    }

    pub fn observe(&self, r: ClientRequest<'_>) {
        let (duration, request, response) = (r.duration_ns, r.request_body, r.response_body);
        let (labels, folded) = self.labels(r);
        if folded {
            self.peers_folded.inc();
        }
        self.duration.get_or_create(&labels).observe(duration);
        self.request_size.get_or_create(&labels).observe(request);
        self.response_size.get_or_create(&labels).observe(response);
    }

    /// What the kernel aggregated for `r`'s labels since the last read (`r`'s values are
    /// not used).
    pub fn add_kernel(&self, r: ClientRequest<'_>, delta: &AggValue) {
        let (labels, folded) = self.labels(r);
        if folded {
            self.peers_folded.inc_by(delta.duration.count());
        }
        self.duration.get_or_create(&labels).add(&delta.duration.counts, delta.duration.sum);
        self.request_size.get_or_create(&labels).add(&delta.request_body.counts, delta.request_body.sum);
        self.response_size.get_or_create(&labels).add(&delta.response_body.counts, delta.response_body.sum);
    }

    pub fn unmeasured(&self, reason: Reason) {
        self.unmeasured.get_or_create(&ReasonLabels { reason: reason.label().to_string() }).inc();
    }

    /// The requests in flight, by (service, method label, server_address, server_port).
    pub fn set_active(&self, active: &HashMap<(Service, &'static str, String, String), i64>) {
        self.active.set(active.iter().map(|((service, method, address, port), n)| {
            let peer = if address == OTHER_PEER {
                PeerLabel { address: address.clone(), port: String::new(), folded: true }
            } else {
                self.peers.label(service, address.clone(), port.clone())
            };
            let labels = ClientActiveLabels {
                http_request_method: method.to_string(),
                server_address: peer.address,
                server_port: peer.port,
                service: service.clone(),
            };
            (labels, *n)
        }));
    }

    /// Removes a forgotten service's series.
    pub fn forget(&self, service: &Service) {
        self.peers.forget(service);
        self.active.remove_where(|l| l.service == *service);
        let Ok(mut made) = self.made.lock() else { return };
        made.retain(|l| {
            let gone = l.service == *service;
            if gone {
                for family in [&self.duration, &self.request_size, &self.response_size] {
                    family.remove(l);
                }
            }
            !gone
        });
    }
}
