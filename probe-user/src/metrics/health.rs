//! The agent's own health, under the `redprobe_` prefix. Every family whose label values
//! are known in advance (the reasons, the roles) is served with all of them from the start,
//! at 0, so that an alert on one of them sees 0 rather than no data.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{
    pairing::PairedBy,
    reason::{Inference, KernelSkip, Protocol, Reason, SlowReason, TlsUnmeasured, TxFallback},
};

/// The `role` values of `redprobe_connections_classified_total`.
pub const ROLE_SERVER: &str = "server";
pub const ROLE_CLIENT: &str = "client";
pub const ROLE_OTHER: &str = "other";
pub const ROLES: [&str; 3] = [ROLE_SERVER, ROLE_CLIENT, ROLE_OTHER];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

/// Why a connection to /metrics was refused (`--web.config.file`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `tls_handshake` (no or a bad client certificate, not TLS, a timeout) or
    /// `unauthorized` (no or wrong basic auth credentials).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    #[prometheus(flatten)]
    pub service: crate::labels::Service,
}

/// `redprobe_requests_paired_total`: who paired the request, and for the agent, why the
/// kernel left the connection to it (empty for the kernel).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PairedLabels {
    pub pairer: String,
    pub reason: String,
}

impl PairedLabels {
    fn of(by: PairedBy) -> Self {
        match by {
            PairedBy::Kernel => PairedLabels { pairer: "kernel".into(), reason: String::new() },
            PairedBy::Agent(r) => PairedLabels { pairer: "agent".into(), reason: r.label().into() },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone)]
pub struct Health {
    pub events_received: Counter,
    pub events_lost: Counter,
    pub events_undecodable: Counter,
    pub unparsed: Family<ReasonLabels, Counter>,
    pub inferred: Family<ReasonLabels, Counter>,
    pub unread: Family<ReasonLabels, Counter>,
    pub kernel_skipped: Family<ReasonLabels, Counter>,
    pub connections_classified: Family<RoleLabels, Counter>,
    pub other_protocol: Family<ProtocolLabels, Counter>,
    pub map_write_errors: Family<MapLabels, Counter>,
    pub scrape_accept_errors: Counter,
    pub scrape_refused: Family<RefusedLabels, Counter>,
    pub web_config_reload_failures: Counter,
    pub connections_tracked: Gauge,
    pub map_entries: Family<MapLabels, Gauge>,
    pub map_capacity: Family<MapLabels, Gauge>,
    pub targets: Gauge,
    pub target_attaches: Counter,
    pub target_exits: Counter,
    pub services_forgotten: Counter,
    pub routes_folded: Counter,
    pub open_connections: super::SnapshotGauge<ServiceLabels>,
    pub paired: Family<PairedLabels, Counter>,
    pub kernel_measured_events: Counter,
    pub aggregates_full: Counter,
    pub route_keys: Counter,
    pub tx_waits: Counter,
    pub arrivals_full: Counter,
    pub tx_fallback: Family<ReasonLabels, Counter>,
    pub tx_waiting: Gauge,
    pub tls_unmeasured: Family<ReasonLabels, Counter>,
    pub tls_unprobed: Family<ReasonLabels, Counter>,
    pub tls_processes: Gauge,
    pub h2_undecodable: Family<ReasonLabels, Counter>,
    pub h2_resets: Family<ResetLabels, Counter>,
}

/// Who reset an HTTP/2 stream, and with which error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResetLabels {
    /// `client` or `server`.
    pub sender: String,
    pub error_code: String,
}

fn reason(r: &str) -> ReasonLabels {
    ReasonLabels { reason: r.to_string() }
}

