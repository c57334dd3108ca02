//! Liveness: the hub pings every watched engine and collects its pongs on
//! one ROUTER (one connection per process of engines, each message naming
//! the engines it is for), and pings its clients on a PUB, on a thread of
//! its own so a busy hub loop never delays a beat.
//!
//! [`HeartMonitor`] is the bookkeeping (which engine answered which beat),
//! a plain state machine tested without sockets; [`spawn`] runs it.
//!
//! Once a beat the thread also tells the hub loop which engines answered
//! and what vitals they reported ([`VITALS`]), with the hub's own, for the
//! queue status a dashboard reads.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use zpar_protocol::vitals::{resident_bytes, CpuShare, EngineVitals, HubVitals};

/// What the monitor knows of one engine's beats.
#[derive(Debug, Clone, Copy)]
struct Heart {
    /// The last beat it answered (or was watched at).
    last: u64,
    /// Whether it has answered at all since it was watched.
    answered: bool,
}

/// A watched engine that has not answered yet gets this many times the
/// usual misses: its heartbeat sockets may still be connecting. When a
/// thousand engines register at once, the hub's pings reach the last of
/// them seconds late, and two of them were once declared dead that way.
pub const FIRST_BEAT_GRACE: u64 = 4;

/// A beat that at least this share of the engines (in percent) missed
/// together counts against nobody: so many falling silent at once is the
/// machine or the network starving them, not each dying. Thousands of
/// engines on one host answer seconds late while a collective wakes them
/// all; a crashed process of packed engines is a few percent.
pub const SHARED_SILENCE_PERCENT: usize = 10;

/// ...but only with at least this many engines watched (a small cluster's
/// engines are each a large share)...
pub const SHARED_SILENCE_MIN_ENGINES: usize = 50;

/// ...and for at most this many beats in a row: engines silent for longer
/// are judged one by one again (a host holding many of them is gone).
pub const SHARED_SILENCE_MAX_BEATS: u64 = 30;

/// Tracks which engines answered recent pings.
#[derive(Debug)]
pub struct HeartMonitor {
    /// Random per hub start; engines notice a restarted hub by it.
    instance: String,
    max_misses: u64,
    beat: u64,
    /// Beats in a row forgiven as a shared silence.
    shared_silence: u64,
    /// When the log last said so (once a minute at most).
    shared_silence_told: Option<Instant>,
    /// uuid → its beats.
    hearts: HashMap<Vec<u8>, Heart>,
    /// Engines told this beat that the hub does not know them.
    told: std::collections::HashSet<Vec<u8>>,
}

impl HeartMonitor {
    /// A monitor that declares an engine dead after `max_misses` unanswered
    /// beats in a row.
    pub fn new(instance: &str, max_misses: u64) -> HeartMonitor {
        HeartMonitor {
            instance: instance.to_string(),
            max_misses: max_misses.max(1),
            beat: 0,
            shared_silence: 0,
            shared_silence_told: None,
            hearts: HashMap::new(),
            told: Default::default(),
        }
    }

    /// Starts watching an engine, as if it had just answered; until it
    /// does, it may miss [`FIRST_BEAT_GRACE`] times more beats.
    pub fn watch(&mut self, uuid: &[u8]) {
        let heart = Heart {
            last: self.beat,
            answered: false,
        };
        self.hearts.insert(uuid.to_vec(), heart);
    }

    /// Stops watching an engine.
    pub fn forget(&mut self, uuid: &[u8]) {
        self.hearts.remove(uuid);
    }

    /// Whether the engine is watched.
    pub fn watches(&self, uuid: &[u8]) -> bool {
        self.hearts.contains_key(uuid)
    }

    /// The current beat's ping: `<hub instance>:<beat>`.
    pub fn payload(&self) -> Vec<u8> {
        format!("{}:{}", self.instance, self.beat).into_bytes()
    }

    /// The engines watched, to ping.
    pub fn watched(&self) -> impl Iterator<Item = &[u8]> {
        self.hearts.keys().map(|u| &u[..])
    }

    /// A pong arrived. Any pong counts as life. Returns true when the
    /// engine is not watched (it was dropped, or never registered) and has
    /// not been told so this beat: the caller tells it, so an engine cut
    /// off long enough to be dropped registers again once it is back.
    pub fn pong(&mut self, uuid: &[u8]) -> bool {
        match self.hearts.get_mut(uuid) {
            Some(heart) => {
                heart.last = self.beat;
                heart.answered = true;
                false
            }
            None => self.told.insert(uuid.to_vec()),
        }
    }

