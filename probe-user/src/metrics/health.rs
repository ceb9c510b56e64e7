//! The agent's own health, under the `redprobe_` prefix.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service_name: String,
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
    pub kernel_skipped: Family<ReasonLabels, Counter>,
    pub connections_classified: Family<RoleLabels, Counter>,
    pub connections_tracked: Gauge,
    pub map_entries: Family<MapLabels, Gauge>,
    pub map_capacity: Family<MapLabels, Gauge>,
    pub targets: Gauge,
    pub target_attaches: Counter,
    pub target_exits: Counter,
    pub routes_folded: Counter,
    pub open_connections: super::SnapshotGauge<ServiceLabels>,
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
            kernel_skipped: Family::default(),
            connections_classified: Family::default(),
            connections_tracked: Gauge::default(),
            map_entries: Family::default(),
            map_capacity: Family::default(),
            targets: Gauge::default(),
            target_attaches: Counter::default(),
            target_exits: Counter::default(),
            routes_folded: Counter::default(),
            open_connections: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("redprobe");
        r.register("events_received", "Events read from the kernel ring buffer", h.events_received.clone());
        r.register(
            "events_lost",
            "Events the kernel could not queue because the ring buffer was full (their connections are resynchronised)",
            h.events_lost.clone(),
        );
        r.register("events_undecodable", "Ring buffer records of unknown kind or size", h.events_undecodable.clone());
        r.register(
            "requests_unparsed",
            "Bytes on server connections that could not be measured as requests, by reason",
            h.unparsed.clone(),
        );
        r.register(
            "responses_inferred",
            "Responses whose end was inferred because their framing headers were not captured, by reason",
            h.inferred.clone(),
        );
        r.register(
            "kernel_skipped_io",
            "Socket I/O of targets the kernel did not capture, by reason (foreign_context: io_uring worker or task_work; fd_mismatch; conn_map_full)",
            h.kernel_skipped.clone(),
        );
        r.register(
            "connections_classified",
            "Connections of targets classified by their first bytes: server (HTTP requests received) or client (requests sent)",
            h.connections_classified.clone(),
        );
        r.register("connections_tracked", "Connections the agent is pairing requests on", h.connections_tracked.clone());
        r.register("map_entries", "Entries in each kernel map (CONNS: connections, TARGETS: processes)", h.map_entries.clone());
        r.register("map_capacity", "Capacity of each kernel map", h.map_capacity.clone());
        r.register("targets", "Processes currently measured (given or selected processes and their children)", h.targets.clone());
        r.register("target_attaches", "Processes that became targets (given or selected processes and their children)", h.target_attaches.clone());
        r.register("target_exits", "Measured processes that exited", h.target_exits.clone());
        r.register(
            "routes_folded",
            "Requests reported as http_route=\"_other\" because --max-routes distinct routes were already seen for their service",
            h.routes_folded.clone(),
        );
        r.register(
            "target_open_connections",
            "Server connections of the target with HTTP traffic, currently tracked",
            h.open_connections.family.clone(),
        );
        r.register("build", "redprobe build information", Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }));
        h
    }

    pub fn unparsed(&self, r: &str) {
        self.unparsed.get_or_create(&reason(r)).inc();
    }

    pub fn inferred(&self, r: &str) {
        self.inferred.get_or_create(&reason(r)).inc();
    }

    pub fn kernel_skipped(&self, r: &str, n: u64) {
        self.kernel_skipped.get_or_create(&reason(r)).inc_by(n);
    }

    pub fn classified(&self, role: &str, n: u64) {
        self.connections_classified.get_or_create(&RoleLabels { role: role.to_string() }).inc_by(n);
    }

    pub fn set_map(&self, map: &str, entries: i64, capacity: i64) {
        let labels = MapLabels { map: map.to_string() };
        self.map_entries.get_or_create(&labels).set(entries);
        self.map_capacity.get_or_create(&labels).set(capacity);
    }
}
