//! Aggregation: finished exchanges -> metric families. Every label value comes from
//! `labels`; this module only places them.
//!
//! One naming scheme is active (`--naming`): OpenTelemetry's HTTP semantic conventions
//! as Prometheus renders them (`otel.rs`), or django-prometheus's names (`django.rs`).
//! The agent's own health (`health.rs`), the targets' saturation (`saturation.rs`) and the
//! agent process (`process.rs`) are always exported. docs/metrics.md lists every family.
pub mod client;
pub mod django;
pub mod health;
mod histogram;
pub mod kernel;
pub mod otel;
pub mod process;
pub mod rpc;
pub mod saturation;
pub mod scheme;
pub mod scrape;
mod snapshot;

use crate::labels::Service;
use std::{collections::HashMap, sync::Arc};

use prometheus_client::registry::Registry;
pub use snapshot::SnapshotGauge;

use probe_common::{AggKey, AggValue};

use crate::{
    labels::{self, RouteLabel, Routes, kernel_ids},
    pairing::{ClientCall, Exchange, Head, KernelHead, Output, PairedBy},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Naming {
    /// OpenTelemetry HTTP semantic conventions (http_server_request_duration_seconds, ...).
    Otel,
    /// django-prometheus's metric names and labels, with the route as the view.
    DjangoPrometheus,
}

/// The histograms served besides the duration and the queue time (`--extra-histograms`):
/// each is another series per bucket and label set on text scrapes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    /// `redprobe_http_server_time_to_first_byte_seconds`.
    pub ttfb: bool,
    /// `http_server_request_body_size_bytes`.
    pub request_size: bool,
    /// `http_server_response_body_size_bytes`.
    pub response_size: bool,
}

impl Extra {
    pub const ALL: Extra = Extra { ttfb: true, request_size: true, response_size: true };
}

/// The shape of the OpenTelemetry page: which histograms, and how many label sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    pub extra: Extra,
    /// Request label sets across the node (`--max-label-sets`; `labels::LabelSetCap`).
    pub max_label_sets: usize,
    /// The client families (`http_client_*`) and their upstreams per service
    /// (`--max-peers`); None with `--no-client-metrics`.
    pub max_peers: Option<usize>,
}

/// `--max-label-sets`'s default: with the default histograms and every service in a pod
/// (its namespace and name on every line), about 9.7 MB of text page at the cap
/// (`cargo xtask bench`, measure P).
pub const DEFAULT_MAX_LABEL_SETS: usize = 1300;

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            extra: Extra::default(),
            max_label_sets: DEFAULT_MAX_LABEL_SETS,
            max_peers: Some(labels::peer::DEFAULT_MAX_PEERS),
        }
    }
}

/// One finished request, with every label already bounded.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub service: &'a Service,
    pub method: &'static str,
    pub route: &'a str,
    /// None: reset before a status line was sent.
    pub status: Option<u16>,
    /// The client gave up (the connection was reset before the response was complete).
    pub reset: bool,
    pub version: &'static str,
    pub transport: &'static str,
    /// `url_scheme`: `http`, or `https` for plaintext from a TLS library.
    pub scheme: &'static str,
    /// From the request's arrival (else its first byte read) to the response's last byte
    /// written.
    pub duration_ns: u64,
    /// From the request's arrival to its first byte read: its wait in the socket's queues.
    pub queue_ns: u64,
    /// ... to the response's first byte written.
    pub first_byte_ns: u64,
    pub request_body: u64,
    pub response_body: u64,
}

enum Http {
    Otel(otel::OtelHttp),
    Django(django::DjangoHttp),
}

/// Everything the agent exports. Cloning shares the underlying values.
#[derive(Clone)]
pub struct Metrics {
    http: Arc<Http>,
    rpc: Arc<rpc::RpcServer>,
    client: Option<Arc<client::HttpClient>>,
    /// The upstream ids of the kernel's client requests.
    peer_ids: Arc<labels::peer::PeerIds>,
    pub health: health::Health,
    routes: Arc<Routes>,
}

impl Metrics {
    /// With the default duration buckets and page shape.
    pub fn new(registry: &mut Registry, naming: Naming, routes: Routes) -> Self {
        Metrics::with_options(registry, naming, routes, scheme::Scheme::default_time(), HttpOptions::default())
    }

