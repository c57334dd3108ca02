//! The communicator's state and wire: links to parent, children and root,
//! sequence numbers, the connect handshake, and waiting for parts and
//! broadcasts with deadlines.

use super::{CommEnv, RhaiResult, DEFAULT_TIMEOUT_SECS};
use crate::convert::{encode_dynamic, from_value, pretty_type};
use rhai::{Dynamic, EvalAltResult, Map, Position, FLOAT, INT};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};
use zpar_protocol::{recv_frames, Value};

pub(super) struct Links {
    pub(super) parent: Option<(u32, zmq::Socket)>,
    pub(super) children: Vec<u32>,
    pub(super) sub: Option<zmq::Socket>,
    pub(super) root_id: u32,
    /// Longest path down to a leaf.
    pub(super) height: u32,
    /// Height of the whole tree.
    pub(super) tree_height: u32,
}

pub(super) struct Comm {
    pub(super) id: u32,
    pub(super) is_root: bool,
    pub(super) router: zmq::Socket,
    pub(super) router_url: String,
    pub(super) host: String,
    pub(super) publisher: Option<(zmq::Socket, String)>,
    pub(super) links: Option<Links>,
    pub(super) seq: u64,
    pub(super) timeout: Duration,
    /// Messages from children that arrived early: (child, seq) → frames.
    pub(super) early_up: HashMap<(u32, u64), VecDeque<Vec<zmq::Message>>>,
    /// Broadcasts that arrived early: seq → frames.
    pub(super) early_down: HashMap<u64, VecDeque<Vec<zmq::Message>>>,
}

pub(super) fn err(msg: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(msg.into()), Position::NONE).into()
}

pub(super) fn zerr(what: &str, e: zmq::Error) -> Box<EvalAltResult> {
    err(format!("communicator: {what}: {e}"))
}

pub(super) fn secs(t: FLOAT) -> RhaiResult<Duration> {
    if !(t.is_finite() && t > 0.0) {
        return Err(err(format!(
            "a timeout must be a positive number of seconds, not {t}"
        )));
    }
    Ok(Duration::from_secs_f64(t))
}

/// One received message, split.
pub(super) struct Incoming {
    pub(super) kind: String,
    pub(super) seq: u64,
    pub(super) payload: Json,
    pub(super) buffers: Vec<zmq::Message>,
}

