//! The engine's heartbeat: a thread of its own that echoes the hub's pings,
//! so an engine busy in a long script still counts as alive. Pings come
//! and pongs go on one DEALER to the hub's heartbeat ROUTER (one
//! connection). While no ping comes, the engine says hello every 2 to 5 s,
//! so a hub that restarted, or dropped it during a network cut, learns of
//! it and answers "unknown" and a ping naming its instance (the engine
//! then registers again).
//!
//! Every [`VITALS_EVERY`]th pong (and the first) carries a second frame,
//! the engine's [`EngineVitals`]: its process's RSS and its serving
//! thread's CPU share, which the hub shows in its queue status.

use crate::error::EngineError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zpar_protocol::curve::{secure_client, CurveKeys};
use zpar_protocol::error::Chain;
use zpar_protocol::vitals::{resident_bytes, CpuShare, EngineVitals};

/// Pongs per vitals report: a report costs a read of `/proc`, so a
/// thousand engines do not read it a thousand times a second.
pub const VITALS_EVERY: u64 = 5;

/// A running heartbeat thread; stops when dropped.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    /// Wakes the thread to see `stop` (it sleeps until a ping otherwise:
    /// a thousand engines polling every 100 ms cost a tenth of the
    /// machine).
    wake: zmq::Socket,
    /// Milliseconds after `epoch` of the last ping from the hub.
    last_ping: Arc<AtomicU64>,
    epoch: Instant,
    hub_changed: Arc<AtomicBool>,
    /// When the hub last answered a pong with "unknown" (it dropped this
    /// engine), in milliseconds since `epoch` + 1; 0: not since last taken.
    unknown: Arc<AtomicU64>,
    hub: Arc<Mutex<Option<Vec<u8>>>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts echoing the pings of the hub's heartbeat ROUTER at `url`,
    /// with `identity` as this engine's identity there, a CURVE client of
    /// the hub when `curve` holds its keys. Call it on the engine's serving
    /// thread: the vitals report that thread's CPU share.
    pub fn start(
        ctx: &zmq::Context,
        url: &str,
        identity: &[u8],
        curve: Option<&CurveKeys>,
    ) -> Result<Heartbeat, EngineError> {
        let mut dealer = ctx.socket(zmq::DEALER)?;
        // Pings, pongs and hellos only: small buffers (packed engines
        // are many to a process).
        zpar_protocol::net::small_buffers(&mut dealer)?;
        zpar_protocol::keepalive::set_zmtp_heartbeats(&dealer)?;
        secure_client(&dealer, curve)?;
        dealer.set_identity(identity)?;
        dealer.set_linger(0)?;
        // Pongs and hellos are not queued for a hub not (yet) connected:
        // a stale one is worth nothing.
        dealer.set_immediate(true)?;
        dealer.connect(url)?;
        let wake_url = format!("inproc://zpar-heartbeat-{}", zpar_protocol::new_id());
        let wake = ctx.socket(zmq::PAIR)?;
        wake.bind(&wake_url)?;
        let woken = ctx.socket(zmq::PAIR)?;
        woken.connect(&wake_url)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let epoch = Instant::now();
        let last_ping = Arc::new(AtomicU64::new(0));
        let seen = last_ping.clone();
        let hub_changed = Arc::new(AtomicBool::new(false));
        let changed = hub_changed.clone();
        let hub = Arc::new(Mutex::new(None));
        let known = hub.clone();
        let unknown = Arc::new(AtomicU64::new(0));
        let flags = Flags {
            stop: flag,
            seen,
            changed,
            unknown: unknown.clone(),
        };
        let cpu = CpuShare::of_this_thread();
        let thread = std::thread::Builder::new()
            .name("zpar-heartbeat".into())
            .spawn(move || echo([dealer, woken], flags, known, epoch, cpu))
            .expect("spawning the heartbeat thread");
        Ok(Heartbeat {
            stop,
            wake,
            last_ping,
            epoch,
            hub_changed,
            unknown,
            hub,
            thread: Some(thread),
        })
    }

    /// The hub instance this engine registered with (from the registration
    /// reply); pings of any other instance mean the hub restarted.
    pub fn set_hub(&self, instance: &str) {
        if !instance.is_empty() {
            *self.hub.lock().expect("hub lock") = Some(instance.as_bytes().to_vec());
        }
    }

    /// Whether pings now come from another hub than before (a hub
    /// restarted in place); true once per change.
    pub fn take_hub_changed(&self) -> bool {
        self.hub_changed.swap(false, Ordering::Relaxed)
    }

    /// When the hub last said it does not know this engine (it dropped it
    /// after missed heartbeats, during a network cut say), if it did since
    /// last asked.
    pub fn take_unknown(&self) -> Option<Instant> {
        match self.unknown.swap(0, Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }

    /// How long since the hub's last ping (since start, if none yet).
    pub fn silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_ping.load(Ordering::Relaxed).saturating_sub(1));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Whether any ping has come since start.
    pub fn heard_any(&self) -> bool {
        self.last_ping.load(Ordering::Relaxed) != 0
    }
}

