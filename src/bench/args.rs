//! The arguments of `zpar bench`: the suite, and what the suites read.

use clap::Args;

/// Arguments of `zpar bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure: all, protocol, cluster, tasks, allreduce, raw,
    /// hub-loss (also part of cluster), compute (the array toolkit and
    /// native kernels), curve (the cost of CURVE encryption), link (a
    /// running cluster, --file), scale (--many engines on this machine) and
    /// million (a million load-balanced tasks); the last three are not part
    /// of all.
    #[arg(default_value = "all")]
    pub suite: String,
    /// Engines for the cluster suite.
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
    /// For `link`: the client connection file of a running cluster to
    /// measure against (its engine 0).
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Internal: the raw peer's address.
    #[arg(long, hide = true)]
    pub url: Option<String>,
    /// Internal: messages the raw sink expects.
    #[arg(long, hide = true, default_value_t = 0)]
    pub count: usize,
}
