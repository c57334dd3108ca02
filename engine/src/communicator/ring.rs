//! [`Ring`]: a pipelined ring allreduce of a value in pieces, as a state
//! machine with no I/O — the path for large named reductions when the
//! engines are not all on one host.
//!
//! A tree moves every child's array into its parent and the result out of
//! the root once per engine: the root's link carries `(n − 1) ×` the array.
//! On the ring each engine talks only to the next one (`rank + 1`, and the
//! last to rank 0), and no link carries more than twice the array:
//!
//! - **Reduce.** Rank 0 sends its pieces to rank 1; rank `r` folds each
//!   arriving piece into its own (`acc = f(acc of ranks < r, own)`) and
//!   sends it on. The last rank holds the result.
//! - **Result.** The last rank sends the result's pieces to rank 0, and
//!   they travel on to rank `n − 2`.
//!
//! Pieces pipeline: rank 1 folds piece k while piece k + 1 is on its way.
//! Every element is folded in rank order, so the result is the sequential
//! fold's, bit for bit, on every engine.
//!
//! Sequence numbers, the stash of early messages and the drop of stale and
//! duplicate ones are as in the tree ([`super::collective`]). The engine
//! waiting on a dead predecessor notices first (deadlines grow along the
//! ring's path, [`wait_for`] per step), and its failure travels on around
//! the ring, so every engine fails with the same error naming the lost one.

use super::collective::{wait_for, Body, CollectiveError, Combine, Msg};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use zpar_protocol::error::Chain;

/// An engine's place on the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingPlace {
    /// This engine's id.
    pub me: u32,
    /// Its position in fold order.
    pub rank: usize,
    /// The engines on the ring, in fold order.
    pub ids: Vec<u32>,
}

impl RingPlace {
    /// How many engines.
    pub fn n(&self) -> usize {
        self.ids.len()
    }

    /// The engine this one sends to.
    pub fn next(&self) -> u32 {
        self.ids[(self.rank + 1) % self.n()]
    }

    /// The engine this one hears from.
    pub fn prev(&self) -> u32 {
        self.ids[(self.rank + self.n() - 1) % self.n()]
    }

    fn is_last(&self) -> bool {
        self.rank + 1 == self.n()
    }
}

/// What the socket layer must do, in order.
#[derive(Debug, PartialEq)]
pub enum RingOut<P> {
    /// Send this message to the next engine.
    Send(Msg<P>),
    /// The call succeeded; the result is in the [`Combine`].
    Done,
    /// The call failed.
    Failed(CollectiveError),
}

struct Active {
    pieces: usize,
    begun: Instant,
    timeout: Duration,
    /// Per message index (`k < pieces`: reduce, else result), whether it
    /// arrived.
    got: Vec<bool>,
}

/// One engine's ring protocol. See the module doc.
pub struct Ring<P> {
    place: RingPlace,
    seq: u64,
    early: BTreeMap<u64, Vec<Body<P>>>,
    active: Option<Active>,
}

impl<P> Ring<P> {
    /// An idle ring at `seq` 0.
    pub fn new(place: RingPlace) -> Ring<P> {
        Ring {
            place,
            seq: 0,
            early: BTreeMap::new(),
            active: None,
        }
    }

    /// This engine's place.
    pub fn place(&self) -> &RingPlace {
        &self.place
    }

    /// Whether a call is in progress.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The message indices this engine waits for: its predecessor's reduce
    /// pieces (not at rank 0), then the result's (not at the last rank).
    fn expects(&self, k: usize, pieces: usize) -> bool {
        if k < pieces {
            self.place.rank > 0
        } else {
            k < 2 * pieces && !self.place.is_last()
        }
    }

    /// The step of the ring's path at which this engine's next expected
    /// message arrives (1 for rank 1's first reduce piece, ...): its wait
    /// grows with it, so the engine right after a dead one notices first.
    fn step(&self, a: &Active) -> u32 {
        let n = self.place.n() as u32;
        let rank = self.place.rank as u32;
        let reducing = self.place.rank > 0 && a.got[..a.pieces].iter().any(|g| !g);
        if reducing {
            rank
        } else {
            n + rank
        }
    }

    /// When [`Ring::on_tick`] must next be called, if a call waits.
    pub fn deadline(&self) -> Option<Instant> {
        let a = self.active.as_ref()?;
        Some(a.begun + wait_for(a.timeout, self.step(a)))
    }

