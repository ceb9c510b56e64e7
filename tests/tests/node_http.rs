//! Node's `http` module (libuv): writev for heads and bodies, chunked streaming,
//! keep-alive and pipelining, on IPv4, IPv6 and a Unix socket.
use anyhow::Result;
use testkit::{
    servers::{Bind, node},
    workload::{Mix, full_mix_is_counted_exactly},
};

const MIX: Mix = Mix { pipelining: true, not_modified: false };

#[test]
fn node_http_ipv4() -> Result<()> {
    full_mix_is_counted_exactly(&node(Bind::V4)?, MIX)
}

#[test]
fn node_http_ipv6() -> Result<()> {
    full_mix_is_counted_exactly(&node(Bind::V6)?, MIX)
}

#[test]
fn node_http_unix_socket() -> Result<()> {
    full_mix_is_counted_exactly(&node(Bind::Unix)?, MIX)
}
