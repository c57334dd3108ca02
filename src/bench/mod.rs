//! `zpar bench`: zpar's speed beside raw ZeroMQ, measured in one run.
//!
//! Every figure is a median over repetitions, printed with its ratio to a
//! baseline measured in the same run on the same machine: a raw ZeroMQ
//! DEALER → ROUTER/ROUTER forwarder → DEALER echo (three processes) for
//! round trips, a single raw DEALER/ROUTER hop, and raw one-way throughput
//! of large messages. The raw peers are this same binary in hidden roles
//! (`zpar bench raw-echo`, `raw-forwarder`, `raw-sink`).
//!
//! The module is a harness and suites. The harness: [`args`] (what
//! `zpar bench` is given), [`report`] (figures, medians, ratios; a table or
//! JSON), [`raw`] (the raw ZeroMQ helper processes and baselines) and
//! [`rss`] (memory read from `/proc`). Each suite is one file that uses the
//! harness and no other suite: `protocol`, `cluster` (with `hub-loss`),
//! `tasks`, `allreduce`, `compute`, `curve`, `link`, `hosts`, `scale` (with
//! `million`). This file only picks the suites to run.

mod allreduce;
pub mod args;
mod cluster;
mod compute;
mod curve;
mod hosts;
mod link;
mod protocol;
pub mod raw;
pub mod report;
pub mod rss;
mod scale;
mod tasks;

pub use crate::kernels::{bench_kernels as kernels, pi_hits};
pub use args::BenchArgs;
pub use raw::Raw;
pub use report::Figure;
use report::Report;
pub use rss::{peak_rss_mib, rss_mib, settled_rss_mib};

use anyhow::{bail, Context, Result};

/// Runs `zpar bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.suite.as_str() {
        "raw-echo" => return raw::echo(args.url.as_deref().context("--url")?, args.count),
        "raw-forwarder" => return raw::forwarder(),
        "raw-sink" => return raw::sink(args.count),
        _ => {}
    }
    let suites: Vec<&str> = match args.suite.as_str() {
        "all" => vec![
            "protocol",
            "cluster",
            "tasks",
            "allreduce",
            "compute",
            "curve",
        ],
        s @ ("protocol" | "cluster" | "tasks" | "allreduce" | "raw" | "hub-loss" | "link"
        | "hosts" | "compute" | "curve" | "scale" | "million") => {
            vec![s]
        }
        other => {
            // Refused by the argument parser already.
            bail!("unknown bench suite {other:?}: {}", args::SUITES.join(", "))
        }
    };
    // The header comes once the suites are known.
    let mut report = Report::new(args.json);
    let needs_raw = suites
        .iter()
        .any(|s| matches!(*s, "cluster" | "allreduce" | "raw"));
    let raw = if needs_raw {
        Some(raw::baselines(&mut report, args.scale)?)
    } else {
        None
    };
    for s in suites {
        match s {
            "protocol" => protocol::protocol(&mut report, args.scale)?,
            "cluster" => cluster::cluster(&mut report, &args, raw.as_ref().expect("measured"))?,
            "allreduce" => {
                allreduce::allreduce(&mut report, &args, raw.as_ref().expect("measured"))?
            }
            "tasks" => tasks::tasks(&mut report, &args)?,
            "hub-loss" => cluster::hub_loss(&mut report, args.scale)?,
            "link" => link::link(&mut report, &args)?,
            "hosts" => hosts::hosts(&mut report, &args)?,
            "compute" => compute::compute(&mut report, &args)?,
            "curve" => curve::curve(&mut report, args.scale)?,
            "scale" => scale::scale(
                &mut report,
                args.many,
                args.per_process,
                args.hb_period_ms,
                args.scale,
            )?,
            "million" => scale::million(&mut report, args.scale)?,
            _ => {}
        }
    }
    report.finish()
}
