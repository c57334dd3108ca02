//! `zpar bench cluster`: a local cluster against the raw baselines — start
//! time, idle memory, round trips, apply and task rates, push and pull
//! throughput, scatter/gather, memory after large transfers, a 4-engine
//! fan-out, and how long a client waits on a killed hub (also on its own as
//! `zpar bench hub-loss`).

use super::args::BenchArgs;
use super::raw::Raw;
use super::report::{median, median_us, reps, Report};
use super::rss::{rss_mib, settled_rss_mib};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use zpar_client::{LocalCluster, Value};

/// Runs the cluster suite (which ends with [`fan_out`] and [`hub_loss`]).
pub(crate) fn cluster(report: &mut Report, args: &BenchArgs, raw: &Raw) -> Result<()> {
    let started = Instant::now();
    let cluster = LocalCluster::start(4).context("starting a 4-engine cluster")?;
    report.add(
        "cluster start -n 4 until all registered",
        started.elapsed().as_secs_f64() * 1e3,
        "ms",
        None,
    );
    drop(cluster);

    let cluster = LocalCluster::start(args.engines.max(1))?;
    let client = cluster.client()?;
    let pids = cluster.pids();
    report.add("idle hub RSS", rss_mib(pids.hub), "MiB", None);
    report.add("idle engine RSS", rss_mib(pids.engines[0]), "MiB", None);
    let one = client.view(client.ids()[0]);
    let all = client.all();
    let fwd = Some(("raw forwarder rtt", raw.forwarder_rtt));
    let rtt = median_us(reps(1000, args.scale), || {
        one.execute("1")?.get()?;
        Ok(())
    })?;
    report.add("execute round trip, one engine", rtt, "us", fwd);
    let rtt_all = median_us(reps(1000, args.scale), || {
        all.execute("1")?.get()?;
        Ok(())
    })?;
    report.add(
        &format!("execute round trip, all {} engines", args.engines),
        rtt_all,
        "us",
        fwd,
    );
    let apply = median_us(reps(1000, args.scale), || {
        one.apply("|x| x + 1", vec![Value::Int(1)])?.get()?;
        Ok(())
    })?;
    report.add("apply round trip, one engine", apply, "us", fwd);

    let views: Vec<_> = client.ids().into_iter().map(|i| client.view(i)).collect();
    let mut rates = Vec::new();
    for _ in 0..3 {
        let n = reps(5000, args.scale);
        let t = Instant::now();
        let results: Vec<_> = (0..n)
            .map(|i| views[i % views.len()].apply("|x| x + 1", vec![Value::Int(i as i64)]))
            .collect::<Result<_, _>>()?;
        for r in &results {
            r.get()?;
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    report.add(
        "5,000 async applies (direct, round robin)",
        median(&mut rates),
        "tasks/s",
        None,
    );

    // Pushed by reference (`push_ref`): the figure is the transfer, not a
    // clone of the value. Engines here share the client's host, so large
    // values go through shared memory; "through the hub" turns that off.
    let tp = Some(("raw one-way 8 MiB", raw.throughput_8m));
    for (mib, shared) in [
        (1usize, true),
        (16, true),
        (16, false),
        (128, true),
        (128, false),
    ] {
        client.set_shared_memory(shared);
        let data = Value::F64Array((0..(mib << 20) / 8).map(|i| i as f64).collect());
        let n = reps(if mib == 128 { 5 } else { 20 }, args.scale);
        let how = if shared { "" } else { " through the hub" };
        // Through the hub, the floor is two hops: raw 1 MiB messages
        // through a forwarder, measured in the same run.
        let tp = match shared {
            true => tp,
            false => Some(("raw 1 MiB through a forwarder", raw.forwarded_1m)),
        };
        let push = median_us(n, || {
            one.push_ref("bench_data", &data)?.get()?;
            Ok(())
        })?;
        let mbs = |us: f64| (mib << 20) as f64 / 1e6 / (us / 1e6);
        report.add(
            &format!("push {mib} MiB f64 array{how}"),
            mbs(push),
            "MB/s",
            tp,
        );
        let pull = median_us(n, || {
            one.pull("bench_data")?.get()?;
            Ok(())
        })?;
        report.add(
            &format!("pull {mib} MiB f64 array{how}"),
            mbs(pull),
            "MB/s",
            tp,
        );
    }
    client.set_shared_memory(true);
    one.execute("bench_data = ();")?.get()?;

    // The gathered value is checked after each timed round, not in it
    // (two rounds first to warm up, as `median_us` does).
    let scatter_gather = |name: &str, seq: &Value, n: usize| -> Result<f64> {
        let mut samples = Vec::with_capacity(n);
        for round in 0..n + 2 {
            let t = Instant::now();
            all.scatter_ref(name, seq, false)?.get()?;
            let back = all.gather(name)?.get_gathered()?;
            if round >= 2 {
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            if back != *seq {
                bail!("gather returned something else");
            }
        }
        Ok(median(&mut samples))
    };
    let ints = Value::I64Array((0..1_000_000).collect());
    let sg = scatter_gather("bench_ints", &ints, reps(10, args.scale))?;
    report.add("scatter + gather 1,000,000 integers", sg / 1e3, "ms", None);
    // 1e7 f64 (80 MB) out and back: compared with raw ZeroMQ moving the
    // same 160 MB one way.
    let floats = Value::F64Array((0..10_000_000).map(|i| i as f64).collect());
    let raw_160mb_ms = 160.0 / raw.throughput_8m * 1e3;
    for shared in [true, false] {
        client.set_shared_memory(shared);
        let sg = scatter_gather("bench_floats", &floats, reps(5, args.scale))?;
        let how = if shared { "" } else { ", through the hub" };
        report.add(
            &format!("scatter + gather 1e7 f64, {} engines{how}", args.engines),
            sg / 1e3,
            "ms",
            Some(("raw one-way 160 MB", raw_160mb_ms)),
        );
    }
    client.set_shared_memory(true);
    all.execute("bench_ints = (); bench_floats = ();")?.get()?;
    // Memory over ten rounds of 128 MiB out and back: client and engine
    // RSS at the end against the start (after one round to warm up).
    let data = Value::F64Array(vec![0.5; (128 << 20) / 8]);
    let own = std::process::id();
    let round = || -> Result<()> {
        one.push_ref("bench_data", &data)?.get()?;
        one.pull("bench_data")?.get()?;
        Ok(())
    };
    round()?;
    let (client_before, engine_before) = (rss_mib(own), rss_mib(pids.engines[0]));
    for _ in 0..10 {
        round()?;
    }
    report.add(
        "client RSS after 10 rounds of 128 MiB",
        rss_mib(own),
        "MiB",
        Some(("after the first round", client_before)),
    );
    report.add(
        "engine RSS after 10 rounds of 128 MiB",
        rss_mib(pids.engines[0]),
        "MiB",
        Some(("after the first round", engine_before)),
    );
    one.execute("bench_data = ();")?.get()?;
    drop(data);
    report.add(
        "hub RSS after the run, at rest",
        settled_rss_mib(pids.hub),
        "MiB",
        None,
    );
    // The same hub through more rounds of mixed work: its memory must stay
    // flat (records are bounded in count and bytes).
    let lb = client.load_balanced();
    let data = Value::F64Array(vec![1.0; (16 << 20) / 8]);
    for round in 1..=3 {
        for _ in 0..reps(200, args.scale) {
            all.execute("1")?.get()?;
        }
        let tasks: Vec<_> = (0..reps(2000, args.scale))
            .map(|i| lb.apply("|x| x", vec![Value::Int(i as i64)]))
            .collect::<Result<_, _>>()?;
        for t in &tasks {
            t.get()?;
        }
        one.push_ref("bench_data", &data)?.get()?;
        one.pull("bench_data")?.get()?;
        report.add(
            &format!("hub RSS after extra round {round}"),
            rss_mib(pids.hub),
            "MiB",
            None,
        );
    }
    drop(cluster);
    fan_out(report, args.scale)?;
    hub_loss(report, args.scale)
}

/// One 128 MiB value pushed to four engines of this host, against the same
/// push to one of them.
fn fan_out(report: &mut Report, scale: f64) -> Result<()> {
    let cluster = LocalCluster::start(4).context("starting a 4-engine cluster")?;
    let client = cluster.client()?;
    let data = Value::F64Array((0..(128usize << 20) / 8).map(|i| i as f64).collect());
    let n = reps(5, scale);
    let one = client.view(client.ids()[0]);
    let all = client.all();
    let to_one = median_us(n, || {
        one.push_ref("bench_data", &data)?.get()?;
        Ok(())
    })?;
    report.add("push 128 MiB to one engine", to_one / 1e3, "ms", None);
    for shared in [true, false] {
        client.set_shared_memory(shared);
        let to_all = median_us(n, || {
            all.push_ref("bench_data", &data)?.get()?;
            Ok(())
        })?;
        let how = if shared { "" } else { ", through the hub" };
        report.add(
            &format!("push 128 MiB to 4 engines on this host{how}"),
            to_all / 1e3,
            "ms",
            Some(("push to one", to_one / 1e3)),
        );
    }
    report.add(
        "hub RSS after the 4-engine pushes",
        rss_mib(cluster.pids().hub),
        "MiB",
        None,
    );
    Ok(())
}

/// How long a client waits on a killed hub: from `kill -9` of the hub to
/// the pending result failing with `HubLost`, with default heartbeats (1 s)
/// and the client's default limit (`HUB_TIMEOUT`, 3 s): the limit less the
/// time since the hub was last heard. A fresh one-engine cluster per run,
/// the kill falling at another point of the hub's beat each time; the
/// median and the longest of the runs.
pub(crate) fn hub_loss(report: &mut Report, scale: f64) -> Result<()> {
    let runs = reps(5, scale);
    let mut secs = Vec::new();
    for run in 0..runs {
        let mut cluster = LocalCluster::start(1).context("starting a 1-engine cluster")?;
        let client = cluster.client()?;
        let pending = client.all().execute("loop {}")?;
        // Spread the kills over one heartbeat period (not a wait for
        // anything: the phase of the kill is what is varied).
        std::thread::sleep(Duration::from_secs(1).mul_f64(run as f64 / runs as f64));
        let killed = Instant::now();
        cluster.kill_hub()?;
        // Bounded: a client that never notices fails the bench.
        if !pending.wait(Some(Duration::from_secs(60))) {
            bail!("no HubLost within 60 s of killing the hub");
        }
        let lost = killed.elapsed();
        match pending.get() {
            Err(zpar_client::Error::HubLost { .. }) => secs.push(lost.as_secs_f64()),
            other => bail!("a killed hub gave {other:?}, not HubLost"),
        }
    }
    let longest = secs.iter().copied().fold(0.0, f64::max);
    report.add(
        "hub kill -9 until pending result fails HubLost",
        median(&mut secs),
        "s",
        None,
    );
    report.add("  the same, longest run", longest, "s", None);
    Ok(())
}

// ---------------------------------------------------------------- tasks
