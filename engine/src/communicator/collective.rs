//! [`Collective`]: the tree protocol of one communicator — gather up the
//! tree, combine, broadcast down — as a state machine with no I/O.
//!
//! # Place
//!
//! The socket layer (`tree.rs`) receives frames on the communicator's ROUTER
//! (from children) and SUB (from the root), decodes them once with
//! [`super::wire`], and feeds them here as [`Event`]s through
//! [`Collective::handle`] (a call begins, a message arrives, time passes);
//! it performs the [`Output`]s it gets back, in order. The machine never reads a clock
//! (every method takes `now`) and never touches a socket, so everything it
//! decides is tested in memory (`collective/tests.rs`, a router of N machines
//! that reorders, duplicates and drops messages).
//!
//! The script path (a Rhai function over whole values) and the named path
//! (`"sum"`, ... over numeric arrays in chunks) share this machine; only
//! their [`Combine`] differs. A call has `pieces` independent pieces (one
//! for a script value, one per chunk for an array), and each piece is
//! combined, sent up and broadcast on its own, so chunks pipeline.
//!
//! # What it owns
//!
//! - **Sequence numbers.** Every call advances `seq` on every engine (they
//!   all make the same calls in the same order); messages carry it. Older
//!   messages are stale and dropped; newer ones are stashed, as decoded,
//!   and replayed when their call begins. Duplicates are dropped.
//! - **Order.** For each piece, a parent combines `own, children in
//!   ascending id`; with pre-order (`bintree`-shaped) trees that is the
//!   sequential left fold, so an associative, non-commutative `f` gives the
//!   sequential answer.
//! - **Deadlines**, one formula ([`wait_for`]): a parent gathering waits
//!   `timeout + height × timeout/4`, so the engine nearest a dead peer
//!   notices first; a broadcast is awaited `timeout + (tree height + 1) ×
//!   timeout/4`, longer than the root's own gather.
//! - **Failures.** A failure while gathering is sent up (non-root) or
//!   published (the root, when the call broadcasts); every engine then fails
//!   with the same text, which names the engine that was lost.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use zpar_protocol::error::Chain;

pub use place::{subtree_height, wait_for, Tree};

/// Where a message came from: a child (on the ROUTER) or the root (on SUB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A child of this engine, by id.
    Child(u32),
    /// The root's publisher.
    Root,
}

/// One message of a collective: its call's sequence number and a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg<P> {
    /// The call this message belongs to.
    pub seq: u64,
    /// What it says.
    pub body: Body<P>,
}

/// What a collective message says.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<P> {
    /// Piece `k` of a partial result (up) or of the result (down).
    Part {
        /// Which piece.
        k: usize,
        /// Its contents, as decoded by the wire layer.
        part: P,
    },
    /// The call failed; `error` says why and names the engine lost.
    Fail {
        /// The failure, as every engine will report it.
        error: String,
    },
}

/// What one call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Independent pieces of the value (at least 1).
    pub pieces: usize,
    /// Whether children send their parts up (reduce) or not (publish).
    pub gather: bool,
    /// Whether the root broadcasts the result to everyone.
    pub broadcast: bool,
    /// The base timeout of the call (see [`wait_for`]).
    pub timeout: Duration,
}

impl Call {
    /// A reduction in `pieces` pieces; `broadcast` for allreduce.
    pub fn reduce(pieces: usize, broadcast: bool, timeout: Duration) -> Call {
        Call {
            pieces: pieces.max(1),
            gather: true,
            broadcast,
            timeout,
        }
    }

    /// `publish` at the root, `consume` elsewhere: one broadcast.
    pub fn broadcast_only(timeout: Duration) -> Call {
        Call {
            pieces: 1,
            gather: false,
            broadcast: true,
            timeout,
        }
    }
}

