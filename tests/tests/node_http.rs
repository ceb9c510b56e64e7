//! Node's `http` module (libuv): writev for heads and bodies, chunked streaming,
//! keep-alive and pipelining, on IPv4, IPv6 and a Unix socket.
use testkit::{servers::node, workload::Mix};

testkit::full_mix_tests! { node, Mix { pipelining: true, not_modified: false };
    node_http_ipv4 => V4,
    node_http_ipv6 => V6,
    node_http_unix_socket => Unix,
    node_https => Tls,
}
