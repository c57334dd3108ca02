//! `zpar bench scale`: many engines on this machine (`--many`, default
//! 1000): how long until all are registered, an execute on all of them,
//! setting up a communicator over all, and an allreduce of one integer
//! timed inside the engines; the hub's memory with them all, and what the
//! hub and engines cost the machine while idle.

use super::report::{median, median_us, reps, Report};
use super::rss::{cpu_seconds, peak_rss_mib, rss_mib};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use zpar_client::{LocalCluster, Value};

/// Runs the suite with `many` engines.
pub(crate) fn scale(
    report: &mut Report,
    many: usize,
    per_process: usize,
    hb_period_ms: Option<u64>,
    scale: f64,
) -> Result<()> {
    let started = Instant::now();
    let mut builder = LocalCluster::builder()
        .engines(many)
        .per_process(per_process)
        .timeout(Duration::from_secs(300));
    if let Some(ms) = hb_period_ms {
        builder = builder.hub_args(["--hb-period-ms".to_string(), ms.to_string()]);
    }
    let cluster = builder
        .start()
        .with_context(|| format!("starting {many} engines"))?;
    report.add(
        &format!("{many} engines all registered"),
        started.elapsed().as_secs_f64(),
        "s",
        None,
    );
    let client = cluster.client()?;
    if hb_period_ms.is_some_and(|ms| ms > 1000) {
        // The client's own judge of the hub, as the README advises.
        client.set_hub_timeout(Duration::from_secs(15))?;
    }
    let events = client.events()?;
    let all = client.all();
    let exec = median_us(reps(10, scale), || {
        all.execute("1")?.get_timeout(Duration::from_secs(120))?;
        Ok(())
    })?;
    report.add(
        &format!("execute on all {many} engines"),
        exec / 1000.0,
        "ms",
        None,
    );
    // A communicator that cannot be built (no free ports for thousands of
    // engines' listeners, say) is reported, and the other figures are
    // still taken.
    let communicator = (|| -> Result<()> {
        let t = Instant::now();
        all.setup_communicator("com", Duration::from_secs(300))?;
        report.add(
            &format!("setup_communicator over {many} engines"),
            t.elapsed().as_secs_f64(),
            "s",
            None,
        );
        let calls = reps(20, scale).max(3);
        let code = format!(
            "let ts = []; for i in 0..{calls} {{ let t = timestamp(); com.allreduce(\"sum\", 1); ts.push(t.elapsed); }} ts.sort(); ts[ts.len / 2] * 1000.0"
        );
        let inside = all.execute(&code)?.get_timeout(Duration::from_secs(300))?;
        let mut ms: Vec<f64> = inside.iter().filter_map(Value::as_f64).collect();
        report.add(
            &format!("allreduce of one integer over {many} engines, in engines"),
            median(&mut ms),
            "ms",
            None,
        );
        Ok(())
    })();
    if let Err(e) = communicator {
        let said = format!("{e:#}");
        let lines: Vec<&str> = said.lines().collect();
        eprintln!(
            "setup_communicator or allreduce over {many} engines failed ({} lines; the first 4):\n{}",
            lines.len(),
            lines[..lines.len().min(4)].join("\n")
        );
    }
    let q = median_us(reps(10, scale), || {
        client.queue_status()?;
        Ok(())
    })?;
    report.add(
        &format!("queue status of {many} engines"),
        q / 1000.0,
        "ms",
        None,
    );
    let died = events
        .try_iter()
        .filter(|e| matches!(e, zpar_client::ClientEvent::EngineUnregistered { .. }))
        .count();
    report.add(
        &format!("engines declared dead during the run (of {many})"),
        died as f64,
        "",
        None,
    );
    let hub_files = std::fs::read_dir(format!("/proc/{}/fd", cluster.pids().hub))
        .map(|d| d.count())
        .unwrap_or_default();
    report.add(
        &format!("hub open files with {many} engines"),
        hub_files as f64,
        "",
        None,
    );
    report.add(
        &format!("hub RSS with {many} engines"),
        rss_mib(cluster.pids().hub),
        "MiB",
        None,
    );
    let engines_rss: f64 = cluster.pids().engines.iter().map(|p| rss_mib(*p)).sum();
    report.add(
        &format!("engine RSS per engine ({per_process} per process)"),
        engines_rss / many.max(1) as f64,
        "MiB",
        None,
    );
    report.add(
        &format!("hub and {many} idle engines: CPU, share of the machine"),
        idle_share(&cluster, Duration::from_secs(10)),
        "%",
        None,
    );
    Ok(())
}

