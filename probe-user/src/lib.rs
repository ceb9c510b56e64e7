//! redprobe's pipeline, as a library: what the agent does with what the kernel sends. The
//! binary (`bin/redprobe/`) only loads the probe, chooses the targets and wires the ring
//! buffer to a [`pipeline::Pipeline`], so the tests, the fuzzer and the golden fixtures
//! drive the very code the agent runs. None of it needs a kernel.
//!
//! Data flows one way: `decode` (ring-buffer records -> events) -> `pipeline` -> `pairing`
//! (requests with responses, with `http` and `chunked`; HTTP/2 streams in `http2`) -> `metrics` (aggregation, every
//! label value made by `labels`) -> `exposition` (`/metrics`). `registry` is the one list of
//! targets and their services; `reason` names every way something can fail to be measured;
//! `proc_root` reads /proc.
pub mod chunked;
pub mod decode;
pub mod exposition;
pub mod http;
pub mod http2;
pub mod labels;
pub mod metrics;
pub mod pairing;
pub mod pipeline;
pub mod proc_root;
pub mod reason;
pub mod registry;
pub mod tls_libs;
pub mod top;
pub mod uprobe_placement;
pub mod web_config;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod wire;
