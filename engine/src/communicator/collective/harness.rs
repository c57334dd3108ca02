//! Test tools for the [`Collective`]: a string-concatenating [`Combine`],
//! message builders, and [`TreeCase`], N machines wired together in memory
//! through a router that can reorder, duplicate and drop messages.
//!
//! Every message a machine sends is encoded to bytes with the real wire
//! codec and decoded again on delivery, and every machine's invariants are
//! checked after every step. A `TreeCase` that was never checked panics
//! when dropped.

use super::*;
use crate::communicator::wire::{from_frames, to_frames, Payload, Wire};
use serde_json::json;

/// The base timeout in tests: 40 s, so each tree level adds 10 s.
pub const T: Duration = Duration::from_secs(40);

/// The client's `bintree` (client/src/bintree.rs), mirrored: the root is
/// the first id, the first half of the rest its left subtree, the second
/// half its right, recursively — a pre-order walk visits ids in order.
pub fn bintree(ids: &[u32]) -> BTreeMap<u32, Option<u32>> {
    fn build(ids: &[u32], parent: Option<u32>, out: &mut BTreeMap<u32, Option<u32>>) {
        let Some((&root, rest)) = ids.split_first() else {
            return;
        };
        out.insert(root, parent);
        let half = rest.len() / 2;
        build(&rest[..half], Some(root), out);
        build(&rest[half..], Some(root), out);
    }
    let mut out = BTreeMap::new();
    build(ids, None, &mut out);
    out
}

/// The tree over `0..n`.
pub fn tree_of(n: u32) -> BTreeMap<u32, Option<u32>> {
    bintree(&(0..n).collect::<Vec<_>>())
}

/// Where a [`Concat`] is told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAt {
    Combine,
    Piece,
    Accept,
}

/// Each piece a string; combining appends the child's (associative, not
/// commutative, so any wrong order shows).
#[derive(Debug, Default)]
pub struct Concat {
    pub me: u32,
    pub pieces: Vec<String>,
    pub fail: Option<FailAt>,
    /// (piece, child) in the order combined.
    pub combined: Vec<(usize, u32)>,
}

impl Concat {
    pub fn new(me: u32, pieces: &[&str]) -> Concat {
        Concat {
            me,
            pieces: pieces.iter().map(|s| s.to_string()).collect(),
            ..Concat::default()
        }
    }

    fn boom(&self, at: FailAt) -> Result<(), String> {
        if self.fail == Some(at) {
            return Err(format!("engine {}: boom in {at:?}", self.me));
        }
        Ok(())
    }
}

fn text(p: &Payload) -> Result<String, String> {
    p.json["s"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("not a test piece: {}", p.json))
}

impl Combine<Payload> for Concat {
    fn combine(&mut self, k: usize, child: u32, part: Payload) -> Result<(), String> {
        self.boom(FailAt::Combine)?;
        let s = text(&part)?;
        self.pieces[k].push_str(&s);
        self.combined.push((k, child));
        Ok(())
    }

    fn piece(&mut self, k: usize) -> Result<Payload, String> {
        self.boom(FailAt::Piece)?;
        Ok(payload(&self.pieces[k]))
    }

    fn accept(&mut self, k: usize, part: Payload) -> Result<(), String> {
        self.boom(FailAt::Accept)?;
        self.pieces[k] = text(&part)?;
        Ok(())
    }
}

pub fn payload(s: &str) -> Payload {
    Payload {
        json: json!({ "s": s }),
        buffers: vec![],
    }
}

/// Piece `k` of call `seq`, saying `s`.
pub fn part(seq: u64, k: usize, s: &str) -> Msg<Payload> {
    Msg {
        seq,
        body: Body::Part {
            k,
            part: payload(s),
        },
    }
}

pub fn fail_msg(seq: u64, error: &str) -> Msg<Payload> {
    Msg {
        seq,
        body: Body::Fail {
            error: error.into(),
        },
    }
}

/// One machine alone, fed by hand, with a fixed clock.
pub struct Solo {
    pub m: Collective<Payload>,
    pub c: Concat,
    pub t0: Instant,
}

impl Solo {
    /// Engine `me` in the tree over `0..n`.
    pub fn new(n: u32, me: u32) -> Solo {
        let tree = Tree::new(me, &tree_of(n)).unwrap();
        let m = Collective::new(tree);
        m.check_invariants();
        Solo {
            m,
            c: Concat::new(me, &[]),
            t0: Instant::now(),
        }
    }

    pub fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    pub fn begin(&mut self, call: Call, pieces: &[&str]) -> Vec<Output<Payload>> {
        self.c.pieces = pieces.iter().map(|s| s.to_string()).collect();
        self.c.combined.clear();
        let out = self.m.begin(call, self.t0, &mut self.c);
        self.m.check_invariants();
        out
    }