    /// Starts call `seq` (later than any before; the communicator takes it
    /// from its tree rounds, so every engine uses the same one) on a value
    /// of `pieces` pieces. Stashed messages of earlier calls are dropped.
    ///
    /// # Panics
    /// If a call is already in progress.
    pub fn begin(
        &mut self,
        seq: u64,
        pieces: usize,
        timeout: Duration,
        now: Instant,
        comb: &mut impl Combine<P>,
    ) -> Vec<RingOut<P>> {
        assert!(
            self.active.is_none(),
            "Ring::begin during call {}",
            self.seq
        );
        self.seq = seq.max(self.seq + 1);
        let current = self.seq;
        self.early.retain(|s, _| *s >= current);
        let pieces = pieces.max(1);
        debug!(
            engine = self.place.me,
            seq = self.seq,
            pieces,
            "ring begins"
        );
        let mut out = Vec::new();
        if self.place.n() == 1 {
            out.push(RingOut::Done);
            return out;
        }
        self.active = Some(Active {
            pieces,
            begun: now,
            timeout,
            got: vec![false; 2 * pieces],
        });
        if self.place.rank == 0 {
            for k in 0..pieces {
                self.send_piece(k, k, comb, &mut out);
            }
        }
        for body in self.early.remove(&self.seq).unwrap_or_default() {
            let msg = Msg {
                seq: self.seq,
                body,
            };
            out.extend(self.on_message(self.place.prev(), msg, now, comb));
        }
        out
    }

    /// Sends this engine's piece `k` as message `index`.
    fn send_piece(
        &mut self,
        index: usize,
        k: usize,
        comb: &mut impl Combine<P>,
        out: &mut Vec<RingOut<P>>,
    ) {
        match comb.piece(k) {
            Ok(part) => out.push(RingOut::Send(Msg {
                seq: self.seq,
                body: Body::Part { k: index, part },
            })),
            Err(error) => self.fail(
                CollectiveError::Local {
                    at: self.place.me,
                    error,
                },
                out,
            ),
        }
    }

    /// A message from engine `from`.
    pub fn on_message(
        &mut self,
        from: u32,
        msg: Msg<P>,
        _now: Instant,
        comb: &mut impl Combine<P>,
    ) -> Vec<RingOut<P>> {
        let mut out = Vec::new();
        if from != self.place.prev() {
            warn!(
                engine = self.place.me,
                from,
                "communicator: dropped a ring message from an engine that is not the previous one"
            );
            return out;
        }
        if msg.seq > self.seq {
            self.early.entry(msg.seq).or_default().push(msg.body);
            return out;
        }
        let Some(a) = self.active.as_mut().filter(|_| msg.seq == self.seq) else {
            debug!(
                engine = self.place.me,
                seq = msg.seq,
                "communicator: dropped a stale ring message"
            );
            return out;
        };
        let pieces = a.pieces;
        match msg.body {
            Body::Fail { error } => {
                // Pass it on, so it goes round to every engine.
                out.push(RingOut::Send(Msg {
                    seq: self.seq,
                    body: Body::Fail {
                        error: error.clone(),
                    },
                }));
                self.end(RingOut::Failed(CollectiveError::Peer { error }), &mut out);
            }
            Body::Part { k, part } => {
                let duplicate = a.got.get(k).copied().unwrap_or(false);
                if !self.expects(k, pieces) {
                    let error = format!(
                        "engine {from} sent ring message {k} of a value in {pieces} pieces"
                    );
                    let at = self.place.me;
                    self.fail(CollectiveError::Local { at, error }, &mut out);
                } else if duplicate {
                    debug!(
                        engine = self.place.me,
                        k, "communicator: dropped a duplicate ring message"
                    );
                } else {
                    if let Some(a) = self.active.as_mut() {
                        a.got[k] = true;
                    }
                    self.arrived(k, pieces, from, part, comb, &mut out);
                }
            }
        }
        out
    }

    fn arrived(
        &mut self,
        k: usize,
        pieces: usize,
        from: u32,
        part: P,
        comb: &mut impl Combine<P>,
        out: &mut Vec<RingOut<P>>,
    ) {
        let at = self.place.me;
        if k < pieces {
            // The fold of the ranks before this one, then this engine's.
            if let Err(error) = comb.combine(k, from, part) {
                return self.fail(CollectiveError::Local { at, error }, out);
            }
            let index = if self.place.is_last() { pieces + k } else { k };
            self.send_piece(index, k, comb, out);
        } else {
            if let Err(error) = comb.accept(k - pieces, part) {
                return self.fail(CollectiveError::Local { at, error }, out);
            }
            // The result goes on to every rank but the last.
            if self.place.rank + 2 < self.place.n() {
                self.send_piece(k, k - pieces, comb, out);
            }
        }
        let Some(a) = &self.active else { return };
        let done = (0..2 * pieces).all(|i| a.got[i] || !self.expects(i, pieces));
        if done {
            self.end(RingOut::Done, out);
        }
    }

