//! uvicorn (asyncio) serving the Django app through ASGI: one process, many connections
//! multiplexed on an event loop; keep-alive, pipelining, streaming and uploads.
use anyhow::Result;
use testkit::{
    procs::Agent,
    servers::{Bind, uvicorn},
    workload::{Workload, assert_exact},
};

fn run(bind: Bind) -> Result<()> {
    let server = uvicorn(bind)?;
    let agent = Agent::start(&["--pid".into(), server.pid().to_string()])?;
    let mut w = Workload::new(&server.endpoint);
    w.basics(true)?;
    w.fresh_connections()?;
    w.pipelined(6)?;
    w.sleeps(2, 40)?;
    w.stream(3, 20)?;
    w.big(3 * 1024)?;
    w.chunked_upload()?;
    w.expect_continue()?;
    w.no_body(true)?;
    assert_exact(&agent, &w, &format!("uvicorn ASGI ({bind:?})"))?;
    Ok(())
}

#[test]
fn uvicorn_asgi_ipv4() -> Result<()> {
    run(Bind::V4)
}

#[test]
fn uvicorn_asgi_unix_socket() -> Result<()> {
    run(Bind::Unix)
}