    /// The hub heard from a watched engine by other means (a reply): as
    /// good as a pong.
    pub fn alive(&mut self, uuid: &[u8]) {
        if let Some(heart) = self.hearts.get_mut(uuid) {
            heart.last = self.beat;
            heart.answered = true;
        }
    }

    /// Whether the beat now ending was missed by so many engines at once
    /// that it may count against none of them ([`SHARED_SILENCE_PERCENT`]).
    fn silence_is_shared(&self) -> bool {
        let watched = self.hearts.len();
        if watched < SHARED_SILENCE_MIN_ENGINES {
            return false;
        }
        let silent = self
            .hearts
            .values()
            .filter(|h| h.answered && h.last < self.beat)
            .count();
        silent * 100 >= watched * SHARED_SILENCE_PERCENT
    }

    /// Next beat: returns its payload to publish (`<hub instance>:<beat>`),
    /// and the engines now dead (no longer watched). `late` says the hub
    /// itself came late to this beat (its thread was starved, on a machine
    /// busy with many engines): that beat's silence is the hub's, not the
    /// engines', and counts against nobody.
    pub fn tick(&mut self, late: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
        let shared = if self.silence_is_shared() {
            self.shared_silence += 1;
            self.shared_silence <= SHARED_SILENCE_MAX_BEATS
        } else {
            self.shared_silence = 0;
            false
        };
        let told_lately = self
            .shared_silence_told
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
        if shared && self.shared_silence == 1 && !told_lately {
            self.shared_silence_told = Some(Instant::now());
            tracing::warn!(
                    engines = self.hearts.len(),
                    "a tenth or more of the engines missed the same heartbeat: the machine or the network is saturated, so for up to {SHARED_SILENCE_MAX_BEATS} beats such silences count against nobody"
                );
        }
        self.beat += 1;
        self.told.clear();
        let beat = self.beat;
        if late || shared {
            for heart in self.hearts.values_mut() {
                heart.last = (heart.last + 1).min(beat);
            }
        }
        let max = self.max_misses;
        let dead: Vec<Vec<u8>> = self
            .hearts
            .iter()
            .filter(|(_, h)| {
                let allowed = if h.answered {
                    max
                } else {
                    max * FIRST_BEAT_GRACE
                };
                beat - h.last > allowed
            })
            .map(|(u, _)| u.clone())
            .collect();
        for u in &dead {
            self.hearts.remove(u);
        }
        (self.payload(), dead)
    }
}

/// The most engines one heartbeat message may name; the rest are ignored.
/// Engines share a connection forty to a ZeroMQ context, so this is room
/// to spare, and a peer cannot make the hub keep a route for each of a
/// million made-up names.
pub const ENGINES_PER_MESSAGE: usize = 1024;

/// Messages between the hub loop and the heartbeat thread, over inproc.
pub const WATCH: &[u8] = b"watch";
/// Stop watching.
pub const FORGET: &[u8] = b"forget";
/// An engine missed too many beats.
pub const DEAD: &[u8] = b"dead";
/// Stop the thread.
pub const STOP: &[u8] = b"stop";
/// Sent to an engine whose pong the hub does not know: register again.
pub const UNKNOWN: &[u8] = b"unknown";
/// The hub loop heard from these engines (the uuids follow).
pub const ALIVE: &[u8] = b"alive";
/// To the hub loop, once a beat: the hub's vitals (JSON), then for each
/// engine that answered since the last beat its uuid and its reported
/// vitals (JSON, or empty when that pong carried none).
pub const VITALS: &[u8] = b"vitals";

/// The pongs of one beat and the hub's own vitals, as the hub loop gets
/// them from [`VITALS`].
#[derive(Debug, Default, PartialEq)]
pub struct BeatReport {
    /// The hub process's memory and CPU share.
    pub hub: HubVitals,
    /// Each engine that answered, with the vitals its pong carried.
    pub answered: Vec<(Vec<u8>, Option<EngineVitals>)>,
}

