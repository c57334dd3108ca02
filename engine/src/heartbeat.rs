//! The engine's heartbeat: a thread that echoes the hub's pings, so an
//! engine busy in a long script still counts as alive.
//!
//! The engines of one process that share a ZeroMQ context (up to 40 of
//! them) share one [`HeartbeatHost`]: one thread and one DEALER connection
//! to the hub's heartbeat ROUTER carry the heartbeats of them all (a
//! thousand engines packed 40 to a process hold 25 heartbeat connections at
//! the hub, not a thousand, and wake 25 threads a beat). Each engine joins it with a [`Heartbeat`], which
//! the request loop reads, and leaves when that is dropped.
//!
//! On the wire (after the ROUTER's routing frame at the hub), every
//! message names the engines it is for:
//! - hub → engines: `[<hub instance>:<beat>, uuid, uuid, …]` (a ping), or
//!   `["unknown", uuid, …]` (the hub does not know these engines: they
//!   register again);
//! - engines → hub: `[<the ping>, uuid, vitals, uuid, vitals, …]` (a pong)
//!   or `["hello", uuid, "", …]`; vitals are empty or the engine's
//!   [`EngineVitals`] as JSON.
//!
//! An engine's host says hello for it at once when it has registered, so
//! the hub knows where to ping it; and then while no ping comes to it,
//! every 2 to 5 s, so a hub that restarted, or dropped it during a network
//! cut, learns of it and answers "unknown" and a ping naming its instance
//! (the engine then registers again).
//!
//! Every [`VITALS_EVERY`]th pong of an engine (and its first) carries its
//! vitals: its process's RSS and its serving thread's CPU share, which the
//! hub shows in its queue status.

use crate::error::EngineError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zpar_protocol::curve::{secure_client, CurveKeys};
use zpar_protocol::error::Chain;
use zpar_protocol::vitals::{resident_bytes, CpuShare, EngineVitals};

/// Pongs per vitals report: a report costs a read of `/proc`, so a
/// thousand engines do not read it a thousand times a second.
pub const VITALS_EVERY: u64 = 5;

/// The first frame of a hello.
pub const HELLO: &[u8] = b"hello";

/// The first frame of the hub's answer to a hello or pong of engines it
/// does not know.
pub const UNKNOWN: &[u8] = b"unknown";

/// One heartbeat connection to the hub and the thread that serves it, for
/// every engine of a process that joins it ([`Heartbeat::join`]). The
/// thread stops when the host is dropped.
///
/// ```no_run
/// # fn main() -> Result<(), zpar_engine::EngineError> {
/// use zpar_engine::heartbeat::{Heartbeat, HeartbeatHost};
/// let ctx = zmq::Context::new();
/// let host = HeartbeatHost::start(&ctx, "tcp://127.0.0.1:5502", None)?;
/// let heartbeat = Heartbeat::join(&host, b"engine-uuid")?;
/// assert!(!heartbeat.heard_any());
/// # Ok(()) }
/// ```
pub struct HeartbeatHost {
    shared: Arc<HostShared>,
    /// For the sockets that wake each engine's request loop.
    ctx: zmq::Context,
    /// Wakes the thread: to stop, or to say hello for an engine that just
    /// registered (it sleeps until a ping or a hello is due otherwise: a
    /// thousand engines polling every 100 ms cost a tenth of the machine).
    wake: Mutex<zmq::Socket>,
    /// The hub's heartbeat address and the CURVE keys used to reach it.
    url: String,
    curve: Option<CurveKeys>,
    /// This connection's identity at the hub.
    route: String,
    thread: Option<JoinHandle<()>>,
}

/// What the engines and the host's thread share.
struct HostShared {
    stop: AtomicBool,
    /// When the host started; the engines' times are kept as milliseconds
    /// after it.
    epoch: Instant,
    /// The engines served, by uuid.
    members: Mutex<HashMap<Vec<u8>, Member>>,
}

