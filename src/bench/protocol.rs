//! `zpar bench protocol`: building, signing, serializing and parsing
//! messages in this process, with no sockets: a small execute request, and
//! a 16 MiB array.

use super::report::{median, reps, Report};
use anyhow::{bail, Result};
use std::time::Instant;
use zpar_client::Value;
use zpar_protocol::{Content, ExecuteRequest, Message, Session};

/// Runs the protocol suite.
pub(crate) fn protocol(report: &mut Report, scale: f64) -> Result<()> {
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