    pub fn recv(&mut self, from: Source, msg: Msg<Payload>) -> Vec<Output<Payload>> {
        let now = self.t0;
        let out = self.m.on_message(from, msg, now, &mut self.c);
        self.m.check_invariants();
        out
    }

    pub fn tick(&mut self, secs: f64) -> Vec<Output<Payload>> {
        let now = self.at(secs);
        let out = self.m.on_tick(now, &mut self.c);
        self.m.check_invariants();
        out
    }
}

/// A message in flight: encoded bytes, as a socket would carry them.
#[derive(Debug, Clone)]
struct Packet {
    from: Source,
    to: u32,
    frames: Vec<Vec<u8>>,
}

struct Node {
    m: Collective<Payload>,
    c: Concat,
    dead: bool,
    outcome: Option<Result<Vec<String>, CollectiveError>>,
}

/// N machines and a router between them. See the module doc.
pub struct TreeCase {
    parents: BTreeMap<u32, Option<u32>>,
    nodes: BTreeMap<u32, Node>,
    net: Vec<Packet>,
    t0: Instant,
    now: Instant,
    rng: u64,
    checked: bool,
}

impl TreeCase {
    /// Engines `0..n` in the client's tree shape.
    pub fn new(n: u32) -> TreeCase {
        let parents = tree_of(n);
        let nodes = parents
            .keys()
            .map(|&id| {
                let m = Collective::new(Tree::new(id, &parents).unwrap());
                let node = Node {
                    m,
                    c: Concat::new(id, &[]),
                    dead: false,
                    outcome: None,
                };
                (id, node)
            })
            .collect();
        let t0 = Instant::now();
        TreeCase {
            parents,
            nodes,
            net: Vec::new(),
            t0,
            now: t0,
            rng: 0x9e37_79b9_7f4a_7c15,
            checked: false,
        }
    }

    /// Seeds the router's choices.
    pub fn seed(mut self, seed: u64) -> TreeCase {
        self.rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        self
    }

    fn random(&mut self, below: usize) -> usize {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below
    }

    pub fn ids(&self) -> Vec<u32> {
        self.nodes.keys().copied().collect()
    }

    pub fn live(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.dead)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The engine stops: it begins nothing and receives nothing.
    pub fn kill(&mut self, id: u32) {
        self.nodes.get_mut(&id).expect("an engine of the case").dead = true;
    }

    /// Makes engine `id` fail at `at` in its combine step.
    pub fn fail_at(&mut self, id: u32, at: FailAt) {
        self.nodes.get_mut(&id).expect("an engine").c.fail = Some(at);
    }

