//! `zpar bench link --file F`: a cluster already running, perhaps across a
//! network link.

use super::args::BenchArgs;
use super::report::{median_us, reps, Report};
use anyhow::{Context, Result};
use std::time::Duration;
use zpar_client::{Client, Value};

/// Round trip and 16 MiB transfers to engine 0 of a cluster already
/// running (`--file`): run it against a cluster across a network link and
/// against one on loopback, in the same run, to compare the two
/// (`scripts/bench-link.sh` does that over network namespaces).
pub(crate) fn link(report: &mut Report, args: &BenchArgs) -> Result<()> {
    let file = args
        .file
        .as_ref()
        .context("the link suite measures a running cluster: give its client file with --file")?;
    let client = Client::from_file(file)?;
    client
        .wait_for_engines(1, Duration::from_secs(30))
        .context("the cluster has no engine")?;
    let one = client.view(*client.ids().first().context("the cluster has no engines")?);
    let at = client.connection().ip.clone();
    let rtt = median_us(reps(1000, args.scale), || {
        one.execute("1")?.get()?;
        Ok(())
    })?;
    report.add(&format!("execute round trip, hub at {at}"), rtt, "us", None);
    let data = Value::F64Array((0..(16usize << 20) / 8).map(|i| i as f64).collect());
    let n = reps(20, args.scale);
    let mbs = |us: f64| (16usize << 20) as f64 / 1e6 / (us / 1e6);
    let push = median_us(n, || {
        one.push("bench_data", data.clone())?.get()?;
        Ok(())
    })?;
    report.add(
        &format!("push 16 MiB f64 array, hub at {at}"),
        mbs(push),
        "MB/s",
        None,
    );
    let pull = median_us(n, || {
        one.pull("bench_data")?.get()?;
        Ok(())
    })?;
    report.add(
        &format!("pull 16 MiB f64 array, hub at {at}"),
        mbs(pull),
        "MB/s",
        None,
    );
    one.execute("bench_data = ();")?.get()?;
    Ok(())
}

// ---------------------------------------------------------------- allreduce
