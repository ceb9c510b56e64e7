//! A paced HTTP/1.1 load generator for measure 6 (wrk2 is not in Debian): keep-alive
//! connections, a fixed request rate, and an exact count of the requests that completed.
//!
//! Each thread owns a few connections and works in batches: it writes one request on
//! each connection, then reads each response to its end (Content-Length), then waits
//! for the next batch's due time. Pacing is per batch, on the schedule start + n / rate,
//! so a late batch is followed by early ones until the schedule is met again.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub struct Plan {
    pub addr: SocketAddr,
    pub path: &'static str,
    /// Requests per second over all threads; None = as fast as possible.
    pub rate: Option<f64>,
    pub seconds: f64,
    pub threads: usize,
    pub connections_per_thread: usize,
    /// CPU to pin the threads to.
    pub cpu: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
pub struct Done {
    /// Requests sent and answered (every request of a batch is answered before the next).
    pub requests: u64,
    pub seconds: f64,
}

impl Done {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

pub fn run(plan: &Plan) -> Result<Done> {
    let start = Instant::now();
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..plan.threads).map(|_| s.spawn(|| thread(plan, start))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bail!("load thread panicked"))).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut requests = 0;
    for r in results {
        requests += r?;
    }
    Ok(Done { requests, seconds })
}

fn thread(plan: &Plan, start: Instant) -> Result<u64> {
    if let Some(cpu) = plan.cpu {
        let _ = super::nginx::pin(0, cpu); // best effort: unpinned, the generator still runs
    }
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", plan.path, plan.addr);
    let mut conns = (0..plan.connections_per_thread)
        .map(|_| {
            let s = TcpStream::connect(plan.addr).with_context(|| format!("connecting to {}", plan.addr))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok(Reader { stream: s, buf: Vec::with_capacity(4096) })
        })
        .collect::<Result<Vec<_>>>()?;
    let per_thread = plan.rate.map(|r| r / plan.threads as f64);
    let end = start + Duration::from_secs_f64(plan.seconds);
    let mut done: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if let Some(rate) = per_thread {
            let due = start + Duration::from_secs_f64(done as f64 / rate);
            if due > now {
                if due >= end {
                    break;
                }
                std::thread::sleep(due - now);
            }
        }
        for c in &mut conns {
            c.stream.write_all(request.as_bytes())?;
        }
        for c in &mut conns {
            c.response()?;
        }
        done += conns.len() as u64;
    }
    Ok(done)
}

struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    /// Reads one response (head + Content-Length body) and drops it from the buffer.
    fn response(&mut self) -> Result<()> {
        loop {
            if let Some(len) = complete_response(&self.buf)? {
                self.buf.drain(..len);
                return Ok(());
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The length of the complete response at the start of `buf`, if it is all there.
fn complete_response(buf: &[u8]) -> Result<Option<usize>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    if !head.starts_with("HTTP/1.1 2") {
        bail!("unexpected response: {}", head.lines().next().unwrap_or(""));
    }
    let body: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok()).flatten()
        })
        .context("response without Content-Length")?;
    Ok((buf.len() >= head_end + body).then_some(head_end + body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_response() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        assert_eq!(complete_response(r).unwrap(), Some(41));
        assert_eq!(complete_response(&r[..40]).unwrap(), None);
        assert_eq!(complete_response(b"HTTP/1.1 200 OK\r\nContent-").unwrap(), None);
        assert!(complete_response(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n").is_err());
    }
}
