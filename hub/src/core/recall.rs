//! Requests lost on a connection that dropped: found by asking, then sent
//! again or failed clearly.
//!
//! ZeroMQ reconnects a dropped connection at once, but what was in flight
//! on it is gone: a request on its way to an engine, or the engine's reply
//! on its way back. Heartbeats travel on their own connection and keep the
//! engine registered, so without a question nobody would ever answer.
//!
//! Once a request has been pending on an engine for
//! [`CoreConfig::recall_after`](super::CoreConfig::recall_after), the hub
//! sends the engine a `recall_request` naming every such request of that
//! channel, on that channel: it arrives after every request sent before it
//! that arrived at all, so the engine's answer is exact. The engine sends
//! again each reply it still holds (they complete as any reply does) and
//! names the rest:
//!
//! - **never arrived** (unknown, and within what the engine remembers): a
//!   load-balanced task with retries goes back to the queue (it never ran,
//!   so no retry is spent); anything else fails with `Lost`, "did not run,
//!   submit it again";
//! - **answered, reply not held**, or unknown beyond what the engine
//!   remembers: fails with `Lost`, saying it ran (or may have).
//!
//! A request still running is named in neither list and goes on waiting.
//! The question is asked again while requests stay silent, the wait
//! doubling (up to 16×) while the engine answers nothing on that channel:
//! an engine busy with a long request answers its questions only when it
//! is done.

use super::registry::Pending;
use super::{Action, HubCore};
use tracing::{debug, info, warn};
use zpar_protocol::error::Chain;
use zpar_protocol::{
    Channel, Content, ErrorClass, Message, RawMessage, RecallReply, RecallRequest,
};

/// How often the hub looks for silent requests, in seconds.
const SCAN_EVERY: f64 = 1.0;
/// Most ids named in one question.
const IDS_PER_RECALL: usize = 10_000;

impl HubCore {
    /// Asks engines about requests silent past the bound (on each tick, at
    /// most every [`SCAN_EVERY`] seconds).
    pub(crate) fn recall_silent_requests(&mut self, now: f64, out: &mut Vec<Action>) {
        if now - self.last_recall_scan < SCAN_EVERY {
            return;
        }
        self.last_recall_scan = now;
        let after = self.config.recall_after.as_secs_f64();
        let mut questions = Vec::new();
        for id in self.registry.owing_ids() {
            let Some(e) = self.registry.get_mut(id) else {
                continue;
            };
            for channel in [Channel::Mux, Channel::Task, Channel::Control] {
                let ledger = *e.ledger(channel);
                let wait = after * f64::from(1u32 << ledger.recalls_unanswered.min(4));
                if ledger.recalled_at.is_some_and(|at| now - at < wait) {
                    continue;
                }
                let mut silent: Vec<(&String, &Pending)> = e
                    .pending()
                    .iter()
                    .filter(|(_, p)| p.channel == channel && now - p.received >= after)
                    .collect();
                if silent.is_empty() {
                    continue;
                }
                silent.sort_by_key(|(_, p)| p.seq);
                let msg_ids: Vec<String> = silent
                    .iter()
                    .take(IDS_PER_RECALL)
                    .map(|(id, _)| (*id).clone())
                    .collect();
                let ledger = e.ledger(channel);
                ledger.recalled_at = Some(now);
                ledger.recalls_unanswered += 1;
                ledger.sent_at_recall = ledger.sent;
                questions.push((id, e.uuid.clone(), channel, msg_ids));
            }
        }
        for (engine, uuid, channel, msg_ids) in questions {
            debug!(engine, %channel, count = msg_ids.len(), "asking an engine about silent requests");
            let msg = Message::new(
                &self.session,
                Content::RecallRequest(RecallRequest { msg_ids }),
            );
            out.push(Action::ToEngine {
                channel,
                uuid,
                frames: self.session.encode_owned(msg).into_frames(),
            });
        }
    }

    /// Any message from `engine` on `channel`: it is answering there.
    pub(crate) fn heard_on(&mut self, engine: u32, channel: Channel) {
        if let Some(e) = self.registry.get_mut(engine) {
            e.ledger(channel).recalls_unanswered = 0;
        }
    }

    /// The engine's answer: the replies it held came before it; the rest
    /// are sent again or failed (see the [module](self) docs).
    pub(crate) fn on_recall_reply(
        &mut self,
        engine: u32,
        channel: Channel,
        raw: &RawMessage,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let answer: RecallReply = match serde_json::from_slice(&raw.content) {
            Ok(a) => a,
            Err(e) => {
                return warn!(error = %Chain(&e), engine, "dropped an unreadable recall reply")
            }
        };
        let Some(e) = self.registry.get_mut(engine) else {
            return;
        };
        let sent_at_recall = e.ledger(channel).sent_at_recall;
        // Ids answered meanwhile are no longer pending: nothing to do.
        let registry = &mut self.registry;
        let mut take = |ids: &[String]| -> Vec<(String, Pending)> {
            ids.iter()
                .filter_map(|id| Some((id.clone(), registry.drop_pending(engine, id)?)))
                .collect()
        };
        let unknown = take(&answer.unknown);
        let not_kept = take(&answer.answered_not_kept);
        let mut requeued = false;
        for (msg_id, mut p) in unknown {
            let sent_after = sent_at_recall.saturating_sub(p.seq);
            let never_arrived = answer.remembered.is_none_or(|n| sent_after < n);
            let why = match (never_arrived, p.retry.take()) {
                (true, Some(mut task)) => {
                    info!(engine, %msg_id, "a task lost on its way to its engine goes back to the queue");
                    task.attempt += 1;
                    self.update_record(&msg_id, Some(engine), |r| r.engine = None);
                    self.waiting.push_back(*task);
                    requeued = true;
                    continue;
                }
                (true, None) => format!(
                    "the request never reached engine {engine}: its {channel} connection \
                     dropped while the request was on the way (ZeroMQ reconnected, but what \
                     was in flight is lost); it did not run: submit it again"
                ),
                (false, _) => format!(
                    "engine {engine} has no trace of the request among the last {} it got \
                     on {channel}: the request or its reply was lost on a connection that \
                     dropped; whether it ran is unknown",
                    answer.remembered.unwrap_or_default()
                ),
            };
            self.fail_lost(engine, &msg_id, p, why, now);
        }
        for (msg_id, p) in not_kept {
            let why = format!(
                "engine {engine} ran the request, but its reply was lost on a connection \
                 that dropped, and the engine no longer holds it (too large, or too many \
                 replies since): the request ran; its result is gone"
            );
            self.fail_lost(engine, &msg_id, p, why, now);
        }
        if requeued {
            self.schedule_waiting(now, out);
        }
    }

    /// Fails a request lost on the way (`why` says how), once, to its
    /// client.
    fn fail_lost(&mut self, engine: u32, msg_id: &str, p: Pending, why: String, now: f64) {
        self.fail_pending(engine, msg_id, p, ErrorClass::Lost, why, now);
    }
}
