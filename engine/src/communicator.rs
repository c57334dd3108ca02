//! `BinaryTreeCommunicator`: engines reducing and broadcasting among
//! themselves, without the hub or the client.
//!
//! # Design
//!
//! Every engine binds a ROUTER that its children's DEALERs connect to; the
//! root also binds a PUB that every other engine's SUB connects to. A
//! reduction flows up the tree (child DEALER → parent ROUTER); the result
//! comes down in one publish from the root.
//!
//! - **Order.** The ROUTER tells a parent which child sent which partial, so
//!   it combines `own, children in ascending id` — for the pre-order trees
//!   (`bintree`-shaped) that is the sequential left fold in id order, and an
//!   associative but non-commutative `f` gives the sequential answer.
//! - **Sequence numbers.** Every collective call advances a counter on every
//!   engine (they all make the same calls in the same order) and every
//!   message carries it. Older messages (left over from a failed call) are
//!   dropped; newer ones (a fast child already in the next call) are kept
//!   for later. Calls in a row can never mix.
//! - **Faults.** Every wait has a deadline (default 30 s, per communicator
//!   and per call). A parent waits a little longer the higher it sits
//!   (`timeout + height × timeout/4`), so the engine nearest a dead peer
//!   notices first and sends the failure up; the root publishes it, and
//!   every engine fails with an error naming the engine that did not answer.
//! - **Connect handshake.** PUB drops what it sends before a subscription is
//!   in place, so `connect` does not sleep: the root publishes probes until
//!   every engine has seen one and reported `ready` up the tree, then
//!   publishes `go`.
//!
//! Wire frames, up: `[kind, seq, json, buffers…]` with kind `up`, `ready` or
//! `fail`; down (PUB): `[kind, seq, json, buffers…]` with kind `bc`, `probe`,
//! `go` or `fail`. Values use the protocol's value codec, so numeric arrays
//! travel as raw buffers.

use crate::convert::{encode_dynamic, from_value, pretty_type};
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position, FLOAT, INT};
use serde_json::{json, Value as Json};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};
use zpar_protocol::{recv_frames, Value};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The default wait for any one collective, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;

/// What a communicator needs from its engine: the zmq context, the address
/// to bind on, and the engine's id (for messages).
#[derive(Clone)]
pub struct CommEnv {
    /// The engine's zmq context.
    pub ctx: zmq::Context,
    /// The interface to bind on.
    pub ip: String,
    /// The engine's id.
    pub engine_id: u32,
}

/// The script type. Clones share one communicator.
#[derive(Clone)]
pub struct BinaryTreeCommunicator(Rc<RefCell<Comm>>);

struct Links {
    parent: Option<(u32, zmq::Socket)>,
    children: Vec<u32>,
    sub: Option<zmq::Socket>,
    root_id: u32,
    /// Longest path down to a leaf.
    height: u32,
    /// Height of the whole tree.
    tree_height: u32,
}

struct Comm {
    id: u32,
    is_root: bool,
    router: zmq::Socket,
    router_url: String,
    host: String,
    publisher: Option<(zmq::Socket, String)>,
    links: Option<Links>,
    seq: u64,
    timeout: Duration,
    /// Messages from children that arrived early: (child, seq) → frames.
    early_up: HashMap<(u32, u64), Vec<zmq::Message>>,
    /// Broadcasts that arrived early: seq → frames.
    early_down: HashMap<u64, Vec<zmq::Message>>,
}

fn err(msg: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(msg.into()), Position::NONE).into()
}

fn zerr(what: &str, e: zmq::Error) -> Box<EvalAltResult> {
    err(format!("communicator: {what}: {e}"))
}

fn secs(t: FLOAT) -> RhaiResult<Duration> {
    if !(t.is_finite() && t > 0.0) {
        return Err(err(format!(
            "a timeout must be a positive number of seconds, not {t}"
        )));
    }
    Ok(Duration::from_secs_f64(t))
}

/// One received message, split.
struct Incoming {
    kind: String,
    seq: u64,
    payload: Json,
    buffers: Vec<zmq::Message>,
}