impl HostShared {
    fn members(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Member>> {
        // A thread that panicked holding the lock left a map still whole.
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        // Stored as milliseconds + 1, so that 0 means "never".
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// One engine, as the host's thread keeps it.
struct Member {
    flags: Arc<Flags>,
    /// Wakes the engine's request loop (which sleeps for many seconds when
    /// idle) when the hub's news cannot wait: a new hub, an "unknown",
    /// pings after a silence.
    poke: zmq::Socket,
    /// The engine's serving thread's CPU clock; sampled only under the
    /// members' lock, which the engine takes to leave before that thread
    /// ends.
    cpu: CpuShare,
    /// When the last ping for it came, and the time between the last two.
    last_ping: Option<Instant>,
    hello_after: Duration,
    last_hello: Option<Instant>,
    pongs: u64,
}

impl Member {
    fn poke(&self) {
        if let Err(e) = self.poke.send(&b""[..], zmq::DONTWAIT) {
            // A full pipe: the engine has wakes enough to come.
            tracing::trace!(error = %Chain(&e), "an engine's request loop was not woken");
        }
    }

    /// When this engine's next hello is due.
    fn hello_due(&self) -> Option<Instant> {
        self.last_ping
            .max(self.last_hello)
            .map(|t| t + self.hello_after)
    }
}

/// What the host's thread tells one engine.
#[derive(Default)]
struct Flags {
    /// When the last ping came (ms after the host's epoch + 1; 0: none).
    seen: AtomicU64,
    /// Whether pings now come from another hub instance.
    hub_changed: AtomicBool,
    /// When the hub last said it does not know this engine (as `seen`).
    unknown: AtomicU64,
    /// The hub instance this engine registered with.
    hub: Mutex<Option<Vec<u8>>>,
    /// Say hello for it at the next turn (it just registered).
    hello_now: AtomicBool,
    /// Whether it has registered: before, it says no hello (its
    /// registration is how the hub learns of it, and thousands of engines
    /// waiting their turn would each be answered "unknown").
    registered: AtomicBool,
    /// When it last registered (as `seen`): its silence counts from then
    /// at the latest, however long it waited for its turn.
    registered_at: AtomicU64,
}

/// The least silence after which an engine says hello; past the first
/// pings, twice the time between the last two.
const HELLO_AFTER: Duration = Duration::from_secs(2);

/// The longest silence before a hello, however slowly the hub beats: a hub
/// restarted in place learns of its engines only from their hellos.
const HELLO_AFTER_AT_MOST: Duration = Duration::from_secs(5);

impl HeartbeatHost {
    /// Connects to the hub's heartbeat ROUTER at `url` (a CURVE client of
    /// the hub when `curve` holds its keys) and starts the thread that
    /// serves the engines that join.
    pub fn start(
        ctx: &zmq::Context,
        url: &str,
        curve: Option<&CurveKeys>,
    ) -> Result<Arc<HeartbeatHost>, EngineError> {
        let route = format!("heartbeat-{}", zpar_protocol::new_id());
        let mut dealer = ctx.socket(zmq::DEALER)?;
        // Pings, pongs and hellos only: small buffers (a hub has one of
        // these connections per process of engines).
        zpar_protocol::net::small_buffers(&mut dealer)?;
        zpar_protocol::keepalive::set_zmtp_heartbeats(&dealer)?;
        secure_client(&dealer, curve)?;
        dealer.set_identity(route.as_bytes())?;
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
        let shared = Arc::new(HostShared {
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
            members: Mutex::new(HashMap::new()),
        });
        let served = shared.clone();
        let thread = std::thread::Builder::new()
            .name("zpar-heartbeat".into())
            .spawn(move || serve(dealer, woken, &served))
            .map_err(|source| EngineError::Spawn {
                what: "the heartbeat thread",
                source,
            })?;
        Ok(Arc::new(HeartbeatHost {
            shared,
            ctx: ctx.clone(),
            wake: Mutex::new(wake),
            url: url.to_string(),
            curve: curve.cloned(),
            route,
            thread: Some(thread),
        }))
    }

    /// This connection's identity at the hub, which the engines give when
    /// they register.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Whether this host reaches the hub at `url` with `curve`.
    pub fn serves(&self, url: &str, curve: Option<&CurveKeys>) -> bool {
        self.url == url && self.curve.as_ref() == curve
    }

    /// Whether its thread still serves (it ends only when dropped, or if
    /// polling its sockets failed).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn wake(&self) {
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = wake.send(&b"wake"[..], zmq::DONTWAIT) {
            // A full pipe: the thread has wakes enough to come.
            tracing::trace!(error = %Chain(&e), "the heartbeat thread was not woken");
        }
    }
}

impl Drop for HeartbeatHost {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One engine's membership of a [`HeartbeatHost`]: what the hub's pings
/// told it. Leaves the host when dropped.
pub struct Heartbeat {
    host: Arc<HeartbeatHost>,
    uuid: Vec<u8>,
    flags: Arc<Flags>,
    /// Readable when the host's thread has news for this engine.
    woken: zmq::Socket,
}

impl Heartbeat {
    /// Joins `host` as the engine `uuid`. Call it on the engine's serving
    /// thread: the vitals report that thread's CPU share.
    pub fn join(host: &Arc<HeartbeatHost>, uuid: &[u8]) -> Result<Heartbeat, EngineError> {
        let flags = Arc::new(Flags::default());
        let wake_url = format!("inproc://zpar-heartbeat-news-{}", zpar_protocol::new_id());
        let woken = host.ctx.socket(zmq::PAIR)?;
        woken.bind(&wake_url)?;
        let poke = host.ctx.socket(zmq::PAIR)?;
        poke.connect(&wake_url)?;
        let member = Member {
            flags: flags.clone(),
            poke,
            cpu: CpuShare::of_this_thread(),
            last_ping: None,
            hello_after: HELLO_AFTER,
            // No hello before it registers; then one at once
            // (`Heartbeat::set_hub`).
            last_hello: Some(Instant::now()),
            pongs: 0,
        };
        host.shared.members().insert(uuid.to_vec(), member);
        Ok(Heartbeat {
            host: host.clone(),
            uuid: uuid.to_vec(),
            flags,
            woken,
        })
    }

    /// Readable when the heartbeat thread has news for this engine (poll
    /// it beside the engine's sockets, then [`Heartbeat::drain_wakes`]).
    pub fn wake_socket(&self) -> &zmq::Socket {
        &self.woken
    }

    /// Takes the wake-ups that came.
    pub fn drain_wakes(&self) {
        while self.woken.recv_msg(zmq::DONTWAIT).is_ok() {}
    }

    /// The identity of the heartbeat connection, for the registration.
    pub fn route(&self) -> &str {
        self.host.route()
    }

    /// The hub instance this engine registered with (from the registration
    /// reply); pings of any other instance mean the hub restarted. Says
    /// hello at once, so the hub learns where to ping it.
    pub fn set_hub(&self, instance: &str) {
        if !instance.is_empty() {
            *self.flags.hub.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(instance.as_bytes().to_vec());
        }
        self.flags
            .registered_at
            .store(self.host.shared.now_ms(), Ordering::Relaxed);
        self.flags.registered.store(true, Ordering::Relaxed);
        self.flags.hello_now.store(true, Ordering::Relaxed);
        self.host.wake();
    }

    /// Whether pings now come from another hub than before (a hub
    /// restarted in place); true once per change.
    pub fn take_hub_changed(&self) -> bool {
        self.flags.hub_changed.swap(false, Ordering::Relaxed)
    }

    /// When the hub last said it does not know this engine (it dropped it
    /// after missed heartbeats, during a network cut say), if it did since
    /// last asked.
    pub fn take_unknown(&self) -> Option<Instant> {
        match self.flags.unknown.swap(0, Ordering::Relaxed) {
            0 => None,
            ms => Some(self.host.shared.epoch + Duration::from_millis(ms - 1)),
        }
    }

    /// How long since the hub's last ping, or since this engine last
    /// registered if that is later (since the host started, if neither
    /// yet).
    pub fn silence(&self) -> Duration {
        let last = self
            .flags
            .seen
            .load(Ordering::Relaxed)
            .max(self.flags.registered_at.load(Ordering::Relaxed));
        let last = Duration::from_millis(last.saturating_sub(1));
        self.host.shared.epoch.elapsed().saturating_sub(last)
    }

    /// Whether any ping has come since start.
    pub fn heard_any(&self) -> bool {
        self.flags.seen.load(Ordering::Relaxed) != 0
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.host.shared.members().remove(&self.uuid);
    }
}

/// The host's thread: hellos when due, pongs for pings, until stopped.
fn serve(dealer: zmq::Socket, woken: zmq::Socket, shared: &HostShared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let next_hello = say_hellos(&dealer, shared);
        let wait = next_hello.saturating_duration_since(Instant::now());
        let mut items = [
            dealer.as_poll_item(zmq::POLLIN),
            woken.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, wait.as_millis() as i64 + 1) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "heartbeat poll failed; heartbeats stop");
                return;
            }
        }
        if items[1].is_readable() {
            while woken.recv_msg(zmq::DONTWAIT).is_ok() {}
        }
        if items[0].is_readable() {
            while let Ok(frames) = zpar_protocol::recv_frames(&dealer, zmq::DONTWAIT) {
                answer(&dealer, shared, frames);
            }
        }
    }
}

