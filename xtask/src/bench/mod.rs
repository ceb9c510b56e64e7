//! `cargo xtask bench`: the overhead budget, every ratio measured side by side in one run.
//!
//! | # | module | measure |
//! |---|---|---|
//! | 1 | `non_target` | ns added per call for a process that is not a target |
//! | 2, 3, 2u | `nginx` | nginx `return 200`, a 4 KB sendfile and `/users/<random id>`, saturated by wrk: ratios with/without |
//! | 4 | `django` | gunicorn + Django: redprobe and django-prometheus, each ÷ without |
//! | 5 | `agent_cost` | the agent's CPU per 10k requests and peak RSS, under measure 2 |
//! | 6 | `capacity` (+ `loadgen`) | the highest rate with no event lost |
//! | P | `page` | the `/metrics` page at the label caps: bytes and render time, text and protobuf |
//! | H, - | `bpf_stats` | what redprobe adds per nginx request (BPF + agent) as a share of nginx's own CPU; each program's run_time_ns / run_cnt |
//!
//! `stats` holds the interleaved A/B runner, medians and spreads; `wrk` runs and parses
//! wrk. The bench prints; it never fails on a missed goal.
mod agent_cost;
mod bpf_stats;
mod capacity;
mod django;
mod client;
mod http2;
mod https;
mod loadgen;
mod nginx;
mod non_target;
mod page;
mod stats;
mod wrk;

use std::time::Instant;

use anyhow::{Result, bail};
use testkit::{client::Endpoint, servers::RealServer};
use xtask::{REDPROBE_PYTHON, is_root, python_venv};

use self::{nginx::Nginx, wrk::Load};

/// `cargo xtask bench` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Counted rounds of each side-by-side measure (after one warm-up round).
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// Seconds of each wrk run (whole seconds).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Only these measures, comma-separated: 1, 2 (also 3 and 5), 4, 6, 7 (HTTPS), 8 (HTTP/2),
    /// 9 (outgoing calls), bpf, page.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Do not pin nginx's worker and the load generator to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
}

/// The URL of `path` on `server` (the bench's servers listen on TCP), for wrk.
pub fn url(server: &RealServer, path: &str) -> String {
    match &server.endpoint {
        Endpoint::Tcp(a) => format!("http://{a}{path}"),
        Endpoint::Tls(a) => format!("https://{a}{path}"),
        Endpoint::Unix(_) => unreachable!("the bench's {} listens on TCP", server.name),
    }
}

/// One line of the table.
pub struct Row {
    pub id: &'static str,
    pub measure: String,
    pub without: String,
    pub with: String,
    /// The ratio, or the ns added.
    pub result: String,
    pub spread: String,
    pub goal: String,
    /// None: informational, no goal.
    pub met: Option<bool>,
}

impl Row {
    /// A side-by-side ratio: the medians of both sides (`digits` decimals, then `unit`),
    /// their ratio, the spread of the per-round ratios, and the goal (its text, met).
    /// The ns a saturated server spends more per request with the agent: 1/rps with − 1/rps
    /// without (the server is the bottleneck).
    pub fn added_ns(id: &'static str, measure: &str, rps: &stats::Paired) -> Row {
        let (base, with) = (1e9 / rps.base_median(), 1e9 / rps.with_median());
        Row {
            id,
            measure: measure.into(),
            without: format!("{base:.0} ns"),
            with: format!("{with:.0} ns"),
            result: format!("+{:.0} ns", with - base),
            spread: "-".into(),
            goal: "-".into(),
            met: None,
        }
    }

    pub fn ratio(id: &'static str, measure: &str, p: &stats::Paired, unit: &str, digits: usize, goal: Option<(&str, bool)>) -> Row {
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
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<3} {:<50} {:>11} {:>11} {:>17} {:>17} {:>18} {:>4}",
        "#", "measure", "without", "with", "ratio / added", "spread", "goal", "met"
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<3} {:<50} {:>11} {:>11} {:>17} {:>17} {:>18} {:>4}",
            r.id, r.measure, r.without, r.with, r.result, r.spread, r.goal, met
        );
    }
}

fn cost_rows(cost: &agent_cost::AgentCost, ceiling_rps: f64) -> (Vec<Row>, String) {
    let (per_10k, (lo, hi)) = cost.per_10k();
    let rss_mb = cost.peak_rss_bytes as f64 / 1e6;
    let rows = vec![
        Row {
            id: "5",
            measure: "agent CPU at 10k req/s (CPU-s per 10k req), % core".into(),
            without: "-".into(),
            with: "-".into(),
            result: format!("{:.2} %", per_10k * 100.0),
            spread: format!("{:.2}..{:.2} %", lo * 100.0, hi * 100.0),
            goal: "<= 0.5 %".into(),
            met: Some(per_10k <= 0.005),
        },
        Row {
            id: "5",
            measure: "agent peak RSS (VmHWM)".into(),
            without: "-".into(),
            with: "-".into(),
            result: format!("{rss_mb:.1} MB"),
            spread: "max of runs".into(),
            goal: "<= 30 MB".into(),
            met: Some(rss_mb <= 30.0),
        },
    ];
    let note = format!(
        "measure 5: while nginx was saturated (about {ceiling_rps:.0} req/s without the agent) the agent used \
         {:.0} % of one core",
        cost.busy_share() * 100.0
    );
    (rows, note)
}

