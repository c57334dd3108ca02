//! Who failed to get in: the hub's handshake log.
//!
//! With CURVE on, a peer that offers no keys, or another hub's, never gets
//! past the ZMTP handshake: libzmq drops the connection and the hub's poll
//! loop never sees a message. So that an operator can still tell why a
//! client or engine gets no answer, every bound socket carries a libzmq
//! socket monitor, and one thread reads them all and logs each failed
//! handshake at debug level (`ZPAR_LOG=zpar_hub=debug`), naming the port
//! and the reason:
//!
//! ```text
//! DEBUG zpar_hub::handshakes: a peer failed the security handshake port="registration"
//!   endpoint=tcp://127.0.0.1:40123 reason=one side uses CURVE encryption and the other does not (...)
//! ```
//!
//! Monitor events, not a ZAP handler: ZAP is consulted only after a CURVE
//! hello has been decrypted, so it never hears of a plain peer or of one
//! with the wrong server key, which are the cases to report. The log has
//! no effect on who gets in.

use crate::error::HubError;
use std::thread::JoinHandle;
use tracing::debug;
use zpar_protocol::curve::{HandshakeEvent, HandshakeMonitor};

/// The thread that logs failed handshakes; stopped (and joined) on drop.
pub struct HandshakeLog {
    stop: zmq::Socket,
    thread: Option<JoinHandle<()>>,
}

impl HandshakeLog {
    /// Attaches a monitor to each named socket (on the calling thread,
    /// which owns them) and starts the thread that reads the monitors.
    /// Drop it after the sockets are closed.
    ///
    /// ```
    /// let ctx = zmq::Context::new();
    /// let router = ctx.socket(zmq::ROUTER).unwrap();
    /// router.bind("tcp://127.0.0.1:*").unwrap();
    /// let log = zpar_hub::handshakes::HandshakeLog::spawn(&ctx, &[("registration", &router)]).unwrap();
    /// drop(router);
    /// drop(log); // stops and joins the thread
    /// ```
    pub fn spawn(
        ctx: &zmq::Context,
        sockets: &[(&'static str, &zmq::Socket)],
    ) -> Result<HandshakeLog, HubError> {
        let mut monitors = Vec::with_capacity(sockets.len());
        for (port, socket) in sockets {
            monitors.push((*port, HandshakeMonitor::attach(ctx, socket)?));
        }
        let pipe = format!("inproc://zpar-handshakes-{}", zpar_protocol::new_id());
        let stop = ctx.socket(zmq::PAIR)?;
        stop.set_linger(0)?;
        stop.bind(&pipe)?;
        let stopped = ctx.socket(zmq::PAIR)?;
        stopped.set_linger(0)?;
        stopped.connect(&pipe)?;
        let thread = std::thread::Builder::new()
            .name("zpar-hub-handshakes".into())
            .spawn(move || run(&monitors, &stopped))
            .map_err(|source| HubError::Spawn {
                what: "the handshake log",
                source,
            })?;
        Ok(HandshakeLog {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HandshakeLog {
    fn drop(&mut self) {
        let _ = self.stop.send("stop", zmq::DONTWAIT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(monitors: &[(&'static str, HandshakeMonitor)], stopped: &zmq::Socket) {
    loop {
        let mut items: Vec<zmq::PollItem> = Vec::with_capacity(monitors.len() + 1);
        items.push(stopped.as_poll_item(zmq::POLLIN));
        items.extend(
            monitors
                .iter()
                .map(|(_, m)| m.socket().as_poll_item(zmq::POLLIN)),
        );
        match zmq::poll(&mut items, 1000) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(_) => return,
        }
        if items[0].is_readable() {
            return;
        }
        for (i, (port, monitor)) in monitors.iter().enumerate() {
            if !items[i + 1].is_readable() {
                continue;
            }
            while let Some((event, endpoint)) = monitor.try_next() {
                if let HandshakeEvent::Failed(reason) = event {
                    debug!(port, %endpoint, %reason, "a peer failed the security handshake");
                }
            }
        }
    }
}
