//! What the I/O thread watches on its timer: results the hub has no push
//! for, and the hub itself.
//!
//! # Results
//!
//! [`Client::get_result`](crate::Client::get_result) on a request that is
//! still running — another client's, or one from before a hub restart — gets
//! no reply on this client's sockets when it finishes: only its submitter
//! does. So the I/O thread keeps a list of such results and sends the hub a
//! `result_request` for each when it is due, backing off from 5 ms to 200 ms.
//! One list and one thread serve every pending result; no thread per result.
//!
//! [`Watches`] is the bookkeeping alone (what is due, what was asked, when
//! to wake), with time as an argument; the I/O loop does the sending.
//!
//! # The hub
//!
//! The client hears the hub's heartbeat PUB (`<hub instance>:<beat>`, the
//! pings engines echo) and counts any message from the hub as life.
//! [`HubLiveness`] decides, with time as an argument: silent past the limit
//! is [`HubChange::Lost`]; pings of another instance while it was not lost
//! is [`HubChange::Restarted`]; anything heard while lost is
//! [`HubChange::Back`]. The limit is the client's (3 s by default, the
//! hub's own default for engines), raised to three of the hub's beats for a
//! hub with a slow heartbeat.

use crate::result::ResultState;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use zpar_protocol::backoff::Backoff;

/// First and longest pause between two questions about one result.
const PAUSES: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));

/// A question with no answer after this long is asked again (the hub may
/// have restarted and lost it).
pub(crate) const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Which watch: one result may be fetched, and so watched, more than once.
pub(crate) type WatchId = u64;

/// One result being watched.
struct Watch {
    id: WatchId,
    msg_id: String,
    /// Weak: a result the user dropped is not asked about any more.
    state: Weak<ResultState>,
    pauses: Backoff,
    /// When to ask next (when no question is in flight).
    next: Instant,
    /// The msg id of the question in flight, and when it was sent.
    asking: Option<(String, Instant)>,
}

/// The results the I/O thread asks the hub about, by the msg id of the
/// request that made them.
#[derive(Default)]
pub(crate) struct Watches {
    items: Vec<Watch>,
    last_id: WatchId,
}

impl Watches {
    /// Starts watching `msg_id`; the first question is one pause from `now`.
    pub fn add(&mut self, msg_id: String, state: &Arc<ResultState>, now: Instant) {
        let mut pauses = PAUSES;
        let next = now + pauses.next_pause();
        self.last_id += 1;
        self.items.push(Watch {
            id: self.last_id,
            msg_id,
            state: Arc::downgrade(state),
            pauses,
            next,
            asking: None,
        });
    }

    /// How many results are watched.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The watches to ask about now, with the msg id to ask for. Forgets
    /// results the user dropped, and questions unanswered for
    /// [`ASK_TIMEOUT`] (those are due again).
    pub fn due(&mut self, now: Instant) -> Vec<(WatchId, String)> {
        self.items.retain(|w| w.state.strong_count() > 0);
        let mut due = Vec::new();
        for w in &mut self.items {
            if w.asking
                .as_ref()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= ASK_TIMEOUT)
            {
                w.asking = None;
            }
            if w.asking.is_none() && now >= w.next {
                due.push((w.id, w.msg_id.clone()));
            }
        }
        due
    }

    /// Notes that the question `query_id` for watch `id` went out at `now`.
    pub fn asked(&mut self, id: WatchId, query_id: String, now: Instant) {
        if let Some(w) = self.items.iter_mut().find(|w| w.id == id) {
            w.asking = Some((query_id, now));
        }
    }

    /// The watch that the reply to `query_id` is for, if any: its id, the
    /// msg id asked about, and the result's state (None if the user dropped
    /// it meanwhile). The question is no longer in flight.
    pub fn answer(
        &mut self,
        query_id: &str,
    ) -> Option<(WatchId, String, Option<Arc<ResultState>>)> {
        let w = self
            .items
            .iter_mut()
            .find(|w| w.asking.as_ref().is_some_and(|(q, _)| q == query_id))?;
        w.asking = None;
        Some((w.id, w.msg_id.clone(), w.state.upgrade()))
    }

    /// Stops watching everything (the hub was lost): the results still
    /// wanted.
    pub fn take_all(&mut self) -> Vec<Arc<ResultState>> {
        std::mem::take(&mut self.items)
            .into_iter()
            .filter_map(|w| w.state.upgrade())
            .collect()
    }

    /// The result is filled: stop watching it.
    pub fn finish(&mut self, id: WatchId) {
        self.items.retain(|w| w.id != id);
    }

    /// Still pending: ask again one (longer) pause from `now`.
    pub fn again(&mut self, id: WatchId, now: Instant) {
        if let Some(w) = self.items.iter_mut().find(|w| w.id == id) {
            w.next = now + w.pauses.next_pause();
        }
    }

    /// When the I/O loop must wake next for these results: the earliest
    /// question due, or the earliest in-flight question to give up on.
    pub fn next_wake(&self) -> Option<Instant> {
        self.items
            .iter()
            .map(|w| match &w.asking {
                Some((_, at)) => *at + ASK_TIMEOUT,
                None => w.next,
            })
            .min()
    }
}

