//! Messages for engines whose link is not up (yet, or again).
//!
//! An engine registers over its link, so the link is up when work first
//! goes to it; but a link that dropped reconnects on its own, and for a
//! moment the hub may hold a message for an engine whose link is not back
//! (the link ROUTER is `ZMQ_ROUTER_MANDATORY`, so such a send fails, or
//! meets a full queue, instead of vanishing). Such
//! messages wait here and are tried again each turn of the loop, in order
//! per engine and channel: a message never overtakes one that waits for
//! the same engine and channel (a stream's chunks never beat its head).
//! One that waits past the loop's bound goes back to the core, which fails
//! its request with `Undelivered`.

use crate::core::Frames;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use zpar_protocol::Channel;

/// A message waiting for its engine's connection to come up.
pub(crate) struct Waiting {
    pub(crate) channel: Channel,
    pub(crate) engine: Vec<u8>,
    pub(crate) frames: Frames,
    pub(crate) since: Instant,
}

/// What one try to send came to.
pub(crate) enum Sent {
    /// Gone out (or failed for good, logged by the sender).
    Done,
    /// The engine's connection for the channel is not up: the frames back.
    NotConnected(Frames),
}

/// The waiting messages, oldest first; see the [module](self) docs.
#[derive(Default)]
pub(crate) struct Unroutable {
    queue: VecDeque<Waiting>,
    /// How many of the queue's messages wait for each engine and channel:
    /// a send need not walk the queue to learn whether it must wait.
    waiting: HashMap<(Channel, Vec<u8>), usize>,
}

impl Unroutable {
    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends `frames` to `engine` on `channel` with `send`, unless messages
    /// for the same engine and channel wait already (then it waits behind
    /// them) or the connection is not up (then it waits first).
    pub(crate) fn route(
        &mut self,
        channel: Channel,
        engine: Vec<u8>,
        frames: Frames,
        now: Instant,
        send: impl FnOnce(Channel, &[u8], Frames) -> Sent,
    ) {
        let behind =
            !self.waiting.is_empty() && self.waiting.contains_key(&(channel, engine.clone()));
        let frames = if behind {
            frames
        } else {
            match send(channel, &engine, frames) {
                Sent::Done => return,
                Sent::NotConnected(frames) => frames,
            }
        };
        self.push(Waiting {
            channel,
            engine,
            frames,
            since: now,
        });
    }

    /// Puts a message at the back of the queue, counting it.
    fn push(&mut self, w: Waiting) {
        *self
            .waiting
            .entry((w.channel, w.engine.clone()))
            .or_default() += 1;
        self.queue.push_back(w);
    }

