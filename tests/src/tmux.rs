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

    /// Resizes the pane's window (a terminal resized by its user).
    pub fn resize(&self, width: u16, height: u16) -> Result<()> {
        self.run(&["resize-window", "-t", "t", "-x", &width.to_string(), "-y", &height.to_string()]).map(|_| ())
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

/// A table row of `redprobe top`'s screen or plain table, by its header's column names.
/// Columns a narrow screen hid are None.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    pub service: Option<String>,
    pub route: String,
    pub method: String,
    pub rate: f64,
    pub err: String,
    pub err4: String,
    pub p99: String,
    pub total: u64,
}

/// The rows under the `... ROUTE METHOD REQ/S ...` header line, in screen order. The
/// columns up to REQ/S are read from the left, the numbers after it from the right (the
/// RATE sparkline between them may be blank).
pub fn top_rows(screen: &str) -> Vec<TopRow> {
    let mut lines = screen.lines().skip_while(|l| !(l.contains(" ROUTE ") || l.starts_with("ROUTE ")) || !l.contains("REQ/S"));
    let Some(header) = lines.next() else { return Vec::new() };
    let names: Vec<&str> = header.split_whitespace().collect();
    let Some(rate_at) = names.iter().position(|n| *n == "REQ/S") else { return Vec::new() };
    let from_end: Vec<&str> = names[rate_at + 1..].iter().copied().filter(|n| *n != "RATE").collect();
    let mut rows = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() < rate_at + 1 + from_end.len() {
            break;
        }
        let left = |name: &str| names[..=rate_at].iter().position(|n| *n == name).map(|i| cells[i].to_string());
        let right = |name: &str| {
            from_end.iter().position(|n| *n == name).map(|i| cells[cells.len() - from_end.len() + i].to_string())
        };
        let (Some(Ok(rate)), Some(Ok(total))) = (left("REQ/S").map(|r| r.parse()), right("TOTAL").map(|t| t.parse())) else {
            break;
        };
        rows.push(TopRow {
            service: left("SERVICE"),
            route: left("ROUTE").unwrap_or_default(),
            method: left("METHOD").unwrap_or_default(),
            rate,
            err: right("ERR").unwrap_or_default(),
            err4: right("4XX").unwrap_or_default(),
            p99: right("P99").unwrap_or_default(),
            total,
        });
    }
    rows
}