    /// `durations`: the duration scheme (`--buckets`; the kernel's table is made of it);
    /// `options`: the OpenTelemetry page's shape.
    pub fn with_options(
        registry: &mut Registry,
        naming: Naming,
        routes: Routes,
        durations: Arc<scheme::Scheme>,
        options: HttpOptions,
    ) -> Self {
        let http = match naming {
            Naming::Otel => Http::Otel(otel::OtelHttp::register(registry, durations.clone(), options)),
            Naming::DjangoPrometheus => Http::Django(django::DjangoHttp::register(registry)),
        };
        let rpc = Arc::new(rpc::RpcServer::register(registry, durations.clone()));
        let client = options.max_peers.map(|max| Arc::new(client::HttpClient::register(registry, durations, max)));
        Metrics {
            http: Arc::new(http),
            rpc,
            client,
            peer_ids: Arc::new(labels::peer::PeerIds::new(options.max_peers.unwrap_or(0))),
            health: health::Health::register(registry),
            routes: Arc::new(routes),
        }
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    pub fn peer_ids(&self) -> &labels::peer::PeerIds {
        &self.peer_ids
    }

    /// The upstream of a client request the kernel read: from its id (0: its key's, if the
    /// agent named one), as (server_address, server_port).
    fn kernel_peer(&self, k: &KernelHead) -> (String, String) {
        match self.peer_ids.host_of_request(k.service_id, k.route, k.path_key) {
            Some(Some(host)) => labels::peer::of_host(Some(&host), false),
            Some(None) => (labels::peer::OTHER_PEER.to_string(), String::new()),
            // The announcement's event was lost (counted in redprobe_events_lost_total).
            None => labels::peer::of_host(None, false),
        }
    }

    /// Does the kernel's fast path serve these metrics? Only OpenTelemetry's buckets are the
    /// kernel's (django-prometheus's are its own).
    pub fn kernel_can_aggregate(&self) -> bool {
        matches!(self.http.as_ref(), Http::Otel(_))
    }

    /// The route label of a kernel route id (0: the key's, if the agent routed it).
    fn kernel_route(&self, route: u32, service_id: u32, path_key: u64) -> RouteLabel {
        let id = if route != 0 { Some(route) } else { self.routes.id_of_key(service_id, path_key) };
        let label = id.and_then(|id| self.routes.of_id(id));
        // None: the path's event was lost (counted in redprobe_events_lost_total).
        label.unwrap_or(RouteLabel { route: labels::UNREAD_ROUTE.to_string(), folded: false })
    }

    fn kernel_labels(&self, k: &KernelHead) -> (&'static str, String, &'static str) {
        let route = self.kernel_route(k.route, k.service_id, k.path_key);
        if route.folded {
            self.health.routes_folded.inc();
        }
        (kernel_ids::method(k.method), route.route, kernel_ids::version(k.version))
    }

    /// What the kernel aggregated under `key` since the last time (`delta`), for `service`.
    pub fn add_kernel(&self, key: &AggKey, delta: &AggValue, service: &Service) {
        let n = delta.duration.count();
        if n == 0 {
            return;
        }
        if key.kind == probe_common::AGG_CLIENT {
            let Some(client) = &self.client else { return };
            let head = KernelHead { method: key.method, version: key.version, route: key.route, path_key: 0, service_id: key.service };
            let (address, port) = self.kernel_peer(&head);
            let req = client::ClientRequest {
                service,
                method: kernel_ids::method(key.method),
                status: Some(key.status),
                version: kernel_ids::version(key.version),
                address,
                port,
                error_type: labels::client_error_type(Some(key.status), None),
                duration_ns: 0,
                request_body: 0,
                response_body: 0,
            };
            client.add_kernel(req, delta);
            client.paired(true, n);
            return;
        }
        let route = self.kernel_route(key.route, key.service, 0);
        if route.folded {
            self.health.routes_folded.inc_by(n);
        }
        self.health.paired(PairedBy::Kernel, n);
        let req = Request {
            service,
            method: kernel_ids::method(key.method),
            route: &route.route,
            status: Some(key.status),
            reset: false,
            version: kernel_ids::version(key.version),
            transport: labels::transport(key.family),
            scheme: labels::scheme(key.family),
            duration_ns: 0,
            queue_ns: 0,
            first_byte_ns: 0,
            request_body: 0,
            response_body: 0,
        };
        if let Http::Otel(m) = self.http.as_ref()
            && m.add_kernel(&req, delta)
        {
            self.health.routes_folded.inc_by(n);
        }
    }

    fn observe_exchange(&self, x: &Exchange) {
        self.health.paired(x.paired_by, 1);
        let (method, route, version) = match &x.head {
            Head::Kernel(k) => self.kernel_labels(k),
            Head::Read(line) => {
                let route = self.routes.label(&x.service, &line.target);
                if route.folded {
                    self.health.routes_folded.inc();
                }
                (labels::method(&line.method), route.route, labels::version(line.version))
            }
            Head::Unread(reason) => {
                self.health.unread(*reason);
                (labels::OTHER_METHOD, labels::UNREAD_ROUTE.to_string(), "")
            }
        };
        let req = Request {
            service: &x.service,
            method,
            route: &route,
            status: x.status,
            reset: x.reset,
            version,
            transport: labels::transport(x.family),
            scheme: labels::scheme(x.family),
            duration_ns: x.end_ns.saturating_sub(x.start_ns),
            queue_ns: x.queued_ns,
            first_byte_ns: x.first_byte_ns.saturating_sub(x.start_ns),
            request_body: x.request_body_bytes,
            response_body: x.response_body_bytes,
        };
        match self.http.as_ref() {
            Http::Otel(m) => {
                if m.observe(&req) {
                    self.health.routes_folded.inc();
                }
            }
            Http::Django(m) => m.observe(&req),
        }
    }

    pub fn observe(&self, output: &Output) {
        match output {
            Output::Exchange(x) => self.observe_exchange(x),
            Output::Unparsed(reason) => self.health.unparsed(*reason),
            Output::Inferred(reason) => self.health.inferred(*reason),
            Output::OtherProtocol(protocol) => self.health.other_protocol(*protocol),
            Output::TlsUnmeasured(why) => self.health.tls_unmeasured(*why),
            Output::EndAtWrite(why) => self.health.tx_fallback(*why, 1),
            Output::WaitsForTransmission => {
                self.health.tx_waits.inc();
            }
            Output::Rpc(call) => self.observe_rpc(call),
            Output::H2Undecodable(why) => self.health.h2_undecodable(*why),
            Output::H2Reset { by_client, code } => self.health.h2_reset(*by_client, labels::rpc::h2_error_code(*code)),
            Output::Client(call) => self.observe_client(call),
            Output::ClientUnmeasured(reason) => {
                if let Some(c) = &self.client {
                    c.unmeasured(*reason);
                }
            }
        }
    }

    /// A request a target sent: labelled by its upstream (its `Host` header), not a route.
    fn observe_client(&self, call: &ClientCall) {
        let Some(client) = &self.client else { return };
        let x = &call.exchange;
        client.paired(x.paired_by == PairedBy::Kernel, 1);
        let (method, version, (address, port)) = match &x.head {
            Head::Read(line) => (
                labels::method(&line.method),
                labels::version(line.version),
                labels::peer::of_host(line.host.as_deref(), x.family & probe_common::FAMILY_TLS != 0),
            ),
            Head::Kernel(k) => (kernel_ids::method(k.method), kernel_ids::version(k.version), self.kernel_peer(k)),
            Head::Unread(_) => (labels::OTHER_METHOD, "", labels::peer::of_host(None, false)),
        };
        client.observe(client::ClientRequest {
            service: &x.service,
            method,
            status: x.status,
            version,
            address,
            port,
            error_type: labels::client_error_type(x.status, call.cut),
            duration_ns: x.end_ns.saturating_sub(x.start_ns),
            request_body: x.request_body_bytes,
            response_body: x.response_body_bytes,
        });
    }

    /// Sets the client requests in flight, from the client pairer's (service, method, Host).
    pub fn set_client_active(&self, active: &HashMap<(Service, String, Option<Vec<u8>>), i64>) {
        let Some(client) = &self.client else { return };
        let mut by = HashMap::new();
        for ((service, method, host), n) in active {
            let (address, port) = labels::peer::of_host(host.as_deref(), false);
            *by.entry((service.clone(), labels::method(method), address, port)).or_insert(0) += n;
        }
        client.set_active(&by);
    }

    /// A gRPC call: its service and method are its route's (so under the same cap), split.
    fn observe_rpc(&self, call: &crate::pairing::RpcCall) {
        let route = self.routes.label(&call.service, &call.path);
        let (rpc_service, rpc_method) = labels::rpc::grpc_names(&call.path, &route.route);
        let labels = rpc::RpcLabels {
            rpc_system: "grpc".to_string(),
            rpc_service,
            rpc_method,
            rpc_grpc_status_code: labels::rpc::grpc_status(call.code),
            service: call.service.clone(),
        };
        self.rpc.observe(&labels, call.duration_ns);
    }

    /// Removes a forgotten service's series and routes (`Registry::forget_idle`). Returns
    /// how many label sets went.
    pub fn forget(&self, service: &Service) -> usize {
        self.routes.forget(service);
        self.health.services_forgotten.inc();
        self.health.open_connections.remove_where(|l| l.service == *service);
        self.rpc.forget(service);
        if let Some(c) = &self.client {
            c.forget(service);
        }
        match self.http.as_ref() {
            Http::Otel(m) => m.forget(service),
            // django-prometheus's families have no service label: nothing is the service's.
            Http::Django(_) => 0,
        }
    }

    /// Sets the in-flight requests gauge (OTel naming only; django-prometheus has none).
    pub fn set_active_requests(&self, active: &HashMap<(Service, String), i64>) {
        if let Http::Otel(m) = self.http.as_ref() {
            m.set_active(active);
        }
    }
}

#[cfg(test)]
mod tests;
