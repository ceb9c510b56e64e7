//! redprobe: RED metrics for HTTP/1.x servers, measured from the kernel.
//!
//! Data flows one way: kernel (`loader`) -> `decode` -> `pairing` (with `http`,
//! `chunked`) -> `metrics` (with `routes`) -> `exposition`. `agent` runs the loop, `cli`
//! holds the flags, `targets` the measured processes (chosen by PID or by `selectors`),
//! `btf` the kernel struct offsets.
mod agent;
mod btf;
mod chunked;
mod cli;
mod decode;
mod exposition;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod golden;
mod http;
mod loader;
mod metrics;
mod pairing;
mod privileges;
mod procfs;
mod routes;
mod selectors;
mod targets;

use clap::{CommandFactory, FromArgMatches};

fn main() {
    let matches = cli::Cli::command().after_help(cli::after_help()).get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redprobe: error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(agent::run(cli)) {
        eprintln!("redprobe: error: {e:#}");
        std::process::exit(1);
    }
}
