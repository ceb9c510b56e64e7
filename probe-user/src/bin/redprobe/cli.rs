//! Command line: what a user can ask of the agent.
use std::net::SocketAddr;

use clap::{ArgGroup, Parser};

use probe_user::metrics::{Naming, scheme::DEFAULT_DURATION_BUCKETS};

/// The command line: `Cli`, with its help text, and `top --url` refusing every agent flag
/// (they would be silently ignored: a running agent's flags are its own).
pub fn command() -> clap::Command {
    use clap::{Args, CommandFactory};
    let agent_flags: Vec<clap::Id> =
        AgentArgs::augment_args(clap::Command::new("agent")).get_arguments().map(|a| a.get_id().clone()).collect();
    Cli::command()
        .after_help(after_help())
        .mut_subcommand("top", |top| top.mut_arg("url", |url| url.conflicts_with_all(agent_flags)))
}

/// The text after the flags in `--help`; the hook list comes from the loader's table.
pub fn after_help() -> String {
    let hooks: String =
        crate::loader::HOOKS.iter().map(|h| format!("    {:<28}{}\n", h.tracepoint, h.purpose)).collect();
    format!(
        "HOW IT WORKS
  redprobe attaches eBPF programs to these kernel tracepoints (tp_btf: no kprobes, no
  tracefs needed) and measures only the processes you name and their children:
{hooks}
CHOOSING TARGETS
  --pid names processes running now. --port, --exe, --cgroup and --container name them by
  something that survives a restart: they are re-evaluated every --rescan-interval-ms, and
  every process that matches (and its children) is measured, including one restarted
  under a new PID. They combine with each other and with --pid; a process matching several
  is measured once.

CONTAINERS AND PODS
  Series say where their server runs, read from /proc (--container-labels): in a
  Kubernetes pod, k8s_namespace_name and k8s_pod_name; in a container outside pods
  (docker, podman), container_id; with --container-labels all, also k8s_pod_uid and the
  pods' container ids. Two servers on port 8000 in two pods are two sets of series. In a pod, service_name
  defaults to the pod's workload (shop for shop-7d9f8b6c5d-x2x7k). Run in a container of
  its own, redprobe needs the host's PID namespace (hostPID) and reaches the host's cgroup
  tree through /proc/2/root (kthreadd's view).

REQUIREMENTS
  Linux 6.3+ with BTF (/sys/kernel/btf/vmlinux); root, or CAP_BPF + CAP_PERFMON.
  --port also needs CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH to see the sockets of processes
  of other users.

EXAMPLES
  sudo redprobe --pid \"$(pgrep -o gunicorn)\"          # master PID: every worker is measured
  sudo redprobe --pid 1234 --route '/api/items/{{id}}' --service shop
  sudo redprobe --pid 1234 --naming django-prometheus   # keep django-prometheus dashboards
  sudo redprobe --port 8000 --service shop             # whatever listens on port 8000
  sudo redprobe --exe gunicorn                         # every gunicorn, now and later
  sudo redprobe --cgroup /system.slice/shop.service    # a systemd unit (cgroup v2)
  sudo redprobe --cgroup /kubepods/burstable/pod<uid>  # a Kubernetes pod
  sudo redprobe --container 4f2a9c8e1b3d               # a container, by id (docker ps)
  curl -s localhost:9464/metrics | grep http_server_request_duration_seconds_count
  sudo redprobe top --pid 1234                          # the same, live in the terminal
  redprobe top --url localhost:9464                    # watch a running agent

Logs go to stderr; set RUST_LOG=debug for more."
    )
}

#[derive(Debug, Parser)]
#[command(
    name = "redprobe",
    version,
    about = "RED metrics (rate, errors, duration) for any HTTP/1.x or HTTP/2 server, measured from the kernel",
    long_about = "RED metrics (rate, errors, duration) for any HTTP/1.x or HTTP/2 server (gRPC \
                  included), in clear text or HTTPS, measured from the kernel with eBPF. Point it at \
                  a server (by PID, listening port, executable name or cgroup); it serves Prometheus \
                  metrics (http_server_request_duration_seconds by method, route, status; \
                  rpc_server_call_duration_seconds by gRPC method and status) without touching the \
                  server's code. `redprobe top` shows the same live in the terminal.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
#[command(group(ArgGroup::new("target").required(true).multiple(true).args(TARGET_ARGS)))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub agent: AgentArgs,
}

