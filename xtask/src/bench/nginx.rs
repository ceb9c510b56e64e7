//! Measures 2 and 3 (nginx `return 200` and a 4 KB static file served with sendfile,
//! saturated by wrk), and the samples of measure 5 (the agent's CPU and memory while it
//! measures measure 2's load).
//!
//! One nginx (1 worker) runs for the whole bench. "without" = no agent running; "with" =
//! an agent attached to nginx's master PID (its worker is measured as its child). The
//! same nginx process serves both sides.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testkit::{
    client::Endpoint,
    procs::Agent,
    servers::{Bind, NginxSite, RealServer, nginx},
};

use super::{
    Row,
    agent_cost::{self, AgentCost, CpuSample},
    stats::{Paired, interleave},
    wrk::{self, Load, WrkResult},
};

pub const HELLO: &str = "/hello";
pub const STATIC_FILE: &str = "/static/4k.bin";

/// The bench's nginx and where its single worker runs.
pub struct Nginx {
    pub server: RealServer,
}

impl Nginx {
    pub fn start(pin_cpu: Option<usize>) -> Result<Self> {
        let file = vec![b'x'; 4096];
        let server = nginx(Bind::V4, &NginxSite { workers: 1, files: &[("4k.bin", &file)], ..Default::default() })
            .context("starting nginx")?;
        let worker = testkit::procs::children(server.pid()).into_iter().next().context("nginx has no worker process")?;
        if let Some(cpu) = pin_cpu {
            pin(worker, cpu)?;
        }
        Ok(Nginx { server })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    pub fn url(&self, path: &str) -> String {
        match &self.server.endpoint {
            Endpoint::Tcp(a) => format!("http://{a}{path}"),
            Endpoint::Unix(_) => unreachable!("the bench's nginx listens on TCP"),
        }
    }

    pub fn agent_args(&self) -> Vec<String> {
        vec!["--pid".into(), self.pid().to_string()]
    }
}

/// Pins `pid` (0: the calling thread) to one CPU (sched_setaffinity, as `taskset -p -c`
/// does).
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!("pinning PID {pid} to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One side of one round (what wrk and /proc measured; not a metrics sample).
struct SideRun {
    hello: WrkResult,
    file: WrkResult,
    /// The agent's CPU over the `hello` run ("with" only).
    cpu: Option<CpuSample>,
    peak_rss: u64,
    /// Requests the agent counted on /hello, events it lost ("with" only).
    counted: u64,
    lost: u64,
}

fn run_side(nginx: &Nginx, load: &Load, with_agent: bool) -> Result<SideRun> {
    let (hello_url, file_url) = (nginx.url(HELLO), nginx.url(STATIC_FILE));
    if !with_agent {
        let hello = wrk::run(load, &hello_url)?;
        let file = wrk::run(load, &file_url)?;
        return Ok(SideRun { hello, file, cpu: None, peak_rss: 0, counted: 0, lost: 0 });
    }
    let agent = Agent::start(&nginx.agent_args())?;
    let pid = agent.child.id();
    let (cpu0, t0) = (agent_cost::cpu_seconds(pid)?, Instant::now());
    let hello = wrk::run(load, &hello_url)?;
    // Let the agent drain the last events (it drains every 20 ms).
    std::thread::sleep(Duration::from_millis(100));
    let cpu = CpuSample {
        cpu_seconds: agent_cost::cpu_seconds(pid)? - cpu0,
        requests: hello.requests,
        wall_seconds: t0.elapsed().as_secs_f64(),
    };
    let file = wrk::run(load, &file_url)?;
    std::thread::sleep(Duration::from_millis(100));
    let m = agent.metrics()?;
    let counted = m.sum("http_server_request_duration_seconds_count", &[("http_route", HELLO)]) as u64;
    let lost = m.sum("redprobe_events_lost_total", &[]) as u64;
    let peak_rss = agent_cost::peak_rss_bytes(pid)?;
    agent.stop()?;
    Ok(SideRun { hello, file, cpu: Some(cpu), peak_rss, counted, lost })
}

pub struct Results {
    pub rows: Vec<Row>,
    pub cost: AgentCost,
    /// Lines for the notes under the table.
    pub notes: Vec<String>,
    /// Median requests/s without the agent (nginx's ceiling under wrk).
    pub ceiling_rps: f64,
}

pub fn measure(nginx: &Nginx, load: &Load, rounds: usize) -> Result<Results> {
    let samples = interleave("measures 2, 3, 5 (nginx)", &["without", "with"], rounds, |side| {
        run_side(nginx, load, side == 1)
    })?;
    let (without, with) = (&samples[0], &samples[1]);
    let pair = |f: fn(&SideRun) -> f64| Paired::new(without.iter().map(f).collect(), with.iter().map(f).collect());
    let hello_rps = pair(|s| s.hello.rps);
    let hello_p99 = pair(|s| s.hello.p99_us);
    let file_rps = pair(|s| s.file.rps);
    let file_p99 = pair(|s| s.file.p99_us);
    let ratio_row = |id, measure: &str, p: &Paired, unit: &str, digits: usize, goal: Option<(&str, bool)>| {
        let (lo, hi) = p.ratio_spread();
        Row {
            id,
            measure: measure.into(),
            without: format!("{:.*}{unit}", digits, p.base_median()),
            with: format!("{:.*}{unit}", digits, p.with_median()),
            result: format!("{:.3}", p.ratio()),
            spread: format!("{lo:.3}..{hi:.3}"),
            goal: goal.map(|g| g.0.to_string()).unwrap_or_else(|| "-".into()),
            met: goal.map(|g| g.1),
        }
    };
    let rows = vec![
        ratio_row("2", "nginx return 200, req/s", &hello_rps, "", 0, Some((">= 0.95", hello_rps.ratio() >= 0.95))),
        ratio_row("2", "nginx return 200, p99 latency", &hello_p99, " us", 0, Some(("<= 1.10", hello_p99.ratio() <= 1.10))),
        ratio_row("3", "nginx 4 KB static (sendfile), req/s", &file_rps, "", 0, Some((">= 0.95", file_rps.ratio() >= 0.95))),
        ratio_row("3", "nginx 4 KB static (sendfile), p99", &file_p99, " us", 0, None),
    ];
    let counted: u64 = with.iter().map(|s| s.counted).sum();
    let served: u64 = with.iter().map(|s| s.hello.requests).sum();
    let lost: u64 = with.iter().map(|s| s.lost).sum();
    let notes = vec![format!(
        "measure 2 check: the agent counted {counted} /hello requests where wrk completed {served} \
         (wrk does not count up to {} requests in flight at its end); events lost: {lost}",
        load.connections as usize * rounds
    )];
    Ok(Results {
        rows,
        cost: AgentCost {
            samples: with.iter().filter_map(|s| s.cpu).collect(),
            peak_rss_bytes: with.iter().map(|s| s.peak_rss).max().unwrap_or(0),
        },
        notes,
        ceiling_rps: hello_rps.base_median(),
    })
}
