//! gRPC servers (grpcio's C core, and @grpc/grpc-js on Node's http2) measured per call,
//! against the client's own counts: unary and server-streaming calls that return OK and
//! calls that fail with codes, from the trailers and from trailers-only responses.
use std::collections::BTreeMap;

use anyhow::Result;
use testkit::{
    h2::{GrpcCounts, grpc_client},
    procs::Agent,
    scrape::Metrics,
    servers::{RealServer, grpc_node, grpc_python},
};

const SERVICE: &str = "redprobe.test.Echo";
const PLAN: &str = "Unary:ok=20 Unary:code:5=3 Unary:code:13=2 ServerStream:n:3=4 ServerStream:n:2,code:13=2 \
                    ServerStream:n:0,code:9=1";

/// rpc_method -> code -> calls in `rpc_server_call_duration_seconds`.
fn rpc_counts(m: &Metrics) -> GrpcCounts {
    let mut out: GrpcCounts = BTreeMap::new();
    for s in m.series("rpc_server_call_duration_seconds_count") {
        if s.value > 0.0 {
            assert_eq!((s.label("rpc_system"), s.label("rpc_service")), ("grpc", SERVICE), "{s:?}");
            let code = s.label("rpc_grpc_status_code").parse().unwrap_or(u32::MAX);
            *out.entry(s.label("rpc_method").to_string()).or_default().entry(code).or_insert(0) += s.value as u64;
        }
    }
    out
}

fn calls(server: RealServer) -> Result<()> {
    let agent = Agent::attach(server.pid())?;
    let truth = grpc_client(&server.endpoint.to_string(), PLAN)?;
    let total: u64 = truth.values().flat_map(|c| c.values()).sum();
    assert_eq!(total, 32, "{}: the client made its plan: {truth:?}", server.name);
    let m = agent.wait_metrics(&format!("{total} gRPC calls of {}", server.name), |m| {
        rpc_counts(m).values().flat_map(|c| c.values()).sum::<u64>() >= total
    })?;
    assert_eq!(rpc_counts(&m), truth, "{}: the agent's gRPC calls against the client's", server.name);
    // Each call is an HTTP/2 request too, under its path.
    for method in ["Unary", "ServerStream"] {
        let route = format!("/{SERVICE}/{method}");
        let calls: u64 = truth[method].values().sum();
        let counted = m.sum(
            "http_server_request_duration_seconds_count",
            &[("http_route", &route), ("http_request_method", "POST"), ("network_protocol_version", "2")],
        );
        assert_eq!(counted, calls as f64, "{}: {route} as HTTP requests", server.name);
    }
    assert_eq!(m.sum("redprobe_requests_unparsed_total", &[]), 0.0);
    assert_eq!(m.sum("redprobe_http2_connections_undecodable_total", &[]), 0.0);
    Ok(())
}

#[test]
fn grpc_python_unary_and_server_streaming() -> Result<()> {
    calls(grpc_python()?)
}

#[test]
fn grpc_node_unary_and_server_streaming() -> Result<()> {
    calls(grpc_node()?)
}