/// The flags that name targets.
const TARGET_ARGS: [&str; 5] = ["pids", "ports", "exes", "cgroups", "containers"];

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A live RED view in the terminal: rate, errors and latency per route, every second
    ///
    /// One row per (service, route, method) with its requests per second, error (5xx) and
    /// 4xx shares, p50/p95/p99 latency and requests in flight over the last interval, a sparkline
    /// of its rate, and its total; above them, the totals and the agent's health (events
    /// lost, unparsed requests by reason, targets). It attaches by itself (--pid or a
    /// selector, with the agent's privileges), or reads a running agent's /metrics (--url,
    /// no privileges needed).
    Top(Top),
}

/// Where `/metrics` is served unless `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// What the agent measures and how it serves it: `redprobe`'s own flags, and `redprobe
/// top`'s when it attaches by itself.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// PID of a server process to measure. Repeatable. Its child processes (workers,
    /// including those forked later) are measured too.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Measure whatever process listens on this TCP port (IPv4 or IPv6, in any network
    /// namespace, so servers in containers too), and its children. Repeatable.
    /// Re-evaluated as processes come and go.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,

    /// Measure every process with this command name (as `ps -o comm` and `pgrep` show it)
    /// or executable file name, e.g. gunicorn, and its children. Repeatable. Re-evaluated
    /// as processes come and go.
    #[arg(long = "exe", value_name = "NAME")]
    pub exes: Vec<String>,

    /// Measure every process in this cgroup v2 directory or below it: a systemd unit
    /// (/system.slice/shop.service) or a container. Relative to the cgroup v2 mount, or
    /// an absolute path under it. Repeatable. Re-evaluated as processes come and go.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<std::path::PathBuf>,

    /// Measure every process in this container: its id, or the first 12 or more characters
    /// of it, as `docker ps`, `podman ps` or `crictl ps` show it. Read from each process's
    /// cgroup (docker, containerd, cri-o and podman). Repeatable. Re-evaluated as processes
    /// come and go; a container restarted keeps its id (docker, podman), a Kubernetes
    /// container restarted gets a new one (select its pod with --cgroup instead).
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,

    /// How often --port, --exe and --cgroup are re-evaluated, in milliseconds. A server
    /// that (re)starts is measured from the next evaluation on.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub rescan_interval_ms: u64,

    /// Address to serve /metrics on (`redprobe top`: a free loopback port unless given).
    /// Keep it on loopback unless a firewall or a proxy guards the port, or
    /// --web.config.file sets up TLS and basic auth. [default: 127.0.0.1:9464]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// TLS and basic auth for /metrics, in the web configuration file format of
    /// Prometheus' exporters (node_exporter's --web.config.file): tls_server_config
    /// (cert_file, key_file, client_auth_type, client_ca_file, min_version, max_version),
    /// basic_auth_users (bcrypt hashes) and http_server_config.headers. Paths in it are
    /// relative to it. The files are read again when they change (a renewed certificate is
    /// served from the next connection on); a change that does not load is logged and the
    /// previous configuration kept.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<std::path::PathBuf>,

    /// service_name label of the measured processes [default: the workload of the
    /// target's Kubernetes pod (its pod name without the generated suffixes: shop for
    /// shop-7d9f8b6c5d-x2x7k), else its command name].
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,

    /// Labels that tell which container and pod served a request, comma-separated:
    /// container_id (from the process's cgroup), k8s_pod_uid (from its cgroup),
    /// k8s_pod_name (the pod's hostname), k8s_namespace_name (the pod's service-account
    /// namespace file), all, none, or auto: k8s_namespace_name and k8s_pod_name in a pod
    /// (they survive its containers' restarts), container_id in a container outside any
    /// pod (docker, podman). Read from /proc, with no API server; a label a process has no
    /// value for is left out. Two servers in two containers or pods are two sets of series.
    /// Each label costs 30 to 80 bytes on every line of the page.
    #[arg(long, value_name = "LABEL,...", value_delimiter = ',', value_enum, default_value = "auto")]
    pub container_labels: Vec<ContainerLabel>,

    /// A route template, e.g. '/api/items/{id}' or '/static/{path...}'. Repeatable; the
    /// first match wins. Paths no template matches get a heuristic: identifier-like
    /// segments (numbers, UUIDs, hex, dates, e-mails, random tokens) fold to {id}.
    #[arg(long = "route", value_name = "TEMPLATE")]
    pub routes: Vec<String>,

    /// A file of route templates, one a line; blank lines and '#' comments are ignored.
    /// Its templates come after the --route ones.
    #[arg(long, value_name = "FILE")]
    pub routes_file: Option<std::path::PathBuf>,

    /// Distinct http_route values kept per service; further routes are reported as
    /// "_other" and counted in redprobe_routes_folded_total.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_routes: usize,

    /// Metric names: OpenTelemetry's HTTP conventions, or django-prometheus's names (its
    /// dashboards then work unchanged, with the route as the view).
    #[arg(long, value_enum, default_value_t = Naming::Otel)]
    pub naming: Naming,

    /// Classic bucket boundaries of the duration histograms, in seconds, comma-separated
    /// (at most 20). The default is OpenTelemetry's, with 100 µs, 250 µs, 500 µs, 1 ms and
    /// 2.5 ms below it. Each boundary is a series per label set and histogram on text
    /// scrapes; native histograms (protobuf scrapes) do not depend on it.
    #[arg(long, value_name = "S,S,...", value_delimiter = ',', default_values_t = DEFAULT_DURATION_BUCKETS)]
    pub buckets: Vec<f64>,

    /// Histograms to serve besides the request duration and the queue time,
    /// comma-separated: ttfb (redprobe_http_server_time_to_first_byte_seconds),
    /// request-size and response-size (http_server_{request,response}_body_size_bytes),
    /// or all. Each is another series per bucket and label set on text scrapes: the
    /// /metrics page of a node at its caps grows from about 9.7 MB to about 34 MB with all.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',', value_enum)]
    pub extra_histograms: Vec<ExtraHistogram>,

    /// Request label sets (a method, status, route, version, transport and service each)
    /// kept across the whole node; a request whose label set would be one more is reported
    /// under its service's http_route="_other" (method, status and the rest kept) and
    /// counted in redprobe_routes_folded_total. Bounds the /metrics page: about 7 KB of
    /// text per label set with the default histograms and a pod's labels.
    #[arg(long, value_name = "N", default_value_t = probe_user::metrics::DEFAULT_MAX_LABEL_SETS)]
    pub max_label_sets: usize,

    /// Seconds a service (a name with its container and pod) may have no process before
    /// its series are removed from /metrics (counted in redprobe_services_forgotten_total):
    /// containers and pods that went away leave the page, so the series stay bounded under
    /// churn. A container that restarts within it keeps its series. Prometheus keeps what it
    /// scraped; 0 removes them at the next check (every second).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub forget_after: u64,

    /// Pair and time every request in the agent, from events, instead of in the kernel.
    /// The numbers are the same; the kernel's fast path (the default) costs the server
    /// far less CPU per request. Also off with --naming django-prometheus (its buckets are
    /// not the kernel's) and with a route template whose literal segment looks like an
    /// identifier. redprobe_requests_paired_total shows which path paired what.
    #[arg(long)]
    pub no_fast_path: bool,

    /// Do not measure HTTPS. By default redprobe reads the plaintext of TLS connections
    /// from uprobes on the TLS library each target maps (OpenSSL 1.1 and 3, BoringSSL,
    /// shared or linked into the executable, as in Node), attached to the target processes
    /// only: other processes using the same library are never trapped. Needs tracefs
    /// (mounted at /sys/kernel/tracing if it is not) and keeps CAP_PERFMON after attach,
    /// to attach to targets found later. Requests get url_scheme="https".
    #[arg(long)]
    pub no_tls: bool,

    /// Do not measure the HTTP requests the targets send (http_client_* metrics). By
    /// default every HTTP/1.x request a target writes in clear on a TCP connection it
    /// opened (to an upstream, another service, an HTTP API) is paired with the response it
    /// reads and measured, by upstream (server_address and server_port, from the request's
    /// Host header): the target's dependencies, seen from its side. The kernel pairs and
    /// aggregates them as it does the served requests (+3 to +4 µs per call on a busy
    /// 2-CPU VM). With this flag those connections are only counted, in
    /// redprobe_connections_classified_total{role="client"}.
    #[arg(long)]
    pub no_client_metrics: bool,

    /// Distinct upstreams (server_address and server_port) kept per service in the
    /// http_client_* metrics; further ones are reported as server_address="_other" and
    /// counted in redprobe_http_client_peers_folded_total.
    #[arg(long, value_name = "N", default_value_t = probe_user::labels::peer::DEFAULT_MAX_PEERS)]
    pub max_peers: usize,

    /// Connections tracked at once, in the kernel map and in the agent.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub max_connections: u32,

    /// Size of the kernel ring buffer that carries events (a power of two). Events that do
    /// not fit are counted in redprobe_events_lost_total.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub ring_buffer_bytes: u32,

    /// Pending bytes in the ring buffer that wake the agent up; below that it drains every
    /// --drain-interval-ms. Batching wakeups keeps the per-event cost low.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 10)]
    pub wakeup_bytes: u32,

    /// How often the agent drains the ring buffer without a wakeup, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub drain_interval_ms: u64,

    /// Exit (status 0) once every target process has exited. Only with --pid: the
    /// selectors (--port, --exe, --cgroup) wait for their next process instead, so they do
    /// not combine with it.
    #[arg(long, conflicts_with_all = ["ports", "exes", "cgroups", "containers"])]
    pub exit_with_target: bool,
}

