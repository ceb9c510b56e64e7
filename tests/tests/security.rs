//! What the agent exposes: /metrics on loopback unless told otherwise, and never a byte
//! of payload in its logs or labels beyond the bounded method, status and route.
use std::{io::Write, process::Command};

use anyhow::Result;
use testkit::{
    client::Conn,
    procs::{Agent, Server, agent_bin, free_port, pid_args},
};

#[test]
fn metrics_listen_on_loopback_by_default_and_warn_otherwise() -> Result<()> {
    let help = Command::new(agent_bin()).arg("--help").output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 127.0.0.1:9464]"), "{help}");
    let server = Server::start_python()?;
    // Every address: served, with a warning.
    let port = free_port();
    let child = Command::new(agent_bin())
        .args(["--pid", &server.pid().to_string(), "--listen", &format!("0.0.0.0:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let ready = testkit::wait_for("the agent on 0.0.0.0", std::time::Duration::from_secs(30), || {
        testkit::scrape::fetch(&format!("127.0.0.1:{port}")).ok()
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output()?;
    ready?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("served beyond loopback"), "{stderr}");
    Ok(())
}

#[test]
fn payload_never_reaches_logs_or_labels() -> Result<()> {
    const SECRET: &str = "Zq7SECRETtok3n";
    let server = Server::start_python()?;
    let mut cmd = Command::new(agent_bin());
    cmd.env("RUST_LOG", "trace");
    let agent = Agent::start_with(cmd, &pid_args(&[server.pid()]))?;
    let mut conn = Conn::open(server.port)?;
    let auth = format!("Bearer {SECRET}");
    let cookie = format!("session={SECRET}");
    let headers = [("Authorization", auth.as_str()), ("Cookie", cookie.as_str())];
    assert_eq!(conn.request("GET", &format!("/hello?token={SECRET}"), "HTTP/1.1", &headers, b"")?.status, 200);
    assert_eq!(conn.request("POST", "/echo", "HTTP/1.1", &headers, SECRET.as_bytes())?.status, 201);
    assert_eq!(conn.get(&format!("/users/{SECRET}123456#frag"))?.status, 200);
    // Bad input carrying the secret: garbage, a malformed request, a huge head.
    for bytes in [
        format!("{SECRET} not http\r\n\r\n").into_bytes(),
        format!("GET /x\0{SECRET} HTTP/1.1\r\n\r\n").into_bytes(),
        format!("GET /{SECRET}{} HTTP/1.1\r\n\r\n", "a".repeat(70_000)).into_bytes(),
    ] {
        let mut c = Conn::open(server.port)?;
        c.stream().write_all(&bytes)?;
        c.stream().shutdown(std::net::Shutdown::Write)?;
        let _ = c.read_response(false);
    }
    let m = agent.wait_metrics("the requests and the bad input", |m| {
        // The garbage is another protocol; the malformed request and the huge head are
        // unparsed requests.
        m.request_counts().values().sum::<u64>() == 3
            && m.sum("redprobe_requests_unparsed_total", &[]) == 2.0
            && m.sum("redprobe_connections_other_protocol_total", &[]) == 1.0
    })?;
    assert_eq!(m.requests("GET", 200, "/users/{id}"), 1);
    let log = agent.stderr();
    assert!(log.len() > 1000, "trace logging was on: {} bytes", log.len());
    assert!(!log.contains(SECRET), "the secret is in the agent's log:\n{log}");
    assert!(!m.text.contains(SECRET), "the secret is in /metrics:\n{}", m.text);
    let openmetrics = testkit::scrape::fetch_raw(&agent.addr, Some("application/openmetrics-text"))?.1;
    assert!(!openmetrics.contains(SECRET));
    eprintln!("{} bytes of trace log and {} bytes of /metrics, no payload", log.len(), m.text.len());
    Ok(())
}
