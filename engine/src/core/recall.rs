//! What became of the hub's requests: which arrived, and the latest
//! replies, so that a `recall_request` can be answered.
//!
//! A message in flight when a connection drops is gone, though ZeroMQ
//! reconnects at once and the heartbeats, on their own connection, never
//! noticed. The hub asks about requests it has heard nothing back about
//! for a while ([`RecallRequest`], sent on the channel the requests went
//! by, so it comes after every one of them that arrived). The engine then
//! sends again the replies it still holds, and names what it cannot
//! answer: ids it has no trace of (they never arrived: lost on the way
//! in), and ids it answered whose replies it no longer holds.
//!
//! Per hub channel (mux, task, control) the engine remembers the ids of
//! the last [`REMEMBERED`] requests and holds the last [`KEPT`] replies,
//! the buffers of those up to [`KEPT_BUFFER_BYTES`] in all. A reply with
//! larger buffers is remembered as answered, not kept.

use super::{Action, Reply, Source};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use zpar_protocol::{Channel, Content, RecallReply, RecallRequest};

/// Request ids remembered per channel.
pub(crate) const REMEMBERED: usize = 1 << 14;
/// Replies held per channel.
pub(crate) const KEPT: usize = 256;
/// Bytes of buffers held with the replies of one channel.
pub(crate) const KEPT_BUFFER_BYTES: usize = 8 << 20;

/// A reply as it went out, to send again: the core's reply itself
/// (shared, not copied) and a copy of its buffers, which went with it.
#[derive(Debug)]
struct KeptReply {
    reply: Rc<Reply>,
    buffers: Vec<Vec<u8>>,
}

impl KeptReply {
    fn again(&self) -> Action {
        Action::Reply {
            reply: Rc::clone(&self.reply),
            buffers: self
                .buffers
                .iter()
                .map(|b| zmq::Message::from(&b[..]))
                .collect(),
        }
    }
}

/// One request's fate so far.
#[derive(Debug)]
enum Fate {
    /// Arrived, not answered yet.
    Working,
    /// Answered; the reply while it is held.
    Answered(Option<Box<KeptReply>>),
}

/// One channel's memory.
#[derive(Debug, Default)]
struct History {
    /// Ids, oldest first.
    order: VecDeque<String>,
    fates: HashMap<String, Fate>,
    /// Ids whose replies are held, oldest first.
    kept: VecDeque<String>,
    kept_bytes: usize,
    /// Some ids were forgotten to stay within [`REMEMBERED`].
    forgot: bool,
}

impl History {
    fn arrived(&mut self, msg_id: &str) {
        if self.fates.contains_key(msg_id) {
            return;
        }
        if self.order.len() >= REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.fates.remove(&old);
                self.forgot = true;
            }
        }
        self.order.push_back(msg_id.to_string());
        self.fates.insert(msg_id.to_string(), Fate::Working);
    }

    fn answered(&mut self, reply: &Action) {
        let Action::Reply { reply, buffers } = reply else {
            return;
        };
        let msg_id = &reply.to.header.msg_id;
        self.arrived(msg_id);
        let bytes: usize = buffers.iter().map(|b| b.len()).sum();
        let kept = (bytes <= KEPT_BUFFER_BYTES / 4).then(|| {
            Box::new(KeptReply {
                reply: Rc::clone(reply),
                buffers: buffers.iter().map(|b| b.to_vec()).collect(),
            })
        });
        if kept.is_some() {
            self.kept.push_back(msg_id.clone());
            self.kept_bytes += bytes;
        }
        if let Some(fate) = self.fates.get_mut(msg_id) {
            *fate = Fate::Answered(kept);
        }
        while self.kept.len() > KEPT || self.kept_bytes > KEPT_BUFFER_BYTES {
            let Some(old) = self.kept.pop_front() else {
                break;
            };
            if let Some(Fate::Answered(held)) = self.fates.get_mut(&old) {
                if let Some(r) = held.take() {
                    self.kept_bytes -= r.buffers.iter().map(Vec::len).sum::<usize>();
                }
            }
        }
    }
}

/// The memory of every hub channel; see the [module](self) docs.
#[derive(Debug, Default)]
pub(crate) struct Recall {
    mux: History,
    task: History,
    control: History,
}

impl Recall {
    fn history(&mut self, source: Source) -> Option<&mut History> {
        match source.hub_channel()? {
            Channel::Mux => Some(&mut self.mux),
            Channel::Task => Some(&mut self.task),
            Channel::Control => Some(&mut self.control),
        }
    }

    /// A request came from the hub on `source`.
    pub(crate) fn arrived(&mut self, source: Source, msg_id: &str) {
        if let Some(h) = self.history(source) {
            h.arrived(msg_id);
        }
    }

    /// Notes every reply among `actions` that goes to the hub.
    pub(crate) fn note_replies(&mut self, actions: &[Action]) {
        for a in actions {
            if let Action::Reply { reply, .. } = a {
                if matches!(reply.content, Content::RecallReply(_)) {
                    continue;
                }
                if let Some(h) = self.history(reply.to.source) {
                    h.answered(a);
                }
            }
        }
    }

    /// The answer to `ask` on `source`: the held replies again, then what
    /// the hub must know about the rest (the [`RecallReply`]'s content).
    pub(crate) fn answer(
        &mut self,
        source: Source,
        ask: &RecallRequest,
    ) -> (Vec<Action>, RecallReply) {
        let mut again = Vec::new();
        let mut reply = RecallReply::default();
        for id in &ask.msg_ids {
            // The hub asks on the channel a request went by; an id found
            // on another is answered all the same.
            let fate = [&self.mux, &self.task, &self.control]
                .into_iter()
                .find_map(|h| h.fates.get(id));
            match fate {
                None => reply.unknown.push(id.clone()),
                Some(Fate::Working) => {}
                Some(Fate::Answered(Some(kept))) => again.push(kept.again()),
                Some(Fate::Answered(None)) => reply.answered_not_kept.push(id.clone()),
            }
        }
        reply.remembered = match self.history(source) {
            Some(h) => h.forgot.then_some(h.order.len() as u64),
            None => Some(0),
        };
        (again, reply)
    }
}
