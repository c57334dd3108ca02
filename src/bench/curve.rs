//! `zpar bench curve`: what CURVE encryption costs. Two one-engine
//! clusters on this machine, one plain (`--no-curve`) and one encrypting
//! (`--curve`), measured in turns in the same run, so both see the same
//! load: the execute round trip, and a 128 MiB push (client → hub →
//! engine, both hops encrypted and decrypted; shared memory off, so the
//! bytes do cross the sockets). Each CURVE figure is printed
//! with its ratio to the plain one; the targets are a round trip at most
//! 1.3× and a throughput at least 0.5× the plain figures.

use super::report::{median, reps, Report};
use anyhow::{bail, Context, Result};
use std::time::Instant;
use zpar_client::{DirectView, LocalCluster, Value};

/// `n` timings of `f` in µs, after a few to warm up.
fn samples_us(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..(n / 10).max(2) {
        f()?;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// A one-engine cluster started with `mode`, checked to encrypt (or not)
/// as asked.
fn start(mode: &str, encrypted: bool) -> Result<LocalCluster> {
    let cluster = LocalCluster::builder()
        .engines(1)
        .hub_args([mode])
        .start()
        .with_context(|| format!("starting a one-engine cluster with {mode}"))?;
    let keys = cluster.client()?.connection().curve()?;
    if keys.is_some() != encrypted {
        bail!("the cluster started with {mode} does not encrypt as asked");
    }
    Ok(cluster)
}

pub(crate) fn curve(report: &mut Report, scale: f64) -> Result<()> {
    let plain = start("--no-curve", false)?;
    let curve = start("--curve", true)?;
    let view = |c: &LocalCluster| -> Result<DirectView> {
        let client = c.client()?;
        // On one host a large push would go through shared memory, never
        // through the sockets whose encryption this measures.
        client.set_shared_memory(false);
        let id = *client.ids().first().context("no engine")?;
        Ok(client.view(id))
    };
    let views = [view(&plain)?, view(&curve)?];

    // In turns: a batch on one, then on the other, five times over.
    let mut rtt: [Vec<f64>; 2] = Default::default();
    for _ in 0..5 {
        for (i, v) in views.iter().enumerate() {
            rtt[i].extend(samples_us(reps(200, scale), || {
                v.execute("1")?.get()?;
                Ok(())
            })?);
        }
    }
    let [mut rtt_plain, mut rtt_curve] = rtt;
    let rtt_plain = median(&mut rtt_plain);
    report.add(
        "execute round trip, plain (--no-curve)",
        rtt_plain,
        "us",
        None,
    );
    report.add(
        "execute round trip, CURVE (target <= 1.3x)",
        median(&mut rtt_curve),
        "us",
        Some(("plain", rtt_plain)),
    );

    let mib = 128usize;
    let data = Value::F64Array((0..(mib << 20) / 8).map(|i| i as f64).collect());
    let mbs = |us: f64| (mib << 20) as f64 / 1e6 / (us / 1e6);
    let mut push: [Vec<f64>; 2] = Default::default();
    for _ in 0..reps(5, scale) {
        for (i, v) in views.iter().enumerate() {
            let t = Instant::now();
            v.push("bench_data", data.clone())?.get()?;
            push[i].push(mbs(t.elapsed().as_secs_f64() * 1e6));
        }
    }
    let [mut push_plain, mut push_curve] = push;
    let push_plain = median(&mut push_plain);
    report.add(
        "push 128 MiB f64 array, plain (--no-curve)",
        push_plain,
        "MB/s",
        None,
    );
    report.add(
        "push 128 MiB f64 array, CURVE (target >= 0.5x)",
        median(&mut push_curve),
        "MB/s",
        Some(("plain", push_plain)),
    );
    for v in &views {
        v.execute("bench_data = ();")?.get()?;
    }
    Ok(())
}