fn split(frames: Vec<zmq::Message>) -> Option<Incoming> {
    let mut it = frames.into_iter();
    let kind = it.next()?.as_str()?.to_string();
    let seq = it.next()?.as_str()?.parse().ok()?;
    let payload = serde_json::from_slice(&it.next()?).ok()?;
    Some(Incoming {
        kind,
        seq,
        payload,
        buffers: it.collect(),
    })
}

fn frames_of(
    kind: &str,
    seq: u64,
    payload: &Json,
    buffers: Vec<zmq::Message>,
) -> Vec<zmq::Message> {
    let mut out = Vec::with_capacity(3 + buffers.len());
    out.push(zmq::Message::from(kind));
    out.push(zmq::Message::from(seq.to_string().as_str()));
    out.push(zmq::Message::from(
        serde_json::to_vec(payload).expect("json serializes"),
    ));
    out.extend(buffers);
    out
}

fn send_all(sock: &zmq::Socket, frames: Vec<zmq::Message>) -> zmq::Result<()> {
    zpar_protocol::send_frames(sock, frames, 0)
}

fn encode(d: &Dynamic) -> RhaiResult<(Json, Vec<zmq::Message>)> {
    let mut buffers = Vec::new();
    let json = encode_dynamic(d, &mut buffers).map_err(|e| err(format!("communicator: {e}")))?;
    Ok((json!({ "value": json }), buffers))
}

fn decode(inc: &Incoming) -> RhaiResult<Dynamic> {
    let v = Value::decode(&inc.payload["value"], &inc.buffers)
        .map_err(|e| err(format!("communicator: {e}")))?;
    from_value(v).map_err(err)
}

fn remaining(deadline: Instant) -> i64 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .clamp(1, 1000) as i64
}

impl Comm {
    fn new(env: &CommEnv, id: INT, is_root: bool) -> RhaiResult<Comm> {
        let id = u32::try_from(id).map_err(|_| {
            err(format!(
                "communicator id must be a non-negative integer, not {id}"
            ))
        })?;
        let router = env.ctx.socket(zmq::ROUTER).map_err(|e| zerr("socket", e))?;
        router.set_linger(0).ok();
        router
            .bind(&format!("tcp://{}:*", env.ip))
            .map_err(|e| zerr(&format!("bind on {}", env.ip), e))?;
        let router_url = router
            .get_last_endpoint()
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let publisher = if is_root {
            let p = env.ctx.socket(zmq::PUB).map_err(|e| zerr("socket", e))?;
            p.set_linger(0).ok();
            p.set_sndhwm(0).ok();
            p.bind(&format!("tcp://{}:*", env.ip))
                .map_err(|e| zerr(&format!("bind on {}", env.ip), e))?;
            let url = p
                .get_last_endpoint()
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
            Some((p, url))
        } else {
            None
        };
        Ok(Comm {
            id,
            is_root,
            router,
            router_url,
            host: env.ip.clone(),
            publisher,
            links: None,
            seq: 0,
            timeout: Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
            early_up: HashMap::new(),
            early_down: HashMap::new(),
        })
    }

    fn info(&self) -> Map {
        let mut m = Map::new();
        m.insert("id".into(), (self.id as INT).into());
        m.insert("url".into(), self.router_url.clone().into());
        m.insert("host".into(), self.host.clone().into());
        m
    }

    fn links(&self) -> RhaiResult<&Links> {
        self.links
            .as_ref()
            .ok_or_else(|| err("the communicator is not connected yet: call com.connect(peers, tree, pub_url, root_id) first"))
    }

