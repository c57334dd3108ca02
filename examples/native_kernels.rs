//! A program's own Rust functions on its engines: a Monte Carlo estimate
//! of π with a native, seeded kernel, combined by an allreduce, against the
//! same estimate written as a Rhai loop.
//!
//! The program is the client *and* its engines: `zpar::serve_engines_with`
//! at the top of `main` registers `pi_hits` on every engine this program
//! serves, and the local cluster it starts runs this program as its engines.
//! The kernel, and its Rhai twin, are zpar's (`zpar::kernels`, which `zpar
//! bench compute` measures too); a function of your own registers the same
//! way.
//!
//! ```text
//! cargo run --release --example native_kernels                      # 10^8 samples, 2 engines
//! cargo run --release --example native_kernels -- --samples 1000000 --engines 4
//! zpar cluster start --engine-program target/release/examples/native_kernels
//! ```

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use zpar::kernels::{pi_hits, RHAI_PI_HITS};
use zpar::{LocalCluster, Value};

struct Options {
    samples: u64,
    rhai_samples: u64,
    engines: usize,
}

fn options() -> Result<Options> {
    let mut o = Options {
        samples: 100_000_000,
        rhai_samples: 1_000_000,
        engines: 2,
    };
    let mut args = std::env::args().skip(1).peekable();
    // `cargo run --example native_kernels -- --engines 4` passes no `--`;
    // the same words given to the built program do.
    args.next_if_eq("--");
    while let Some(a) = args.next() {
        let mut next = |what: &str| args.next().with_context(|| format!("{a} {what}"));
        match a.as_str() {
            "--samples" => o.samples = next("N")?.parse()?,
            "--rhai-samples" => o.rhai_samples = next("N")?.parse()?,
            "--engines" | "-n" => o.engines = next("N")?.parse()?,
            "-h" | "--help" => {
                println!("usage: native_kernels [--samples N] [--rhai-samples N] [--engines K]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if o.engines == 0 || o.samples == 0 || o.rhai_samples == 0 {
        bail!("--engines, --samples and --rhai-samples must be at least 1");
    }
    Ok(o)
}

/// Runs `kernel(seed, share)` on every engine and sums the hits with an
/// allreduce; the estimate of π and the time it took.
fn estimate(view: &zpar::DirectView, kernel: &str, samples: u64) -> Result<(f64, Duration)> {
    let k = view.targets()?.len() as u64;
    let share = samples / k;
    let started = Instant::now();
    let totals = view
        .execute(&format!(
            "let hits = {kernel}(seed, {share}); com.allreduce(\"sum\", hits)"
        ))?
        .get()?;
    let took = started.elapsed();
    let hits = match totals.first() {
        Some(Value::Int(h)) if totals.iter().all(|t| t == &totals[0]) => *h,
        _ => bail!("the engines disagree on the allreduce: {totals:?}"),
    };
    Ok((4.0 * hits as f64 / (share * k) as f64, took))
}

fn main() -> Result<()> {
    // Started by the cluster as an engine, this serves `pi_hits` and exits.
    zpar::serve_engines_with(|engine| {
        engine.register_fn("pi_hits", pi_hits);
    });
    let opts = options()?;
    let cluster = LocalCluster::start(opts.engines).context("starting a local cluster")?;
    let client = cluster.client()?;
    let view = client.all();
    println!(
        "engines {:?} serve {}",
        client.ids(),
        view.apply_sync("native_functions", vec![])?[0]
    );

    // apply: the engines' kernel is this program's, so it agrees exactly.
    let probe = view.apply_sync("pi_hits", vec![Value::Int(7), Value::Int(10_000)])?;
    if probe.iter().any(|h| *h != Value::Int(pi_hits(7, 10_000))) {
        bail!(
            "apply(pi_hits) gave {probe:?}, this program computes {}",
            pi_hits(7, 10_000)
        );
    }

    // Each engine its own seed, then a communicator for the allreduce.
    let seeds: Vec<Value> = client
        .ids()
        .iter()
        .map(|&i| Value::Int(1000 + i64::from(i)))
        .collect();
    view.scatter("seed", Value::Array(seeds), true)?.get()?;
    view.setup_communicator("com", Duration::from_secs(30))?;
    view.execute(RHAI_PI_HITS)?.get()?;

    let (pi, native) = estimate(&view, "pi_hits", opts.samples)?;
    // Each sample is a Bernoulli trial with p = π/4: σ(π̂) = 4·sqrt(p(1-p)/n).
    let p = std::f64::consts::FRAC_PI_4;
    let sigma = 4.0 * (p * (1.0 - p) / opts.samples as f64).sqrt();
    let off = (pi - std::f64::consts::PI).abs();
    println!(
        "native kernel: {} samples on {} engines: π ≈ {pi:.6} (off by {off:.2e}, σ {sigma:.1e}) in {:.3} s, {:.2} ns/sample",
        opts.samples,
        opts.engines,
        native.as_secs_f64(),
        native.as_secs_f64() * 1e9 / opts.samples as f64 * opts.engines as f64
    );
    let (rpi, rhai) = estimate(&view, "rhai_pi_hits", opts.rhai_samples)?;
    println!(
        "Rhai loop:     {} samples on {} engines: π ≈ {rpi:.4} in {:.3} s, {:.0} ns/sample",
        opts.rhai_samples,
        opts.engines,
        rhai.as_secs_f64(),
        rhai.as_secs_f64() * 1e9 / opts.rhai_samples as f64 * opts.engines as f64
    );
    let ratio = (rhai.as_secs_f64() / opts.rhai_samples as f64)
        / (native.as_secs_f64() / opts.samples as f64);
    println!("native is {ratio:.0}× faster per sample");
    // 5σ: a correct kernel fails this about once in 1.7 million runs.
    if off > 5.0 * sigma {
        bail!(
            "π ≈ {pi} is {off:.2e} from π, more than 5σ ({:.2e})",
            5.0 * sigma
        );
    }
    let rsigma = 4.0 * (p * (1.0 - p) / opts.rhai_samples as f64).sqrt();
    if (rpi - std::f64::consts::PI).abs() > 5.0 * rsigma + 1e-3 {
        bail!("the Rhai loop's π ≈ {rpi} is too far from π");
    }
    println!("check: ok (within 5σ of π)");
    Ok(())
}