pub(super) fn split(frames: Vec<zmq::Message>) -> Option<Incoming> {
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

pub(super) fn frames_of(
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

pub(super) fn send_all(sock: &zmq::Socket, frames: Vec<zmq::Message>) -> zmq::Result<()> {
    zpar_protocol::send_frames(sock, frames, 0)
}

pub(super) fn encode(d: &Dynamic) -> RhaiResult<(Json, Vec<zmq::Message>)> {
    let mut buffers = Vec::new();
    let json = encode_dynamic(d, &mut buffers).map_err(|e| err(format!("communicator: {e}")))?;
    Ok((json!({ "value": json }), buffers))
}

pub(super) fn decode(inc: &Incoming) -> RhaiResult<Dynamic> {
    let v = Value::decode(&inc.payload["value"], &inc.buffers)
        .map_err(|e| err(format!("communicator: {e}")))?;
    from_value(v).map_err(err)
}

pub(super) fn remaining(deadline: Instant) -> i64 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .clamp(1, 1000) as i64
}

impl Comm {
    pub(super) fn new(env: &CommEnv, id: INT, is_root: bool) -> RhaiResult<Comm> {
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

    pub(super) fn info(&self) -> Map {
        let mut m = Map::new();
        m.insert("id".into(), (self.id as INT).into());
        m.insert("url".into(), self.router_url.clone().into());
        m.insert("host".into(), self.host.clone().into());
        m
    }

    pub(super) fn links(&self) -> RhaiResult<&Links> {
        self.links
            .as_ref()
            .ok_or_else(|| err("the communicator is not connected yet: call com.connect(peers, tree, pub_url, root_id) first"))
    }

    pub(super) fn connect(
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
    pub(super) fn handshake(&mut self, timeout: Duration) -> RhaiResult<()> {
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
    pub(super) fn gather_children(
        &mut self,
        seq: u64,
        deadline: Instant,
    ) -> Result<Vec<Incoming>, String> {
        let links = self.links.as_ref().expect("checked by caller");
        let (children, height) = (links.children.clone(), links.height);
        let mut got: BTreeMap<u32, Incoming> = BTreeMap::new();
        while got.len() < children.len() {
            let Some((child, inc)) = self.next_up(seq, deadline) else {
                let missing: Vec<String> = children
                    .iter()
                    .filter(|c| !got.contains_key(c))
                    .map(|c| format!("engine {c}"))
                    .collect();
                return Err(format!(
                    "{} did not send its part to engine {} within {:.1?} (is it dead or in another collective?)",
                    missing.join(" and "),
                    self.id,
                    self.timeout_for(height)
                ));
            };
            if inc.kind == "fail" {
                return Err(inc.payload["error"]
                    .as_str()
                    .unwrap_or("a peer failed")
                    .to_string());
            }
            got.insert(child, inc);
        }
        Ok(got.into_values().collect())
    }

    /// Waits for the root's broadcast for `seq`.
    pub(super) fn receive_broadcast(
        &mut self,
        seq: u64,
        deadline: Instant,
    ) -> Result<Incoming, String> {
        let links = self.links.as_ref().expect("checked by caller");
        let (root, tree_height) = (links.root_id, links.tree_height);
        self.next_down(seq, deadline).ok_or_else(|| {
            format!(
                "engine {} got no broadcast from the root (engine {root}) within {:.1?}",
                self.id,
                self.timeout_for(tree_height + 1)
            )
        })
    }

    /// The next message of collective `seq` from any child (stashed ones
    /// first), or None once `deadline` passes. Older messages are dropped,
    /// newer ones stashed; messages of one child come in the order sent.
    pub(super) fn next_up(&mut self, seq: u64, deadline: Instant) -> Option<(u32, Incoming)> {
        let children = self.links.as_ref()?.children.clone();
        for c in &children {
            if let Some(frames) = self
                .early_up
                .get_mut(&(*c, seq))
                .and_then(VecDeque::pop_front)
            {
                if let Some(inc) = split(frames) {
                    return Some((*c, inc));
                }
            }
        }
        loop {
            let Ok(frames) = recv_frames(&self.router, zmq::DONTWAIT) else {
                if Instant::now() >= deadline {
                    return None;
                }
                let _ = self.router.poll(zmq::POLLIN, remaining(deadline));
                continue;
            };
            let mut it = frames.into_iter();
            let Some(child) = it
                .next()
                .and_then(|f| f.as_str().and_then(|s| s.parse::<u32>().ok()))
            else {
                continue;
            };
            let Some(inc) = split(it.collect()) else {
                tracing::warn!(
                    engine = self.id,
                    child,
                    "communicator: dropped a malformed message"
                );
                continue;
            };
            if !children.contains(&child) || inc.kind == "ready" || inc.seq < seq {
                continue;
            }
            if inc.seq > seq {
                let frames = frames_of(&inc.kind, inc.seq, &inc.payload, inc.buffers);
                self.early_up
                    .entry((child, frames_seq(&frames)))
                    .or_default()
                    .push_back(frames);
                continue;
            }
            return Some((child, inc));
        }
    }

    /// The next broadcast message of collective `seq` (stashed ones first),
    /// or None once `deadline` passes.
    pub(super) fn next_down(&mut self, seq: u64, deadline: Instant) -> Option<Incoming> {
        if let Some(frames) = self.early_down.get_mut(&seq).and_then(VecDeque::pop_front) {
            if let Some(inc) = split(frames) {
                return Some(inc);
            }
        }
        let sub = self.links.as_ref()?.sub.as_ref()?;
        loop {
            let Ok(frames) = recv_frames(sub, zmq::DONTWAIT) else {
                if Instant::now() >= deadline {
                    return None;
                }
                let _ = sub.poll(zmq::POLLIN, remaining(deadline));
                continue;
            };
            let Some(inc) = split(frames) else { continue };
            if inc.seq < seq || inc.kind == "probe" || inc.kind == "go" {
                continue;
            }
            if inc.seq > seq {
                let s = inc.seq;
                self.early_down.entry(s).or_default().push_back(frames_of(
                    &inc.kind,
                    inc.seq,
                    &inc.payload,
                    inc.buffers,
                ));
                continue;
            }
            return Some(inc);
        }
    }

    pub(super) fn timeout_for(&self, height: u32) -> Duration {
        self.timeout + self.timeout / 4 * height
    }

    pub(super) fn send_up(
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

    pub(super) fn publish_frames(
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
    pub(super) fn fail(&self, seq: u64, message: String, broadcast: bool) -> Box<EvalAltResult> {
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

pub(super) fn frames_seq(frames: &[zmq::Message]) -> u64 {
    frames
        .get(1)
        .and_then(|f| f.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub(super) fn subtree_height(parents: &BTreeMap<u32, Option<u32>>, node: u32) -> RhaiResult<u32> {
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