/// The [`VITALS`] message: the hub's vitals, then `answered`, each
/// engine's uuid followed by the vitals frame of its pong as it came
/// (empty when it carried none). The heartbeat thread passes the engines'
/// JSON on unread; the hub loop reads it once ([`BeatReport::from_frames`]).
pub fn beat_message(hub: &HubVitals, answered: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut frames = Vec::with_capacity(2 + answered.len());
    frames.push(VITALS.to_vec());
    frames.push(serde_json::to_vec(hub).unwrap_or_default());
    frames.extend(answered);
    frames
}

impl BeatReport {
    /// Reads a [`VITALS`] message's frames after the first; vitals that do
    /// not parse are taken as absent, and those that do are checked
    /// ([`EngineVitals::checked`]).
    pub fn from_frames<F: std::ops::Deref<Target = [u8]>>(frames: &[F]) -> BeatReport {
        let hub = frames
            .first()
            .and_then(|f| serde_json::from_slice(f).ok())
            .unwrap_or_default();
        let answered = frames[1.min(frames.len())..]
            .chunks_exact(2)
            .map(|pair| {
                let vitals = serde_json::from_slice::<EngineVitals>(&pair[1]).ok();
                (pair[0].to_vec(), vitals.map(EngineVitals::checked))
            })
            .collect();
        BeatReport { hub, answered }
    }
}

/// Runs the heartbeat on its own thread. `ping` (PUB, the clients') and
/// `pong` (ROUTER, the engines': pings out, pongs in) are bound already;
/// `pipe` is the thread's end of an inproc PAIR to the hub loop.
///
/// The engines of a process share one connection to `pong`: each message
/// names the engines it is for after its first frame (see the engine's
/// `heartbeat` module), and an engine is pinged on the connection its last
/// hello or pong came on, one ping per connection and beat for all its
/// engines.
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
            let mut routes = Routes::default();
            let mut next = Instant::now() + period;
            let mut hub_cpu = CpuShare::of_this_process();
            // This beat's answers: uuid, vitals frame, uuid, …
            let mut answered: Vec<Vec<u8>> = Vec::new();
            loop {
                let wait = next.saturating_duration_since(Instant::now());
                let mut items = [
                    pong.as_poll_item(zmq::POLLIN),
                    pipe.as_poll_item(zmq::POLLIN),
                ];
                if zmq::poll(&mut items, wait.as_millis() as i64).is_err() {
                    continue; // EINTR
                }
                // The pipe first: an engine that just registered is watched
                // before its pongs are judged.
                if items[1].is_readable() {
                    while let Ok(frames) = zpar_protocol::recv_frames(&pipe, zmq::DONTWAIT) {
                        match (frames.first().map(|f| &f[..]), frames.get(1)) {
                            (Some(ALIVE), _) => {
                                for u in &frames[1..] {
                                    monitor.alive(u);
                                }
                            }
                            (Some(WATCH), Some(u)) => monitor.watch(u),
                            (Some(FORGET), Some(u)) => {
                                monitor.forget(u);
                                routes.forget(u);
                            }
                            (Some(STOP), _) => return,
                            _ => tracing::warn!("heartbeat: unknown pipe message"),
                        }
                    }
                }
                if items[0].is_readable() {
                    while let Ok(frames) = zpar_protocol::recv_frames(&pong, zmq::DONTWAIT) {
                        let [route, _ping, named @ ..] = &frames[..] else {
                            continue;
                        };
                        // The engines it names: uuid, vitals, uuid, vitals, …
                        // (no more than a process shares a connection by).
                        let mut unknown: Vec<&[u8]> = Vec::new();
                        for pair in named.chunks(2).take(ENGINES_PER_MESSAGE) {
                            let uuid = &pair[0][..];
                            if monitor.pong(uuid) {
                                tracing::debug!(engine = %String::from_utf8_lossy(uuid), "a pong from an engine the hub does not know: telling it to register");
                                unknown.push(uuid);
                                continue;
                            }
                            if !monitor.watches(uuid) {
                                // Unknown and told so this beat already.
                                continue;
                            }
                            routes.heard(uuid, route);
                            answered.push(uuid.to_vec());
                            answered.push(pair.get(1).map(|f| f.to_vec()).unwrap_or_default());
                        }
                        if !unknown.is_empty() {
                            let payload = monitor.payload();
                            let told = std::iter::once(&route[..])
                                .chain([UNKNOWN])
                                .chain(unknown.iter().copied());
                            let _ = pong.send_multipart(told, zmq::DONTWAIT);
                            // And a ping: its instance tells an engine of
                            // an earlier hub that this one is new.
                            let pinged = std::iter::once(&route[..])
                                .chain([&payload[..]])
                                .chain(unknown.iter().copied());
                            let _ = pong.send_multipart(pinged, zmq::DONTWAIT);
                        }
                    }
                }
                let now = Instant::now();
                if now >= next {
                    // More than half a period behind: this thread was not
                    // scheduled in time, so the silence is ours.
                    let late = now - next > period / 2;
                    if late {
                        tracing::debug!(behind = ?(now - next), "the heartbeat came late; no misses counted");
                    }
                    next += period;
                    if next < now {
                        next = now + period;
                    }
                    let (payload, dead) = monitor.tick(late);
                    for uuid in &dead {
                        routes.forget(uuid);
                    }
                    for (route, uuids) in routes.by_route(monitor.watched()) {
                        let frames = std::iter::once(route)
                            .chain([&payload[..]])
                            .chain(uuids);
                        let _ = pong.send_multipart(frames, zmq::DONTWAIT);
                    }
                    let _ = ping.send(payload, zmq::DONTWAIT);
                    let hub = HubVitals {
                        rss: resident_bytes(),
                        cpu: hub_cpu.sample(),
                    };
                    let news = beat_message(&hub, std::mem::take(&mut answered));
                    let _ = pipe.send_multipart(news, zmq::DONTWAIT);
                    for uuid in dead {
                        let _ = pipe.send_multipart([DEAD, &uuid[..]], 0);
                    }
                }
            }
        })
        .expect("spawning the heartbeat thread")
}

