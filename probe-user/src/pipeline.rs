//! The pipeline the agent runs on every record the kernel sends: decode -> registry (forks,
//! execs, exits) or pairing (data, closes) -> aggregation. The agent's loop, the fuzzer and
//! the golden fixtures all drive this same code with raw records.
use crate::labels::Service;

use probe_common::{CLIENT_ROUTES, ConnState, FLAG_CLIENT, MeasuredEvent, SwitchEvent};

use crate::{
    decode::{Event, decode},
    http2::H2Conns,
    labels::kernel_ids,
    metrics::{Metrics, health::ServiceLabels},
    pairing::{ClientCall, ClientCut, Exchange, Head, KernelHead, Output, PairedBy, Pairer},
    proc_root::ticks_per_second,
    reason::SlowReason,
    registry::{SharedRegistry, Target, lock},
};

/// What happened to a target, for the agent to log and act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// A target forked `child`, which is measured from its fork on.
    Forked { parent: u32, child: u32, service: Service },
    /// A target runs a new program; its service follows the new name.
    Execed { pid: u32, comm: String, service: Service },
    /// A target exited; what it served stays in the metrics.
    Exited(Target),
    /// The agent routed a path key the kernel sent: the kernel's `ROUTES` map gets it.
    Route { service_id: u32, key: u64, route: u32 },
}

pub struct Pipeline {
    pairer: Pairer,
    /// The targets' client connections (`FLAG_CLIENT`): their requests and responses.
    client: Pairer,
    h2: H2Conns,
    metrics: Metrics,
    registry: SharedRegistry,
    outputs: Vec<Output>,
    ticks_per_second: u64,
    /// The kernel's fast path is on (the agent fills `SERVICES`).
    fast_path: bool,
}

impl Pipeline {
    pub fn new(metrics: Metrics, registry: SharedRegistry, max_connections: usize) -> Self {
        Pipeline {
            pairer: Pairer::new(max_connections),
            client: Pairer::client(max_connections),
            h2: H2Conns::new(max_connections),
            metrics,
            registry,
            outputs: vec![],
            ticks_per_second: ticks_per_second().max(1),
            fast_path: true,
        }
    }

    /// Tells the pipeline that the kernel's fast path is off: connections left to the agent
    /// for want of a service id are counted as `fast_path_off`.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// The name of service id `id` (the registry's), or the service of `tgid`.
    fn service(&self, id: u32, tgid: u32) -> Service {
        let r = lock(&self.registry);
        r.service_named(id).unwrap_or_else(|| r.service_of(tgid))
    }

    fn switched(&mut self, sw: &SwitchEvent) {
        let service = self.service(sw.service, sw.tgid);
        let mut reason = SlowReason::from_kernel(sw.reason);
        if reason == SlowReason::NoService && !self.fast_path {
            reason = SlowReason::FastPathOff;
        }
        if sw.header.flags & FLAG_CLIENT != 0 {
            let mut out = vec![];
            self.client.adopt(sw, service, reason, &mut out);
            client_outputs(out, ClientCut::GaveUp, &mut self.outputs);
        } else {
            self.pairer.adopt(sw, service, reason, &mut self.outputs);
        }
    }

    fn routed(&mut self, key: u64, service_id: u32, path: &[u8]) -> Option<Notice> {
        if service_id & CLIENT_ROUTES != 0 {
            // A client request's Host value: the kernel labels its requests by an upstream id.
            let route = self.metrics.peer_ids().id(service_id & !CLIENT_ROUTES, key, path);
            return Some(Notice::Route { service_id, key, route });
        }
        let service = lock(&self.registry).service_named(service_id)?;
        let (route, new) = self.metrics.routes().route_key(service_id, &service, key, path);
        if new {
            self.metrics.health.route_keys.inc();
        }
        // Known or not, the kernel asks because its map lacks the key (it never had it, or
        // it dropped it when full): it gets it again.
        (route != 0).then_some(Notice::Route { service_id, key, route })
    }