    /// Engine `id` begins `call` with these pieces.
    pub fn begin(&mut self, id: u32, call: Call, pieces: &[String]) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("an engine of the case");
        assert!(!node.dead, "a dead engine begins nothing");
        node.c.pieces = pieces.to_vec();
        node.c.combined.clear();
        node.outcome = None;
        let out = node.m.handle(Event::Begin(call), now, &mut node.c);
        self.route(id, out);
    }

    /// Every live engine begins `call`, in id order, with `value(id)` as
    /// its pieces.
    pub fn begin_all(&mut self, call: Call, value: impl Fn(u32) -> Vec<String>) {
        for id in self.live() {
            self.begin(id, call, &value(id));
        }
    }

    fn route(&mut self, id: u32, outs: Vec<Output<Payload>>) {
        let n = outs.len();
        for (i, out) in outs.into_iter().enumerate() {
            let last = i + 1 == n;
            match out {
                Output::SendUp(msg) => {
                    let to = self.parents[&id].expect("only non-roots send up");
                    self.net.push(Packet {
                        from: Source::Child(id),
                        to,
                        frames: encode(msg),
                    });
                }
                Output::Publish(msg) => {
                    assert!(self.parents[&id].is_none(), "engine {id} publishes");
                    let frames = encode(msg);
                    for to in self.ids().into_iter().filter(|t| *t != id) {
                        self.net.push(Packet {
                            from: Source::Root,
                            to,
                            frames: frames.clone(),
                        });
                    }
                }
                Output::Done => {
                    assert!(last, "Done must be the last output");
                    let node = self.nodes.get_mut(&id).unwrap();
                    node.outcome = Some(Ok(node.c.pieces.clone()));
                }
                Output::Failed(e) => {
                    assert!(last, "Failed must be the last output");
                    self.nodes.get_mut(&id).unwrap().outcome = Some(Err(e));
                }
            }
        }
        self.check_invariants();
    }

    fn check_invariants(&self) {
        for node in self.nodes.values() {
            node.m.check_invariants();
            if node.outcome.is_some() {
                assert!(!node.m.is_active(), "an outcome while still active");
            }
        }
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.net.len()
    }

    /// Delivers message `i` of those in flight.
    fn deliver(&mut self, i: usize) {
        let p = self.net.remove(i);
        let now = self.now;
        let node = self.nodes.get_mut(&p.to).expect("an engine");
        if node.dead {
            return;
        }
        let frames = p.frames.into_iter().map(zmq::Message::from).collect();
        let Ok(Wire::Collective(msg)) = from_frames(frames) else {
            panic!("the router carried something the codec cannot read");
        };
        let out = node.m.handle(Event::Message(p.from, msg), now, &mut node.c);
        self.route(p.to, out);
    }

    /// Delivers everything in the order sent (including what that sends).
    pub fn deliver_in_order(&mut self) {
        while !self.net.is_empty() {
            self.deliver(0);
        }
    }

    /// Delivers everything in a random order.
    pub fn deliver_shuffled(&mut self) {
        while !self.net.is_empty() {
            let i = self.random(self.net.len());
            self.deliver(i);
        }
    }

    /// Delivers everything in a random order, sending a second copy of
    /// about one message in three.
    pub fn deliver_with_duplicates(&mut self) {
        while !self.net.is_empty() {
            let i = self.random(self.net.len());
            if self.random(3) == 0 {
                let copy = self.net[i].clone();
                self.net.push(copy);
            }
            self.deliver(i);
        }
    }

    /// Delivers up to `n` random messages.
    pub fn deliver_some(&mut self, n: usize) {
        for _ in 0..n {
            if self.net.is_empty() {
                return;
            }
            let i = self.random(self.net.len());
            self.deliver(i);
        }
    }

    /// Loses the messages in flight from `from` to `to`; how many.
    pub fn drop_between(&mut self, from: Source, to: u32) -> usize {
        let before = self.net.len();
        self.net.retain(|p| !(p.from == from && p.to == to));
        before - self.net.len()
    }

    /// Moves the clock to `secs` after the start and ticks every engine.
    pub fn tick_at(&mut self, secs: f64) {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        let now = self.now;
        for id in self.live() {
            let node = self.nodes.get_mut(&id).unwrap();
            let out = node.m.handle(Event::Tick, now, &mut node.c);
            self.route(id, out);
        }
    }

    /// Engine `id`'s outcome of its last call (None: still running).
    pub fn outcome(&self, id: u32) -> Option<&Result<Vec<String>, CollectiveError>> {
        self.nodes[&id].outcome.as_ref()
    }

    /// The order in which engine `id` combined (piece, child).
    pub fn combined(&self, id: u32) -> &[(usize, u32)] {
        &self.nodes[&id].c.combined
    }

    /// Whether engine `id`'s machine still runs a call.
    pub fn running(&self, id: u32) -> bool {
        self.nodes[&id].m.is_active()
    }

    /// Proves nothing else came out: nothing in flight, no live engine
    /// still in a call, every live engine with an outcome. Marks the case
    /// checked.
    pub fn assert_no_more(&mut self) {
        self.checked = true;
        assert_eq!(self.in_flight(), 0, "messages still in flight");
        for id in self.live() {
            assert!(!self.running(id), "engine {id} is still in a call");
            assert!(self.outcome(id).is_some(), "engine {id} has no outcome");
        }
    }

    /// Checks every live engine succeeded with `expect(id)`.
    pub fn check_ok(&mut self, expect: impl Fn(u32) -> Vec<String>) {
        for id in self.live() {
            match self.outcome(id) {
                Some(Ok(got)) => assert_eq!(got, &expect(id), "engine {id}"),
                other => panic!("engine {id}: {other:?}"),
            }
        }
        self.assert_no_more();
    }

    /// Checks every live engine failed, each with an error containing
    /// `needle`; returns the errors.
    pub fn check_failed(&mut self, needle: &str) -> BTreeMap<u32, CollectiveError> {
        let mut out = BTreeMap::new();
        for id in self.live() {
            match self.outcome(id) {
                Some(Err(e)) => {
                    assert!(
                        e.to_string().contains(needle),
                        "engine {id}: {e:?} does not mention {needle:?}"
                    );
                    out.insert(id, e.clone());
                }
                other => panic!("engine {id} should have failed: {other:?}"),
            }
        }
        self.assert_no_more();
        out
    }
}

impl Drop for TreeCase {
    fn drop(&mut self) {
        if !self.checked && !std::thread::panicking() {
            panic!("TreeCase created but not checked");
        }
    }
}

fn encode(msg: Msg<Payload>) -> Vec<Vec<u8>> {
    to_frames(Wire::Collective(msg))
        .iter()
        .map(|f| f.to_vec())
        .collect()
}
