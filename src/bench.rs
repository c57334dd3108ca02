//! `zpar bench`: zpar's speed beside raw ZeroMQ, measured in one run.
//!
//! Every figure is a median over repetitions, printed with its ratio to a
//! baseline measured in the same run on the same machine: a raw ZeroMQ
//! DEALER → ROUTER/ROUTER forwarder → DEALER echo (three processes) for
//! round trips, a single raw DEALER/ROUTER hop, and raw one-way throughput
//! of large messages. The raw peers are this same binary in hidden roles
//! (`zpar bench raw-echo`, `raw-forwarder`, `raw-sink`).

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zpar_client::{Client, LocalCluster, Value};
use zpar_protocol::{Content, ExecuteRequest, Message, Session};

/// Arguments of `zpar bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure: all, protocol, cluster, tasks, allreduce, raw,
    /// hub-loss (also part of cluster), compute (the array toolkit and
    /// native kernels), curve (the cost of CURVE encryption), link (a
    /// running cluster, --file), scale (--many engines on this machine) and
    /// million (a million load-balanced tasks); the last three are not part
    /// of all.
    #[arg(default_value = "all")]
    pub suite: String,
    /// Engines for the cluster suite.
    #[arg(long, default_value_t = 2)]
    pub engines: usize,
    /// Print one JSON record instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Multiply repetition counts (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// For `scale`: how many engines.
    #[arg(long, default_value_t = 1000)]
    pub many: usize,
    /// For `link`: the client connection file of a running cluster to
    /// measure against (its engine 0).
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Internal: the raw peer's address.
    #[arg(long, hide = true)]
    pub url: Option<String>,
    /// Internal: messages the raw sink expects.
    #[arg(long, hide = true, default_value_t = 0)]
    pub count: usize,
}

/// One measured figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The median.
    pub value: f64,
    /// Its unit (`us`, `MB/s`, `tasks/s`, `MiB`, `s`).
    pub unit: String,
    /// The baseline's name, if compared.
    pub baseline: Option<String>,
    /// value / baseline (for times: lower is better; for rates: higher).
    pub ratio: Option<f64>,
}

pub(crate) struct Report {
    figures: Vec<Figure>,
    json: bool,
}

impl Report {
    pub(crate) fn add(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        baseline: Option<(&str, f64)>,
    ) {
        let fig = Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline: baseline.map(|(b, _)| b.to_string()),
            ratio: baseline.map(|(_, b)| value / b),
        };
        if !self.json {
            let ratio = match (&fig.baseline, fig.ratio) {
                (Some(b), Some(r)) => format!("{r:>7.2}x {b}"),
                _ => String::new(),
            };
            println!(
                "{:<48} {:>12.1} {:<8} {}",
                fig.name, fig.value, fig.unit, ratio
            );
        }
        self.figures.push(fig);
    }
}

/// The median of some samples.
pub(crate) fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

pub(crate) fn reps(base: usize, scale: f64) -> usize {
    ((base as f64 * scale).round() as usize).max(3)
}

fn time_us(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

pub(crate) fn median_us(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..(n / 10).max(2) {
        f()?; // warm up
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(time_us(&mut f)?);
    }
    Ok(median(&mut samples))
}

pub use crate::bench_compute::{kernels, pi_hits};

/// Runs `zpar bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.suite.as_str() {
        "raw-echo" => return raw_echo(args.url.as_deref().context("--url")?),
        "raw-forwarder" => return raw_forwarder(),
        "raw-sink" => return raw_sink(args.count),
        _ => {}
    }
    let mut report = Report {
        figures: Vec::new(),
        json: args.json,
    };
    if !args.json {
        println!(
            "{:<48} {:>12} {:<8} ratio to baseline (same run)",
            "figure (median)", "value", "unit"
        );
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
        | "compute" | "curve" | "scale" | "million") => {
            vec![s]
        }
        other => {
            bail!("unknown bench suite {other:?}: all, protocol, cluster, tasks, allreduce, raw, hub-loss, link, compute, curve, scale or million")
        }
    };
    let needs_raw = suites
        .iter()
        .any(|s| matches!(*s, "cluster" | "allreduce" | "raw"));
    let raw = if needs_raw {
        Some(raw_baselines(&mut report, args.scale)?)
    } else {
        None
    };
    for s in suites {
        match s {
            "protocol" => protocol(&mut report, args.scale)?,
            "cluster" => cluster(&mut report, &args, raw.as_ref().expect("measured"))?,
            "allreduce" => allreduce(&mut report, &args, raw.as_ref().expect("measured"))?,
            "tasks" => tasks(&mut report, &args)?,
            "hub-loss" => hub_loss(&mut report, args.scale)?,
            "link" => link(&mut report, &args)?,
            "compute" => crate::bench_compute::compute(&mut report, &args)?,
            "curve" => crate::bench_curve::curve(&mut report, args.scale)?,
            "scale" => crate::bench_scale::scale(&mut report, args.many, args.scale)?,
            "million" => crate::bench_scale::million(&mut report, args.scale)?,
            _ => {}
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "figures": report.figures }))?
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- protocol