    fn measured(&mut self, m: &MeasuredEvent) {
        self.metrics.health.kernel_measured_events.inc();
        let r = &m.request;
        let head = KernelHead::of(r, m.service);
        let x = Exchange {
            head: Head::Kernel(head),
            status: Some(m.status),
            reset: false,
            family: m.family,
            service: self.service(m.service, 0),
            start_ns: r.start_ns,
            queued_ns: r.queued_ns,
            first_byte_ns: m.first_byte_ns,
            end_ns: m.end_ns,
            request_body_bytes: r.body_bytes,
            response_body_bytes: m.response_bytes,
            paired_by: PairedBy::Kernel,
        };
        if m.header.flags & FLAG_CLIENT != 0 {
            self.outputs.push(Output::Client(ClientCall { exchange: x, cut: None }));
        } else {
            self.outputs.push(Output::Exchange(x));
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// One ring-buffer record.
    pub fn record(&mut self, bytes: &[u8]) -> Option<Notice> {
        let health = &self.metrics.health;
        health.events_received.inc();
        match decode(bytes) {
            Ok(event) => self.event(event),
            Err(e) => {
                health.events_undecodable.inc();
                tracing::warn!("undecodable event: {e}");
                None
            }
        }
    }

    pub fn event(&mut self, event: Event) -> Option<Notice> {
        let notice = match event {
            Event::Data(d) if d.client => {
                let registry = &self.registry;
                let mut out = vec![];
                self.client.on_data(&d, || lock(registry).service_of(d.tgid), &mut out);
                client_outputs(out, ClientCut::GaveUp, &mut self.outputs);
                None
            }
            Event::Data(d) => {
                let registry = &self.registry;
                self.pairer.on_data(&d, || lock(registry).service_of(d.tgid), &mut self.outputs);
                None
            }
            Event::H2(c) => {
                let (registry, pairer) = (&self.registry, &mut self.pairer);
                let service = || lock(registry).service_of(c.tgid);
                self.h2.on_chunk(&c, service, || pairer.take_h2c(c.conn_id), &mut self.outputs);
                None
            }
            Event::Close { conn_id, reset, peer_closed, ts_ns, tls } => {
                match tls {
                    Some(Ok(why)) => self.outputs.push(Output::TlsUnmeasured(why)),
                    Some(Err(protocol)) => self.outputs.push(Output::OtherProtocol(protocol)),
                    None => {}
                }
                if self.client.tracks(conn_id) {
                    let mut out = vec![];
                    self.client.on_close(conn_id, reset, ts_ns, &mut out);
                    let cut = match (reset, peer_closed) {
                        (true, _) => ClientCut::Reset,
                        (false, true) => ClientCut::PeerClosed,
                        (false, false) => ClientCut::GaveUp,
                    };
                    client_outputs(out, cut, &mut self.outputs);
                } else if self.h2.on_close(conn_id, reset, ts_ns, &mut self.outputs) {
                } else if let Some(up) = self.pairer.take_h2c(conn_id) {
                    H2Conns::close_upgraded(up, reset, ts_ns, &mut self.outputs);
                } else {
                    self.pairer.on_close(conn_id, reset, ts_ns, &mut self.outputs);
                }
                None
            }
            Event::Switch(sw) => {
                self.switched(&sw);
                None
            }
            Event::Path { key, service, path } => self.routed(key, service, &path),
            Event::Measured(m) => {
                self.measured(&m);
                None
            }
            Event::Sent { conn_id, end_seq, ts_ns, superseded } => {
                self.pairer.on_sent(conn_id, end_seq, ts_ns, superseded, &mut self.outputs);
                None
            }
            Event::Fork { parent_tgid, child_tgid, child_start_ns } => {
                // /proc counts start times in clock ticks of the same boot-time clock.
                let start = child_start_ns / (1_000_000_000 / self.ticks_per_second);
                let mut r = lock(&self.registry);
                let service = r.forked(parent_tgid, child_tgid, start).map(|t| t.service.clone());
                let n = r.len();
                drop(r);
                let service = service?;
                self.metrics.health.target_attaches.inc();
                self.metrics.health.targets.set(n as i64);
                Some(Notice::Forked { parent: parent_tgid, child: child_tgid, service })
            }
            Event::Exec { tgid, comm } => {
                let mut r = lock(&self.registry);
                let t = r.execed(tgid, &comm)?;
                Some(Notice::Execed { pid: tgid, comm, service: t.service.clone() })
            }
            Event::Exit { tgid } => {
                let mut r = lock(&self.registry);
                let gone = r.exited(tgid);
                let n = r.len();
                drop(r);
                let gone = gone?;
                self.metrics.health.target_exits.inc();
                self.metrics.health.targets.set(n as i64);
                Some(Notice::Exited(gone))
            }
        };
        self.flush();
        notice
    }

    fn flush(&mut self) {
        for o in self.outputs.drain(..) {
            self.metrics.observe(&o);
        }
    }

    /// Client connections idle for `idle_ns` with requests unanswered: the target waited
    /// that long for their responses; they are measured as given up on.
    fn evict_idle_clients(&mut self, now_ns: u64, idle_ns: u64) {
        let mut out = vec![];
        self.client.evict_idle(now_ns, idle_ns, &mut out);
        client_outputs(out, ClientCut::GaveUp, &mut self.outputs);
    }

    /// Once a second: forget connections idle for `idle_ns`, refresh the snapshot gauges.
    /// `kernel_conns` is what the kernel's `CONNS` map holds: its fast connections are open
    /// connections, and their waiting requests are in flight.
    pub fn housekeeping(&mut self, now_ns: u64, idle_ns: u64, kernel_conns: &[ConnState]) {
        self.pairer.evict_idle(now_ns, idle_ns, &mut self.outputs);
        self.evict_idle_clients(now_ns, idle_ns);
        self.flush();
        let ids = self.metrics.peer_ids();
        let mut client_active =
            self.client.client_active_requests(|k| ids.host_of_request(k.service_id, k.route, k.path_key).flatten());
        self.metrics.health.tx_waiting.set(self.pairer.waiting_for_transmission() as i64);
        let mut active = self.pairer.active_requests();
        let mut open = self.pairer.connections_by_service();
        self.h2.add_gauges(&mut active, &mut open);
        let r = lock(&self.registry);
        for c in kernel_conns.iter().filter(|c| c.is_fast_server()) {
            let Some(service) = r.service_named(c.service) else {
                continue;
            };
            for method in c.pairing.in_flight() {
                *active.entry((service.clone(), kernel_ids::method(method).to_string())).or_insert(0) += 1;
            }
            *open.entry(service.clone()).or_insert(0) += 1;
        }
        // The kernel's client requests in flight, by their upstream's Host value.
        for c in kernel_conns.iter().filter(|c| c.is_fast_client()) {
            let Some(service) = r.service_named(c.service) else {
                continue;
            };
            for req in c.pairing.waiting() {
                let host = ids.host_of_request(c.service, req.route, req.path_key).flatten();
                let method = kernel_ids::method(req.method).to_string();
                *client_active.entry((service.clone(), method, host)).or_insert(0) += 1;
            }
        }
        // Every service's GET series is there, at 0 when idle, so that an alert on it sees 0.
        for t in r.targets() {
            active.entry((t.service.clone(), "GET".to_string())).or_insert(0);
        }
        drop(r);
        self.metrics.set_active_requests(&active);
        self.metrics.set_client_active(&client_active);
        let health = &self.metrics.health;
        health.connections_tracked.set((self.pairer.connections() + self.client.connections() + self.h2.len()) as i64);
        health.open_connections.set(open.into_iter().map(|(service, n)| (ServiceLabels { service }, n)));
    }
}

/// The client pairer's outputs, as client ones: an exchange is a client call (`cut`: why,
/// if it was cut short: the close that ended it), anything not measured is counted as a
/// client request's reason.
fn client_outputs(out: Vec<Output>, cut: ClientCut, to: &mut Vec<Output>) {
    for o in out {
        to.push(match o {
            Output::Exchange(x) => {
                let cut = x.reset.then_some(cut);
                Output::Client(ClientCall { exchange: x, cut })
            }
            Output::Unparsed(reason) => Output::ClientUnmeasured(reason),
            other => other,
        });
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry as Prom;

    use super::*;
    use crate::{
        labels::{Router, Routes},
        metrics::Naming,
        proc_root::ProcInfo,
        registry::Registry,
        wire::{self, AF_INET},
    };
    use probe_common::{EVENT_RECV, EVENT_SEND, MODE_FAST, ROLE_SERVER};

    fn pipeline() -> (Pipeline, SharedRegistry) {
        let mut prom = Prom::default();
        let metrics = Metrics::new(&mut prom, Naming::Otel, Routes::new(Router::default(), 10));
        let registry = Registry::new(None).shared();
        let root = ProcInfo { pid: 10, ppid: 1, start_time: 1, comm: "gunicorn".into() };
        lock(&registry).attach_root(&root, Default::default());
        (Pipeline::new(metrics, registry.clone(), 100), registry)
    }

    /// A worker forked and serving in the same batch of records is named after its parent.
    #[test]
    fn a_new_worker_is_named_before_its_first_request() {
        let (mut p, _) = pipeline();
        let records = [
            wire::fork(10, 11, 5),
            wire::data(EVENT_RECV, 1, 11, 6, AF_INET, 0, b"GET / HTTP/1.1\r\n\r\n"),
            wire::data(EVENT_SEND, 1, 11, 7, AF_INET, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            wire::exit(11, 8),
        ];
        let notices: Vec<Notice> = records.iter().filter_map(|r| p.record(r)).collect();
        assert!(matches!(&notices[0], Notice::Forked { child: 11, service, .. } if service.name() == "gunicorn"));
        assert!(matches!(&notices[1], Notice::Exited(t) if t.pid == 11));
        p.housekeeping(0, u64::MAX, &[]);
        let h = &p.metrics().health;
        assert_eq!((h.target_attaches.get(), h.target_exits.get(), h.targets.get()), (1, 1, 1));
    }

    #[test]
    fn exec_renames_and_unknown_processes_are_ignored() {
        let (mut p, registry) = pipeline();
        assert!(p.record(&wire::exec(99, "other", 1)).is_none(), "not a target");
        assert!(p.record(&wire::exit(99, 1)).is_none());
        let n = p.record(&wire::exec(10, "python3", 2)).unwrap();
        assert!(matches!(n, Notice::Execed { pid: 10, service, .. } if service.name() == "python3"));
        assert_eq!(lock(&registry).service_of(10).name(), "python3");
    }

    /// The kernel's fast connections are open connections of their service, and what waits
    /// on them is in flight; slow, client and unknown-service entries are not counted here
    /// (the agent's own table counts the slow ones).
    #[test]
    fn fast_connections_in_the_kernel_map_are_the_gauges() {
        let mut prom = Prom::default();
        let metrics = Metrics::new(&mut prom, Naming::Otel, Routes::new(Router::default(), 10));
        let registry = Registry::new(None).shared();
        lock(&registry)
            .attach_root(&ProcInfo { pid: 10, ppid: 1, start_time: 1, comm: "gunicorn".into() }, Default::default());
        let mut p = Pipeline::new(metrics, registry, 100);
        let fast = |service: u32, methods: &[u8]| {
            let mut c = ConnState { role: ROLE_SERVER, mode: MODE_FAST, service, ..Default::default() };
            for (i, m) in methods.iter().enumerate() {
                c.pairing.pending[i].method = *m;
            }
            c.pairing.len = methods.len() as u8;
            c
        };
        let conns = [
            fast(1, &[1, 1, 3]),
            fast(1, &[]),
            fast(7, &[1]),
            ConnState { mode: probe_common::MODE_SLOW, ..fast(1, &[1]) },
            ConnState { role: probe_common::ROLE_CLIENT, ..fast(1, &[1]) },
        ];
        p.housekeeping(0, u64::MAX, &conns);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
        let value = |text: &str, prefix: &str, method: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains(&format!("=\"{method}\"")))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(value(&text, "http_server_active_requests{", "GET").as_deref(), Some("2"), "{text}");
        assert_eq!(value(&text, "http_server_active_requests{", "POST").as_deref(), Some("1"), "{text}");
        assert_eq!(value(&text, "redprobe_target_open_connections{", "gunicorn").as_deref(), Some("2"), "{text}");
        // Gone from the map: back to 0.
        p.housekeeping(0, u64::MAX, &[]);
        text.clear();
        prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
        assert_eq!(value(&text, "http_server_active_requests{", "GET").as_deref(), Some("0"), "{text}");
        assert_eq!(value(&text, "redprobe_target_open_connections{", "gunicorn").as_deref(), Some("0"), "{text}");
    }

    /// h2c by Upgrade (hypercorn's bytes): the request answered 101 is stream 1, answered
    /// in the frames the server writes before it reads the client's preface; a connection
    /// reset before the server read the preface still has that answer.
    #[test]
    fn an_h2c_upgrade_makes_the_request_stream_1() {
        use probe_common::{FLAG_H2_LAST, H2_PREFACE_LEN};
        let hex = |s: &str| -> Vec<u8> { (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect() };
        let settings = hex("00002a0400000000000001000010000002000000000004 0000ffff000500004000000800000001000300000064000600010000".replace(' ', "").as_str());
        let headers = hex("00003501040000000188 5f8b1d75d0620d263d4c7441ea5c820b5f6196c361be94034a5f29141004e28172e321b81754c5a37f76899fd565b087b2a5a717".replace(' ', "").as_str());
        let data = hex("00000e0000000000017b226974656d223a202231227d0a".replace(' ', "").as_str());
        let end = hex("000000000100000001");
        // A response longer than the capture window in one write: its DATA payload is
        // skipped between the head and the tail windows.
        let big = [headers.clone(), hex("0003e8000100000001"), vec![b'x'; 1000]].concat();
        for (reset_first, long) in [(false, false), (true, false), (false, true)] {
            let mut prom = Prom::default();
            let metrics = Metrics::new(&mut prom, Naming::Otel, Routes::new(Router::default(), 10));
            let registry = Registry::new(None).shared();
            let root = ProcInfo { pid: 10, ppid: 1, start_time: 1, comm: "hypercorn".into() };
            lock(&registry).attach_root(&root, Default::default());
            let mut p = Pipeline::new(metrics, registry, 100);
            let records = [
                wire::data(EVENT_RECV, 1, 10, 1, AF_INET, 0, b"GET /items/1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"),
                wire::data(EVENT_SEND, 1, 10, 2, AF_INET, 0, b"HTTP/1.1 101 \r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"),
                wire::data(EVENT_SEND, 1, 10, 3, AF_INET, 0, &settings),
            ];
            let records: Vec<Vec<u8>> = if long {
                records.into_iter().chain([wire::data(EVENT_SEND, 1, 10, 4, AF_INET, 0, &big)]).collect()
            } else {
                records
                    .into_iter()
                    .chain([
                        wire::data(EVENT_SEND, 1, 10, 4, AF_INET, 0, &headers),
                        wire::data(EVENT_SEND, 1, 10, 5, AF_INET, 0, &data),
                        wire::data(EVENT_SEND, 1, 10, 6, AF_INET, 0, &end),
                    ])
                    .collect()
            };
            for r in &records {
                p.record(r);
            }
            let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
            assert_eq!(preface.len(), H2_PREFACE_LEN as usize);
            if reset_first {
                p.record(&wire::reset(1, 7));
            } else {
                p.record(&wire::h2(1, 10, 7, true, 24, 0, preface, FLAG_H2_LAST));
                p.record(&wire::close(1, 8));
            }
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
            let line = text.lines().find(|l| l.starts_with("http_server_request_duration_seconds_count{"));
            let want = "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/items/{id}\",network_protocol_version=\"2\",network_transport=\"tcp\",url_scheme=\"http\",error_type=\"\",service_name=\"hypercorn\"} 1";
            assert_eq!(line, Some(want), "reset first: {reset_first}\n{text}");
            assert!(text.contains("redprobe_requests_unparsed_total{reason=\"upgraded\"} 0"));
        }
    }
}
