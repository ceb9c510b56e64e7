//! Test kit: real processes, a real HTTP client and a /metrics scraper. Used by the
//! integration tests (which load the real probe) and by `cargo xtask demo`.
pub mod client;
pub mod containers;
pub mod deploy;
pub mod h2;
pub mod procs;
pub mod prom;
pub mod scrape;
pub mod servers;
pub mod tls;
pub mod tmux;
pub mod workload;

use std::time::{Duration, Instant};

/// For the test macros (`per_bind_tests!`, `full_mix_tests!`).
#[doc(hidden)]
pub use anyhow;

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A command line as a shell would show it, for messages.
/// Names the agent binary the tests, the demo and the bench run (default: the workspace's
/// release build).
pub const REDPROBE_BIN: &str = "REDPROBE_BIN";

/// The agent's image, as `cargo xtask image` builds it and the DaemonSet names it.
pub const IMAGE: &str = concat!("localhost/redprobe:", env!("CARGO_PKG_VERSION"));

/// Names the Python interpreter with the test servers' packages (default: `python3`).
pub const REDPROBE_PYTHON: &str = "REDPROBE_PYTHON";

pub fn describe(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