    fn connect(
        &mut self,
        ctx: &zmq::Context,
        peers: Map,
        tree: Map,
        pub_url: &str,
        root_id: INT,
        timeout: Duration,
    ) -> RhaiResult<()> {
        if self.links.is_some() {
            return Err(err("the communicator is already connected"));
        }
        let parse_id = |k: &str| {
            k.trim()
                .parse::<u32>()
                .map_err(|_| err(format!("tree: {k:?} is not an engine id")))
        };
        let mut parents: BTreeMap<u32, Option<u32>> = BTreeMap::new();
        for (k, v) in &tree {
            let child = parse_id(k)?;
            let parent = if v.is_unit() {
                None
            } else {
                let p = v.as_int().map_err(|_| {
                    err(format!(
                        "tree: the parent of {child} is a {}, not an id",
                        pretty_type(v)
                    ))
                })?;
                Some(u32::try_from(p).map_err(|_| err(format!("tree: bad parent id {p}")))?)
            };
            parents.insert(child, parent);
        }
        let root_id = u32::try_from(root_id).map_err(|_| err(format!("bad root id {root_id}")))?;
        let Some(my_parent) = parents.get(&self.id).copied() else {
            return Err(err(format!("tree: engine {} is not in the tree", self.id)));
        };
        if (my_parent.is_none()) != (self.id == root_id) || self.is_root != (self.id == root_id) {
            return Err(err(format!(
                "tree: engine {} is {}the root, but the tree and root_id {root_id} disagree",
                self.id,
                if self.is_root { "" } else { "not " }
            )));
        }
        let children: Vec<u32> = parents
            .iter()
            .filter(|(_, p)| **p == Some(self.id))
            .map(|(c, _)| *c)
            .collect();
        let height_of = |start: u32| -> RhaiResult<u32> { subtree_height(&parents, start) };
        let height = height_of(self.id)?;
        let tree_height = height_of(root_id)?;

        let parent = match my_parent {
            None => None,
            Some(p) => {
                let info = peers.get(p.to_string().as_str()).ok_or_else(|| {
                    err(format!(
                        "peers: no connection info for engine {p}, the parent of {}",
                        self.id
                    ))
                })?;
                let info = info
                    .read_lock::<Map>()
                    .ok_or_else(|| err(format!("peers: the info of engine {p} is not a map")))?;
                let url = info
                    .get("url")
                    .and_then(|u| u.clone().into_string().ok())
                    .ok_or_else(|| err(format!("peers: the info of engine {p} has no url")))?;
                let dealer = ctx.socket(zmq::DEALER).map_err(|e| zerr("socket", e))?;
                dealer
                    .set_identity(self.id.to_string().as_bytes())
                    .map_err(|e| zerr("identity", e))?;
                dealer.set_linger(0).ok();
                dealer
                    .connect(&url)
                    .map_err(|e| zerr(&format!("connect to {url}"), e))?;
                Some((p, dealer))
            }
        };
        let sub = if self.is_root {
            None
        } else {
            let s = ctx.socket(zmq::SUB).map_err(|e| zerr("socket", e))?;
            s.set_subscribe(b"").map_err(|e| zerr("subscribe", e))?;
            s.set_linger(0).ok();
            s.set_rcvhwm(0).ok();
            s.connect(pub_url)
                .map_err(|e| zerr(&format!("connect to {pub_url:?}"), e))?;
            Some(s)
        };
        self.links = Some(Links {
            parent,
            children,
            sub,
            root_id,
            height,
            tree_height,
        });
        let result = self.handshake(timeout);
        if result.is_err() {
            self.links = None;
        }
        result
    }