/// Says hello for every engine silent long enough (or just registered), in
/// one message; returns when the next hello is due.
fn say_hellos(dealer: &zmq::Socket, shared: &HostShared) -> Instant {
    let now = Instant::now();
    let mut next = now + HELLO_AFTER_AT_MOST;
    let mut hello: Vec<Vec<u8>> = Vec::new();
    for (uuid, m) in shared.members().iter_mut() {
        if !m.flags.registered.load(Ordering::Relaxed) {
            continue;
        }
        let due = m.hello_due();
        if m.flags.hello_now.swap(false, Ordering::Relaxed) || due.is_none_or(|d| d <= now) {
            m.last_hello = Some(now);
            if hello.is_empty() {
                hello.push(HELLO.to_vec());
            }
            hello.push(uuid.clone());
            hello.push(Vec::new());
        }
        if let Some(due) = m.hello_due() {
            next = next.min(due);
        }
    }
    // Nothing is queued for a hub not connected, so a hello then is
    // dropped and said again later.
    if !hello.is_empty() {
        if let Err(e) = dealer.send_multipart(hello, zmq::DONTWAIT) {
            tracing::trace!(error = %Chain(&e), "heartbeat hello not sent (no hub connected)");
        }
    }
    next
}

/// Answers one message of the hub: a ping with a pong for each engine it
/// names that is still here, or notes its "unknown".
fn answer(dealer: &zmq::Socket, shared: &HostShared, frames: Vec<zmq::Message>) {
    let Some((head, uuids)) = frames.split_first() else {
        return;
    };
    let now_ms = shared.now_ms();
    let mut members = shared.members();
    if &head[..] == UNKNOWN {
        // The hub is there (it answered), but does not know these engines:
        // no pings come for them until they register again.
        for uuid in uuids {
            if let Some(m) = members.get(&uuid[..]) {
                m.flags.seen.store(now_ms, Ordering::Relaxed);
                m.flags.unknown.store(now_ms, Ordering::Relaxed);
                m.poke();
            }
        }
        return;
    }
    // Pings are `<hub instance>:<beat>`: a new instance is a new hub.
    let instance = head.split(|b| *b == b':').next().unwrap_or_default();
    let now = Instant::now();
    let mut rss = None;
    let mut pong: Vec<Vec<u8>> = Vec::with_capacity(1 + 2 * uuids.len());
    pong.push(head.to_vec());
    for uuid in uuids {
        let Some(m) = members.get_mut(&uuid[..]) else {
            // It left; the hub hears no more of it.
            continue;
        };
        // Pings after a silence longer than any beat (the hub back): the
        // engine may be waiting for them to register again. (A shorter one
        // it finds within 2 s: it looks that often while the hub is lost.)
        let mut news = m
            .last_ping
            .is_some_and(|before| now.duration_since(before) > HELLO_AFTER_AT_MOST);
        if let Some(before) = m.last_ping {
            m.hello_after =
                (now.duration_since(before) * 2).clamp(HELLO_AFTER, HELLO_AFTER_AT_MOST);
        }
        m.last_ping = Some(now);
        m.flags.seen.store(now_ms, Ordering::Relaxed);
        {
            let mut known = m.flags.hub.lock().unwrap_or_else(|e| e.into_inner());
            if known.as_deref().is_some_and(|h| h != instance) {
                m.flags.hub_changed.store(true, Ordering::Relaxed);
                news = true;
            }
            *known = Some(instance.to_vec());
        }
        if news {
            m.poke();
        }
        let vitals = if m.pongs.is_multiple_of(VITALS_EVERY) {
            let vitals = EngineVitals {
                // One process, one RSS: read once for all its engines.
                rss: *rss.get_or_insert_with(resident_bytes),
                cpu: m.cpu.sample(),
                beat_age: None,
            };
            serde_json::to_vec(&vitals).unwrap_or_default()
        } else {
            Vec::new()
        };
        m.pongs += 1;
        pong.push(uuid.to_vec());
        pong.push(vitals);
    }
    drop(members);
    if pong.len() > 1 {
        if let Err(e) = dealer.send_multipart(pong, zmq::DONTWAIT) {
            tracing::debug!(error = %Chain(&e), "heartbeat pong not sent");
        }
    }
}
