//! Liveness: the hub pings every engine on a PUB and collects pongs on a
//! ROUTER, on a thread of its own so a busy hub loop never delays a beat.
//!
//! [`HeartMonitor`] is the bookkeeping (which engine answered which beat),
//! a plain state machine tested without sockets; [`spawn`] runs it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Tracks which engines answered recent pings.
#[derive(Debug)]
pub struct HeartMonitor {
    /// Random per hub start; engines notice a restarted hub by it.
    instance: String,
    max_misses: u64,
    beat: u64,
    /// uuid → the last beat it answered.
    hearts: HashMap<Vec<u8>, u64>,
}

impl HeartMonitor {
    /// A monitor that declares an engine dead after `max_misses` unanswered
    /// beats in a row.
    pub fn new(instance: &str, max_misses: u64) -> HeartMonitor {
        HeartMonitor {
            instance: instance.to_string(),
            max_misses: max_misses.max(1),
            beat: 0,
            hearts: HashMap::new(),
        }
    }

    /// Starts watching an engine, as if it had just answered.
    pub fn watch(&mut self, uuid: &[u8]) {
        self.hearts.insert(uuid.to_vec(), self.beat);
    }

    /// Stops watching an engine.
    pub fn forget(&mut self, uuid: &[u8]) {
        self.hearts.remove(uuid);
    }

    /// A pong arrived. Any pong counts as life; an unknown engine is ignored
    /// until it is watched.
    pub fn pong(&mut self, uuid: &[u8]) {
        if let Some(last) = self.hearts.get_mut(uuid) {
            *last = self.beat;
        }
    }

    /// Next beat: returns its payload to publish (`<hub instance>:<beat>`),
    /// and the engines now dead (no longer watched).
    pub fn tick(&mut self) -> (Vec<u8>, Vec<Vec<u8>>) {
        self.beat += 1;
        let beat = self.beat;
        let max = self.max_misses;
        let dead: Vec<Vec<u8>> = self
            .hearts
            .iter()
            .filter(|(_, last)| beat - **last > max)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &dead {
            self.hearts.remove(u);
        }
        (format!("{}:{beat}", self.instance).into_bytes(), dead)
    }
}

/// Messages between the hub loop and the heartbeat thread, over inproc.
pub const WATCH: &[u8] = b"watch";
/// Stop watching.
pub const FORGET: &[u8] = b"forget";
/// An engine missed too many beats.
pub const DEAD: &[u8] = b"dead";
/// Stop the thread.
pub const STOP: &[u8] = b"stop";

/// Runs the heartbeat on its own thread. `ping` (PUB) and `pong` (ROUTER)
/// are bound already; `pipe` is the thread's end of an inproc PAIR to the
/// hub loop.
pub fn spawn(
    ping: zmq::Socket,
    pong: zmq::Socket,
    pipe: zmq::Socket,
    period: Duration,
    max_misses: u64,
    instance: String,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("zpar-hub-heartbeat".into())
        .spawn(move || {
            let mut monitor = HeartMonitor::new(&instance, max_misses);
            let mut next = Instant::now() + period;
            loop {
                let wait = next.saturating_duration_since(Instant::now());
                let mut items = [
                    pong.as_poll_item(zmq::POLLIN),
                    pipe.as_poll_item(zmq::POLLIN),
                ];
                if zmq::poll(&mut items, wait.as_millis() as i64).is_err() {
                    continue; // EINTR
                }
                if items[0].is_readable() {
                    while let Ok(frames) = zpar_protocol::recv_frames(&pong, zmq::DONTWAIT) {
                        if let Some(uuid) = frames.first() {
                            monitor.pong(uuid);
                        }
                    }
                }
                if items[1].is_readable() {
                    while let Ok(frames) = zpar_protocol::recv_frames(&pipe, zmq::DONTWAIT) {
                        match (frames.first().map(|f| &f[..]), frames.get(1)) {
                            (Some(WATCH), Some(u)) => monitor.watch(u),
                            (Some(FORGET), Some(u)) => monitor.forget(u),
                            (Some(STOP), _) => return,
                            _ => tracing::warn!("heartbeat: unknown pipe message"),
                        }
                    }
                }
                if Instant::now() >= next {
                    next += period;
                    if next < Instant::now() {
                        next = Instant::now() + period;
                    }
                    let (payload, dead) = monitor.tick();
                    let _ = ping.send(payload, zmq::DONTWAIT);
                    for uuid in dead {
                        let _ = pipe.send_multipart([DEAD, &uuid[..]], 0);
                    }
                }
            }
        })
        .expect("spawning the heartbeat thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_after_max_misses() {
        let mut m = HeartMonitor::new("h", 3);
        m.watch(b"a");
        m.watch(b"b");
        for _ in 0..3 {
            m.pong(b"a");
            let (_, dead) = m.tick();
            assert!(dead.is_empty());
        }
        m.pong(b"a");
        let (_, dead) = m.tick();
        assert_eq!(dead, vec![b"b".to_vec()]);
        let (_, dead) = m.tick();
        assert!(dead.is_empty(), "a answered one beat ago");
    }

    #[test]
    fn forgotten_and_unknown_engines_never_die() {
        let mut m = HeartMonitor::new("h", 1);
        m.watch(b"a");
        m.forget(b"a");
        m.pong(b"stranger");
        for _ in 0..5 {
            assert!(m.tick().1.is_empty());
        }
    }
}
