//! Shared fixtures: real clusters of the built `zpar` binary on loopback,
//! with random ports, stopped on drop (also when a test panics).

use std::time::Duration;
use zpar::{Client, LocalCluster};

/// Generous bound for any one wait in a test; nothing should come close.
pub const WAIT: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn zpar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_zpar")
}

/// A cluster of `n` engines with fast heartbeats (dead after ~1 s).
pub fn cluster(n: usize) -> (LocalCluster, Client) {
    cluster_with(n, &[], &[])
}

/// A cluster with extra hub and engine arguments.
pub fn cluster_with(n: usize, hub_args: &[&str], engine_args: &[&str]) -> (LocalCluster, Client) {
    let cluster = LocalCluster::builder()
        .binary(zpar_bin())
        .engines(n)
        .hub_args(["--hb-period-ms", "200", "--hb-misses", "5"])
        .hub_args(hub_args.iter().copied())
        .engine_args(engine_args.iter().copied())
        .timeout(WAIT)
        .start()
        .expect("starting a local cluster");
    let client = cluster.client().expect("client");
    (cluster, client)
}
