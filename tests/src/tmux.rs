//! A terminal the tests can read: a command in a tmux pane of a fixed size, on a tmux
//! server of its own, whose screen is read back with `capture-pane`.
use std::{process::Command, sync::atomic::{AtomicU32, Ordering}, time::Duration};

use anyhow::{Context, Result, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `shell_command` (through `sh -c`) in a `width` x `height` pane. The pane stays
    /// after the command ends only as long as the command itself keeps it (append
    /// `; echo EXIT=$?; sleep 600` to read how it ended).
    pub fn start(shell_command: &str, width: u16, height: u16) -> Result<Tmux> {
        let socket = format!("redprobe-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let t = Tmux { socket };
        t.run(&["new-session", "-d", "-s", "t", "-x", &width.to_string(), "-y", &height.to_string(), shell_command])
            .context("starting tmux (apt-get install tmux)")?;
        Ok(t)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).env_remove("TMUX").output()?;
        if !out.status.success() {
            bail!("tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The screen's text, as it shows now (no colour).
    pub fn screen(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// The screen with its colours and attributes, as SGR escape sequences.
    pub fn screen_escaped(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-e", "-t", "t"])
    }

    /// Types `keys` (tmux key names: "s", "Enter", "C-c", ...).
    pub fn keys(&self, keys: &[&str]) -> Result<()> {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args).map(|_| ())
    }

    /// Whether the pane shows the alternate screen (a full-screen program is up).
    pub fn alternate_screen(&self) -> Result<bool> {
        Ok(self.run(&["display-message", "-p", "-t", "t", "#{alternate_on}"])?.trim() == "1")
    }

    /// The PID of the pane's first process (the `sh -c`).
    pub fn pane_pid(&self) -> Result<u32> {
        self.run(&["display-message", "-p", "-t", "t", "#{pane_pid}"])?.trim().parse().context("pane_pid")
    }

    /// Polls the screen until `check` holds, for up to `timeout`; the error shows the last
    /// screen.
    pub fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&str) -> bool) -> Result<String> {
        let mut last = String::new();
        let found = crate::wait_for(what, timeout, || {
            last = self.screen().ok()?;
            check(&last).then(|| last.clone())
        });
        found.map_err(|e| anyhow::anyhow!("{e}; the screen:\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A table row of `redprobe top`'s screen or plain table, by its cells: service, route,
/// method, req/s first and 5xx, 4xx, p50, p95, p99, active, total last (the sparkline
/// between them is left out).
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    pub service: String,
    pub route: String,
    pub method: String,
    pub rate: f64,
    pub err5: String,
    pub err4: String,
    pub p99: String,
    pub total: u64,
}

/// The rows under the `SERVICE ROUTE ...` header line, in screen order.
pub fn top_rows(screen: &str) -> Vec<TopRow> {
    let mut rows = Vec::new();
    let mut lines = screen.lines().skip_while(|l| !l.starts_with("SERVICE "));
    lines.next();
    for line in lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() < 11 {
            break;
        }
        let n = cells.len();
        let (Ok(rate), Ok(total)) = (cells[3].parse(), cells[n - 1].parse()) else { break };
        rows.push(TopRow {
            service: cells[0].into(),
            route: cells[1].into(),
            method: cells[2].into(),
            rate,
            err5: cells[n - 7].into(),
            err4: cells[n - 6].into(),
            p99: cells[n - 3].into(),
            total,
        });
    }
    rows
}
