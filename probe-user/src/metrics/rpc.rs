//! OpenTelemetry's RPC server semantic conventions for gRPC, as Prometheus renders them:
//! `rpc_server_call_duration_seconds`. The HTTP/2 stream of each call is in the HTTP
//! families too.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::family::Family,
    registry::{Registry, Unit},
};

use super::{
    histogram::{Buckets, OnScheme},
    scheme::Scheme,
};
use crate::labels::Service;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Always `grpc`.
    pub rpc_system: String,
    pub rpc_service: String,
    pub rpc_method: String,
    /// Empty (absent) when the call ended without a `grpc-status`.
    pub rpc_grpc_status_code: String,
    #[prometheus(flatten)]
    pub service: Service,
}

pub struct RpcServer {
    duration: Family<RpcLabels, Buckets, OnScheme>,
    /// The label sets made, so that a forgotten service's can be removed.
    made: Mutex<HashSet<RpcLabels>>,
}

impl RpcServer {
    pub fn register(registry: &mut Registry, durations: Arc<Scheme>) -> Self {
        let m = RpcServer { duration: Family::new_with_constructor(OnScheme(durations)), made: Default::default() };
        registry.register_with_unit(
            "rpc_server_call_duration",
            "Duration of gRPC server calls: from the arrival of the call's HEADERS to the write of its trailers (or of the reset that ended it), by gRPC service, method and status code",
            Unit::Seconds,
            m.duration.clone(),
        );
        m
    }

    pub fn observe(&self, labels: &RpcLabels, duration_ns: u64) {
        self.duration.get_or_create(labels).observe(duration_ns);
        if let Ok(mut made) = self.made.lock()
            && !made.contains(labels)
        {
            made.insert(labels.clone());
        }
    }

    /// Removes a forgotten service's series.
    pub fn forget(&self, service: &Service) {
        let Ok(mut made) = self.made.lock() else { return };
        made.retain(|l| {
            let gone = l.service == *service;
            if gone {
                self.duration.remove(l);
            }
            !gone
        });
    }
}
