//! Node's `http` module (libuv): writev for heads and bodies, chunked streaming,
//! keep-alive and pipelining, on IPv4, IPv6 and a Unix socket.
use anyhow::Result;
use testkit::{
    procs::Agent,
    servers::{Bind, node},
    workload::{Workload, assert_exact},
};

fn run(bind: Bind) -> Result<()> {
    let server = node(bind)?;
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
    assert_exact(&agent, &w, &format!("node http ({bind:?})"))?;
    Ok(())
}

#[test]
fn node_http_ipv4() -> Result<()> {
    run(Bind::V4)
}

#[test]
fn node_http_ipv6() -> Result<()> {
    run(Bind::V6)
}

#[test]
fn node_http_unix_socket() -> Result<()> {
    run(Bind::Unix)
}
