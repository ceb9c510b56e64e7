//! Go's net/http (goroutines on an epoll netpoller, many threads): buffered writes,
//! keep-alive and pipelining, on IPv4, IPv6 and a Unix socket.
use anyhow::Result;
use testkit::{
    procs::Agent,
    servers::{Bind, go},
    workload::{Workload, assert_exact},
};

fn run(bind: Bind) -> Result<()> {
    let server = go(bind)?;
    let agent = Agent::start(&["--pid".into(), server.pid().to_string()])?;
    let mut w = Workload::new(&server.endpoint);
    w.basics(true)?;
    w.fresh_connections()?;
    w.pipelined(6)?;
    w.sleeps(2, 40)?;
    w.stream(4, 20)?;
    w.big(3 * 1024)?;
    w.chunked_upload()?;
    w.expect_continue()?;
    w.no_body(false)?;
    assert_exact(&agent, &w, &format!("go net/http ({bind:?})"))?;
    Ok(())
}

#[test]
fn go_net_http_ipv4() -> Result<()> {
    run(Bind::V4)
}

#[test]
fn go_net_http_ipv6() -> Result<()> {
    run(Bind::V6)
}

#[test]
fn go_net_http_unix_socket() -> Result<()> {
    run(Bind::Unix)
}
