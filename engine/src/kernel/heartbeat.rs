//! The kernel's heartbeat: a REP socket on a thread of its own that echoes
//! whatever a front end pings, so a kernel busy in a long cell still answers
//! (Jupyter front ends call a kernel dead when its heartbeat stops).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::{debug, warn};
use zpar_protocol::error::Chain;

/// How long the echo thread waits in one poll before it looks at its stop
/// flag again.
const POLL_MS: i64 = 100;

/// A running echo thread; stops when dropped.
pub(crate) struct HeartbeatEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HeartbeatEcho {
    /// Hands `rep` (a bound REP socket) to a new thread that echoes every
    /// message it receives. The socket is the thread's from here on.
    pub(crate) fn start(rep: zmq::Socket) -> std::io::Result<HeartbeatEcho> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("zpar-kernel-heartbeat".into())
            .spawn(move || echo(rep, flag))?;
        Ok(HeartbeatEcho {
            stop,
            thread: Some(thread),
        })
    }
}

fn echo(rep: zmq::Socket, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match rep.poll(zmq::POLLIN, POLL_MS) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                warn!(error = %Chain(&e), "kernel heartbeat poll failed; the heartbeat stops");
                return;
            }
        }
        let ping = match rep.recv_multipart(zmq::DONTWAIT) {
            Ok(p) => p,
            Err(zmq::Error::EAGAIN) => continue,
            Err(e) => {
                debug!(error = %Chain(&e), "kernel heartbeat: nothing to echo");
                continue;
            }
        };
        if let Err(e) = rep.send_multipart(ping, 0) {
            debug!(error = %Chain(&e), "kernel heartbeat echo not sent");
        }
    }
}

impl Drop for HeartbeatEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_pings_and_stops_when_dropped() {
        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).unwrap();
        rep.bind("tcp://127.0.0.1:*").unwrap();
        let url = rep.get_last_endpoint().unwrap().unwrap();
        let echo = HeartbeatEcho::start(rep).unwrap();
        let req = ctx.socket(zmq::REQ).unwrap();
        req.set_linger(0).unwrap();
        req.connect(&url).unwrap();
        for ping in [&b"ping"[..], b"1234"] {
            req.send(ping, 0).unwrap();
            assert!(req.poll(zmq::POLLIN, 10_000).unwrap() > 0, "no echo");
            assert_eq!(req.recv_bytes(0).unwrap(), ping);
        }
        drop(echo);
    }
}
