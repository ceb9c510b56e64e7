//! Every socket syscall a server may use, each in a known connection: reads with recv,
//! recvmsg, readv (a 2-byte first iovec) and read; writes with send, sendmsg, writev (the
//! head split over two iovecs), write, sendfile and splice. 24 connections cover every
//! (reader, writer) pair; each is counted exactly.
use anyhow::Result;
use testkit::{
    client::Conn,
    procs::{Agent, Server, workspace_root},
    workload::{Workload, assert_exact},
};

#[test]
fn every_read_and_write_syscall_is_counted_exactly() -> Result<()> {
    let python = testkit::servers::python();
    let mut cmd = std::process::Command::new(python);
    cmd.arg(workspace_root().join("tests/servers/syscalls.py"));
    let server = Server::start(cmd)?;
    let agent = Agent::attach(server.pid())?;
    let mut w = Workload::new(&testkit::client::Endpoint::v4(server.port));
    for i in 0..24 {
        let mut c = Conn::open(server.port)?;
        for path in [format!("/conn/{i}"), "/hello".to_string()] {
            let r = c.get(&path)?;
            assert_eq!(r.body, format!("ok {path}\n").into_bytes(), "connection {i}");
            w.record("GET", if path == "/hello" { "/hello" } else { "/conn/{id}" }, &r);
        }
    }
    assert_exact(&agent, &w, "every read/write syscall")?;
    Ok(())
}
