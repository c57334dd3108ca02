//! The iopub topics clients subscribe to, and which engines still need to
//! hear them.
//!
//! Engines send their output on their link; the hub publishes it on its
//! XPUB, which tells the hub of each prefix's first subscription and last
//! unsubscription. An engine builds no output nobody would get, so it must
//! know those prefixes: the hub sends each registered engine the whole set
//! (`LinkTag::Subscriptions`) when it registers and whenever the set
//! changes. The whole set, not the change: a send that failed (the link
//! was down a moment) is made good by the next one, which [`Subscriptions`]
//! owes the engine until it goes out.

use std::collections::HashSet;

/// The subscribed prefixes and the engines that must know them.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// Every prefix some client subscribes to, in the order subscribed.
    topics: Vec<Vec<u8>>,
    /// The registered engines (by uuid): those told of every change.
    engines: HashSet<Vec<u8>>,
    /// Engines the last set did not reach; tried again each turn.
    owed: HashSet<Vec<u8>>,
}

impl Subscriptions {
    /// Takes one message of the XPUB (`1` or `0`, then the prefix): returns
    /// whether the set changed, and so must go to every engine.
    pub(crate) fn client_change(&mut self, change: &[u8]) -> bool {
        match change.split_first() {
            Some((1, prefix)) if !self.topics.iter().any(|t| t == prefix) => {
                self.topics.push(prefix.to_vec());
                true
            }
            Some((0, prefix)) => match self.topics.iter().position(|t| t == prefix) {
                Some(i) => {
                    self.topics.remove(i);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// An engine registered: it is owed the set.
    pub(crate) fn engine_joined(&mut self, uuid: &[u8]) {
        self.engines.insert(uuid.to_vec());
        self.owed.insert(uuid.to_vec());
    }

    /// An engine left: it is owed nothing more.
    pub(crate) fn engine_left(&mut self, uuid: &[u8]) {
        self.engines.remove(uuid);
        self.owed.remove(uuid);
    }

    /// The set changed: every engine is owed it.
    pub(crate) fn owe_all(&mut self) {
        self.owed.extend(self.engines.iter().cloned());
    }

    /// Whether some engine is owed the set.
    pub(crate) fn any_owed(&self) -> bool {
        !self.owed.is_empty()
    }

    /// Sends the set to each engine owed it with `send` (false: not sent,
    /// its link is not up); those not reached stay owed.
    pub(crate) fn pay(&mut self, mut send: impl FnMut(&[u8], Vec<Vec<u8>>) -> bool) {
        let topics = &self.topics;
        self.owed.retain(|uuid| !send(uuid, topics.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_come_and_go_as_the_xpub_says() {
        let mut s = Subscriptions::default();
        assert!(s.client_change(b"\x01abc/"));
        assert!(s.client_change(b"\x01"), "the empty prefix: everything");
        assert!(!s.client_change(b"\x01abc/"), "already there");
        assert_eq!(s.topics, vec![b"abc/".to_vec(), Vec::new()]);
        assert!(s.client_change(b"\x00abc/"));
        assert!(!s.client_change(b"\x00xyz/"), "never subscribed");
        assert!(!s.client_change(b""), "not a subscription message");
        assert_eq!(s.topics, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn an_engine_not_reached_is_owed_the_set_until_it_is() {
        let mut s = Subscriptions::default();
        s.engine_joined(b"e1");
        s.engine_joined(b"e2");
        let mut sent = Vec::new();
        s.pay(|uuid, _| {
            sent.push(uuid.to_vec());
            uuid == b"e1"
        });
        assert_eq!(sent.len(), 2);
        assert!(s.any_owed(), "e2's link was down");
        s.client_change(b"\x01t");
        s.owe_all();
        let mut got = Vec::new();
        s.pay(|uuid, topics| {
            got.push((uuid.to_vec(), topics));
            true
        });
        got.sort();
        assert_eq!(
            got,
            vec![
                (b"e1".to_vec(), vec![b"t".to_vec()]),
                (b"e2".to_vec(), vec![b"t".to_vec()])
            ]
        );
        assert!(!s.any_owed());
        s.engine_left(b"e1");
        s.owe_all();
        s.pay(|uuid, _| {
            assert_eq!(uuid, b"e2", "a departed engine is owed nothing");
            true
        });
    }
}