/// A label `--container-labels` can add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ContainerLabel {
    ContainerId,
    K8sPodUid,
    K8sPodName,
    K8sNamespaceName,
    Auto,
    All,
    None,
}

/// A histogram `--extra-histograms` can add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExtraHistogram {
    Ttfb,
    RequestSize,
    ResponseSize,
    All,
}

/// `redprobe top`'s own flags; the agent's follow when it attaches by itself.
#[derive(Debug, clap::Args)]
#[command(after_help = TOP_HELP)]
#[command(group(ArgGroup::new("source").required(true).multiple(true).args(["url", "pids", "ports", "exes", "cgroups", "containers"])))]
pub struct Top {
    /// Read a running agent's page instead of attaching: http://HOST:PORT/metrics, or
    /// HOST:PORT. Needs no privileges and loads no second set of programs. A failed read
    /// (refused, no answer, not redprobe's metrics) is shown on screen and retried at each
    /// interval.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Seconds between refreshes: rates, error shares and quantiles are over this interval.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = interval_seconds)]
    pub interval: f64,

    /// Print one plain table (over one --interval) and exit: for scripts and bug reports.
    /// Also what `top` does when its output is not a terminal.
    #[arg(long)]
    pub once: bool,

    /// The rows' order at start (`s` cycles it on screen).
    #[arg(long, value_enum, default_value_t = probe_user::top::view::Sort::Rate)]
    pub sort: probe_user::top::view::Sort,