    /// Probes until every engine is subscribed, then `go`.
    fn handshake(&mut self, timeout: Duration) -> RhaiResult<()> {
        let deadline = Instant::now() + timeout;
        let links = self.links.as_ref().expect("just set");
        let mut ready: Vec<u32> = Vec::new();
        let mut probed = self.is_root;
        let mut reported = false;
        let mut last_probe = Instant::now() - Duration::from_secs(1);
        loop {
            if Instant::now() >= deadline {
                let missing: Vec<String> = links
                    .children
                    .iter()
                    .filter(|c| !ready.contains(c))
                    .map(|c| format!("engine {c}"))
                    .collect();
                return Err(err(if !probed {
                    format!(
                        "connect: engine {} heard nothing from the root (engine {}) within {:?}",
                        self.id, links.root_id, timeout
                    )
                } else if !missing.is_empty() {
                    format!(
                        "connect: {} did not report ready to engine {} within {:?}",
                        missing.join(", "),
                        self.id,
                        timeout
                    )
                } else {
                    format!(
                        "connect: engine {} did not get the go-ahead from the root within {:?}",
                        self.id, timeout
                    )
                }));
            }
            let all_ready = links.children.iter().all(|c| ready.contains(c));
            if self.is_root {
                let (publ, _) = self.publisher.as_ref().expect("the root publishes");
                if all_ready {
                    send_all(publ, frames_of("go", 0, &Json::Null, vec![]))
                        .map_err(|e| zerr("publish", e))?;
                    return Ok(());
                }
                if last_probe.elapsed() >= Duration::from_millis(5) {
                    send_all(publ, frames_of("probe", 0, &Json::Null, vec![]))
                        .map_err(|e| zerr("publish", e))?;
                    last_probe = Instant::now();
                }
            } else if probed && all_ready && !reported {
                let (_, dealer) = links.parent.as_ref().expect("non-roots have a parent");
                send_all(dealer, frames_of("ready", 0, &Json::Null, vec![]))
                    .map_err(|e| zerr("send", e))?;
                reported = true;
            }
            let mut items = vec![self.router.as_poll_item(zmq::POLLIN)];
            if let Some(sub) = &links.sub {
                items.push(sub.as_poll_item(zmq::POLLIN));
            }
            zmq::poll(
                &mut items,
                if self.is_root { 5 } else { remaining(deadline) },
            )
            .map_err(|e| zerr("poll", e))?;
            let (router_in, sub_in) = (
                items[0].is_readable(),
                items.get(1).is_some_and(|i| i.is_readable()),
            );
            drop(items);
            if router_in {
                while let Ok(frames) = recv_frames(&self.router, zmq::DONTWAIT) {
                    let mut it = frames.into_iter();
                    let Some(child) = it
                        .next()
                        .and_then(|f| f.as_str().and_then(|s| s.parse::<u32>().ok()))
                    else {
                        continue;
                    };
                    if let Some(inc) = split(it.collect()) {
                        if inc.kind == "ready"
                            && links.children.contains(&child)
                            && !ready.contains(&child)
                        {
                            ready.push(child);
                        }
                    }
                }
            }
            if sub_in {
                let sub = links.sub.as_ref().expect("polled");
                while let Ok(frames) = recv_frames(sub, zmq::DONTWAIT) {
                    match split(frames).map(|i| i.kind) {
                        Some(k) if k == "probe" => probed = true,
                        Some(k) if k == "go" && reported => return Ok(()),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Waits for each child's part of collective `seq`; in child order.
    fn gather_children(&mut self, seq: u64, deadline: Instant) -> Result<Vec<Incoming>, String> {
        let links = self.links.as_ref().expect("checked by caller");
        let mut got: BTreeMap<u32, Incoming> = BTreeMap::new();
        for c in &links.children {
            if let Some(frames) = self.early_up.remove(&(*c, seq)) {
                if let Some(inc) = split(frames) {
                    got.insert(*c, inc);
                }
            }
        }
        while got.len() < links.children.len() {
            if let Some(failure) = got.values().find(|i| i.kind == "fail") {
                return Err(failure.payload["error"]
                    .as_str()
                    .unwrap_or("a peer failed")
                    .to_string());
            }
            if Instant::now() >= deadline {
                let missing: Vec<String> = links
                    .children
                    .iter()
                    .filter(|c| !got.contains_key(c))
                    .map(|c| format!("engine {c}"))
                    .collect();
                return Err(format!(
                    "{} did not send its part to engine {} within {:.1?} (is it dead or in another collective?)",
                    missing.join(" and "),
                    self.id,
                    self.timeout_for(links.height)
                ));
            }
            if self
                .router
                .poll(zmq::POLLIN, remaining(deadline))
                .unwrap_or(0)
                == 0
            {
                continue;
            }
            while let Ok(frames) = recv_frames(&self.router, zmq::DONTWAIT) {
                let mut it = frames.into_iter();
                let Some(child) = it
                    .next()
                    .and_then(|f| f.as_str().and_then(|s| s.parse::<u32>().ok()))
                else {
                    tracing::warn!(
                        engine = self.id,
                        "communicator: dropped a message from an unknown peer"
                    );
                    continue;
                };
                let rest: Vec<zmq::Message> = it.collect();
                let Some(inc) = split(rest) else {
                    tracing::warn!(
                        engine = self.id,
                        child,
                        "communicator: dropped a malformed message"
                    );
                    continue;
                };
                if !links.children.contains(&child) || inc.kind == "ready" || inc.seq < seq {
                    continue; // stale, or not ours
                }
                if inc.seq > seq {
                    // Re-split later; keep the raw frames.
                    let frames = frames_of(&inc.kind, inc.seq, &inc.payload, inc.buffers);
                    self.early_up.insert((child, frames_seq(&frames)), frames);
                    continue;
                }
                got.insert(child, inc);
            }
        }
        if let Some(failure) = got.values().find(|i| i.kind == "fail") {
            return Err(failure.payload["error"]
                .as_str()
                .unwrap_or("a peer failed")
                .to_string());
        }
        Ok(got.into_values().collect())
    }

    /// Waits for the root's broadcast for `seq`.
    fn receive_broadcast(&mut self, seq: u64, deadline: Instant) -> Result<Incoming, String> {
        let links = self.links.as_ref().expect("checked by caller");
        if let Some(frames) = self.early_down.remove(&seq) {
            if let Some(inc) = split(frames) {
                return Ok(inc);
            }
        }
        let sub = links.sub.as_ref().expect("non-roots subscribe");
        loop {
            if Instant::now() >= deadline {
                return Err(format!(
                    "engine {} got no broadcast from the root (engine {}) within {:.1?}",
                    self.id,
                    links.root_id,
                    self.timeout_for(links.tree_height + 1)
                ));
            }
            if sub.poll(zmq::POLLIN, remaining(deadline)).unwrap_or(0) == 0 {
                continue;
            }
            while let Ok(frames) = recv_frames(sub, zmq::DONTWAIT) {
                let Some(inc) = split(frames) else {
                    tracing::warn!(
                        engine = self.id,
                        "communicator: dropped a malformed broadcast"
                    );
                    continue;
                };
                if !matches!(inc.kind.as_str(), "bc" | "fail") || inc.seq < seq {
                    continue;
                }
                if inc.seq > seq {
                    let s = inc.seq;
                    self.early_down
                        .insert(s, frames_of(&inc.kind, inc.seq, &inc.payload, inc.buffers));
                    continue;
                }
                return Ok(inc);
            }
        }
    }

    fn timeout_for(&self, height: u32) -> Duration {
        self.timeout + self.timeout / 4 * height
    }

    fn send_up(
        &self,
        kind: &str,
        seq: u64,
        payload: &Json,
        buffers: Vec<zmq::Message>,
    ) -> RhaiResult<()> {
        let links = self.links()?;
        let (_, dealer) = links.parent.as_ref().expect("non-roots have a parent");
        send_all(dealer, frames_of(kind, seq, payload, buffers)).map_err(|e| zerr("send", e))
    }

    fn publish_frames(
        &self,
        kind: &str,
        seq: u64,
        payload: &Json,
        buffers: Vec<zmq::Message>,
    ) -> RhaiResult<()> {
        let (publ, _) = self.publisher.as_ref().expect("the root publishes");
        send_all(publ, frames_of(kind, seq, payload, buffers)).map_err(|e| zerr("publish", e))
    }

    /// Reports a failure: up the tree from a non-root, to everyone from the
    /// root. Returns the error for the caller.
    fn fail(&self, seq: u64, message: String, broadcast: bool) -> Box<EvalAltResult> {
        let payload = json!({ "error": message });
        let _ = if self.is_root {
            if broadcast {
                self.publish_frames("fail", seq, &payload, vec![])
            } else {
                Ok(())
            }
        } else {
            self.send_up("fail", seq, &payload, vec![])
        };
        err(format!("collective failed: {message}"))
    }
}

fn frames_seq(frames: &[zmq::Message]) -> u64 {
    frames
        .get(1)
        .and_then(|f| f.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn subtree_height(parents: &BTreeMap<u32, Option<u32>>, node: u32) -> RhaiResult<u32> {
    let mut best = 0;
    let mut stack = vec![(node, 0u32)];
    let mut visited = 0usize;
    while let Some((n, d)) = stack.pop() {
        visited += 1;
        if visited > parents.len() + 1 {
            return Err(err("tree: the parent map has a cycle"));
        }
        best = best.max(d);
        for (c, p) in parents {
            if *p == Some(n) {
                stack.push((*c, d + 1));
            }
        }
    }
    Ok(best)
}

impl BinaryTreeCommunicator {
    fn reduce(
        &self,
        ctx: &NativeCallContext,
        f: &FnPtr,
        value: Dynamic,
        flat: bool,
        all: bool,
        timeout: Option<Duration>,
    ) -> RhaiResult<Dynamic> {
        let mut value = if flat {
            value
        } else {
            fold_sequence(ctx, f, value)?
        };
        let (seq, deadline_children, deadline_bc, is_root, broadcast) = {
            let mut c = self.0.borrow_mut();
            let links = c.links()?;
            let base = timeout.unwrap_or(c.timeout);
            let now = Instant::now();
            let (h, th) = (links.height, links.tree_height);
            c.seq += 1;
            (
                c.seq,
                now + base + base / 4 * h,
                now + base + base / 4 * (th + 1),
                c.is_root,
                all,
            )
        };
        // Children's parts, in id order.
        let parts = {
            let mut c = self.0.borrow_mut();
            match c.gather_children(seq, deadline_children) {
                Ok(p) => p,
                Err(m) => return Err(c.fail(seq, m, broadcast)),
            }
        };
        for part in &parts {
            let v = decode(part)?;
            value = f.call_within_context(ctx, (value, v))?;
        }
        let c = self.0.borrow();
        if !is_root {
            let (payload, buffers) = encode(&value)?;
            c.send_up("up", seq, &payload, buffers)?;
        }
        if !broadcast {
            return Ok(value);
        }
        if is_root {
            let (payload, buffers) = encode(&value)?;
            c.publish_frames("bc", seq, &payload, buffers)?;
            return Ok(value);
        }
        drop(c);
        let inc = self
            .0
            .borrow_mut()
            .receive_broadcast(seq, deadline_bc)
            .map_err(|m| err(format!("collective failed: {m}")))?;
        if inc.kind == "fail" {
            return Err(err(format!(
                "collective failed: {}",
                inc.payload["error"].as_str().unwrap_or("a peer failed")
            )));
        }
        decode(&inc)
    }

    fn publish(&self, value: Dynamic) -> RhaiResult<Dynamic> {
        let mut c = self.0.borrow_mut();
        c.links()?;
        if !c.is_root {
            return Err(err(format!(
                "publish: engine {} is not the root; call consume() here",
                c.id
            )));
        }
        c.seq += 1;
        let (payload, buffers) = encode(&value)?;
        c.publish_frames("bc", c.seq, &payload, buffers)?;
        Ok(value)
    }

    fn consume(&self, timeout: Option<Duration>) -> RhaiResult<Dynamic> {
        let mut c = self.0.borrow_mut();
        let links = c.links()?;
        if c.is_root {
            return Err(err("consume: the root publishes; call publish(value) here"));
        }
        let base = timeout.unwrap_or(c.timeout);
        let deadline = Instant::now() + base + base / 4 * (links.tree_height + 1);
        c.seq += 1;
        let seq = c.seq;
        let inc = c
            .receive_broadcast(seq, deadline)
            .map_err(|m| err(format!("consume failed: {m}")))?;
        decode(&inc)
    }
}

fn fold_sequence(ctx: &NativeCallContext, f: &FnPtr, seq: Dynamic) -> RhaiResult<Dynamic> {
    let items: Vec<Dynamic> = if let Some(a) = seq.read_lock::<rhai::Array>() {
        a.clone()
    } else if let Some(a) = seq.read_lock::<crate::arrays::F64Array>() {
        a.as_slice().iter().map(|x| Dynamic::from(*x)).collect()
    } else if let Some(a) = seq.read_lock::<crate::arrays::I64Array>() {
        a.as_slice().iter().map(|x| Dynamic::from(*x)).collect()
    } else {
        return Err(err(format!(
            "reduce with flat = false needs a sequence (array, f64 or i64 array), not a {}",
            pretty_type(&seq)
        )));
    };
    let mut it = items.into_iter();
    let Some(mut acc) = it.next() else {
        return Err(err(
            "reduce with flat = false: this engine's sequence is empty",
        ));
    };
    for x in it {
        acc = f.call_within_context(ctx, (acc, x))?;
    }
    Ok(acc)
}

/// Registers the `BinaryTreeCommunicator` type and its methods.
pub fn register(engine: &mut Engine, env: CommEnv) {
    let ctor_env = env.clone();
    engine
        .register_type_with_name::<BinaryTreeCommunicator>("BinaryTreeCommunicator")
        .register_fn(
            "BinaryTreeCommunicator",
            move |id: INT, is_root: bool| -> RhaiResult<BinaryTreeCommunicator> {
                Ok(BinaryTreeCommunicator(Rc::new(RefCell::new(Comm::new(
                    &ctor_env, id, is_root,
                )?))))
            },
        )
        .register_get("info", |c: &mut BinaryTreeCommunicator| c.0.borrow().info())
        .register_get("pub_url", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow()
                .publisher
                .as_ref()
                .map(|(_, u)| u.clone())
                .unwrap_or_default()
        })
        .register_get("id", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().id as INT
        })
        .register_get("is_root", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().is_root
        })
        .register_get("timeout", |c: &mut BinaryTreeCommunicator| {
            c.0.borrow().timeout.as_secs_f64()
        })
        .register_set(
            "timeout",
            |c: &mut BinaryTreeCommunicator, t: FLOAT| -> RhaiResult<()> {
                c.0.borrow_mut().timeout = secs(t)?;
                Ok(())
            },
        )
        .register_fn(
            "set_timeout",
            |c: &mut BinaryTreeCommunicator, t: FLOAT| -> RhaiResult<()> {
                c.0.borrow_mut().timeout = secs(t)?;
                Ok(())
            },
        )
        .register_fn("to_string", |c: &mut BinaryTreeCommunicator| {
            let c = c.0.borrow();
            format!(
                "BinaryTreeCommunicator(id={}, root={}, connected={})",
                c.id,
                c.is_root,
                c.links.is_some()
            )
        });
    let connect_env = env.clone();
    engine.register_fn(
        "connect",
        move |c: &mut BinaryTreeCommunicator,
              peers: Map,
              tree: Map,
              pub_url: &str,
              root_id: INT|
              -> RhaiResult<()> {
            let timeout = c.0.borrow().timeout;
            c.0.borrow_mut()
                .connect(&connect_env.ctx, peers, tree, pub_url, root_id, timeout)
        },
    );
    engine
        .register_fn(
            "reduce",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, f: FnPtr, v: Dynamic| {
                c.reduce(&ctx, &f, v, true, false, None)
            },
        )
        .register_fn(
            "reduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool| { c.reduce(&ctx, &f, v, flat, false, None) },
        )
        .register_fn(
            "reduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool,
             all: bool| { c.reduce(&ctx, &f, v, flat, all, None) },
        )
        .register_fn(
            "reduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool,
             all: bool,
             t: FLOAT| { c.reduce(&ctx, &f, v, flat, all, Some(secs(t)?)) },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, f: FnPtr, v: Dynamic| {
                c.reduce(&ctx, &f, v, true, true, None)
            },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool| { c.reduce(&ctx, &f, v, flat, true, None) },
        )
        .register_fn(
            "allreduce",
            |ctx: NativeCallContext,
             c: &mut BinaryTreeCommunicator,
             f: FnPtr,
             v: Dynamic,
             flat: bool,
             t: FLOAT| { c.reduce(&ctx, &f, v, flat, true, Some(secs(t)?)) },
        )
        .register_fn("publish", |c: &mut BinaryTreeCommunicator, v: Dynamic| {
            c.publish(v)
        })
        .register_fn("consume", |c: &mut BinaryTreeCommunicator| c.consume(None))
        .register_fn("consume", |c: &mut BinaryTreeCommunicator, t: FLOAT| {
            c.consume(Some(secs(t)?))
        })
        .register_fn(
            "barrier",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator| {
                let keep = FnPtr::new("barrier_keep_left").expect("valid name");
                c.reduce(&ctx, &keep, Dynamic::UNIT, true, true, None)
                    .map(|_| ())
            },
        )
        .register_fn(
            "barrier",
            |ctx: NativeCallContext, c: &mut BinaryTreeCommunicator, t: FLOAT| {
                let keep = FnPtr::new("barrier_keep_left").expect("valid name");
                c.reduce(&ctx, &keep, Dynamic::UNIT, true, true, Some(secs(t)?))
                    .map(|_| ())
            },
        )
        .register_fn("barrier_keep_left", |a: Dynamic, _b: Dynamic| a);
}
