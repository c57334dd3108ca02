//! The raw ZeroMQ baselines every zpar figure is compared with, measured
//! in the same run on the same machine: a DEALER → ROUTER/ROUTER forwarder
//! → DEALER echo (three processes) for round trips, a single DEALER/ROUTER
//! hop, one-way throughput of large messages, and of 1 MiB messages
//! through the forwarder (a chunk stream's path through the hub). The peers are this same
//! binary in hidden roles (`zpar bench raw-echo`, `raw-forwarder`,
//! `raw-sink`).

use super::report::{median_us, reps, Report};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

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
    /// One-way throughput of 1 MiB messages through the forwarder (three
    /// processes, two hops: the shape of a stream through the hub), MB/s.
    pub forwarded_1m: f64,
}

/// A helper process, killed when dropped.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary as `zpar bench ARGS` and reads the first line it
/// prints (the port or ports it bound).
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

/// Measures the raw figures (the `raw` suite, and the baselines of
/// `cluster` and `allreduce`).
pub(crate) fn baselines(report: &mut Report, scale: f64) -> Result<Raw> {
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

    // 128 MiB in 1 MiB messages through a forwarder to a sink: what a chunk
    // stream through the hub costs without zpar's work on it.
    let count = ((128.0 * scale.max(0.25)).round() as usize).max(32);
    let (_fwd2, ports) = spawn_helper(&["raw-forwarder"])?;
    let (front, back) = ports.split_once(' ').context("forwarder ports")?;
    let (_sink2, _) = spawn_helper(&[
        "raw-echo",
        "--url",
        &format!("tcp://127.0.0.1:{back}"),
        "--count",
        &count.to_string(),
    ])?;
    let push = ctx.socket(zmq::DEALER)?;
    push.set_sndhwm(0)?;
    push.set_rcvtimeo(60_000)?;
    push.connect(&format!("tcp://127.0.0.1:{front}"))?;
    let payload = vec![7u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..count {
        push.send(zmq::Message::from(&payload[..]), 0)?;
    }
    push.recv_msg(0)?; // the sink got them all
    let forwarded_1m = (count << 20) as f64 / 1e6 / t.elapsed().as_secs_f64();
    report.add(
        "raw zmq: one-way throughput, 1 MiB messages through a forwarder",
        forwarded_1m,
        "MB/s",
        None,
    );
    Ok(Raw {
        forwarder_rtt,
        hop_rtt,
        throughput_8m: rates[0],
        throughput_16m: rates[1],
        forwarded_1m,
    })
}

/// `zpar bench raw-forwarder`: a ROUTER/ROUTER forwarder between a client
/// and one echo; prints its two ports.
pub(crate) fn forwarder() -> Result<()> {
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

/// `zpar bench raw-echo --url URL`: echoes every message, as a DEALER
/// behind the forwarder at `URL`, or (`bind`) as a ROUTER of its own whose
/// port it prints. With `count` > 0, behind the forwarder, it is a sink
/// instead: it takes `count` messages, then answers once.
pub(crate) fn echo(url: &str, count: usize) -> Result<()> {
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
    dealer.set_rcvhwm(0)?;
    dealer.connect(url)?;
    dealer.send(&b"hello"[..], 0)?;
    dealer.recv_msg(0)?; // the forwarder's welcome
    println!("ready");
    if count > 0 {
        // Each message comes as [client's id, payload]; the answer goes
        // back to that id.
        let mut client = Vec::new();
        for _ in 0..count {
            let frames = zpar_protocol::recv_frames(&dealer, 0)?;
            client = frames.first().map(|f| f.to_vec()).unwrap_or_default();
        }
        dealer.send(&client[..], zmq::SNDMORE)?;
        dealer.send(&b"done"[..], 0)?;
        loop {
            std::thread::park();
        }
    }
    loop {
        let frames = zpar_protocol::recv_frames(&dealer, 0)?;
        zpar_protocol::send_frames(&dealer, frames, 0)?;
    }
}

/// `zpar bench raw-sink --count N`: takes `N` messages, then acknowledges
/// them; prints its port.
pub(crate) fn sink(count: usize) -> Result<()> {
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
