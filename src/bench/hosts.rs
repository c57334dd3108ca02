//! `zpar bench hosts --file F`: the big-data figures of a cluster already
//! running across hosts, for the client on the hub's host
//! (`scripts/bench-hosts.sh` builds hosts out of network namespaces with
//! rate-limited links and runs it). With `--link-mbs`, each rate is also
//! given as a ratio to the link's.

use super::args::BenchArgs;
use super::report::{median, reps, Report};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use zpar_client::{Client, Value};

/// 128 MiB, the transfers' size.
const BIG: usize = 128 << 20;

/// Push and pull of 128 MiB to one engine, push to all, scatter + gather of
/// 1e7 f64 over all, and an 8 MiB named allreduce over all (the ring when
/// the engines are on several hosts), once `--engines` have registered.
pub(crate) fn hosts(report: &mut Report, args: &BenchArgs) -> Result<()> {
    let file = args
        .file
        .as_ref()
        .context("the hosts suite measures a running cluster: give its client file with --file")?;
    let client = Client::from_file(file)?;
    client
        .wait_for_engines(args.engines, Duration::from_secs(60))
        .with_context(|| {
            format!(
                "waiting for the cluster's {} engines (--engines)",
                args.engines
            )
        })?;
    let ids = client.ids();
    let n = ids.len();
    let one = client.view(ids[0]);
    let all = client.all();
    let link = args.link_mbs.map(|mbs| ("link", mbs));
    let mbs = |bytes: usize, us: f64| bytes as f64 / 1e6 / (us / 1e6);
    let reps = reps(3, args.scale);
    let data: Vec<f64> = (0..BIG / 8).map(|i| i as f64).collect();

    let push_one = timed(reps, || {
        one.push_slice("bench_data", &data)?.get()?;
        Ok(())
    })?;
    report.add(
        "push 128 MiB to one engine",
        mbs(BIG, push_one),
        "MB/s",
        link,
    );
    let pull_one = timed(reps, || {
        one.pull("bench_data")?.get()?;
        Ok(())
    })?;
    report.add(
        "pull 128 MiB from one engine",
        mbs(BIG, pull_one),
        "MB/s",
        link,
    );
    let push_all = timed(reps, || {
        all.push_slice("bench_data", &data)?.get()?;
        Ok(())
    })?;
    report.add(
        &format!("push 128 MiB to all {n} engines"),
        push_all / 1e3,
        "ms",
        Some(("push to one", push_one / 1e3)),
    );
    all.execute("bench_data = ();")?.get()?;
    drop(data);

    let floats: Vec<f64> = (0..10_000_000).map(|i| i as f64).collect();
    let whole = Value::F64Array(floats.clone());
    let scatter_gather = timed(reps, || {
        all.scatter_slice("bench_part", &floats, false)?.get()?;
        if all.gather("bench_part")?.get_gathered()? != whole {
            bail!("gather returned something else");
        }
        Ok(())
    })?;
    let at_link = args
        .link_mbs
        .map(|mbs| ("160 MB at link rate", 160.0 / mbs * 1e3));
    report.add(
        &format!("scatter + gather 1e7 f64 over {n} engines"),
        scatter_gather / 1e3,
        "ms",
        at_link,
    );
    all.execute("bench_part = ();")?.get()?;

    all.setup_communicator("com", Duration::from_secs(60))?;
    let calls = reps.max(5);
    let code = format!(
        "let v = f64_array(1048576, 1.0); com.allreduce(\"sum\", v); \
         let ts = []; for i in 0..{calls} {{ let t = timestamp(); com.allreduce(\"sum\", v); ts.push(t.elapsed); }} \
         ts.sort(); [ts[ts.len / 2] * 1000.0, com.last_algorithm]"
    );
    let inside = all.execute(&code)?.get()?;
    let mut ms: Vec<f64> = inside
        .iter()
        .filter_map(|v| match v {
            Value::Array(a) => a.first().and_then(Value::as_f64),
            _ => None,
        })
        .collect();
    let path = match inside.first() {
        Some(Value::Array(a)) => a.get(1).map(|p| p.to_string()).unwrap_or_default(),
        _ => String::new(),
    };
    let one_way = args.link_mbs.map(|mbs| {
        (
            "8 MiB one way at link rate",
            (8 << 20) as f64 / 1e6 / mbs * 1e3,
        )
    });
    report.add(
        &format!("allreduce 8 MiB over {n} engines ({path}), in engines"),
        median(&mut ms),
        "ms",
        one_way,
    );
    Ok(())
}

/// The median time of `n` runs of `f` after one to warm up, in µs.
fn timed(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(&mut samples))
}