impl Health {
    pub fn register(registry: &mut Registry) -> Self {
        let h = Health {
            events_received: Counter::default(),
            events_lost: Counter::default(),
            events_undecodable: Counter::default(),
            unparsed: Family::default(),
            inferred: Family::default(),
            unread: Family::default(),
            kernel_skipped: Family::default(),
            connections_classified: Family::default(),
            other_protocol: Family::default(),
            map_write_errors: Family::default(),
            scrape_accept_errors: Counter::default(),
            scrape_refused: Family::default(),
            web_config_reload_failures: Counter::default(),
            connections_tracked: Gauge::default(),
            map_entries: Family::default(),
            map_capacity: Family::default(),
            targets: Gauge::default(),
            target_attaches: Counter::default(),
            target_exits: Counter::default(),
            services_forgotten: Counter::default(),
            routes_folded: Counter::default(),
            open_connections: Default::default(),
            paired: Family::default(),
            kernel_measured_events: Counter::default(),
            aggregates_full: Counter::default(),
            route_keys: Counter::default(),
            tx_waits: Counter::default(),
            arrivals_full: Counter::default(),
            tx_fallback: Family::default(),
            tx_waiting: Gauge::default(),
            tls_unmeasured: Family::default(),
            tls_unprobed: Family::default(),
            tls_processes: Gauge::default(),
            h2_undecodable: Family::default(),
            h2_resets: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("redprobe");
        let counters = [
            ("events_received", "Events read from the kernel ring buffer", &h.events_received),
            (
                "events_lost",
                "Events the kernel could not queue because the ring buffer was full (their connections are resynchronised)",
                &h.events_lost,
            ),
            ("events_undecodable", "Ring buffer records of unknown kind or size", &h.events_undecodable),
            (
                "scrape_accept_errors",
                "Connections to /metrics that could not be accepted (for example out of file descriptors); the agent backs off and goes on",
                &h.scrape_accept_errors,
            ),
            (
                "target_attaches",
                "Processes that became targets (given or selected processes and their children)",
                &h.target_attaches,
            ),
            ("target_exits", "Measured processes that exited", &h.target_exits),
            (
                "services_forgotten",
                "Services (a name with its container and pod) whose series were removed after --forget-after without a process: containers and pods that went away",
                &h.services_forgotten,
            ),
            (
                "routes_folded",
                "Requests reported as http_route=\"_other\" because --max-routes distinct routes were already seen for their service",
                &h.routes_folded,
            ),
            (
                "kernel_measured_events",
                "Requests the kernel paired and timed but sent one by one instead of aggregating (their route was not known yet, its aggregate map was full, or their last bytes went out after the server's last write returned)",
                &h.kernel_measured_events,
            ),
            (
                "kernel_aggregate_map_full",
                "Requests the kernel could not aggregate because its aggregate map (AGG) was full; each was sent as an event instead and is counted in the metrics all the same",
                &h.aggregates_full,
            ),
            (
                "responses_waited_for_transmission",
                "Responses whose last bytes were still in the socket's send queue when the server's last write returned (a slow reader, Nagle, cork): they end when those bytes go out",
                &h.tx_waits,
            ),
            (
                "arrival_map_full",
                "Batches of bytes arriving on a target's port whose arrival could not be stamped because the kernel's ARRIVALS map (sized by --max-connections) was full: their requests start at their read",
                &h.arrivals_full,
            ),
            (
                "route_keys",
                "Path keys the agent routed for the kernel (each is one path the kernel sent once, then labels by itself)",
                &h.route_keys,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        let by_reason = [
            (
                "requests_unparsed",
                "Bytes on server connections that could not be measured as requests, by reason",
                &h.unparsed,
            ),
            (
                "responses_inferred",
                "Responses whose end was inferred because their framing headers were not captured, by reason",
                &h.inferred,
            ),
            (
                "requests_unread",
                "Requests measured by their response alone (status, duration), their head beyond the capture window: labelled http_route=\"_unknown\", http_request_method=\"_OTHER\"",
                &h.unread,
            ),
            (
                "responses_end_at_write",
                "Responses whose last bytes were unsent when the server's last write returned, but which end at a write instead of at their transmission, by reason (wait_map_full, superseded, transmission_not_seen)",
                &h.tx_fallback,
            ),
            (
                "kernel_skipped_io",
                "Socket I/O of targets the kernel did not capture, by reason (foreign_context: io_uring worker or task_work; fd_mismatch; conn_map_full)",
                &h.kernel_skipped,
            ),
        ];
        for (name, help, family) in by_reason {
            r.register(name, help, family.clone());
        }
        r.register(
            "connections_classified",
            "Connections of targets classified by their first bytes: server (HTTP requests received), client (requests sent) or other (another protocol)",
            h.connections_classified.clone(),
        );
        r.register(
            "connections_other_protocol",
            "Connections of targets whose first bytes were not an HTTP/1.x request, by what they looked like (tls, http2, binary, not_http, empty)",
            h.other_protocol.clone(),
        );
        r.register(
            "map_write_errors",
            "Writes of the agent to a kernel map that failed, by map (the agent goes on; the process concerned may not be measured)",
            h.map_write_errors.clone(),
        );
        r.register(
            "responses_waiting_for_transmission",
            "Responses the agent measured that wait for their last bytes to go out",
            h.tx_waiting.clone(),
        );
        r.register(
            "connections_tracked",
            "Connections the agent is pairing requests on",
            h.connections_tracked.clone(),
        );
        r.register(
            "scrape_refused",
            "Connections to /metrics refused by --web.config.file, by reason (tls_handshake: no or a bad client certificate, or not TLS; unauthorized: no or wrong basic auth)",
            h.scrape_refused.clone(),
        );
        r.register(
            "web_config_reload_failures",
            "Changes to --web.config.file (or the files it names) that did not load: the previous configuration stays in force",
            h.web_config_reload_failures.clone(),
        );
        r.register(
            "map_entries",
            "Entries in each kernel map (CONNS: connections, TARGETS: processes)",
            h.map_entries.clone(),
        );
        r.register("map_capacity", "Capacity of each kernel map", h.map_capacity.clone());
        r.register(
            "targets",
            "Processes currently measured (given or selected processes and their children)",
            h.targets.clone(),
        );
        r.register(
            "target_open_connections",
            "Server connections of the target with HTTP traffic, currently tracked",
            h.open_connections.family.clone(),
        );
        r.register(
            "requests_paired",
            "Requests measured, by who paired them: pairer=\"kernel\" (the fast path), or pairer=\"agent\" with the reason the kernel left the connection to the agent",
            h.paired.clone(),
        );
        r.register(
            "tls_connections_unmeasured",
            "TLS connections of targets that carried no measured request, counted at their close, by reason (handshake_incomplete: the handshake failed or the client gave up; no_request; library_not_probed)",
            h.tls_unmeasured.clone(),
        );
        r.register(
            "tls_libraries_unprobed",
            "TLS libraries (files) mapped by targets that could not be probed, by reason (symbols_missing, go_unsupported, not_elf, attach_failed); their HTTPS requests are not measured",
            h.tls_unprobed.clone(),
        );
        r.register(
            "tls_probed_processes",
            "Targets whose TLS library is probed (their HTTPS requests are measured)",
            h.tls_processes.clone(),
        );
        r.register(
            "http2_connections_undecodable",
            "HTTP/2 connections the agent could not decode from some point on, counted once each, by reason (bad_preface, frame_error, header_block: the header compression state was lost, bytes_missed, events_lost, connection_table_full); their requests in flight then are in requests_unparsed_total, and so are later ones where the framing is intact (header_block); where it is not, later requests are not measured",
            h.h2_undecodable.clone(),
        );
        r.register(
            "http2_streams_reset",
            "HTTP/2 streams reset (RST_STREAM), by sender (client, server) and error code (cancel, refused_stream, ...); a request reset before its response ended is also measured with error_type=\"connection_reset\"",
            h.h2_resets.clone(),
        );
        r.register(
            "build",
            "redprobe build information",
            Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }),
        );
        for r in Reason::ALL {
            let _ = h.unparsed.get_or_create(&reason(r.label()));
        }
        for r in Inference::ALL {
            let _ = h.inferred.get_or_create(&reason(r.label()));
        }
        let _ = h.unread.get_or_create(&reason(Reason::OutsideCaptureWindow.label()));
        for r in KernelSkip::ALL {
            let _ = h.kernel_skipped.get_or_create(&reason(r.label()));
        }
        for r in TxFallback::ALL {
            let _ = h.tx_fallback.get_or_create(&reason(r.label()));
        }
        let _ = h.paired.get_or_create(&PairedLabels::of(PairedBy::Kernel));
        for r in SlowReason::ALL {
            let _ = h.paired.get_or_create(&PairedLabels::of(PairedBy::Agent(r)));
        }
        for role in ROLES {
            let _ = h.connections_classified.get_or_create(&RoleLabels { role: role.to_string() });
        }
        for r in TlsUnmeasured::ALL {
            let _ = h.tls_unmeasured.get_or_create(&reason(r.label()));
        }
        for r in crate::tls_libs::Unprobeable::ALL {
            let _ = h.tls_unprobed.get_or_create(&reason(r.label()));
        }
        for r in crate::reason::H2Undecodable::ALL {
            let _ = h.h2_undecodable.get_or_create(&reason(r.label()));
        }
        for p in Protocol::ALL {
            let _ = h.other_protocol.get_or_create(&ProtocolLabels { protocol: p.label().to_string() });
        }
        h
    }

    pub fn tls_unmeasured(&self, r: TlsUnmeasured) {
        self.tls_unmeasured.get_or_create(&reason(r.label())).inc();
    }

    pub fn tls_unprobed(&self, r: crate::tls_libs::Unprobeable) {
        self.tls_unprobed.get_or_create(&reason(r.label())).inc();
    }

    pub fn h2_undecodable(&self, r: crate::reason::H2Undecodable) {
        self.h2_undecodable.get_or_create(&reason(r.label())).inc();
    }

    pub fn h2_reset(&self, by_client: bool, code: &'static str) {
        let sender = if by_client { "client" } else { "server" };
        self.h2_resets.get_or_create(&ResetLabels { sender: sender.to_string(), error_code: code.to_string() }).inc();
    }

    pub fn unparsed(&self, r: Reason) {
        self.unparsed.get_or_create(&reason(r.label())).inc();
    }

    pub fn paired(&self, by: PairedBy, n: u64) {
        self.paired.get_or_create(&PairedLabels::of(by)).inc_by(n);
    }

    pub fn unread(&self, r: Reason) {
        self.unread.get_or_create(&reason(r.label())).inc();
    }

    pub fn inferred(&self, r: Inference) {
        self.inferred.get_or_create(&reason(r.label())).inc();
    }

    pub fn tx_fallback(&self, r: TxFallback, n: u64) {
        self.tx_fallback.get_or_create(&reason(r.label())).inc_by(n);
    }

    pub fn kernel_skipped(&self, r: KernelSkip, n: u64) {
        self.kernel_skipped.get_or_create(&reason(r.label())).inc_by(n);
    }

    /// `role`: one of [`ROLES`].
    pub fn classified(&self, role: &'static str, n: u64) {
        self.connections_classified.get_or_create(&RoleLabels { role: role.to_string() }).inc_by(n);
    }

    /// A connection that carried another protocol (it is also a connection of role "other").
    pub fn other_protocol(&self, p: Protocol) {
        self.other_protocol.get_or_create(&ProtocolLabels { protocol: p.label().to_string() }).inc();
        self.classified(ROLE_OTHER, 1);
    }

    pub fn map_write_failed(&self, map: &str) {
        self.map_write_errors.get_or_create(&MapLabels { map: map.to_string() }).inc();
    }

    pub fn set_map(&self, map: &str, entries: i64, capacity: i64) {
        let labels = MapLabels { map: map.to_string() };
        self.map_entries.get_or_create(&labels).set(entries);
        self.map_capacity.get_or_create(&labels).set(capacity);
    }
}
