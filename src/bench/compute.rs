//! `zpar bench compute`: computing on engines. The array toolkit on 10^6
//! f64 beside a plain Rust loop over the same `Vec<f64>`; a native kernel
//! through `apply` beside calling it in-process plus one round trip; the π
//! estimate on 2 engines beside 1; and the native kernel beside the same
//! estimate as a Rhai loop. Engines are `zpar engine --bench-kernels`,
//! which serve [`crate::kernels::bench_kernels`].

use super::args::BenchArgs;
use super::report::{median_us, reps, Report};
use crate::kernels::{pi_hits, RHAI_PI_HITS};
use anyhow::{bail, Context, Result};
use std::hint::black_box;
use std::time::{Duration, Instant};
use zpar_client::{LocalCluster, Value};

fn toolkit(report: &mut Report, scale: f64) -> Result<()> {
    let mut engine = zpar_engine::rhai::Engine::new();
    zpar_engine::arrays::register(&mut engine);
    let n = 1_000_000;
    let a: Vec<f64> = (0..n).map(|k| k as f64 * 1e-6).collect();
    let b: Vec<f64> = (0..n).map(|k| 1.0 - k as f64 * 1e-6).collect();
    let mut scope = zpar_engine::rhai::Scope::new();
    scope.push("a", zpar_engine::arrays::F64Array::new(a.clone()));
    scope.push("b", zpar_engine::arrays::F64Array::new(b.clone()));
    type RustLoop<'a> = Box<dyn Fn() -> f64 + 'a>;
    let cases: [(&str, &str, RustLoop); 3] = [
        (
            "a * 2.0 + 1.0",
            "(a * 2.0 + 1.0)[0]",
            Box::new(|| {
                let r: Vec<f64> = black_box(&a).iter().map(|x| x * 2.0 + 1.0).collect();
                r[0]
            }),
        ),
        (
            "a.dot(b)",
            "a.dot(b)",
            Box::new(|| {
                let (a, b) = (black_box(&a), black_box(&b));
                let mut s = 0.0;
                for k in 0..a.len() {
                    s += a[k] * b[k];
                }
                s
            }),
        ),
        (
            "a.sum()",
            "a.sum()",
            Box::new(|| {
                let mut s = 0.0;
                for x in black_box(&a) {
                    s += x;
                }
                s
            }),
        ),
    ];
    for (label, code, rust) in cases {
        let ast = engine.compile(code)?;
        let rust_us = median_us(reps(50, scale), || {
            black_box(rust());
            Ok(())
        })?;
        let script_us = median_us(reps(50, scale), || {
            let v: f64 = engine
                .eval_ast_with_scope(&mut scope, &ast)
                .map_err(|e| anyhow::anyhow!("{code}: {e}"))?;
            black_box(v);
            Ok(())
        })?;
        report.add(
            &format!("toolkit {label}, 1e6 f64"),
            script_us,
            "us",
            Some(("plain Rust loop", rust_us)),
        );
    }
    Ok(())
}

fn kernel_cluster(engines: usize) -> Result<LocalCluster> {
    LocalCluster::builder()
        .engines(engines)
        .engine_args(["--bench-kernels"])
        .start()
        .context("starting engines with the bench kernels")
}

/// Runs the compute suite.
pub(crate) fn compute(report: &mut Report, args: &BenchArgs) -> Result<()> {
    toolkit(report, args.scale)?;

    // A native kernel through apply, beside in-process plus a round trip.
    let cluster = kernel_cluster(2)?;
    let client = cluster.client()?;
    let one = client.view(client.ids()[0]);
    let n = 1_000_000i64;
    let local = median_us(reps(20, args.scale), || {
        black_box(pi_hits(black_box(1), n));
        Ok(())
    })?;
    let rtt = median_us(reps(200, args.scale), || {
        one.apply("|| 0", vec![])?.get()?;
        Ok(())
    })?;
    let remote = median_us(reps(20, args.scale), || {
        one.apply("pi_hits", vec![Value::Int(1), Value::Int(n)])?
            .get()?;
        Ok(())
    })?;
    report.add(
        "native kernel (1e6 samples) via apply",
        remote,
        "us",
        Some(("in-process + 1 round trip", local + rtt)),
    );

    // π: 10^8 samples on 2 engines against 1.
    let samples = ((1e8 * args.scale.min(1.0)) as i64).max(2_000_000);
    let all = client.all();
    all.scatter(
        "seed",
        Value::Array(client.ids().iter().map(|&i| Value::Int(i.into())).collect()),
        true,
    )?
    .get()?;
    all.setup_communicator("com", Duration::from_secs(30))?;
    let t = Instant::now();
    let single = one
        .apply("pi_hits", vec![Value::Int(1), Value::Int(samples)])?
        .get()?;
    let t1 = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let both = all
        .execute(&format!(
            "com.allreduce(\"sum\", pi_hits(seed, {}))",
            samples / 2
        ))?
        .get()?;
    let t2 = t.elapsed().as_secs_f64() * 1e3;
    for got in single.iter().chain(&both) {
        let Value::Int(h) = got else {
            bail!("pi_hits gave {got:?}")
        };
        let pi = 4.0 * *h as f64 / samples as f64;
        if (pi - std::f64::consts::PI).abs() > 0.01 {
            bail!("π ≈ {pi} is far off");
        }
    }
    report.add(
        &format!("π, {samples} samples, 2 engines"),
        t2,
        "ms",
        Some(("1 engine", t1)),
    );

    // The native kernel against the same estimate as a Rhai loop.
    one.execute(RHAI_PI_HITS)?.get()?;
    let rhai_n = ((100_000.0 * args.scale) as i64).max(10_000);
    let t = Instant::now();
    one.apply("rhai_pi_hits", vec![Value::Int(1), Value::Int(rhai_n)])?
        .get()?;
    let rhai_ns = t.elapsed().as_secs_f64() * 1e9 / rhai_n as f64;
    let native_ns = local * 1e3 / n as f64;
    report.add(
        "π Rhai loop per sample",
        rhai_ns,
        "ns",
        Some(("native kernel per sample", native_ns)),
    );
    Ok(())
}