    /// Time passed: fails the call whose deadline is due.
    pub fn on_tick(&mut self, now: Instant) -> Vec<RingOut<P>> {
        let mut out = Vec::new();
        let Some(a) = &self.active else { return out };
        let step = self.step(a);
        let waited = wait_for(a.timeout, step);
        if now >= a.begun + waited {
            let e = CollectiveError::Missing {
                missing: vec![self.place.prev()],
                at: self.place.me,
                waited,
            };
            self.fail(e, &mut out);
        }
        out
    }

    /// Ends the call in progress without a result (the socket layer could
    /// not send).
    pub fn abandon(&mut self) {
        if self.active.take().is_some() {
            warn!(
                engine = self.place.me,
                seq = self.seq,
                "ring call abandoned"
            );
        }
    }

    /// Fails the call and tells the next engine.
    fn fail(&mut self, e: CollectiveError, out: &mut Vec<RingOut<P>>) {
        if self.active.is_none() {
            return;
        }
        out.push(RingOut::Send(Msg {
            seq: self.seq,
            body: Body::Fail {
                error: e.to_string(),
            },
        }));
        warn!(engine = self.place.me, seq = self.seq, error = %Chain(&e), "ring call failed");
        self.end(RingOut::Failed(e), out);
    }

    fn end(&mut self, last: RingOut<P>, out: &mut Vec<RingOut<P>>) {
        self.active = None;
        out.push(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of strings; combining prepends the predecessor's fold, so a
    /// wrong order shows.
    struct Cat {
        pieces: Vec<String>,
    }

    impl Combine<String> for Cat {
        fn combine(&mut self, k: usize, _from: u32, part: String) -> Result<(), String> {
            self.pieces[k] = format!("{part}{}", self.pieces[k]);
            Ok(())
        }
        fn piece(&mut self, k: usize) -> Result<String, String> {
            Ok(self.pieces[k].clone())
        }
        fn accept(&mut self, k: usize, part: String) -> Result<(), String> {
            self.pieces[k] = part;
            Ok(())
        }
    }

    fn ring(n: usize) -> Vec<Ring<String>> {
        let ids: Vec<u32> = (0..n as u32).map(|i| i * 10).collect();
        (0..n)
            .map(|rank| {
                Ring::new(RingPlace {
                    me: ids[rank],
                    rank,
                    ids: ids.clone(),
                })
            })
            .collect()
    }

    /// Runs one call over `n` engines with `pieces` pieces, delivering
    /// messages in the order `pick` chooses; returns each engine's result.
    fn run(n: usize, pieces: usize, reverse_delivery: bool) -> Vec<Vec<String>> {
        let mut rings = ring(n);
        let mut cats: Vec<Cat> = (0..n)
            .map(|r| Cat {
                pieces: (0..pieces).map(|k| format!("<{r}.{k}>")).collect(),
            })
            .collect();
        let now = Instant::now();
        let t = Duration::from_secs(40);
        let mut queue: Vec<(usize, Msg<String>)> = Vec::new();
        let mut done = vec![false; n];
        for r in 0..n {
            for o in rings[r].begin(1, pieces, t, now, &mut cats[r]) {
                match o {
                    RingOut::Send(m) => queue.push(((r + 1) % n, m)),
                    RingOut::Done => done[r] = true,
                    RingOut::Failed(e) => panic!("{e}"),
                }
            }
        }
        while !queue.is_empty() {
            let (to, m) = if reverse_delivery {
                queue.pop().unwrap()
            } else {
                queue.remove(0)
            };
            let from = rings[(to + n - 1) % n].place().me;
            for o in rings[to].on_message(from, m, now, &mut cats[to]) {
                match o {
                    RingOut::Send(m) => queue.push(((to + 1) % n, m)),
                    RingOut::Done => done[to] = true,
                    RingOut::Failed(e) => panic!("{e}"),
                }
            }
        }
        assert!(done.iter().all(|d| *d), "not every engine finished");
        cats.into_iter().map(|c| c.pieces).collect()
    }

    #[test]
    fn every_engine_gets_the_fold_in_rank_order() {
        for n in 1..=8 {
            for pieces in [1, 2, 5] {
                for reverse in [false, true] {
                    let got = run(n, pieces, reverse);
                    let want: Vec<String> = (0..pieces)
                        .map(|k| (0..n).map(|r| format!("<{r}.{k}>")).collect())
                        .collect();
                    for (r, g) in got.iter().enumerate() {
                        assert_eq!(*g, want, "n {n}, pieces {pieces}, rank {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_dead_engine_is_named_by_its_successor_first_and_the_failure_goes_round() {
        let n = 4;
        let mut rings = ring(n);
        let mut cats: Vec<Cat> = (0..n)
            .map(|r| Cat {
                pieces: vec![format!("{r}")],
            })
            .collect();
        let now = Instant::now();
        let t = Duration::from_secs(40);
        // Rank 1 (engine 10) is dead: it never begins.
        let mut sent = Vec::new();
        for r in [0, 2, 3] {
            for o in rings[r].begin(1, 1, t, now, &mut cats[r]) {
                if let RingOut::Send(m) = o {
                    sent.push((r, m));
                }
            }
        }
        // Rank 0's piece went to the dead engine; nothing else moved.
        assert_eq!(sent.len(), 1);
        // The first deadline due is rank 2's, which waits on rank 1.
        let first = [0, 2, 3]
            .into_iter()
            .min_by_key(|r| rings[*r].deadline().unwrap())
            .unwrap();
        assert_eq!(first, 2);
        let due = rings[2].deadline().unwrap();
        let out = rings[2].on_tick(due);
        let RingOut::Send(fail) = &out[0] else {
            panic!("{out:?}")
        };
        let RingOut::Failed(e) = &out[1] else {
            panic!("{out:?}")
        };
        assert!(e.to_string().contains("engine 10"), "{e}");
        // The failure goes on to rank 3 and round to rank 0.
        let out3 = rings[3].on_message(20, clone(fail), now, &mut cats[3]);
        assert!(matches!(&out3[1], RingOut::Failed(e) if e.to_string().contains("engine 10")));
        let RingOut::Send(fail3) = &out3[0] else {
            panic!()
        };
        let out0 = rings[0].on_message(30, clone(fail3), now, &mut cats[0]);
        assert!(matches!(&out0[1], RingOut::Failed(e) if e.to_string().contains("engine 10")));
        // The next call works among engines that all take part.
        assert!(!rings[0].is_active() && !rings[2].is_active() && !rings[3].is_active());
    }

    fn clone(m: &Msg<String>) -> Msg<String> {
        m.clone()
    }

    #[test]
    fn strangers_stale_and_duplicates_are_dropped_early_ones_kept() {
        let mut rings = ring(3);
        let mut cat = Cat {
            pieces: vec!["b".into()],
        };
        let now = Instant::now();
        let t = Duration::from_secs(40);
        let part = |seq, k: usize, s: &str| Msg {
            seq,
            body: Body::Part {
                k,
                part: s.to_string(),
            },
        };
        // An early message for call 1 from the previous engine (id 0).
        assert!(rings[1]
            .on_message(0, part(1, 0, "a"), now, &mut cat)
            .is_empty());
        // From a stranger: dropped.
        assert!(rings[1]
            .on_message(20, part(1, 0, "x"), now, &mut cat)
            .is_empty());
        let out = rings[1].begin(1, 1, t, now, &mut cat);
        assert_eq!(out, vec![RingOut::Send(part(1, 0, "ab"))]);
        // A duplicate: dropped.
        assert!(rings[1]
            .on_message(0, part(1, 0, "a"), now, &mut cat)
            .is_empty());
        let out = rings[1].on_message(0, part(1, 1, "abc"), now, &mut cat);
        assert_eq!(out, vec![RingOut::Done]);
        assert_eq!(cat.pieces, vec!["abc".to_string()]);
        // Stale: dropped.
        assert!(rings[1]
            .on_message(0, part(1, 1, "zzz"), now, &mut cat)
            .is_empty());
        // A piece index out of range fails the call.
        rings[1].begin(2, 1, t, now, &mut cat);
        let out = rings[1].on_message(0, part(2, 7, "q"), now, &mut cat);
        assert!(matches!(out.last(), Some(RingOut::Failed(_))), "{out:?}");
    }
}
