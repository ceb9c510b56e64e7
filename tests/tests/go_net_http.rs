//! Go's net/http (goroutines on an epoll netpoller, many threads): buffered writes,
//! keep-alive and pipelining, on IPv4, IPv6 and a Unix socket.
use anyhow::Result;
use testkit::{
    servers::{Bind, go},
    workload::{Mix, full_mix_is_counted_exactly},
};

const MIX: Mix = Mix { pipelining: true, not_modified: false };

#[test]
fn go_net_http_ipv4() -> Result<()> {
    full_mix_is_counted_exactly(&go(Bind::V4)?, MIX)
}

#[test]
fn go_net_http_ipv6() -> Result<()> {
    full_mix_is_counted_exactly(&go(Bind::V6)?, MIX)
}

#[test]
fn go_net_http_unix_socket() -> Result<()> {
    full_mix_is_counted_exactly(&go(Bind::Unix)?, MIX)
}
