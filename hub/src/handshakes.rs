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
//!
//! The same thread counts connections: each port's open ones (accepted,
//! less closed) and the failed handshakes. At most every
//! [`SUMMARY_EVERY`] it warns, in one line each, of the handshakes that
//! failed since the last summary, and of open connections past half the
//! hub's descriptor limit: peers that connect and never sign a message
//! (any local user can, on a hub without CURVE) hold descriptors that new
//! engines need.

use crate::error::HubError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use zpar_protocol::curve::{HandshakeEvent, HandshakeMonitor};

/// How often, at most, the log sums up failed handshakes and crowding.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

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
    /// `descriptors` is the hub's limit on open files, if known: past
    /// half of it in open connections, the log warns.
    ///
    /// ```
    /// let ctx = zmq::Context::new();
    /// let router = ctx.socket(zmq::ROUTER).unwrap();
    /// router.bind("tcp://127.0.0.1:*").unwrap();
    /// let log = zpar_hub::handshakes::HandshakeLog::spawn(&ctx, &[("registration", &router)], Some(1024)).unwrap();
    /// drop(router);
    /// drop(log); // stops and joins the thread
    /// ```
    pub fn spawn(
        ctx: &zmq::Context,
        sockets: &[(&'static str, &zmq::Socket)],
        descriptors: Option<u64>,
    ) -> Result<HandshakeLog, HubError> {
        let mut monitors = Vec::with_capacity(sockets.len());
        for (port, socket) in sockets {
            monitors.push((*port, HandshakeMonitor::attach_counting(ctx, socket)?));
        }
        let counts = Counts::new(monitors.iter().map(|(p, _)| *p).collect(), descriptors);
        let pipe = format!("inproc://zpar-handshakes-{}", zpar_protocol::new_id());
        let stop = ctx.socket(zmq::PAIR)?;
        stop.set_linger(0)?;
        stop.bind(&pipe)?;
        let stopped = ctx.socket(zmq::PAIR)?;
        stopped.set_linger(0)?;
        stopped.connect(&pipe)?;
        let thread = std::thread::Builder::new()
            .name("zpar-hub-handshakes".into())
            .spawn(move || run(&monitors, &stopped, counts))
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

fn run(monitors: &[(&'static str, HandshakeMonitor)], stopped: &zmq::Socket, mut counts: Counts) {
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
                if let HandshakeEvent::Failed(reason) = &event {
                    debug!(port, %endpoint, %reason, "a peer failed the security handshake");
                }
                counts.count(i, &event);
            }
        }
        for line in counts.summaries(Instant::now()) {
            warn!("{line}");
        }
    }
}

/// Connections and failed handshakes, counted per port, and the lines
/// that sum them up at a rate.
#[derive(Debug)]
struct Counts {
    ports: Vec<&'static str>,
    open: Vec<u64>,
    failed: Vec<u64>,
    /// Connections each port could not accept, and the last errno.
    refused: Vec<u64>,
    refused_errno: i32,
    refused_told: Instant,
    descriptors: Option<u64>,
    failures_told: Instant,
    crowding_told: Option<Instant>,
}

impl Counts {
    fn new(ports: Vec<&'static str>, descriptors: Option<u64>) -> Counts {
        let n = ports.len();
        Counts {
            ports,
            open: vec![0; n],
            failed: vec![0; n],
            refused: vec![0; n],
            refused_errno: 0,
            refused_told: Instant::now(),
            descriptors,
            failures_told: Instant::now(),
            crowding_told: None,
        }
    }

    fn count(&mut self, port: usize, event: &HandshakeEvent) {
        match event {
            HandshakeEvent::Accepted => self.open[port] += 1,
            HandshakeEvent::Closed => self.open[port] = self.open[port].saturating_sub(1),
            HandshakeEvent::Failed(_) => self.failed[port] += 1,
            HandshakeEvent::AcceptFailed(errno) => {
                self.refused[port] += 1;
                self.refused_errno = *errno;
            }
            HandshakeEvent::Succeeded => {}
        }
    }

    /// `(port, n)` for each port with a nonzero `n`, most first.
    fn by_port(&self, of: &[u64]) -> String {
        let mut ports: Vec<(u64, &str)> = of
            .iter()
            .zip(&self.ports)
            .filter(|(n, _)| **n > 0)
            .map(|(n, p)| (*n, *p))
            .collect();
        ports.sort_by_key(|p| std::cmp::Reverse(p.0));
        ports
            .iter()
            .map(|(n, p)| format!("{p} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What to warn of now: failed handshakes since the last summary (at
    /// most every [`SUMMARY_EVERY`]), and open connections past half the
    /// descriptor limit (as often).
    fn summaries(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        let failed: u64 = self.failed.iter().sum();
        if failed > 0 && now.duration_since(self.failures_told) >= SUMMARY_EVERY {
            lines.push(format!(
                "{failed} peers failed the security handshake in the last {}s ({}): they \
                 have no keys, or other keys, than the connection files' (ZPAR_LOG=zpar_hub=debug \
                 names each)",
                now.duration_since(self.failures_told).as_secs(),
                self.by_port(&self.failed)
            ));
            self.failed.iter_mut().for_each(|n| *n = 0);
            self.failures_told = now;
        }
        let refused: u64 = self.refused.iter().sum();
        if refused > 0 && now.duration_since(self.refused_told) >= SUMMARY_EVERY {
            let why = match self.refused_errno {
                libc::EMFILE | libc::ENFILE => format!(
                    "the hub ran out of file descriptors (its limit on open files is {}): \
                     raise it with `ulimit -n` before starting the hub, or run fewer engines",
                    self.descriptors
                        .map_or_else(|| "unknown".to_string(), |d| d.to_string())
                ),
                errno => format!("accept(2) failed with errno {errno}"),
            };
            lines.push(format!(
                "{refused} connections could not be accepted ({}): {why}",
                self.by_port(&self.refused)
            ));
            self.refused.iter_mut().for_each(|n| *n = 0);
            self.refused_told = now;
        }
        let open: u64 = self.open.iter().sum();
        let crowded = self.descriptors.is_some_and(|limit| open > limit / 2);
        let due = self
            .crowding_told
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_EVERY);
        if crowded && due {
            let limit = self.descriptors.unwrap_or_default();
            lines.push(format!(
                "{open} connections are open to the hub ({}), more than half its limit of \
                 {limit} open files: an engine needs up to {} and a client 6, and peers that \
                 connect and never sign a message hold theirs too; raise `ulimit -n`, and on \
                 a shared machine run the hub with --curve (peers without the keys are then \
                 dropped at the handshake)",
                self.by_port(&self.open),
                zpar_protocol::net::CONNECTIONS_PER_ENGINE,
            ));
            self.crowding_told = Some(now);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_crowding_are_summed_up_at_a_rate() {
        let mut c = Counts::new(vec!["registration", "mux (clients)"], Some(10));
        let start = c.failures_told;
        for _ in 0..3 {
            c.count(
                1,
                &HandshakeEvent::Failed(zpar_protocol::curve::HandshakeFailure::NoDetail),
            );
        }
        assert!(c.summaries(start).is_empty(), "not before SUMMARY_EVERY");
        let later = start + SUMMARY_EVERY;
        let lines = c.summaries(later);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "3 peers failed the security handshake in the last 10s (mux (clients) 3)"
            ),
            "{}",
            lines[0]
        );
        assert!(
            c.summaries(later + SUMMARY_EVERY).is_empty(),
            "counted anew"
        );
        // Six open of ten descriptors: crowded, told once a period.
        for _ in 0..6 {
            c.count(0, &HandshakeEvent::Accepted);
        }
        c.count(0, &HandshakeEvent::Closed);
        assert!(
            c.summaries(later).is_empty(),
            "five of ten is not past half"
        );
        c.count(1, &HandshakeEvent::Accepted);
        let lines = c.summaries(later);
        assert!(
            lines[0]
                .starts_with("6 connections are open to the hub (registration 5, mux (clients) 1)"),
            "{}",
            lines[0]
        );
        assert!(c.summaries(later + Duration::from_secs(1)).is_empty());
        assert_eq!(c.summaries(later + SUMMARY_EVERY).len(), 1);
        // Connections the hub could not accept, for want of descriptors.
        c.count(0, &HandshakeEvent::AcceptFailed(libc::EMFILE));
        let lines = c.summaries(later + SUMMARY_EVERY * 3);
        assert!(
            lines[0].starts_with("1 connections could not be accepted (registration 1): the hub ran out of file descriptors (its limit on open files is 10)"),
            "{lines:?}"
        );
    }
}
