//! redprobe, the agent: loads the probe (`loader`, with `btf` offsets and `privileges`
//! checks), chooses the targets (`cli`, `targets`, `selectors`), and runs the loop (`run`)
//! that feeds every ring-buffer record to the pipeline library (`probe_user`) while
//! `/metrics` is served. `counters` reads the kernel's own counters. `redprobe top`
//! (`top`) shows an agent's page live in the terminal, attaching one in-process if asked.
mod btf;
mod cli;
mod conn_map;
mod counters;
mod fast_path;
mod loader;
mod privileges;
mod run;
mod selectors;
mod targets;
mod tls_probes;
mod top;

use std::io::IsTerminal;

use clap::FromArgMatches;

/// Whether NO_COLOR (https://no-color.org) allows colour: unset or empty.
pub fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Colour in logs only on a terminal, and never with NO_COLOR set.
fn log_colour() -> bool {
    std::io::stderr().is_terminal() && colour_allowed()
}

/// Logs to stderr, at `default` unless RUST_LOG says otherwise.
fn log_to_stderr(default: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(log_colour())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()),
        )
        .init();
}

fn main() {
    let matches = cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redprobe: error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Some(cli::Command::Top(top)) => {
            // On screen, the logs go to the view's footer (and what is kept to stderr at
            // exit); a plain table keeps stderr for them, quieter than the agent's.
            let logs = (!top::plain(&top)).then(top::logs::Logs::install);
            if logs.is_none() {
                log_to_stderr("warn");
            }
            let result = runtime.block_on(top::run(top, logs.clone()));
            // What the attached agent warned about while the screen was up (the footer
            // showed only the newest line).
            for line in logs.iter().flat_map(top::logs::Logs::problems) {
                eprintln!("{line}");
            }
            result
        }
        None => {
            log_to_stderr("info");
            runtime.block_on(run::run(cli.agent, None))
        }
    };
    if let Err(e) = result {
        eprintln!("redprobe: error: {e:#}");
        std::process::exit(1);
    }
}
