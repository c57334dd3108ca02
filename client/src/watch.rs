//! Results the hub has no push for, asked for again on the I/O thread's
//! timer.
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

#[cfg(test)]
mod tests {
    use super::*;

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
