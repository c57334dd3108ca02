//! The arguments of `zpar bench`: the suite, and what the suites read.

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::Args;

/// The suites `zpar bench` runs, and the raw peers' hidden roles.
pub const SUITES: &[&str] = &[
    "all",
    "protocol",
    "cluster",
    "tasks",
    "allreduce",
    "raw",
    "hub-loss",
    "link",
    "hosts",
    "compute",
    "curve",
    "scale",
    "million",
];

/// The hidden roles of this binary as a raw ZeroMQ peer.
const RAW_ROLES: &[&str] = &["raw-echo", "raw-forwarder", "raw-sink"];

/// Any other suite is wrong usage, refused before anything runs.
fn suites() -> PossibleValuesParser {
    PossibleValuesParser::new(
        SUITES
            .iter()
            .map(|s| PossibleValue::new(*s))
            .chain(RAW_ROLES.iter().map(|s| PossibleValue::new(*s).hide(true))),
    )
}

/// Arguments of `zpar bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure: all, protocol, cluster, tasks, allreduce, raw,
    /// hub-loss (also part of cluster), compute (the array toolkit and
    /// native kernels), curve (the cost of CURVE encryption), link (a
    /// running cluster's engine 0, --file), hosts (a running cluster's big
    /// transfers, --file; scripts/bench-hosts.sh), scale (--many engines on
    /// this machine) and million (a million load-balanced tasks); the last
    /// four are not part of all.
    #[arg(default_value = "all", value_parser = suites())]
    pub suite: String,
    /// Engines for the cluster suite; for `hosts`, how many to wait for.
    #[arg(long, default_value_t = 2)]
    pub engines: usize,
    /// Print one JSON record instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Multiply repetition counts (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// For `scale`: how many engines.
    #[arg(long, default_value_t = 1000)]
    pub many: usize,
    /// For `scale`: engines per engine process (packed engines).
    #[arg(long, default_value_t = 1)]
    pub per_process: usize,
    /// For `scale`: the hub's heartbeat period in ms (default: the hub's,
    /// 1,000; past a few thousand engines on a few cores, ipyparallel's
    /// 3,000, as the README advises).
    #[arg(long)]
    pub hb_period_ms: Option<u64>,
    /// For `link` and `hosts`: the client connection file of a running
    /// cluster to measure against.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// For `hosts`: the link's rate in MB/s, measured outside (raw TCP), to
    /// give each figure as a ratio to it.
    #[arg(long)]
    pub link_mbs: Option<f64>,
    /// Internal: the raw peer's address.
    #[arg(long, hide = true)]
    pub url: Option<String>,
    /// Internal: messages the raw sink (or the echo as a sink) expects.
    #[arg(long, hide = true, default_value_t = 0)]
    pub count: usize,
}