/// The CPU the cluster's processes (hub and engines) use over `window`
/// while nobody asks anything of them, as a share of all of this
/// machine's cores, in percent.
fn idle_share(cluster: &LocalCluster, window: Duration) -> f64 {
    let pids = cluster.pids();
    let all: Vec<u32> = std::iter::once(pids.hub)
        .chain(pids.engines.iter().copied())
        .collect();
    let used = || all.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let before = used();
    let t = Instant::now();
    std::thread::sleep(window);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    100.0 * (used() - before) / (t.elapsed().as_secs_f64() * cores)
}

/// A million load-balanced tasks on 2 engines, submitted in batches of
/// 10,000 whose results are dropped once in: the hub's and this client's
/// memory after each 250,000 (they should stay flat), and the rate; then
/// sixteen clients at once.
pub(crate) fn million(report: &mut Report, scale: f64) -> Result<()> {
    let cluster = LocalCluster::start(2)?;
    let client = cluster.client()?;
    let lb = client.load_balanced();
    report.add(
        "hub RSS before any task",
        rss_mib(cluster.pids().hub),
        "MiB",
        None,
    );
    let total = ((1_000_000f64 * scale).round() as usize).max(40_000);
    let batch = 10_000;
    let started = Instant::now();
    let mut done = 0;
    let mut resting = Duration::ZERO;
    while done < total {
        let results: Vec<_> = (0..batch)
            .map(|i| lb.apply("|x| x + 1", vec![Value::Int(i as i64)]))
            .collect::<Result<_, _>>()?;
        for r in &results {
            r.get_timeout(Duration::from_secs(120))?;
        }
        drop(results);
        done += batch;
        if done % (total / 4) == 0 {
            // At rest: the hub gives freed memory back once it has caught
            // up, a moment after the last reply; its peak is below.
            let rest = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            resting += rest.elapsed();
            report.add(
                &format!("hub RSS at rest after {done} tasks"),
                rss_mib(cluster.pids().hub),
                "MiB",
                None,
            );
            report.add(
                &format!("client RSS after {done} tasks"),
                rss_mib(std::process::id()),
                "MiB",
                None,
            );
        }
    }
    report.add(
        &format!("hub peak RSS over {total} tasks ({batch} in flight at once)"),
        peak_rss_mib(cluster.pids().hub),
        "MiB",
        None,
    );
    report.add(
        &format!("{total} load-balanced tasks, memory records"),
        total as f64 / (started.elapsed() - resting).as_secs_f64(),
        "tasks/s",
        None,
    );
    many_clients(report, &cluster, scale)
}

/// Sixteen clients submit 20,000 tasks each at once: the slowest and the
/// fastest client's rate (none may starve).
fn many_clients(report: &mut Report, cluster: &LocalCluster, scale: f64) -> Result<()> {
    const CLIENTS: usize = 16;
    let tasks = ((20_000f64 * scale).round() as usize).max(500);
    let conn = cluster.client()?.connection().clone();
    let rates: Vec<Result<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let conn = conn.clone();
                s.spawn(move || -> Result<f64> {
                    let client = zpar_client::Client::from_connection(conn)?;
                    let lb = client.load_balanced();
                    let started = Instant::now();
                    let results: Vec<_> = (0..tasks)
                        .map(|i| {
                            lb.apply(
                                "|k, i| k * 1000000 + i",
                                vec![Value::Int(k as i64), Value::Int(i as i64)],
                            )
                        })
                        .collect::<Result<_, _>>()?;
                    for (i, r) in results.iter().enumerate() {
                        let got = r.get_timeout(Duration::from_secs(300))?;
                        anyhow::ensure!(
                            got == vec![Value::Int((k * 1_000_000 + i) as i64)],
                            "client {k} got a result that is not its own"
                        );
                    }
                    Ok(tasks as f64 / started.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let mut rates: Vec<f64> = rates.into_iter().collect::<Result<_>>()?;
    rates.sort_by(f64::total_cmp);
    report.add(
        &format!("{CLIENTS} clients × {tasks} tasks at once: slowest client"),
        rates[0],
        "tasks/s",
        None,
    );
    report.add(
        &format!("{CLIENTS} clients × {tasks} tasks at once: fastest client"),
        rates[CLIENTS - 1],
        "tasks/s",
        None,
    );
    report.add(
        &format!("{CLIENTS} clients × {tasks} tasks at once: sum of their rates"),
        rates.iter().sum(),
        "tasks/s",
        None,
    );
    Ok(())
}
