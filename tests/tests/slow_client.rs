//! Durations stay right to the last byte: a 10 MB response to a client that reads slowly
//! (a 64 KB receive buffer, about 4 MB/s) is timed until its last byte left the server,
//! whether the server writes it in many writes (Python) or with sendfile (nginx). The
//! server's last write returns while up to a send buffer (4 MB here: a second) is still
//! queued; timed to that write, the probe saw 65-75 % of the client's time. A peer tool
//! reports ~10 ms for a 30 s sendfile transfer.
use std::{
    io::{Read, Write},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use testkit::{
    client::Stream,
    procs::{Agent, Server},
    servers::{Bind, NginxSite, nginx},
};

const SIZE: usize = 10 << 20;
/// The client reads this much, then pauses; about 4 MB/s.
const STEP: usize = 64 << 10;
const PAUSE: Duration = Duration::from_millis(16);

/// Sends `GET path`, reads the 10 MB response slowly; returns the client's elapsed time.
fn slow_get(port: u16, path: &str) -> Result<Duration> {
    let mut s = Stream::connect(&testkit::client::Endpoint::v4(port))?;
    if let Stream::Tcp(t) = &s {
        let rcvbuf: libc::c_int = STEP as libc::c_int;
        let rc = unsafe {
            libc::setsockopt(t.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf as *const _ as *const _, 4)
        };
        ensure!(rc == 0, "SO_RCVBUF");
    }
    let start = Instant::now();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut got = 0usize;
    let mut buf = vec![0u8; STEP];
    loop {
        let mut in_step = 0;
        while in_step < STEP {
            let n = s.read(&mut buf[in_step..])?;
            if n == 0 {
                break;
            }
            in_step += n;
        }
        got += in_step;
        if in_step < STEP {
            break;
        }
        std::thread::sleep(PAUSE); // the slow reader: this is the workload, not a wait
    }
    ensure!(got > SIZE, "read only {got} bytes");
    Ok(start.elapsed())
}

fn check(agent: &Agent, route: &str, client: Duration, server: &str) -> Result<()> {
    let m = agent.wait_metrics("the slow response", |m| {
        m.sum("http_server_request_duration_seconds_count", &[("http_route", route)]) == 1.0
    })?;
    let probe = m.sum("http_server_request_duration_seconds_sum", &[("http_route", route)]);
    let client = client.as_secs_f64();
    // The last byte leaves the server when the client has read all but its receive buffer
    // (64 KB, 16 ms at this rate); the client then reads that too.
    println!("{server}: 10 MB to a slow reader: client {client:.3} s, probe {probe:.3} s ({:.3})", probe / client);
    assert!(probe >= 0.95 * client, "{server}: probe duration {probe:.3} s < 95 % of the client's {client:.3} s");
    assert!(probe <= client, "{server}: probe duration {probe:.3} s > client {client:.3} s");
    assert_eq!(
        m.sum("redprobe_responses_waited_for_transmission_total", &[]),
        1.0,
        "{server}: the response's last bytes were queued when its last write returned"
    );
    Ok(())
}

#[test]
fn slow_reader_python_many_writes() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let client = slow_get(server.port, &format!("/big?kb={}", SIZE >> 10))?;
    check(&agent, "/big", client, "python http.server")
}

#[test]
fn slow_reader_nginx_sendfile() -> Result<()> {
    let big = vec![b'z'; SIZE];
    let files = [("big.bin", &big[..])];
    let server = nginx(Bind::V4, &NginxSite { workers: 1, files: &files, ..Default::default() })?;
    let agent = Agent::attach(server.pid())?;
    let port = server.endpoint.port().unwrap_or(0);
    let client = slow_get(port, "/static/big.bin")?;
    check(&agent, "/static/big.bin", client, "nginx sendfile")
}