fn protocol(report: &mut Report, scale: f64) -> Result<()> {
    let a = Session::new(b"bench-key", "hmac-sha256", "a")?;
    let mut b = Session::new(b"bench-key", "hmac-sha256", "b")?;
    b.limits.max_buffer_frame = 1 << 30;
    let n = reps(20_000, scale);
    let mut enc = Vec::with_capacity(n);
    let mut dec = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let msg = Message::new(
            &a,
            Content::ExecuteRequest(ExecuteRequest {
                code: "let x = 1 + 1;".into(),
                ..Default::default()
            }),
        );
        let frames = a.encode(&msg).into_frames();
        let t1 = Instant::now();
        let back = b.decode_frames(frames)?;
        let t2 = Instant::now();
        std::hint::black_box(back);
        enc.push((t1 - t).as_secs_f64() * 1e6);
        dec.push((t2 - t1).as_secs_f64() * 1e6);
    }
    let e = median(&mut enc);
    let d = median(&mut dec);
    report.add(
        "protocol: execute_request build+sign+serialize",
        e,
        "us",
        None,
    );
    report.add("protocol: execute_request parse+verify", d, "us", None);
    report.add(
        "protocol: small round trip (encode+decode)",
        e + d,
        "us",
        None,
    );

    let big = Value::F64Array((0..(16 << 20) / 8).map(|i| i as f64).collect());
    let m = reps(20, scale);
    let mut enc = Vec::new();
    let mut dec = Vec::new();
    for _ in 0..m {
        let t = Instant::now();
        let mut msg = Message::new(&a, Content::PushRequest(Default::default()));
        let mut buffers = Vec::new();
        let json = big.encode_into(&mut buffers);
        if let Content::PushRequest(p) = &mut msg.content {
            p.namespace.insert("x".into(), json);
        }
        msg.buffers = buffers;
        let frames = a.encode_owned(msg).into_frames();
        let t1 = Instant::now();
        let back = b.decode_frames(frames)?;
        let value = match &back.content {
            Content::PushRequest(p) => Value::decode(&p.namespace["x"], &back.buffers)?,
            _ => bail!("unexpected content"),
        };
        let t2 = Instant::now();
        std::hint::black_box(value);
        enc.push((t1 - t).as_secs_f64() * 1e6);
        dec.push((t2 - t1).as_secs_f64() * 1e6);
    }
    let e = median(&mut enc);
    let d = median(&mut dec);
    report.add(
        "protocol: 16 MiB f64 message encode (1 copy)",
        e,
        "us",
        None,
    );
    report.add(
        "protocol: 16 MiB f64 message decode (1 copy)",
        d,
        "us",
        None,
    );
    report.add(
        "protocol: 16 MiB encode throughput",
        16.0 * 1.048576 / (e / 1e6),
        "MB/s",
        None,
    );
    Ok(())
}

// ---------------------------------------------------------------- raw zmq

/// Raw ZeroMQ figures every zpar figure is compared with.
pub struct Raw {
    /// DEALER → forwarder → echo round trip, µs.
    pub forwarder_rtt: f64,
    /// DEALER ↔ ROUTER echo round trip, µs.
    pub hop_rtt: f64,
    /// One-way throughput with 8 MiB messages, MB/s.
    pub throughput_8m: f64,
    /// One-way throughput with 16 MiB messages, MB/s.
    pub throughput_16m: f64,
}

struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_helper(args: &[&str]) -> Result<(Helper, String)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("helper stdout")?;
    BufReader::new(stdout).read_line(&mut line)?;
    Ok((Helper(child), line.trim().to_string()))
}

fn raw_baselines(report: &mut Report, scale: f64) -> Result<Raw> {
    let ctx = zmq::Context::new();
    // Forwarder and echo in their own processes.
    let (_fwd, ports) = spawn_helper(&["raw-forwarder"])?;
    let (front, back) = ports.split_once(' ').context("forwarder ports")?;
    let (_echo, _) = spawn_helper(&["raw-echo", "--url", &format!("tcp://127.0.0.1:{back}")])?;
    let dealer = ctx.socket(zmq::DEALER)?;
    dealer.set_rcvtimeo(10_000)?; // a lost message fails the bench, never hangs it
    dealer.connect(&format!("tcp://127.0.0.1:{front}"))?;
    let ping = |d: &zmq::Socket| -> Result<()> {
        d.send(&b"ping"[..], 0)?;
        d.recv_msg(0)?;
        Ok(())
    };
    let forwarder_rtt = median_us(reps(2000, scale), || ping(&dealer))?;
    report.add(
        "raw zmq: forwarder round trip (3 processes)",
        forwarder_rtt,
        "us",
        None,
    );

    let (_echo2, port) = spawn_helper(&["raw-echo", "--url", "bind"])?;
    let hop = ctx.socket(zmq::DEALER)?;
    hop.set_rcvtimeo(10_000)?;
    hop.connect(&format!("tcp://127.0.0.1:{port}"))?;
    let hop_rtt = median_us(reps(2000, scale), || ping(&hop))?;
    report.add(
        "raw zmq: DEALER/ROUTER round trip (1 hop)",
        hop_rtt,
        "us",
        None,
    );

    let mut rates = Vec::new();
    for mib in [8usize, 16] {
        let count = ((256 / mib) as f64 * scale.max(0.25)).round().max(4.0) as usize;
        let (_sink, port) = spawn_helper(&["raw-sink", "--count", &count.to_string()])?;
        let push = ctx.socket(zmq::DEALER)?;
        push.set_sndhwm(0)?;
        push.set_rcvtimeo(60_000)?;
        push.connect(&format!("tcp://127.0.0.1:{port}"))?;
        push.send(&b"hello"[..], 0)?;
        push.recv_msg(0)?; // the sink is connected
        let payload = vec![7u8; mib << 20];
        let t = Instant::now();
        for _ in 0..count {
            push.send(zmq::Message::from(&payload[..]), 0)?;
        }
        push.recv_msg(0)?; // the sink got them all
        let secs = t.elapsed().as_secs_f64();
        let rate = (count * (mib << 20)) as f64 / 1e6 / secs;
        report.add(
            &format!("raw zmq: one-way throughput, {mib} MiB messages"),
            rate,
            "MB/s",
            None,
        );
        rates.push(rate);
    }
    Ok(Raw {
        forwarder_rtt,
        hop_rtt,
        throughput_8m: rates[0],
        throughput_16m: rates[1],
    })
}

fn raw_forwarder() -> Result<()> {
    let ctx = zmq::Context::new();
    let front = ctx.socket(zmq::ROUTER)?;
    front.bind("tcp://127.0.0.1:*")?;
    let back = ctx.socket(zmq::ROUTER)?;
    back.bind("tcp://127.0.0.1:*")?;
    let port = |s: &zmq::Socket| -> Result<String> {
        let e = s
            .get_last_endpoint()?
            .map_err(|_| anyhow::anyhow!("endpoint"))?;
        Ok(e.rsplit(':').next().unwrap_or_default().to_string())
    };
    println!("{} {}", port(&front)?, port(&back)?);
    let mut echo_id: Option<Vec<u8>> = None;
    loop {
        let mut items = [
            front.as_poll_item(zmq::POLLIN),
            back.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, -1)?;
        if items[1].is_readable() {
            let mut frames = zpar_protocol::recv_frames(&back, 0)?;
            let id = frames.remove(0).to_vec();
            if echo_id.is_none() {
                // The echo's hello: welcome it, so it knows we can route to it.
                back.send(&id[..], zmq::SNDMORE)?;
                back.send(&b"welcome"[..], 0)?;
                echo_id = Some(id);
                continue;
            }
            zpar_protocol::send_frames(&front, frames, 0)?;
        }
        if items[0].is_readable() {
            let frames = zpar_protocol::recv_frames(&front, 0)?;
            if let Some(id) = &echo_id {
                back.send(&id[..], zmq::SNDMORE)?;
                zpar_protocol::send_frames(&back, frames, 0)?;
            }
        }
    }
}

