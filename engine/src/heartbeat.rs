//! The engine's heartbeat: a thread of its own that echoes the hub's pings,
//! so an engine busy in a long script still counts as alive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running heartbeat thread; stops when dropped.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts echoing pings from `ping_url` (hub PUB) to `pong_url` (hub
    /// ROUTER), with `identity` as this engine's identity there.
    pub fn start(
        ctx: &zmq::Context,
        ping_url: &str,
        pong_url: &str,
        identity: &[u8],
    ) -> zmq::Result<Heartbeat> {
        let sub = ctx.socket(zmq::SUB)?;
        sub.set_subscribe(b"")?;
        sub.set_linger(0)?;
        sub.connect(ping_url)?;
        let dealer = ctx.socket(zmq::DEALER)?;
        dealer.set_identity(identity)?;
        dealer.set_linger(0)?;
        dealer.connect(pong_url)?;
        // Say hello at once, so the hub knows this engine's heart before the
        // first ping.
        dealer.send(&b"hello"[..], 0)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("zpar-heartbeat".into())
            .spawn(move || echo(sub, dealer, flag))
            .expect("spawning the heartbeat thread");
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

fn echo(sub: zmq::Socket, dealer: zmq::Socket, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match sub.poll(zmq::POLLIN, 100) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat poll failed; heartbeat stops");
                return;
            }
        }
        while let Ok(ping) = sub.recv_msg(zmq::DONTWAIT) {
            if let Err(e) = dealer.send(ping, zmq::DONTWAIT) {
                tracing::debug!(error = %e, "heartbeat pong not sent");
            }
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
