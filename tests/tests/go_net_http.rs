//! Go's net/http (goroutines on an epoll netpoller, many threads): buffered writes,
//! keep-alive and pipelining, on IPv4, IPv6 and a Unix socket.
use testkit::{servers::go, workload::Mix};

testkit::full_mix_tests! { go, Mix { pipelining: true, not_modified: false };
    go_net_http_ipv4 => V4,
    go_net_http_ipv6 => V6,
    go_net_http_unix_socket => Unix,
    go_crypto_tls_https => Tls,
}