/// The step that differs between the script path and the named path: how
/// pieces are combined, produced and replaced.
pub trait Combine<P> {
    /// Folds `child`'s piece `k` into this engine's piece `k` (own first:
    /// `own = f(own, part)`). Called for the children in ascending id.
    fn combine(&mut self, k: usize, child: u32, part: P) -> Result<(), String>;
    /// This engine's piece `k`, to send up or publish.
    fn piece(&mut self, k: usize) -> Result<P, String>;
    /// Replaces this engine's piece `k` with the root's.
    fn accept(&mut self, k: usize, part: P) -> Result<(), String>;
}

/// What happens to a machine: the socket layer's calls, as one type.
#[derive(Debug)]
pub enum Event<P> {
    /// The script starts the next call.
    Begin(Call),
    /// A message arrived from a child or the root.
    Message(Source, Msg<P>),
    /// Time passed (the poll timed out, or after a message).
    Tick,
}

/// What the socket layer must do, in order.
#[derive(Debug, PartialEq)]
pub enum Output<P> {
    /// Send this message to the parent.
    SendUp(Msg<P>),
    /// Publish this message to every engine (root only).
    Publish(Msg<P>),
    /// The call succeeded; the result is in the [`Combine`].
    Done,
    /// The call failed.
    Failed(CollectiveError),
}

/// Why a collective call failed on this engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectiveError {
    /// Children did not send their parts before the gather deadline.
    #[error("{} did not send its part to engine {at} within {waited:.1?} (is it dead or in another collective?)", engines(.missing))]
    Missing {
        /// The children that did not answer, ascending.
        missing: Vec<u32>,
        /// The engine that waited.
        at: u32,
        /// How long it waited.
        waited: Duration,
    },
    /// The root's broadcast did not come before the deadline.
    #[error("engine {at} got no broadcast from the root (engine {root}) within {waited:.1?}")]
    NoBroadcast {
        /// The engine that waited.
        at: u32,
        /// The root.
        root: u32,
        /// How long it waited.
        waited: Duration,
    },
    /// Another engine failed and reported it (up from a child or down from
    /// the root); the text is that engine's.
    #[error("{error}")]
    Peer {
        /// The reported failure.
        error: String,
    },
    /// This engine could not combine, produce or accept a piece (a script
    /// error, a value that cannot travel, a mismatched array).
    #[error("{error}")]
    Local {
        /// The engine.
        at: u32,
        /// What went wrong (it names the engine at fault).
        error: String,
    },
}

fn engines(ids: &[u32]) -> String {
    ids.iter()
        .map(|c| format!("engine {c}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the children's pieces.
    Gather,
    /// Waiting for the root's pieces.
    Broadcast,
}

/// The state of the call in progress.
struct Active<P> {
    call: Call,
    phase: Phase,
    gather_deadline: Instant,
    broadcast_deadline: Instant,
    /// How many children take part (all of them when gathering, else 0).
    expect: usize,
    /// Per piece, how many children (in id order) are combined into it.
    combined: Vec<usize>,
    /// Received, not yet combined: (piece, child index) → part.
    waiting: BTreeMap<(usize, usize), P>,
    /// Root's pieces received while still gathering.
    held: BTreeMap<usize, P>,
    /// Per piece, whether the root's piece was accepted.
    accepted: Vec<bool>,
}

/// One communicator's collective protocol. See the module doc.
pub struct Collective<P> {
    tree: Tree,
    /// The call in progress, or the last one.
    seq: u64,
    /// Messages of later calls, in arrival order per call.
    early: BTreeMap<u64, Vec<(Source, Body<P>)>>,
    active: Option<Active<P>>,
}

impl<P> fmt::Debug for Collective<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collective")
            .field("tree", &self.tree)
            .field("seq", &self.seq)
            .field("early", &self.early.keys().collect::<Vec<_>>())
            .field("active", &self.active.as_ref().map(|a| a.phase))
            .finish()
    }
}