    /// Show only rows whose service, route or method contains this text (`/` on screen).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub filter: String,

    /// Quantiles at or above this many seconds are marked (yellow on screen).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub slow: f64,

    #[command(flatten, next_help_heading = "Attaching (instead of --url): the agent's options")]
    pub agent: AgentArgs,
}

fn interval_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        Ok(_) => Err("the interval must be between 0.1 and 3600 seconds".into()),
        Err(_) => Err(format!("{s:?} is not a number of seconds")),
    }
}

const TOP_HELP: &str = "THE SCREEN
  requests/s 152.0  errors 1.3%  4xx 0.0%  p50 1.20ms  p95 4.10ms  p99 9.80ms  active now 3  total 91234
  targets 5  events lost 0  unparsed 2 (no_response 2)  outgoing calls/s 12.0

  SERVICE  ROUTE            METHOD  REQ/S  RATE         ERR   4XX     P50     P95     P99  ACTIVE  TOTAL
  shop     /api/items/{id}  GET     120.0  ▅▆▇█▇▆▅▆▇█  0.0%  0.0%  1.20ms  3.90ms  8.70ms     0.2  80123

  REQ/S, ERR, 4XX, P50-P99 and ACTIVE are over the last interval. ERR is the share of its
  requests that failed as the alerting rules count them (error_type set): answered 5xx, or
  cut short without a status (connection_reset); 4XX the share answered 4xx. The quantiles
  are of their durations (from the histograms' native buckets, about 9 % wide, where the
  page has them; classic buckets otherwise); ACTIVE is the requests in flight on average
  (the time they took / the interval). `active now` is the agent's gauge of requests read
  and not yet answered: a request that hangs shows there first. TOTAL counts since the
  agent started. Marked: errors (red), 4xx (yellow), quantiles at or above --slow
  (yellow), events lost and unparsed requests that grew (red, yellow). NO_COLOR turns
  colour off. A terminal too narrow for every column hides RATE, then P50, ACTIVE, P95.

