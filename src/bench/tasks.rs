//! `zpar bench tasks`: load-balanced throughput, with the hub recording in
//! memory and then in SQLite.

use super::args::BenchArgs;
use super::report::{median, reps, Report};
use super::rss::rss_mib;
use anyhow::{bail, Result};
use std::time::Instant;
use zpar_client::{LocalCluster, Value};

/// Load-balanced throughput on `engines` engines, with the hub recording in
/// memory and then in SQLite; the SQLite figures are compared with memory's.
pub(crate) fn tasks(report: &mut Report, args: &BenchArgs) -> Result<()> {
    let db_dir = std::env::temp_dir().join(format!("zpar-bench-db-{}", zpar_protocol::new_id()));
    std::fs::create_dir_all(&db_dir)?;
    let sqlite = format!("sqlite:{}", db_dir.join("tasks.db").display());
    let mut memory_rates: Vec<f64> = Vec::new();
    for (label, db) in [("memory", "memory"), ("sqlite", sqlite.as_str())] {
        let cluster = LocalCluster::builder()
            .engines(args.engines.max(1))
            .hub_args(["--db", db])
            .start()?;
        let lb = cluster.client()?.load_balanced();
        lb.apply_sync("|x| x", vec![Value::Int(0)])?; // warm up
        let n = reps(10_000, args.scale);
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let results: Vec<_> = (0..n)
                .map(|i| lb.apply("|x| x + 1", vec![Value::Int(i as i64)]))
                .collect::<Result<_, _>>()?;
            for r in &results {
                r.get()?;
            }
            rates.push(n as f64 / t.elapsed().as_secs_f64());
        }
        let single = median(&mut rates);
        let m = reps(100_000, args.scale);
        let items: Vec<Value> = (0..m as i64).map(Value::Int).collect();
        let mut map_rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let out = lb.map("|x| x * 2", items.clone(), 1000)?.get()?;
            if out.len() != m {
                bail!("map returned {} items, expected {m}", out.len());
            }
            map_rates.push(m as f64 / t.elapsed().as_secs_f64());
        }
        let chunked = median(&mut map_rates);
        let k = reps(5_000, args.scale);
        let mut unchunked_rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let out = lb.map("|x| x * 2", items[..k].to_vec(), 1)?.get()?;
            if out.len() != k {
                bail!("map returned {} items, expected {k}", out.len());
            }
            unchunked_rates.push(k as f64 / t.elapsed().as_secs_f64());
        }
        let unchunked = median(&mut unchunked_rates);
        let base =
            |i: usize| (label == "sqlite").then(|| ("same with memory records", memory_rates[i]));
        report.add(
            &format!("load-balanced async applies, {label} records"),
            single,
            "tasks/s",
            base(0),
        );
        report.add(
            &format!("load-balanced map, chunks of 1000, {label} records"),
            chunked,
            "items/s",
            base(1),
        );
        report.add(
            &format!("load-balanced map, chunks of 1, {label} records"),
            unchunked,
            "items/s",
            base(2),
        );
        if label == "memory" {
            memory_rates = vec![single, chunked, unchunked];
            report.add(
                "hub RSS after 30,000+ recorded tasks",
                rss_mib(cluster.pids().hub),
                "MiB",
                None,
            );
        }
    }
    let _ = std::fs::remove_dir_all(db_dir);
    Ok(())
}

// ---------------------------------------------------------------- link