    /// Counts a message for `key` taken off the queue for good.
    fn taken(&mut self, key: &(Channel, Vec<u8>)) {
        if let Some(n) = self.waiting.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.waiting.remove(key);
            }
        }
    }

    /// Tries every waiting message again, in order per engine and channel
    /// (one that still cannot go holds back those behind it). Messages of
    /// engines `gone` says are no longer registered are dropped (their
    /// requests were failed then); those that waited past `limit` are
    /// returned, for their requests to fail.
    pub(crate) fn retry(
        &mut self,
        now: Instant,
        limit: Duration,
        gone: impl Fn(&[u8]) -> bool,
        mut send: impl FnMut(Channel, &[u8], Frames) -> Sent,
    ) -> Vec<Waiting> {
        let mut blocked: HashSet<(Channel, Vec<u8>)> = HashSet::new();
        let mut expired = Vec::new();
        for _ in 0..self.queue.len() {
            let Some(w) = self.queue.pop_front() else {
                break;
            };
            let key = (w.channel, w.engine.clone());
            if gone(&w.engine) {
                self.taken(&key);
                continue;
            }
            if now.saturating_duration_since(w.since) > limit {
                self.taken(&key);
                expired.push(w);
                continue;
            }
            if blocked.contains(&key) {
                self.queue.push_back(w);
                continue;
            }
            let Waiting {
                channel,
                engine,
                frames,
                since,
            } = w;
            match send(channel, &engine, frames) {
                Sent::Done => self.taken(&key),
                Sent::NotConnected(frames) => {
                    blocked.insert(key);
                    self.queue.push_back(Waiting {
                        channel,
                        engine,
                        frames,
                        since,
                    });
                }
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(tag: &str) -> Frames {
        vec![zmq::Message::from(tag.as_bytes())]
    }

    fn tag(frames: &Frames) -> String {
        String::from_utf8_lossy(&frames[0]).into_owned()
    }

    /// A sender to engines whose connections are up per (channel, engine),
    /// recording what went out in order.
    struct Links {
        up: HashSet<(Channel, Vec<u8>)>,
        sent: Vec<String>,
    }

    impl Links {
        fn send(&mut self, channel: Channel, engine: &[u8], frames: Frames) -> Sent {
            if self.up.contains(&(channel, engine.to_vec())) {
                self.sent.push(tag(&frames));
                Sent::Done
            } else {
                Sent::NotConnected(frames)
            }
        }
    }

    #[test]
    fn messages_wait_for_their_connection_and_never_overtake_each_other() {
        let t0 = Instant::now();
        let mut links = Links {
            up: HashSet::from([(Channel::Mux, b"b".to_vec())]),
            sent: Vec::new(),
        };
        let mut q = Unroutable::default();
        // Engine a's mux is not up: its head waits; b's goes out.
        q.route(
            Channel::Mux,
            b"a".to_vec(),
            frames("a-head"),
            t0,
            |c, e, f| links.send(c, e, f),
        );
        q.route(Channel::Mux, b"b".to_vec(), frames("b-1"), t0, |c, e, f| {
            links.send(c, e, f)
        });
        // a's mux comes up; a chunk sent now still waits behind its head.
        links.up.insert((Channel::Mux, b"a".to_vec()));
        q.route(
            Channel::Mux,
            b"a".to_vec(),
            frames("a-chunk"),
            t0,
            |c, e, f| links.send(c, e, f),
        );
        // a's control is another connection: it does not wait.
        links.up.insert((Channel::Control, b"a".to_vec()));
        q.route(
            Channel::Control,
            b"a".to_vec(),
            frames("a-ctl"),
            t0,
            |c, e, f| links.send(c, e, f),
        );
        assert_eq!(links.sent, ["b-1", "a-ctl"]);
        let expired = q.retry(
            t0,
            Duration::from_secs(30),
            |_| false,
            |c, e, f| links.send(c, e, f),
        );
        assert!(expired.is_empty());
        assert_eq!(links.sent, ["b-1", "a-ctl", "a-head", "a-chunk"]);
        assert!(q.is_empty());
        assert!(q.waiting.is_empty(), "every count goes with its message");
    }

    #[test]
    fn a_message_still_blocked_holds_back_those_behind_it_until_it_expires() {
        let t0 = Instant::now();
        let mut links = Links {
            up: HashSet::new(),
            sent: Vec::new(),
        };
        let mut q = Unroutable::default();
        for (i, engine) in [b"a", b"a", b"c"].iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64);
            q.route(
                Channel::Task,
                engine.to_vec(),
                frames(&format!("m{i}")),
                at,
                |c, e, f| links.send(c, e, f),
            );
        }
        // Engine c is gone: its message is dropped, not retried.
        let gone = |e: &[u8]| e == b"c";
        let limit = Duration::from_secs(30);
        let expired = q.retry(t0 + Duration::from_secs(5), limit, gone, |c, e, f| {
            links.send(c, e, f)
        });
        assert!(expired.is_empty() && links.sent.is_empty());
        // Past the bound: both of a's fail, oldest first.
        let later = t0 + Duration::from_secs(40);
        let expired = q.retry(later, limit, gone, |c, e, f| links.send(c, e, f));
        let tags: Vec<String> = expired.iter().map(|w| tag(&w.frames)).collect();
        assert_eq!(tags, ["m0", "m1"]);
        assert!(q.is_empty());
        assert!(q.waiting.is_empty(), "every count goes with its message");
    }
}
