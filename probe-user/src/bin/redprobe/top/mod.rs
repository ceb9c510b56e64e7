//! `redprobe top`: reads an agent's page every interval and shows it, on a full screen
//! (`screen`) or as one plain table (`--once`, or output that is not a terminal). With
//! --pid or a selector, it first runs an agent in this process (`run::run`, on a free
//! loopback port) and reads that one, so both modes read the same page the same way.
pub mod logs;
mod screen;

use std::{
    future::Future,
    io::IsTerminal,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use probe_user::top::{fetch::Source, interval::Interval, table};

use crate::cli::{AgentArgs, Top};

/// Whether `top` prints a plain table instead of drawing a screen.
pub fn plain(top: &Top) -> bool {
    top.once || !std::io::stdout().is_terminal()
}

/// A read waits this long at least, and at most the interval beyond it.
fn read_timeout(interval: Duration) -> Duration {
    interval.max(Duration::from_secs(3))
}

/// The targets, as the command line named them.
fn describe(agent: &AgentArgs) -> String {
    let mut parts = Vec::new();
    parts.extend(agent.pids.iter().map(|p| format!("--pid {p}")));
    parts.extend(agent.ports.iter().map(|p| format!("--port {p}")));
    parts.extend(agent.exes.iter().map(|e| format!("--exe {e}")));
    parts.extend(agent.cgroups.iter().map(|c| format!("--cgroup {}", c.display())));
    parts.extend(agent.containers.iter().map(|c| format!("--container {c}")));
    parts.join(" ")
}

pub async fn run(mut top: Top, logs: Option<logs::Logs>) -> Result<()> {
    if let Some(url) = &top.url {
        let source = Source::parse(url)?;
        let name = source.url();
        return show(&top, source, name, logs, std::future::pending()).await;
    }
    if top.agent.web_config_file.is_some() {
        bail!(
            "--web.config.file protects a /metrics page served to others; `redprobe top` reads its own agent on loopback. \
             Serve Prometheus with `redprobe` and read it with `redprobe top --url` beside it"
        );
    }
    if top.agent.naming != probe_user::metrics::Naming::Otel {
        bail!("`redprobe top` reads the OpenTelemetry names: leave out --naming");
    }
    top.agent.listen.get_or_insert(([127, 0, 0, 1], 0).into());
    let targets = describe(&top.agent);
    if logs.is_some() {
        eprintln!("redprobe top: loading the probe for {targets}...");
    }
    let name = format!("attached to {targets}");
    // The agent runs on a thread and a runtime of its own: drawing (a terminal write that
    // waits on a slow SSH link) and reading pages never delay its draining of the kernel.
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let args = top.agent.clone();
    std::thread::Builder::new().name("agent".into()).spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(crate::run::run(args, Some(ready_tx))));
        let _ = done_tx.send(result);
    })?;
    let agent = async move { done.await.unwrap_or_else(|_| Err(anyhow::anyhow!("the agent's thread ended"))) };
    tokio::pin!(agent);
    // Loading errors (no such PID, missing privileges) end `top` as they end the agent.
    let addr = tokio::select! {
        r = &mut agent => {
            r?;
            bail!("the agent stopped before it attached");
        }
        addr = ready => match addr {
            Ok(addr) => addr,
            // The agent ended without a word: its error is the answer.
            Err(_) => return agent.await.and_then(|_| bail!("the agent stopped before it attached")),
        },
    };
    let source = Source::parse(&format!("http://{addr}/metrics"))?;
    show(&top, source, name, logs, agent).await
}

/// Shows `source` until the user quits, or `agent` (the attached agent, or a future that
/// never ends) stops.
async fn show(
    top: &Top,
    source: Source,
    name: String,
    logs: Option<logs::Logs>,
    agent: impl Future<Output = Result<()>>,
) -> Result<()> {
    let interval = Duration::from_secs_f64(top.interval);
    if logs.is_none() {
        tokio::select! {
            // The attached agent ends on SIGINT and SIGTERM: so does `top`, quietly.
            r = agent => r,
            r = once(top, &source, &name, interval) => r,
        }
    } else {
        screen::run(top, source, name, interval, read_timeout(interval), logs, agent).await
    }
}

/// Two reads an interval apart, and the table of what happened between them.
async fn once(top: &Top, source: &Source, name: &str, interval: Duration) -> Result<()> {
    let timeout = read_timeout(interval);
    let before = source.snapshot(timeout).await?;
    let start = Instant::now();
    tokio::time::sleep(interval).await;
    let now = source.snapshot(timeout).await?;
    let iv = Interval::between(&before, &now, start.elapsed().as_secs_f64());
    print!("{}", table::render(name, &iv, top.sort, &top.filter, top.slow));
    Ok(())
}