KEYS
  s        sort by rate, then errors, then p99
  /        filter rows (type, Enter); Esc clears the filter
  q        quit (so does Ctrl-C); the terminal is restored, after a panic too

EXAMPLES
  sudo redprobe top --pid \"$(pgrep -o gunicorn)\"      # attach and watch
  redprobe top --url http://127.0.0.1:9464/metrics     # read a running agent, no root
  redprobe top --url 127.0.0.1:9464 --once --sort p99  # one table, for a script or a bug report";

impl AgentArgs {
    /// The address to serve /metrics on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a socket address"))
    }

    /// The container and pod labels chosen with `--container-labels`.
    pub fn placement_labels(&self) -> probe_user::labels::PlacementLabels {
        let mut chosen = probe_user::labels::PlacementLabels::NONE;
        for l in &self.container_labels {
            match l {
                ContainerLabel::ContainerId => chosen.container_id = true,
                ContainerLabel::K8sPodUid => chosen.k8s_pod_uid = true,
                ContainerLabel::K8sPodName => chosen.k8s_pod_name = true,
                ContainerLabel::K8sNamespaceName => chosen.k8s_namespace_name = true,
                ContainerLabel::Auto => {
                    let auto = probe_user::labels::PlacementLabels::AUTO;
                    chosen.k8s_pod_name = true;
                    chosen.k8s_namespace_name = true;
                    chosen.container_id_outside_pods = auto.container_id_outside_pods;
                }
                ContainerLabel::All => chosen = probe_user::labels::PlacementLabels::ALL,
                ContainerLabel::None => {}
            }
        }
        chosen
    }

    /// The OpenTelemetry page's shape from `--extra-histograms` and `--max-label-sets`.
    pub fn http_options(&self) -> probe_user::metrics::HttpOptions {
        let mut extra = probe_user::metrics::Extra::default();
        for h in &self.extra_histograms {
            match h {
                ExtraHistogram::Ttfb => extra.ttfb = true,
                ExtraHistogram::RequestSize => extra.request_size = true,
                ExtraHistogram::ResponseSize => extra.response_size = true,
                ExtraHistogram::All => extra = probe_user::metrics::Extra::ALL,
            }
        }
        probe_user::metrics::HttpOptions {
            extra,
            max_label_sets: self.max_label_sets,
            max_peers: (!self.no_client_metrics).then_some(self.max_peers),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches;

    use super::*;

    fn agent(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        let cli = Cli::try_parse_from(args.iter().copied())?;
        assert!(cli.command.is_none());
        Ok(cli.agent)
    }

    #[test]
    fn extra_histograms_and_the_label_set_cap() {
        let cli = agent(&["redprobe", "--pid", "1"]).unwrap();
        assert_eq!(cli.http_options(), probe_user::metrics::HttpOptions::default());
        let cli = agent(&[
            "redprobe",
            "--pid",
            "1",
            "--extra-histograms",
            "ttfb,response-size",
            "--max-label-sets",
            "7",
        ])
        .unwrap();
        let o = cli.http_options();
        assert_eq!(
            (o.extra.ttfb, o.extra.request_size, o.extra.response_size, o.max_label_sets),
            (true, false, true, 7)
        );
        let cli = agent(&["redprobe", "--pid", "1", "--extra-histograms", "all"]).unwrap();
        assert_eq!(cli.http_options().extra, probe_user::metrics::Extra::ALL);
        assert!(agent(&["redprobe", "--pid", "1", "--extra-histograms", "latency"]).is_err());
    }

    #[test]
    fn container_labels() {
        use probe_user::labels::PlacementLabels;
        let cli = agent(&["redprobe", "--pid", "1"]).unwrap();
        assert_eq!(cli.placement_labels(), PlacementLabels::AUTO);
        let cli = agent(&["redprobe", "--pid", "1", "--container-labels", "all"]).unwrap();
        assert_eq!(cli.placement_labels(), PlacementLabels::ALL);
        let cli = agent(&["redprobe", "--pid", "1", "--container-labels", "auto,k8s_pod_uid"]).unwrap();
        assert_eq!(cli.placement_labels(), PlacementLabels { k8s_pod_uid: true, ..PlacementLabels::AUTO });
        let cli = agent(&["redprobe", "--pid", "1", "--container-labels", "none"]).unwrap();
        assert_eq!(cli.placement_labels(), PlacementLabels::NONE);
        let cli =
            agent(&["redprobe", "--pid", "1", "--container-labels", "k8s_pod_name,k8s_namespace_name"])
                .unwrap();
        assert_eq!(
            cli.placement_labels(),
            PlacementLabels { k8s_pod_name: true, k8s_namespace_name: true, ..PlacementLabels::NONE }
        );
        assert!(agent(&["redprobe", "--pid", "1", "--container-labels", "pod"]).is_err());
        assert!(agent(&["redprobe", "--container", "abc123def456"]).is_ok());
    }

    #[test]
    fn metrics_bind_to_loopback_by_default() {
        let cli = agent(&["redprobe", "--pid", "1"]).unwrap();
        assert!(cli.listen_addr().ip().is_loopback(), "{}", cli.listen_addr());
    }

    #[test]
    fn top_attaches_or_reads_a_url() {
        let top = |args: &[&str]| -> Result<Top, clap::Error> {
            let matches = command().try_get_matches_from(args.iter().copied())?;
            match Cli::from_arg_matches(&matches)?.command {
                Some(Command::Top(t)) => Ok(t),
                None => panic!("not top: {args:?}"),
            }
        };
        let t = top(&["redprobe", "top", "--pid", "7", "--interval", "2.5", "--sort", "p99"]).unwrap();
        assert_eq!((t.agent.pids.as_slice(), t.url, t.interval, t.once), (&[7u32][..], None, 2.5, false));
        assert_eq!(t.sort, probe_user::top::view::Sort::P99);
        assert!(t.agent.listen.is_none());
        let t = top(&["redprobe", "top", "--url", "http://h:9464/metrics", "--once"]).unwrap();
        assert_eq!((t.url.as_deref(), t.once), (Some("http://h:9464/metrics"), true));
        // One source: a URL or targets, not both, not none.
        assert!(top(&["redprobe", "top"]).is_err());
        assert!(top(&["redprobe", "top", "--url", "h:1", "--pid", "7"]).is_err());
        assert!(top(&["redprobe", "top", "--url", "h:1", "--interval", "0"]).is_err());
        // An agent flag with --url would be ignored: refused.
        for flag in [&["--listen", "127.0.0.1:1"][..], &["--no-tls"], &["--naming", "otel"], &["--exit-with-target"]] {
            let mut args = vec!["redprobe", "top", "--url", "h:1"];
            args.extend_from_slice(flag);
            assert!(top(&args).is_err(), "{flag:?}");
        }
        // The agent's own command line is unchanged, and does not mix with `top`.
        assert!(agent(&["redprobe", "--pid", "7"]).is_ok());
        assert!(Cli::try_parse_from(["redprobe", "--pid", "7", "top", "--url", "h:1"]).is_err());
        assert!(Cli::try_parse_from(["redprobe", "--url", "h:1"]).is_err());
    }
}