impl<P> Collective<P> {
    /// An idle machine at `seq` 0.
    pub fn new(tree: Tree) -> Collective<P> {
        Collective {
            tree,
            seq: 0,
            early: BTreeMap::new(),
            active: None,
        }
    }

    /// This engine's place in the tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The sequence number of the call in progress, or of the last one.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether a call is in progress.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// When [`Collective::on_tick`] must next be called, if a call waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.active.as_ref().map(|a| match a.phase {
            Phase::Gather => a.gather_deadline,
            Phase::Broadcast => a.broadcast_deadline,
        })
    }

    /// How many messages of later calls are stashed.
    pub fn stashed(&self) -> usize {
        self.early.values().map(Vec::len).sum()
    }

    /// Handles one event at `now`; returns what to do, in order. The same
    /// as calling [`Collective::begin`], [`Collective::on_message`] or
    /// [`Collective::on_tick`].
    pub fn handle(
        &mut self,
        event: Event<P>,
        now: Instant,
        comb: &mut impl Combine<P>,
    ) -> Vec<Output<P>> {
        match event {
            Event::Begin(call) => self.begin(call, now, comb),
            Event::Message(source, msg) => self.on_message(source, msg, now, comb),
            Event::Tick => self.on_tick(now, comb),
        }
    }

    /// Starts the next call. Pieces that need nothing from children go out
    /// at once; stashed messages of this call are replayed.
    ///
    /// # Panics
    /// If a call is already in progress (the socket layer runs one at a time).
    pub fn begin(
        &mut self,
        call: Call,
        now: Instant,
        comb: &mut impl Combine<P>,
    ) -> Vec<Output<P>> {
        assert!(
            self.active.is_none(),
            "Collective::begin while call {} is in progress",
            self.seq
        );
        self.seq += 1;
        let pieces = call.pieces.max(1);
        let call = Call { pieces, ..call };
        let expect = if call.gather {
            self.tree.children.len()
        } else {
            0
        };
        let phase = if call.gather || self.tree.is_root() {
            Phase::Gather
        } else {
            Phase::Broadcast
        };
        self.active = Some(Active {
            call,
            phase,
            gather_deadline: now + wait_for(call.timeout, self.tree.height),
            broadcast_deadline: now + wait_for(call.timeout, self.tree.tree_height + 1),
            expect,
            combined: vec![0; pieces],
            waiting: BTreeMap::new(),
            held: BTreeMap::new(),
            accepted: vec![false; pieces],
        });
        debug!(
            engine = self.tree.me,
            seq = self.seq,
            ?call,
            "collective begins"
        );
        let mut out = Vec::new();
        if phase == Phase::Gather {
            for k in 0..pieces {
                if expect == 0 {
                    self.complete(k, comb, &mut out);
                }
            }
            self.finish_gather(comb, &mut out);
        }
        for (source, body) in self.early.remove(&self.seq).unwrap_or_default() {
            out.extend(self.on_message(
                source,
                Msg {
                    seq: self.seq,
                    body,
                },
                now,
                comb,
            ));
        }
        out
    }

    /// Moves on to `seq` (when idle and behind it): the calls up to it are
    /// over on this engine, whether or not it ran them, and their stashed
    /// messages are dropped. A script call is made of a fixed number of
    /// rounds (see `CALL_ROUNDS` in the communicator), and an engine that
    /// failed or skipped one still uses up all of its numbers, so the
    /// engines' next calls carry the same numbers again.
    pub fn skip_to(&mut self, seq: u64) {
        if self.active.is_none() && seq > self.seq {
            self.seq = seq;
            self.early.retain(|s, _| *s > seq);
        }
    }

    /// Ends the call in progress without a result (the socket layer could
    /// not send). Its later messages are dropped as stale.
    pub fn abandon(&mut self) {
        if self.active.take().is_some() {
            warn!(
                engine = self.tree.me,
                seq = self.seq,
                "collective abandoned"
            );
        }
    }

    /// A message from a child or the root.
    pub fn on_message(
        &mut self,
        source: Source,
        msg: Msg<P>,
        _now: Instant,
        comb: &mut impl Combine<P>,
    ) -> Vec<Output<P>> {
        let me = self.tree.me;
        let known = match source {
            Source::Child(c) => self.tree.children.contains(&c),
            Source::Root => !self.tree.is_root(),
        };
        if !known {
            warn!(
                engine = me,
                ?source,
                seq = msg.seq,
                "communicator: dropped a message from a stranger"
            );
            return Vec::new();
        }
        if msg.seq > self.seq {
            self.early
                .entry(msg.seq)
                .or_default()
                .push((source, msg.body));
            return Vec::new();
        }
        let Some(active) = self.active.as_mut().filter(|_| msg.seq == self.seq) else {
            debug!(
                engine = me,
                ?source,
                seq = msg.seq,
                "communicator: dropped a stale message"
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        let n = active.call.pieces;
        match (source, msg.body) {
            (Source::Child(c), Body::Part { k, part }) => {
                let idx = self
                    .tree
                    .children
                    .iter()
                    .position(|x| *x == c)
                    .expect("known");
                if active.phase != Phase::Gather || idx >= active.expect {
                    debug!(
                        engine = me,
                        child = c,
                        "communicator: dropped an unexpected part"
                    );
                } else if k >= n {
                    let error =
                        format!("engine {c} sent piece {k} of a value this engine has in {n}");
                    self.fail(CollectiveError::Local { at: me, error }, &mut out);
                } else if idx < active.combined[k] || active.waiting.contains_key(&(k, idx)) {
                    debug!(
                        engine = me,
                        child = c,
                        k,
                        "communicator: dropped a duplicate part"
                    );
                } else {
                    active.waiting.insert((k, idx), part);
                    self.advance(k, comb, &mut out);
                }
            }
            (Source::Child(c), Body::Fail { error }) => {
                if active.phase == Phase::Gather {
                    debug!(engine = me, child = c, %error, "a child reports a failure");
                    self.fail(CollectiveError::Peer { error }, &mut out);
                }
            }
            (Source::Root, Body::Part { k, part }) => {
                if !active.call.broadcast {
                    debug!(
                        engine = me,
                        "communicator: dropped a broadcast in a call without one"
                    );
                } else if k >= n {
                    let root = self.tree.root;
                    let error =
                        format!("engine {root} sent piece {k} of a value this engine has in {n}");
                    self.fail(CollectiveError::Local { at: me, error }, &mut out);
                } else if active.accepted[k] || active.held.contains_key(&k) {
                    debug!(
                        engine = me,
                        k, "communicator: dropped a duplicate broadcast"
                    );
                } else if active.phase == Phase::Gather {
                    active.held.insert(k, part);
                } else {
                    self.accept(k, part, comb, &mut out);
                }
            }
            (Source::Root, Body::Fail { error }) => {
                debug!(engine = me, %error, "the root reports a failure");
                self.end_failed(CollectiveError::Peer { error }, &mut out);
            }
        }
        out
    }

    /// Time passed: fails the call whose deadline is due.
    pub fn on_tick(&mut self, now: Instant, _comb: &mut impl Combine<P>) -> Vec<Output<P>> {
        let mut out = Vec::new();
        let Some(a) = &self.active else {
            return out;
        };
        let waited = |levels| wait_for(a.call.timeout, levels);
        match a.phase {
            Phase::Gather if now >= a.gather_deadline => {
                let missing = (0..a.expect)
                    .filter(|&i| {
                        (0..a.call.pieces)
                            .any(|k| a.combined[k] <= i && !a.waiting.contains_key(&(k, i)))
                    })
                    .map(|i| self.tree.children[i])
                    .collect();
                let e = CollectiveError::Missing {
                    missing,
                    at: self.tree.me,
                    waited: waited(self.tree.height),
                };
                self.fail(e, &mut out);
            }
            Phase::Broadcast if now >= a.broadcast_deadline => {
                let e = CollectiveError::NoBroadcast {
                    at: self.tree.me,
                    root: self.tree.root,
                    waited: waited(self.tree.tree_height + 1),
                };
                self.end_failed(e, &mut out);
            }
            _ => {}
        }
        out
    }

    /// Combines what can be combined of piece `k`, in child order.
    fn advance(&mut self, k: usize, comb: &mut impl Combine<P>, out: &mut Vec<Output<P>>) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        while a.combined[k] < a.expect {
            let i = a.combined[k];
            let Some(part) = a.waiting.remove(&(k, i)) else {
                return;
            };
            if let Err(error) = comb.combine(k, self.tree.children[i], part) {
                let at = self.tree.me;
                return self.fail(CollectiveError::Local { at, error }, out);
            }
            a.combined[k] += 1;
        }
        self.complete(k, comb, out);
        self.finish_gather(comb, out);
    }

    /// Piece `k` has everything: send it up, or publish it from the root.
    fn complete(&mut self, k: usize, comb: &mut impl Combine<P>, out: &mut Vec<Output<P>>) {
        let Some(a) = &self.active else { return };
        let (gather, broadcast) = (a.call.gather, a.call.broadcast);
        let send_up = !self.tree.is_root() && gather;
        let publish = self.tree.is_root() && broadcast;
        if !(send_up || publish) {
            return;
        }
        match comb.piece(k) {
            Ok(part) => {
                let msg = Msg {
                    seq: self.seq,
                    body: Body::Part { k, part },
                };
                out.push(if send_up {
                    Output::SendUp(msg)
                } else {
                    Output::Publish(msg)
                });
            }
            Err(error) => {
                let at = self.tree.me;
                self.fail(CollectiveError::Local { at, error }, out)
            }
        }
    }

    /// Once every piece is gathered: done, or wait for the broadcast.
    fn finish_gather(&mut self, comb: &mut impl Combine<P>, out: &mut Vec<Output<P>>) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if a.phase != Phase::Gather || a.combined.iter().any(|c| *c < a.expect) {
            return;
        }
        if self.tree.is_root() || !a.call.broadcast {
            return self.end(Output::Done, out);
        }
        a.phase = Phase::Broadcast;
        for (k, part) in std::mem::take(&mut a.held) {
            self.accept(k, part, comb, out);
            if self.active.is_none() {
                return;
            }
        }
    }

    fn accept(&mut self, k: usize, part: P, comb: &mut impl Combine<P>, out: &mut Vec<Output<P>>) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if let Err(error) = comb.accept(k, part) {
            let at = self.tree.me;
            return self.end_failed(CollectiveError::Local { at, error }, out);
        }
        a.accepted[k] = true;
        if a.accepted.iter().all(|x| *x) {
            self.end(Output::Done, out);
        }
    }

    /// Fails the call; while gathering, reports it up (or, at the root of a
    /// broadcasting call, to everyone).
    fn fail(&mut self, e: CollectiveError, out: &mut Vec<Output<P>>) {
        let Some(a) = &self.active else { return };
        if a.phase == Phase::Gather {
            let msg = Msg {
                seq: self.seq,
                body: Body::Fail {
                    error: e.to_string(),
                },
            };
            if !self.tree.is_root() {
                out.push(Output::SendUp(msg));
            } else if a.call.broadcast {
                out.push(Output::Publish(msg));
            }
        }
        self.end_failed(e, out);
    }

    /// Fails the call without telling anyone.
    fn end_failed(&mut self, e: CollectiveError, out: &mut Vec<Output<P>>) {
        warn!(engine = self.tree.me, seq = self.seq, error = %Chain(&e), "collective failed");
        self.end(Output::Failed(e), out);
    }

    fn end(&mut self, last: Output<P>, out: &mut Vec<Output<P>>) {
        self.active = None;
        out.push(last);
    }
}

mod invariants;
mod place;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;
