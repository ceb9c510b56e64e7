//! `cargo xtask <command>`: setup, build, image, run, demo, test, bench, soak. One module per command.
mod bench;
mod build;
mod demo;
mod image;
mod run;
mod setup;
mod soak;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "redprobe's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the pinned eBPF toolchain and a bpf-linker on the same LLVM (idempotent; every
    /// other command runs it first), then check that their LLVM majors match.
    Setup {
        /// Only check the toolchain and bpf-linker, install nothing; exit 1 on a mismatch.
        #[arg(long)]
        check: bool,
    },
    /// Build the release agent: target/release/redprobe.
    Build,
    /// Build, then run the agent: cargo xtask run -- --pid 1234
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start the demo server, attach to it, drive a workload, print a RED summary.
    Demo {
        /// Seconds of workload.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Keep the agent and server running afterwards (Ctrl-C to stop).
        #[arg(long)]
        keep: bool,
    },
    /// Build the agent's OCI image (a static binary on an empty base) with buildah, and
    /// print its size: localhost/redprobe:VERSION, the DaemonSet's image.
    Image {
        /// Also write it as an OCI archive to target/image/ (for `skopeo copy` or
        /// `ctr images import`).
        #[arg(long)]
        archive: bool,
    },
    /// Run every test: unit tests, then the integration tests against the real probe (root).
    Test {
        /// Only integration tests whose name contains this.
        filter: Option<String>,
    },
    /// Measure the probe's overhead, side by side, and print the table of ratios.
    Bench(bench::Options),
    /// Steady load for N minutes: prints the agent's RSS over time, checks exact counts.
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
}

fn main() {
    let result = match Cli::parse().command {
        Cmd::Setup { check } => setup::setup(check),
        Cmd::Build => build::build(),
        Cmd::Run { args } => run::run(&args),
        Cmd::Demo { seconds, keep } => demo::demo(seconds, keep),
        Cmd::Image { archive } => image::image(archive),
        Cmd::Test { filter } => test::test(filter.as_deref()),
        Cmd::Bench(opts) => bench::bench(&opts),
        Cmd::Soak { minutes } => soak::soak(minutes),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