/// How long the hub may be silent before the client counts it as lost:
/// the hub's default for engines (3 beats of 1 s).
pub const HUB_TIMEOUT: Duration = Duration::from_secs(3);

/// Beats of the hub's own heartbeat the limit never goes below.
const MIN_BEATS: u32 = 3;

/// What changed about the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HubChange {
    /// Silent for this long, past the limit.
    Lost { silence: Duration },
    /// Pings of another instance: it restarted in place (and is back).
    Restarted,
    /// Heard again after it was lost.
    Back,
}

/// Whether the hub is alive, from what was heard when.
#[derive(Debug)]
pub(crate) struct HubLiveness {
    limit: Duration,
    /// None until the hub was first heard: a hub that never answered is
    /// not "lost" (connecting says so: [`crate::Error::NoHub`]).
    last_heard: Option<Instant>,
    lost: bool,
    /// The hub's instance: named by its pings, and by its answer to a
    /// connection request (so a client that has heard no ping yet knows
    /// which hub it connected to, and sees a restart inside the limit).
    instance: Option<Vec<u8>>,
    /// The first beat of that instance heard (number, when), to estimate
    /// its period.
    first_beat: Option<(u64, Instant)>,
    period: Option<Duration>,
}

impl HubLiveness {
    /// A hub not heard from yet.
    pub fn new(limit: Duration) -> HubLiveness {
        HubLiveness {
            limit,
            last_heard: None,
            lost: false,
            instance: None,
            first_beat: None,
            period: None,
        }
    }

    /// Sets the limit the client chose.
    pub fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    /// The silence after which the hub is lost: the client's limit, but at
    /// least [`MIN_BEATS`] of the hub's heartbeat.
    pub fn limit(&self) -> Duration {
        match self.period {
            Some(p) => self.limit.max(p * MIN_BEATS),
            None => self.limit,
        }
    }

    /// Whether the hub is lost now.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// How long since anything was heard (zero if nothing ever was).
    pub fn silence(&self, now: Instant) -> Duration {
        self.last_heard
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Any message from the hub arrived.
    pub fn heard(&mut self, now: Instant) -> Option<HubChange> {
        self.last_heard = Some(now);
        if self.lost {
            self.lost = false;
            // The next ping or answer names the hub that is back.
            self.instance = None;
            self.first_beat = None;
            return Some(HubChange::Back);
        }
        None
    }

    /// A heartbeat ping (`<instance>:<beat>`) arrived.
    pub fn ping(&mut self, payload: &[u8], now: Instant) -> Option<HubChange> {
        let mut parts = payload.splitn(2, |b| *b == b':');
        let instance = parts.next().unwrap_or_default();
        let beat = parts
            .next()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|b| b.parse::<u64>().ok());
        let back = self.heard(now);
        if self.named(instance) {
            self.first_beat = beat.map(|b| (b, now));
            return back.or(Some(HubChange::Restarted));
        }
        match (self.first_beat, beat) {
            (None, Some(beat)) => self.first_beat = Some((beat, now)),
            (Some((first, at)), Some(beat)) if beat > first => {
                let beats = u32::try_from(beat - first).unwrap_or(u32::MAX);
                self.period = Some(now.saturating_duration_since(at) / beats);
            }
            _ => {}
        }
        back
    }