/// What the heartbeat thread reports to the engine.
struct Flags {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
    changed: Arc<AtomicBool>,
    unknown: Arc<AtomicU64>,
}

/// The least silence after which the engine says hello; past the first
/// pings, twice the time between the last two.
const HELLO_AFTER: Duration = Duration::from_secs(2);

/// The longest silence before a hello, however slowly the hub beats: a hub
/// restarted in place learns of its engines only from their hellos.
const HELLO_AFTER_AT_MOST: Duration = Duration::from_secs(5);

fn echo(
    [dealer, woken]: [zmq::Socket; 2],
    flags: Flags,
    hub: Arc<Mutex<Option<Vec<u8>>>>,
    epoch: Instant,
    mut cpu: CpuShare,
) {
    let Flags {
        stop,
        seen,
        changed,
        unknown,
    } = flags;
    let mut pongs: u64 = 0;
    // When the last ping came, and the time between the last two.
    let mut last_ping: Option<Instant> = None;
    let mut hello_after = HELLO_AFTER;
    // The engine's start counts as the first hello: the hub pings an
    // engine once it registers it, and the connection is not up yet here.
    let mut last_hello = Some(Instant::now());
    while !stop.load(Ordering::Relaxed) {
        // Hello after a silence: a hub that does not know this engine (it
        // restarted, or dropped it during a network cut) sends no pings,
        // and learns of it only this way. Nothing is queued for a hub not
        // connected, so a hello then is dropped and said again later.
        let silent_since = last_ping.max(last_hello);
        if silent_since.is_none_or(|t| t.elapsed() >= hello_after) {
            last_hello = Some(Instant::now());
            if let Err(e) = dealer.send(&b"hello"[..], zmq::DONTWAIT) {
                tracing::trace!(error = %Chain(&e), "heartbeat hello not sent (no hub connected)");
            }
        }
        let wait = last_ping
            .max(last_hello)
            .map_or(hello_after, |t| hello_after.saturating_sub(t.elapsed()));
        let mut items = [
            dealer.as_poll_item(zmq::POLLIN),
            woken.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, wait.as_millis() as i64 + 1) {
            Ok(0) => continue,
            Ok(_) if items[1].is_readable() => return,
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "heartbeat poll failed; heartbeat stops");
                return;
            }
        }
        while let Ok(ping) = dealer.recv_msg(zmq::DONTWAIT) {
            if &ping[..] == b"unknown" {
                // The hub is there (it answered), but does not know this
                // engine: no pings come until it registers again.
                seen.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                unknown.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                continue;
            }
            let now = Instant::now();
            if let Some(before) = last_ping {
                hello_after =
                    (now.duration_since(before) * 2).clamp(HELLO_AFTER, HELLO_AFTER_AT_MOST);
            }
            last_ping = Some(now);
            // Stored as milliseconds + 1, so that 0 means "no ping yet".
            seen.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
            // Pings are `<hub instance>:<beat>`: a new instance is a new hub.
            let instance = ping
                .split(|b| *b == b':')
                .next()
                .unwrap_or_default()
                .to_vec();
            let mut known = hub.lock().expect("hub lock");
            if known.as_ref().is_some_and(|h| *h != instance) {
                changed.store(true, Ordering::Relaxed);
            }
            *known = Some(instance);
            let sent = if pongs.is_multiple_of(VITALS_EVERY) {
                let vitals = EngineVitals {
                    rss: resident_bytes(),
                    cpu: cpu.sample(),
                    beat_age: None,
                };
                let json = serde_json::to_vec(&vitals).unwrap_or_default();
                dealer
                    .send(ping, zmq::SNDMORE | zmq::DONTWAIT)
                    .and_then(|()| dealer.send(json, zmq::DONTWAIT))
            } else {
                dealer.send(ping, zmq::DONTWAIT)
            };
            pongs += 1;
            if let Err(e) = sent {
                tracing::debug!(error = %Chain(&e), "heartbeat pong not sent");
            }
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(e) = self.wake.send(&b"stop"[..], zmq::DONTWAIT) {
            tracing::debug!(error = %Chain(&e), "could not wake the heartbeat thread to stop");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