fn raw_echo(url: &str) -> Result<()> {
    let ctx = zmq::Context::new();
    if url == "bind" {
        let router = ctx.socket(zmq::ROUTER)?;
        router.bind("tcp://127.0.0.1:*")?;
        let e = router
            .get_last_endpoint()?
            .map_err(|_| anyhow::anyhow!("endpoint"))?;
        println!("{}", e.rsplit(':').next().unwrap_or_default());
        loop {
            let frames = zpar_protocol::recv_frames(&router, 0)?;
            zpar_protocol::send_frames(&router, frames, 0)?;
        }
    }
    let dealer = ctx.socket(zmq::DEALER)?;
    dealer.connect(url)?;
    dealer.send(&b"hello"[..], 0)?;
    dealer.recv_msg(0)?; // the forwarder's welcome
    println!("ready");
    loop {
        let frames = zpar_protocol::recv_frames(&dealer, 0)?;
        zpar_protocol::send_frames(&dealer, frames, 0)?;
    }
}

fn raw_sink(count: usize) -> Result<()> {
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER)?;
    router.set_rcvhwm(0)?;
    router.bind("tcp://127.0.0.1:*")?;
    let e = router
        .get_last_endpoint()?
        .map_err(|_| anyhow::anyhow!("endpoint"))?;
    println!("{}", e.rsplit(':').next().unwrap_or_default());
    let hello = zpar_protocol::recv_frames(&router, 0)?;
    zpar_protocol::send_frames(&router, hello, 0)?;
    let mut id = Vec::new();
    for _ in 0..count {
        let frames = zpar_protocol::recv_frames(&router, 0)?;
        id = frames[0].to_vec();
    }
    router.send(&id[..], zmq::SNDMORE)?;
    router.send(&b"done"[..], 0)?;
    // Stay until killed, so the ack is not lost with the socket.
    loop {
        std::thread::park();
    }
}

// ---------------------------------------------------------------- cluster

/// Resident set size of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// Resident set size of a process at rest, in MiB: read every 100 ms until
/// two readings agree (at most 2 s). A hub hands freed memory back once it
/// has been idle for a poll period, so a reading taken the moment a
/// transfer ends still counts buffers it is about to free.
pub fn settled_rss_mib(pid: u32) -> f64 {
    let mut last = rss_mib(pid);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = rss_mib(pid);
        if (now - last).abs() < 0.05 {
            return now;
        }
        last = now;
    }
    last
}

/// The most memory `pid` has held resident since it started, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn cluster(report: &mut Report, args: &BenchArgs, raw: &Raw) -> Result<()> {
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
fn hub_loss(report: &mut Report, scale: f64) -> Result<()> {
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

/// Load-balanced throughput on `engines` engines, with the hub recording in
/// memory and then in SQLite; the SQLite figures are compared with memory's.
fn tasks(report: &mut Report, args: &BenchArgs) -> Result<()> {
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

/// Round trip and 16 MiB transfers to engine 0 of a cluster already
/// running (`--file`): run it against a cluster across a network link and
/// against one on loopback, in the same run, to compare the two
/// (`scripts/bench-link.sh` does that over network namespaces).
fn link(report: &mut Report, args: &BenchArgs) -> Result<()> {
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

fn allreduce(report: &mut Report, args: &BenchArgs, raw: &Raw) -> Result<()> {
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