/// Which heartbeat connection each engine was last heard on (the engines
/// of a process share one).
#[derive(Debug, Default)]
pub struct Routes {
    /// uuid → the routing id of its connection.
    of_engine: HashMap<Vec<u8>, Vec<u8>>,
}

impl Routes {
    /// `uuid` was heard on `route`.
    pub fn heard(&mut self, uuid: &[u8], route: &[u8]) {
        match self.of_engine.get_mut(uuid) {
            Some(known) if known == route => {}
            Some(known) => *known = route.to_vec(),
            None => {
                self.of_engine.insert(uuid.to_vec(), route.to_vec());
            }
        }
    }

    /// `uuid` is no longer watched.
    pub fn forget(&mut self, uuid: &[u8]) {
        self.of_engine.remove(uuid);
    }

    /// The engines of `uuids` grouped by connection, one group per ping;
    /// an engine not heard from yet is left out (it says hello once it
    /// has registered, and every few seconds while it hears no ping).
    pub fn by_route<'a>(
        &'a self,
        uuids: impl Iterator<Item = &'a [u8]>,
    ) -> HashMap<&'a [u8], Vec<&'a [u8]>> {
        let mut groups: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
        for uuid in uuids {
            if let Some(route) = self.of_engine.get(uuid) {
                groups.entry(&route[..]).or_default().push(uuid);
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_after_max_misses() {
        let mut m = HeartMonitor::new("h", 3);
        m.watch(b"a");
        m.watch(b"b");
        m.pong(b"b");
        for _ in 0..3 {
            m.pong(b"a");
            let (_, dead) = m.tick(false);
            assert!(dead.is_empty());
        }
        m.pong(b"a");
        let (_, dead) = m.tick(false);
        assert_eq!(dead, vec![b"b".to_vec()]);
        let (_, dead) = m.tick(false);
        assert!(dead.is_empty(), "a answered one beat ago");
    }

    #[test]
    fn a_new_engine_gets_longer_for_its_first_beat() {
        let mut m = HeartMonitor::new("h", 3);
        m.watch(b"new");
        m.watch(b"old");
        m.pong(b"old");
        for beat in 1..=3 * FIRST_BEAT_GRACE {
            let (_, dead) = m.tick(false);
            if beat == 4 {
                assert_eq!(
                    dead,
                    vec![b"old".to_vec()],
                    "an answered engine has 3 misses"
                );
            } else {
                assert!(dead.is_empty(), "beat {beat}: {dead:?}");
            }
        }
        let (_, dead) = m.tick(false);
        assert_eq!(dead, vec![b"new".to_vec()], "but a silent new one dies too");
        m.watch(b"late");
        m.tick(false);
        m.pong(b"late");
        for _ in 0..3 {
            assert!(m.tick(false).1.is_empty());
        }
        assert_eq!(
            m.tick(false).1,
            vec![b"late".to_vec()],
            "once it answered, the usual limit"
        );
    }

    #[test]
    fn forgotten_and_unknown_engines_never_die() {
        let mut m = HeartMonitor::new("h", 1);
        m.watch(b"a");
        m.forget(b"a");
        m.pong(b"stranger");
        for _ in 0..5 {
            assert!(m.tick(false).1.is_empty());
        }
    }

    #[test]
    fn beats_the_hub_itself_was_late_for_count_against_nobody() {
        let mut m = HeartMonitor::new("h", 2);
        m.watch(b"a");
        m.pong(b"a");
        for _ in 0..10 {
            let (_, dead) = m.tick(true);
            assert!(dead.is_empty(), "a starved hub kills nobody");
        }
        m.tick(false);
        m.tick(false);
        let (_, dead) = m.tick(false);
        assert_eq!(dead, vec![b"a".to_vec()], "on-time beats still count");
    }

    #[test]
    fn a_silence_most_engines_share_counts_against_none_for_a_while() {
        let mut m = HeartMonitor::new("h", 3);
        let uuids: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for u in &uuids {
            m.watch(u);
            m.pong(u);
        }
        // A fifth fall silent together for 20 beats, then answer again.
        for _ in 0..20 {
            for u in &uuids[20..] {
                m.pong(u);
            }
            let (_, dead) = m.tick(false);
            assert!(dead.is_empty(), "a shared silence kills nobody");
        }
        for u in &uuids {
            m.pong(u);
        }
        m.tick(false);
        // Three of a hundred die: a silence of their own.
        let mut dead = Vec::new();
        for _ in 0..5 {
            for u in &uuids[3..] {
                m.pong(u);
            }
            dead.extend(m.tick(false).1);
        }
        dead.sort();
        assert_eq!(dead, uuids[..3].to_vec());
        // Half of them never answer again: after the longest forgiven
        // silence they are judged one by one.
        let mut dead = Vec::new();
        for _ in 0..SHARED_SILENCE_MAX_BEATS + 5 {
            for u in &uuids[50..] {
                m.pong(u);
            }
            dead.extend(m.tick(false).1);
        }
        assert_eq!(dead.len(), 47, "engines 3..50 die in the end");
    }

    #[test]
    fn any_traffic_counts_as_life() {
        let mut m = HeartMonitor::new("h", 1);
        m.watch(b"a");
        for _ in 0..5 {
            m.alive(b"a");
            assert!(m.tick(false).1.is_empty());
        }
        m.alive(b"stranger");
        assert_eq!(
            m.tick(false).1,
            vec![b"a".to_vec()],
            "traffic of another engine is not a's"
        );
    }

    #[test]
    fn an_unknown_engine_is_told_once_a_beat() {
        let mut m = HeartMonitor::new("h", 2);
        m.watch(b"a");
        assert!(!m.pong(b"a"), "a watched engine is not told");
        assert!(m.pong(b"dropped"), "an unknown one is");
        assert!(!m.pong(b"dropped"), "once a beat");
        m.tick(false);
        assert!(m.pong(b"dropped"), "and again the next beat");
        m.watch(b"dropped");
        assert!(!m.pong(b"dropped"), "until it registers again");
    }

    #[test]
    fn engines_are_pinged_on_the_connection_they_were_last_heard_on() {
        let mut routes = Routes::default();
        routes.heard(b"a", b"process-1");
        routes.heard(b"b", b"process-1");
        routes.heard(b"c", b"process-2");
        let watched: [&[u8]; 4] = [b"a", b"b", b"c", b"silent"];
        let mut groups: Vec<(Vec<u8>, Vec<Vec<u8>>)> = routes
            .by_route(watched.into_iter())
            .into_iter()
            .map(|(r, mut u)| {
                u.sort();
                (r.to_vec(), u.into_iter().map(|u| u.to_vec()).collect())
            })
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            vec![
                (b"process-1".to_vec(), vec![b"a".to_vec(), b"b".to_vec()]),
                (b"process-2".to_vec(), vec![b"c".to_vec()]),
            ],
            "one ping per connection; an engine never heard from is not pinged"
        );
        // Restarted in another process under its uuid: pinged there.
        routes.heard(b"a", b"process-3");
        routes.forget(b"b");
        let groups = routes.by_route([&b"a"[..], b"b"].into_iter());
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[&b"process-3"[..]], vec![&b"a"[..]]);
    }
}