pub fn bench(opts: &Options) -> Result<()> {
    crate::build::build()?;
    if !is_root() {
        bail!("the bench loads eBPF programs: run it as root");
    }
    crate::setup::test_dependencies()?;
    // SAFETY: still single-threaded; the test kit reads it. The agent is $REDPROBE_BIN
    // (another build, for comparisons) or, by the test kit's default, this build's.
    unsafe { std::env::set_var(REDPROBE_PYTHON, python_venv().join("bin/python")) };
    let (started, load_before) = (Instant::now(), load_average());
    let want = |m: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == m);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pin = !opts.no_pin && cpus >= 2;
    // nginx's worker on the last CPU, the load generator on CPU 0; the agent is not pinned.
    let (worker_cpu, load_cpu) = if pin { (Some(cpus - 1), Some(0)) } else { (None, None) };
    let nginx_load = Load {
        threads: 1,
        connections: 32,
        seconds: opts.seconds,
        cpus: load_cpu.map(|c| c.to_string()),
    };
    let django_load = Load { threads: 1, connections: 4, seconds: opts.seconds, cpus: None };
    let scale = (opts.seconds / 3.0).clamp(0.1, 1.0);

    let mut rows = vec![];
    let mut notes = vec![];
    let mut bpf_lines = vec![];
    let nginx = if want("1") || want("2") || want("6") || want("7") || want("bpf") {
        Some(Nginx::start(worker_cpu)?)
    } else {
        None
    };
    if let Some(nginx) = &nginx {
        if want("1") {
            rows.extend(non_target::measure(nginx.pid(), opts.rounds, scale)?);
        }
        if want("2") {
            let r = nginx::measure(nginx, &nginx_load, opts.rounds)?;
            rows.extend(r.rows);
            let (cost, note) = cost_rows(&r.cost, r.ceiling_rps);
            rows.extend(cost);
            notes.extend(r.notes);
            notes.push(note);
        }
    }
    if want("4") {
        rows.extend(django::measure(&django_load, opts.rounds.saturating_sub(1).max(1))?);
    }
    if let Some(nginx) = &nginx
        && want("7")
    {
        let tls = https::Https::start(worker_cpu)?;
        rows.extend(https::measure(&tls, nginx.pid(), &nginx_load, opts.rounds)?);
    }
    if want("8") {
        let h2 = http2::Http2::start(worker_cpu)?;
        rows.extend(http2::measure(&h2, opts.seconds, load_cpu, opts.rounds)?);
    }
    if want("9") {
        let calls = client::Calls::start(worker_cpu)?;
        let load = Load { threads: 1, connections: 8, seconds: opts.seconds, cpus: load_cpu.map(|c| c.to_string()) };
        rows.extend(client::measure(&calls, &load, opts.rounds)?);
    }
    if let Some(nginx) = &nginx {
        if want("6") {
            let (r, n) = capacity::measure(nginx, opts.seconds, load_cpu)?;
            rows.extend(r);
            notes.extend(n);
        }
        if want("bpf") {
            let (headline, lines) = bpf_stats::measure(nginx, &nginx_load)?;
            rows.splice(0..0, headline);
            bpf_lines = lines;
        }
    }
    if want("page") {
        rows.extend(page::measure()?);
    }

    println!();
    println!(
        "redprobe overhead budget ({}; load average {load_before} before, {} after: other load widens the spreads)",
        machine(),
        load_average()
    );
    print_table(&rows);
    println!();
    println!("How it was measured:");
    println!(
        "- {} counted rounds per side-by-side measure (measure 4: {}), after one warm-up round; the order of the sides \
         alternates each round. Values are medians; spread is the min..max of the per-round ratios (ns differences \
         for measure 1).",
        opts.rounds,
        opts.rounds.saturating_sub(1).max(1)
    );
    println!(
        "- \"without\" = no agent running; \"with\" = an agent attached by PID to the same, still running server \
         (measure 1: attached to nginx while this process runs the loops). Same binary, same settings."
    );
    println!(
        "- nginx: 1 worker{}; load: {} on /hello and on a 4 KB file (sendfile). gunicorn + Django: 2 sync workers, {} on /hello.",
        match worker_cpu {
            Some(c) => format!(" pinned to CPU {c}"),
            None => String::new(),
        },
        nginx_load.describe(),
        django_load.describe()
    );
    println!("- measure 6: a paced keep-alive load generator (4 threads x 8 connections), {}-s steps.", opts.seconds);
    for n in &notes {
        println!("- {n}");
    }
    if !bpf_lines.is_empty() {
        println!();
        println!("BPF time per program (kernel.bpf_stats_enabled=1 only during this phase):");
        for l in &bpf_lines {
            println!("  {l}");
        }
    }
    println!();
    println!("bench took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The 1-minute load average, to show how busy the machine was.
fn load_average() -> String {
    let raw = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    raw.split_whitespace().next().unwrap_or("?").to_string()
}

/// Kernel release and CPU count, for the table's title.
fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("kernel {}, {cpus} CPUs", kernel.trim())
}
