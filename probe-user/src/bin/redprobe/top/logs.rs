//! The logs of `redprobe top` on screen: the agent it attached logs into a buffer, not over
//! the view. The footer shows the newest line; the warnings and errors are kept apart
//! (info lines do not push them out) and go to stderr when `top` exits, however it exits.
use std::{
    collections::VecDeque,
    io::Write,
    sync::{Arc, Mutex, PoisonError},
};

/// Warnings and errors kept.
const KEEP: usize = 200;

#[derive(Default)]
struct Kept {
    /// The newest line, for the footer.
    last: Option<String>,
    /// WARN and ERROR lines.
    problems: VecDeque<String>,
}

#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Kept>>);

impl Logs {
    /// Sends every log line here (RUST_LOG still chooses which).
    pub fn install() -> Logs {
        let logs = Logs::default();
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
            )
            .init();
        logs
    }

    /// The newest line.
    pub fn last(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).last.clone()
    }

    /// The warnings and errors kept, oldest first.
    pub fn problems(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).problems.drain(..).collect()
    }

    fn push(&self, line: String) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if line.starts_with("WARN") || line.starts_with("ERROR") {
            if kept.problems.len() == KEEP {
                kept.problems.pop_front();
            }
            kept.problems.push_back(line.clone());
        }
        kept.last = Some(line);
    }
}

/// One event's text, kept when the formatter is done with it.
pub struct Line {
    logs: Logs,
    bytes: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim();
        if !text.is_empty() {
            self.logs.push(text.to_string());
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { logs: self.clone(), bytes: Vec::new() }
    }
}
