//! gunicorn + Django with sync workers, the agent given the master PID only: every worker
//! is seen, on TCP (IPv4, IPv6) and on a Unix socket, and workers forked after attach
//! (--max-requests recycling, TTIN, HUP) are picked up without counters going down.
use anyhow::Result;
use testkit::{
    procs::Agent,
    servers::{Bind, gunicorn},
    workload::{Workload, assert_exact},
};

fn full_mix(w: &mut Workload) -> Result<()> {
    w.basics(true)?;
    w.fresh_connections()?;
    w.sleeps(2, 40)?;
    w.stream(3, 20)?;
    w.big(3 * 1024)?;
    w.chunked_upload()?;
    w.expect_continue()?;
    w.no_body(true)?;
    Ok(())
}

fn run(bind: Bind) -> Result<()> {
    let server = gunicorn(bind, 2, &[], &[])?;
    let agent = Agent::start(&["--pid".into(), server.pid().to_string()])?;
    let mut w = Workload::new(&server.endpoint);
    full_mix(&mut w)?;
    assert_exact(&agent, &w, &format!("gunicorn+Django -w 2 ({bind:?})"))?;
    Ok(())
}

#[test]
fn gunicorn_django_ipv4_master_pid_sees_every_worker() -> Result<()> {
    run(Bind::V4)
}

#[test]
fn gunicorn_django_ipv6() -> Result<()> {
    run(Bind::V6)
}

#[test]
fn gunicorn_django_unix_socket() -> Result<()> {
    run(Bind::Unix)
}
