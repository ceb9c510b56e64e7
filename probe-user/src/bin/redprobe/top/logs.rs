//! The logs of `redprobe top` on screen: the agent it attached logs into a buffer, not over
//! the view. The footer shows the newest line; what was kept goes to stderr at exit.
use std::{
    collections::VecDeque,
    io::Write,
    sync::{Arc, Mutex, PoisonError},
};

/// Lines kept.
const KEEP: usize = 200;

#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<VecDeque<String>>>);

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
        self.0.lock().unwrap_or_else(PoisonError::into_inner).back().cloned()
    }

    /// Every line kept, oldest first.
    pub fn drain(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).drain(..).collect()
    }

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
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
