//! `zpar bench allreduce`: allreduces over a communicator on a local
//! cluster, timed inside the engines and end to end, against the raw
//! baselines.

use super::args::BenchArgs;
use super::raw::Raw;
use super::report::{median, median_us, reps, Report};
use anyhow::Result;
use std::time::Duration;
use zpar_client::{Client, LocalCluster, Value};

/// Runs the allreduce suite.
pub(crate) fn allreduce(report: &mut Report, args: &BenchArgs, raw: &Raw) -> Result<()> {
    let cluster = LocalCluster::start(4)?;
    let client: Client = cluster.client()?;
    let view = client.all();
    view.setup_communicator("com", Duration::from_secs(30))?;
    view.push("add", Value::Function("|a, b| a + b".into()))?
        .get()?;
    let hop = Some(("raw 1-hop rtt", raw.hop_rtt));
    // The time raw ZeroMQ takes to move 8 MiB one way, in µs.
    let one_way_8m = (8 << 20) as f64 / raw.throughput_8m;
    let one_way = Some(("raw one-way 8 MiB", one_way_8m));
    // `add` is a script closure (whole values); "sum" is the named path
    // (through shared memory on one host, else chunks along the tree).
    for (label, make, f, calls) in [
        ("one integer", "let v = 1;", "add", 1000usize),
        (
            "1,000 f64 (8 KB)",
            "let v = f64_array(1000, 1.0);",
            "add",
            500,
        ),
        (
            "1,000,000 f64 (8 MB)",
            "let v = f64_array(1000000, 1.0);",
            "add",
            30,
        ),
        (
            "1,000,000 f64 (8 MB), named \"sum\"",
            "let v = f64_array(1000000, 1.0);",
            "\"sum\"",
            30,
        ),
    ] {
        let calls = reps(calls, args.scale);
        view.execute(make)?.get()?;
        // Inside the engines: each times every call and keeps the median.
        let code = format!(
            "let ts = []; for i in 0..{calls} {{ let t = timestamp(); let r = com.allreduce({f}, v); ts.push(t.elapsed); }} ts.sort(); ts[ts.len / 2] * 1000000.0"
        );
        let inside = view.execute(&code)?.get()?;
        let mut us: Vec<f64> = inside.iter().filter_map(Value::as_f64).collect();
        let baseline = if label.contains("8 MB") { one_way } else { hop };
        report.add(
            &format!("allreduce 4 engines, {label}, in engines"),
            median(&mut us),
            "us",
            baseline,
        );
        let e2e = median_us(reps(calls.min(200), args.scale), || {
            view.execute(&format!("com.allreduce({f}, v); ()"))?.get()?;
            Ok(())
        })?;
        report.add(
            &format!("allreduce 4 engines, {label}, client end to end"),
            e2e,
            "us",
            baseline,
        );
    }
    // Each named-allreduce algorithm at the sizes around its threshold
    // (ARCHITECTURE.md, "Collectives by size"), forced with
    // `com.large_min_bytes` and `com.shared_memory`.
    let threshold = zpar_engine::communicator::LARGE_MIN_BYTES;
    for (label, elems, calls) in [
        ("64 KiB", 8192usize, 200usize),
        ("256 KiB", 32768, 200),
        ("1 MiB", 131072, 100),
        ("8 MB", 1_000_000, 30),
    ] {
        view.execute(&format!("let v = f64_array({elems}, 1.0);"))?
            .get()?;
        for (path, large_min, shared) in [
            ("chunked", usize::MAX >> 1, true),
            ("shared", 0, true),
            ("ring", 0, false),
        ] {
            let calls = reps(calls, args.scale);
            let code = format!(
                "com.large_min_bytes = {large_min}; com.shared_memory = {shared}; \
                 let ts = []; for i in 0..{calls} {{ let t = timestamp(); let r = com.allreduce(\"sum\", v); ts.push(t.elapsed); }} \
                 ts.sort(); if com.last_algorithm != \"{path}\" {{ throw `took ${{com.last_algorithm}}, not {path}`; }} ts[ts.len / 2] * 1000000.0"
            );
            let inside = view.execute(&code)?.get()?;
            let mut us: Vec<f64> = inside.iter().filter_map(Value::as_f64).collect();
            let baseline = if elems >= 1_000_000 { one_way } else { hop };
            report.add(
                &format!("allreduce 4 engines, {label}, named \"sum\", {path}, in engines"),
                median(&mut us),
                "us",
                baseline,
            );
        }
    }
    view.execute(&format!(
        "com.large_min_bytes = {threshold}; com.shared_memory = true;"
    ))?
    .get()?;
    drop(view);
    drop(client);
    drop(cluster);
    // The same small allreduce with as many engines as this machine has
    // cores, or fewer: beyond that each call waits for processes to be
    // scheduled, which is what the 4-engine figure above pays on 2 cores.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let cluster = LocalCluster::start(cores)?;
    let client: Client = cluster.client()?;
    let view = client.all();
    view.setup_communicator("com", Duration::from_secs(30))?;
    view.push("add", Value::Function("|a, b| a + b".into()))?
        .get()?;
    let calls = reps(1000, args.scale);
    let code = format!(
        "let ts = []; for i in 0..{calls} {{ let t = timestamp(); let r = com.allreduce(add, 1); ts.push(t.elapsed); }} ts.sort(); ts[ts.len / 2] * 1000000.0"
    );
    let inside = view.execute(&code)?.get()?;
    let mut us: Vec<f64> = inside.iter().filter_map(Value::as_f64).collect();
    report.add(
        &format!("allreduce {cores} engines (one per core), one integer, in engines"),
        median(&mut us),
        "us",
        hop,
    );
    Ok(())
}