    /// The hub named its instance in an answer (a `connection_reply`): a
    /// restart if it is not the one known.
    pub fn instance_seen(&mut self, instance: &[u8]) -> Option<HubChange> {
        if self.named(instance) {
            self.first_beat = None;
            return Some(HubChange::Restarted);
        }
        None
    }

    /// Notes the instance the hub names; true if another one was known (it
    /// restarted in place).
    fn named(&mut self, instance: &[u8]) -> bool {
        match &self.instance {
            Some(known) if known.as_slice() == instance => false,
            Some(_) => {
                self.instance = Some(instance.to_vec());
                self.period = None;
                true
            }
            None => {
                self.instance = Some(instance.to_vec());
                false
            }
        }
    }

    /// The hub is lost if it has been silent past the limit (once: then
    /// it is lost until heard again).
    pub fn check(&mut self, now: Instant) -> Option<HubChange> {
        let silence = self.silence(now);
        if self.lost || self.last_heard.is_none() || silence < self.limit() {
            return None;
        }
        self.lost = true;
        self.instance = None;
        self.first_beat = None;
        Some(HubChange::Lost { silence })
    }

    /// When [`check`](Self::check) may next find it lost (None while lost,
    /// or before it was ever heard).
    pub fn deadline(&self) -> Option<Instant> {
        let heard = self.last_heard.filter(|_| !self.lost)?;
        Some(heard + self.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_past_the_limit_is_a_loss_once_and_anything_heard_brings_it_back() {
        let t0 = Instant::now();
        let mut hub = HubLiveness::new(Duration::from_secs(3));
        assert_eq!(hub.ping(b"aaaa:1", t0), None);
        assert_eq!(hub.deadline(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(hub.check(t0 + Duration::from_millis(2999)), None);
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(
            hub.check(t1),
            Some(HubChange::Lost {
                silence: Duration::from_secs(3)
            })
        );
        assert!(hub.is_lost());
        assert_eq!(hub.check(t1 + Duration::from_secs(10)), None, "lost once");
        assert_eq!(hub.deadline(), None);
        // A hub back on the same file: another instance, but no "restart".
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(hub.ping(b"bbbb:1", t2), Some(HubChange::Back));
        assert!(!hub.is_lost());
        assert_eq!(hub.ping(b"bbbb:2", t2), None);
        assert_eq!(hub.deadline(), Some(t2 + Duration::from_secs(3)));
    }

    #[test]
    fn pings_of_another_instance_are_a_restart() {
        let t0 = Instant::now();
        let mut hub = HubLiveness::new(Duration::from_secs(3));
        assert_eq!(hub.ping(b"aaaa:7", t0), None);
        assert_eq!(hub.ping(b"bbbb:1", t0), Some(HubChange::Restarted));
        assert_eq!(hub.ping(b"bbbb:2", t0), None, "once");
        assert!(!hub.is_lost());
    }

    #[test]
    fn an_answer_naming_another_instance_is_a_restart_before_any_ping() {
        let t0 = Instant::now();
        let mut hub = HubLiveness::new(Duration::from_secs(3));
        // Connected: the connection reply names the hub; no ping heard yet.
        assert_eq!(hub.heard(t0), None);
        assert_eq!(hub.instance_seen(b"aaaa"), None);
        // The hub is killed and restarted within the limit: the first ping
        // heard is the new hub's.
        assert_eq!(hub.ping(b"bbbb:1", t0), Some(HubChange::Restarted));
        assert_eq!(hub.ping(b"bbbb:2", t0), None, "once");
        assert_eq!(hub.instance_seen(b"bbbb"), None);
        assert_eq!(hub.instance_seen(b"cccc"), Some(HubChange::Restarted));
        assert!(!hub.is_lost());
    }

    #[test]
    fn any_message_keeps_the_hub_alive() {
        let t0 = Instant::now();
        let mut hub = HubLiveness::new(Duration::from_secs(3));
        assert_eq!(hub.check(t0 + Duration::from_secs(60)), None, "never heard");
        assert_eq!(hub.deadline(), None);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(hub.heard(t1), None);
        assert_eq!(hub.check(t0 + Duration::from_secs(4)), None);
        assert!(hub.check(t1 + Duration::from_secs(3)).is_some());
        assert_eq!(
            hub.heard(t1 + Duration::from_secs(5)),
            Some(HubChange::Back)
        );
    }

    /// A hub with a slow heartbeat (`--hb-period-ms 5000`) is not lost
    /// between two of its beats.
    #[test]
    fn the_limit_is_at_least_three_beats_of_the_hub() {
        let t0 = Instant::now();
        let mut hub = HubLiveness::new(Duration::from_secs(3));
        hub.ping(b"aaaa:1", t0);
        let t1 = t0 + Duration::from_secs(10);
        hub.ping(b"aaaa:3", t1);
        assert_eq!(hub.limit(), Duration::from_secs(15));
        assert_eq!(hub.check(t1 + Duration::from_secs(6)), None);
        hub.set_limit(Duration::from_secs(20));
        assert_eq!(hub.limit(), Duration::from_secs(20));
        assert!(hub.check(t1 + Duration::from_secs(20)).is_some());
    }

    fn state() -> Arc<ResultState> {
        ResultState::new(vec![("m".into(), None)])
    }

    #[test]
    fn asks_when_due_then_backs_off_until_answered() {
        let t0 = Instant::now();
        let s = state();
        let mut w = Watches::default();
        w.add("m".into(), &s, t0);
        assert!(w.due(t0).is_empty(), "the first question waits one pause");
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(w.next_wake(), Some(t1));
        let due = w.due(t1);
        assert_eq!(due, [(1, "m".to_string())]);
        w.asked(1, "q1".into(), t1);
        assert!(w.due(t1).is_empty(), "one question in flight at a time");
        assert!(w.answer("other").is_none());
        let (id, msg_id, got) = w.answer("q1").expect("the answer is about m");
        assert_eq!((id, msg_id.as_str()), (1, "m"));
        assert!(got.is_some());
        w.again(1, t1);
        assert_eq!(w.next_wake(), Some(t1 + Duration::from_millis(10)));
        w.finish(1);
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_wake(), None);
    }

    #[test]
    fn dropped_results_and_lost_questions() {
        let t0 = Instant::now();
        let kept = state();
        let mut w = Watches::default();
        w.add("dropped".into(), &state(), t0);
        w.add("kept".into(), &kept, t0);
        let t1 = t0 + Duration::from_millis(5);
        let kept_id = 2;
        let due = w.due(t1);
        assert_eq!(
            due,
            [(kept_id, "kept".to_string())],
            "a dropped result is forgotten"
        );
        w.asked(kept_id, "q".into(), t1);
        assert_eq!(w.next_wake(), Some(t1 + ASK_TIMEOUT));
        let due = w.due(t1 + ASK_TIMEOUT);
        assert_eq!(
            due,
            [(kept_id, "kept".to_string())],
            "an unanswered question is asked again"
        );
    }

    /// Regression: two fetches of one pending result were keyed by msg id,
    /// so the first answer finished both watches and the second result was
    /// never filled.
    #[test]
    fn one_result_fetched_twice_is_two_watches() {
        let t0 = Instant::now();
        let (a, b) = (state(), state());
        let mut w = Watches::default();
        w.add("m".into(), &a, t0);
        w.add("m".into(), &b, t0);
        let t1 = t0 + Duration::from_millis(5);
        let due = w.due(t1);
        assert_eq!(due.len(), 2);
        w.asked(due[0].0, "qa".into(), t1);
        w.asked(due[1].0, "qb".into(), t1);
        let (first, _, _) = w.answer("qa").unwrap();
        w.finish(first);
        assert_eq!(w.len(), 1, "the other fetch is still watched");
        assert!(w.answer("qb").is_some());
    }
}
