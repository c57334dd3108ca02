//! [`Collective::check_invariants`]: what must hold between any two events.

use super::{Collective, Phase, Source};

impl<P> Collective<P> {
    /// Panics if the machine's state is inconsistent. Tests call it after
    /// every step.
    pub fn check_invariants(&self) {
        let t = &self.tree;
        assert!(
            t.children.windows(2).all(|w| w[0] < w[1]),
            "children must be ascending: {:?}",
            t.children
        );
        assert!(t.height <= t.tree_height, "height above the tree's");
        for (seq, msgs) in &self.early {
            assert!(
                *seq > self.seq,
                "stashed seq {seq} is not after {}",
                self.seq
            );
            assert!(!msgs.is_empty(), "empty stash entry for {seq}");
            for (source, _) in msgs {
                match source {
                    Source::Child(c) => assert!(t.children.contains(c), "stash from {c}"),
                    Source::Root => assert!(!t.is_root(), "the root stashed a broadcast"),
                }
            }
        }
        let Some(a) = &self.active else { return };
        let n = a.call.pieces;
        assert!(n >= 1, "a call has at least one piece");
        assert!(self.seq >= 1, "an active call has a seq");
        assert_eq!(a.combined.len(), n);
        assert_eq!(a.accepted.len(), n);
        assert!(a.expect <= t.children.len());
        assert_eq!(a.expect, if a.call.gather { t.children.len() } else { 0 });
        assert!(
            a.gather_deadline <= a.broadcast_deadline,
            "deadlines out of order"
        );
        for (k, c) in a.combined.iter().enumerate() {
            assert!(*c <= a.expect, "piece {k} combined {c} of {}", a.expect);
        }
        for (k, i) in a.waiting.keys() {
            assert!(
                *k < n && *i < a.expect,
                "waiting part ({k}, {i}) out of range"
            );
            assert!(
                *i > a.combined[*k],
                "part ({k}, {i}) waits although child {} is next",
                a.combined[*k]
            );
        }
        match a.phase {
            Phase::Gather => {
                assert!(a.accepted.iter().all(|x| !x), "accepted while gathering");
                assert!(
                    a.combined.iter().any(|c| *c < a.expect),
                    "everything gathered but still gathering"
                );
                assert!(a.held.keys().all(|k| *k < n), "held piece out of range");
                assert!(
                    a.held.is_empty() || a.call.broadcast,
                    "held without broadcast"
                );
            }
            Phase::Broadcast => {
                assert!(!t.is_root(), "the root waits for no broadcast");
                assert!(
                    a.call.broadcast,
                    "waiting for a broadcast in a call without one"
                );
                assert!(a.held.is_empty(), "held pieces left after gathering");
                assert!(a.waiting.is_empty(), "parts left after gathering");
                assert!(a.combined.iter().all(|c| *c == a.expect));
                assert!(!a.accepted.iter().all(|x| *x), "all accepted but not done");
            }
        }
    }
}
