//! The communicator's sockets: binding, connecting to parent, children and
//! root, the connect handshake, the ring's link, and the sending and
//! receiving that the driver ([`super::driver`]) calls between the state
//! machine's steps.
//!
//! # Design
//!
//! All protocol decisions (sequence numbers, stash, order, deadlines,
//! failures) are the [`Collective`]'s. This layer only decodes frames once
//! ([`super::wire`]), reads the clock, polls until the machine's next
//! deadline and sends. The machine is taken out of the `Comm` while a call
//! runs so the combine step (a script function) runs with nothing borrowed.

use super::collective::{Collective, Msg, Output, Source, Tree};
use super::env::{CommEnv, RhaiResult, DEFAULT_TIMEOUT_SECS};
use super::errors::{bind_err, err, zerr};
use super::ring::{Ring, RingPlace};
use super::shared::SharedArea;
use super::wire::{from_frames, to_frames, Payload, Wire};
use crate::convert::pretty_type;
use rhai::{EvalAltResult, Map, FLOAT, INT};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use zpar_protocol::curve::{secure_client, secure_server};
use zpar_protocol::frames::cap_inbound_frames;
use zpar_protocol::{recv_frames, CurveKeys, Limits};

pub(super) struct Links {
    pub(super) parent: Option<(u32, zmq::Socket)>,
    pub(super) sub: Option<zmq::Socket>,
    /// Whether the parent runs on this host (its `node` is ours).
    pub(super) parent_here: bool,
    pub(super) tree: Tree,
    /// How many engines the communicator joins.
    pub(super) engines: usize,
    /// The DEALER to the next engine on the ring (its id and the socket),
    /// connected at the first ring allreduce.
    pub(super) ring_next: Option<(u32, zmq::Socket)>,
}

pub(super) struct Comm {
    /// The engine's zmq context (the ring's DEALER is made later).
    pub(super) ctx: zmq::Context,
    pub(super) id: u32,
    pub(super) is_root: bool,
    pub(super) router: zmq::Socket,
    pub(super) router_url: String,
    pub(super) host: String,
    pub(super) publisher: Option<(zmq::Socket, String)>,
    pub(super) links: Option<Links>,
    pub(super) timeout: Duration,
    /// The CURVE pair this communicator's sockets use (None: plain).
    pub(super) curve: Option<CurveKeys>,
    /// The protocol; `None` before `connect` and while a call runs.
    pub(super) collective: Option<Collective<Payload>>,
    /// The ring protocol, made at the first ring allreduce; `None` while a
    /// ring call runs.
    pub(super) ring: Option<Ring<Payload>>,
    /// Ring messages that arrived while a tree call ran (a faster engine
    /// already on the ring), in arrival order.
    pub(super) ring_early: Vec<(u32, Msg<Payload>)>,
    /// The segment and peers of the shared-memory allreduce.
    pub(super) shared: SharedArea,
    /// Named allreduces of arrays this large take the large-array path
    /// (`com.large_min_bytes`; [`super::env::LARGE_MIN_BYTES`] by default).
    pub(super) large_min_bytes: usize,
    /// How the last reduction ran: `"tree"` (whole values along the tree),
    /// `"chunked"` (named, in chunks along the tree), `"shared"` (named,
    /// through shared memory) or `"ring"` (named, round the ring); `""`
    /// before the first.
    pub(super) last_algorithm: &'static str,
}

fn curve_err(e: zpar_protocol::ProtocolError) -> Box<EvalAltResult> {
    err(format!("communicator: {e}"))
}

pub(super) fn secs(t: FLOAT) -> RhaiResult<Duration> {
    if !(t.is_finite() && t > 0.0) {
        return Err(err(format!(
            "a timeout must be a positive number of seconds, not {t}"
        )));
    }
    Ok(Duration::from_secs_f64(t))
}

pub(super) fn send_all(sock: &zmq::Socket, w: Wire) -> zmq::Result<()> {
    zpar_protocol::send_frames(sock, to_frames(w), 0)
}

/// Milliseconds until `deadline`, between 1 and 1000 (a finite poll).
fn remaining(deadline: Option<Instant>) -> i64 {
    deadline.map_or(1000, |d| {
        d.saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, 1000) as i64
    })
}

/// The URL peers use to reach a bound socket: its port at the advertised
/// address (a socket bound on every interface reports `0.0.0.0`, which no
/// peer can connect to).
fn advertised(socket: &zmq::Socket, address: &str) -> String {
    let bound = socket
        .get_last_endpoint()
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    match bound.rsplit_once(':') {
        Some((_, port)) if address.contains(':') => format!("tcp://[{address}]:{port}"),
        Some((_, port)) => format!("tcp://{address}:{port}"),
        None => bound,
    }
}

/// Splits a ROUTER message into the sender's id and the rest. A child's
/// DEALER is called by its id, a ring predecessor's by `r` and its id (one
/// engine may be both, and a ROUTER refuses two peers of one name).
fn from_child(frames: Vec<zmq::Message>) -> Option<(u32, Vec<zmq::Message>)> {
    let mut it = frames.into_iter();
    let child = it.next().and_then(|f| {
        f.as_str()
            .and_then(|s| s.strip_prefix('r').unwrap_or(s).parse::<u32>().ok())
    })?;
    Some((child, it.collect()))
}

impl Comm {
    pub(super) fn new(env: &CommEnv, id: INT, is_root: bool) -> RhaiResult<Comm> {
        let id = u32::try_from(id).map_err(|_| {
            err(format!(
                "communicator id must be a non-negative integer, not {id}"
            ))
        })?;
        let curve = env.curve.borrow().clone();
        let router = env.ctx.socket(zmq::ROUTER).map_err(|e| zerr("socket", e))?;
        secure_server(&router, curve.as_ref()).map_err(curve_err)?;
        router.set_linger(0).ok();
        // Engines send each other values in chunks: a frame larger than
        // any of theirs costs its sender the connection.
        cap_inbound_frames(&router, &Limits::default()).map_err(|e| zerr("frame cap", e))?;
        router
            .bind(&format!("tcp://{}:*", env.ip))
            .map_err(|e| bind_err(&env.ip, e))?;
        let router_url = advertised(&router, &env.advertise);
        let publisher = if is_root {
            // An XPUB publishes like a PUB and also hands the root every
            // subscription, so it knows when all engines listen.
            let p = env.ctx.socket(zmq::XPUB).map_err(|e| zerr("socket", e))?;
            secure_server(&p, curve.as_ref()).map_err(curve_err)?;
            p.set_linger(0).ok();
            p.set_sndhwm(0).ok();
            p.set_xpub_verbose(true).ok();
            // Every engine subscribes at once: with ZeroMQ's backlog of
            // 100, most of a thousand SYNs waited for TCP's 1 s retry.
            p.set_backlog(4096).ok();
            cap_inbound_frames(&p, &Limits::default()).map_err(|e| zerr("frame cap", e))?;
            p.bind(&format!("tcp://{}:*", env.ip))
                .map_err(|e| bind_err(&env.ip, e))?;
            let url = advertised(&p, &env.advertise);
            Some((p, url))
        } else {
            None
        };
        Ok(Comm {
            ctx: env.ctx.clone(),
            id,
            is_root,
            router,
            router_url,
            host: env.advertise.clone(),
            publisher,
            links: None,
            timeout: Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
            curve,
            collective: None,
            ring: None,
            ring_early: Vec::new(),
            shared: SharedArea::default(),
            large_min_bytes: super::env::LARGE_MIN_BYTES,
            last_algorithm: "",
        })
    }

    pub(super) fn info(&self) -> Map {
        let mut m = Map::new();
        m.insert("id".into(), (self.id as INT).into());
        m.insert("url".into(), self.router_url.clone().into());
        m.insert("host".into(), self.host.clone().into());
        // This boot of this machine: a parent with the same one takes large
        // values from shared memory.
        m.insert("node".into(), zpar_protocol::bulk::host_id().into());
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
        let tree = Tree::new(self.id, &parents).map_err(err)?;
        if tree.root != root_id {
            return Err(err(format!(
                "tree: the tree's root is engine {}, not root_id {root_id}",
                tree.root
            )));
        }
        self.connect_at(ctx, peers, tree, parents.len(), pub_url, timeout)
    }

    /// Connects this engine at its `place` (`#{parent, children, root,
    /// height, tree_height, engines}`), as `setup_communicator` gives each
    /// engine only its own place rather than the whole tree (the whole tree
    /// to each of N engines is O(N²) data).
    pub(super) fn connect_place(
        &mut self,
        ctx: &zmq::Context,
        peers: Map,
        place: Map,
        pub_url: &str,
        timeout: Duration,
    ) -> RhaiResult<()> {
        if self.links.is_some() {
            return Err(err("the communicator is already connected"));
        }
        let (tree, engines) = place_of(self.id, &place)?;
        if tree.is_root() != self.is_root {
            return Err(err(format!(
                "place: engine {} is {}the root, but its place says otherwise",
                self.id,
                if self.is_root { "" } else { "not " }
            )));
        }
        self.connect_at(ctx, peers, tree, engines, pub_url, timeout)
    }

    /// Connects to the parent in `peers` and to the root's publisher, then
    /// waits until all `engines` are connected.
    fn connect_at(
        &mut self,
        ctx: &zmq::Context,
        peers: Map,
        tree: Tree,
        engines: usize,
        pub_url: &str,
        timeout: Duration,
    ) -> RhaiResult<()> {
        let mut parent_here = false;
        let parent = match tree.parent {
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
                parent_here = info
                    .get("node")
                    .and_then(|n| n.clone().into_string().ok())
                    .is_some_and(|n| !n.is_empty() && n == zpar_protocol::bulk::host_id());
                let dealer = ctx.socket(zmq::DEALER).map_err(|e| zerr("socket", e))?;
                secure_client(&dealer, self.curve.as_ref()).map_err(curve_err)?;
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
            secure_client(&s, self.curve.as_ref()).map_err(curve_err)?;
            s.set_subscribe(b"").map_err(|e| zerr("subscribe", e))?;
            s.set_linger(0).ok();
            s.set_rcvhwm(0).ok();
            s.connect(pub_url)
                .map_err(|e| zerr(&format!("connect to {pub_url:?}"), e))?;
            Some(s)
        };
        self.links = Some(Links {
            parent,
            sub,
            parent_here,
            tree: tree.clone(),
            engines,
            ring_next: None,
        });
        let result = self.handshake(timeout, engines.saturating_sub(1));
        if result.is_err() {
            self.links = None;
        } else {
            self.collective = Some(Collective::new(tree));
        }
        result
    }

    /// Waits until every engine listens to the root, then asks them once to
    /// report ready up the tree, then `go`.
    ///
    /// The root counts the subscriptions its XPUB hands it
    /// (`subscribers` are expected) and only then probes: one round of
    /// readiness, O(N) messages, O(depth) latency. Probes repeat with
    /// back-off in case one is missed, and start anyway once no new
    /// subscription came for a second (a count that never completes).
    /// Each probe wakes every engine, so none goes out while engines are
    /// still subscribing: at 3,000 engines on two cores, probes ten times
    /// a second kept the last engines from reaching `connect` for 20 s.
    pub(super) fn handshake(&mut self, timeout: Duration, subscribers: usize) -> RhaiResult<()> {
        let started = Instant::now();
        let mut subscribed = 0usize;
        let deadline = Instant::now() + timeout;
        let links = self.links.as_ref().expect("just set");
        let (children, root_id) = (&links.tree.children, links.tree.root);
        let mut ready: Vec<u32> = Vec::new();
        let mut probed = self.is_root;
        let mut reported = false;
        let mut last_probe = Instant::now() - Duration::from_secs(1);
        let mut last_subscription = Instant::now();
        // Probes go to every subscriber: the first at once, then rarer, so
        // a thousand engines are not woken many times a second while the
        // tree reports ready.
        let mut probe_every = Duration::from_millis(100);
        loop {
            if Instant::now() >= deadline {
                let missing: Vec<String> = children
                    .iter()
                    .filter(|c| !ready.contains(c))
                    .map(|c| format!("engine {c}"))
                    .collect();
                return Err(err(if !probed {
                    format!(
                        "connect: engine {} heard nothing from the root (engine {root_id}) within {:?}",
                        self.id, timeout
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
            let all_ready = children.iter().all(|c| ready.contains(c));
            if self.is_root {
                let (publ, _) = self.publisher.as_ref().expect("the root publishes");
                // `\x01topic` is a subscription, `\x00topic` its end.
                let before = subscribed;
                while let Ok(m) = publ.recv_msg(zmq::DONTWAIT) {
                    if m.first() == Some(&1) {
                        subscribed += 1;
                    }
                }
                if all_ready {
                    send_all(publ, Wire::Go).map_err(|e| zerr("publish", e))?;
                    return Ok(());
                }
                if subscribed > before {
                    last_subscription = Instant::now();
                }
                if before < subscribers && subscribed >= subscribers {
                    // The last engine listens now: probe at once, however
                    // rare the fallback's probes had become.
                    tracing::debug!(engine = self.id, subscribers, took = ?started.elapsed(), "every engine listens to the root");
                    probe_every = Duration::from_millis(100);
                    last_probe = Instant::now() - probe_every;
                }
                let stalled = started.elapsed() > Duration::from_secs(1)
                    && last_subscription.elapsed() > Duration::from_secs(1);
                let everyone_listens = subscribed >= subscribers || stalled;
                if everyone_listens && last_probe.elapsed() >= probe_every {
                    send_all(publ, Wire::Probe).map_err(|e| zerr("publish", e))?;
                    last_probe = Instant::now();
                    probe_every = (probe_every * 2).min(Duration::from_secs(1));
                }
            } else if probed && all_ready && !reported {
                let (_, dealer) = links.parent.as_ref().expect("non-roots have a parent");
                send_all(dealer, Wire::Ready).map_err(|e| zerr("send", e))?;
                reported = true;
            }
            let mut items = vec![self.router.as_poll_item(zmq::POLLIN)];
            if let Some(sub) = &links.sub {
                items.push(sub.as_poll_item(zmq::POLLIN));
            }
            if let Some((publ, _)) = &self.publisher {
                items.push(publ.as_poll_item(zmq::POLLIN));
            }
            let wait = if self.is_root {
                probe_every.as_millis() as i64
            } else {
                remaining(Some(deadline))
            };
            zmq::poll(&mut items, wait).map_err(|e| zerr("poll", e))?;
            let router_in = items[0].is_readable();
            let sub_in = links.sub.is_some() && items.get(1).is_some_and(|i| i.is_readable());
            drop(items);
            if router_in {
                while let Ok(frames) = recv_frames(&self.router, zmq::DONTWAIT) {
                    let Some((child, rest)) = from_child(frames) else {
                        continue;
                    };
                    if from_frames(rest) == Ok(Wire::Ready)
                        && children.contains(&child)
                        && !ready.contains(&child)
                    {
                        ready.push(child);
                    }
                }
            }
            if sub_in {
                let sub = links.sub.as_ref().expect("polled");
                while let Ok(frames) = recv_frames(sub, zmq::DONTWAIT) {
                    match from_frames(frames) {
                        Ok(Wire::Probe) => probed = true,
                        Ok(Wire::Go) if reported => return Ok(()),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Performs one output of the machine.
    pub(super) fn perform(&self, out: Output<Payload>) -> RhaiResult<()> {
        let links = self.links()?;
        match out {
            Output::SendUp(msg) => {
                let (_, dealer) = links.parent.as_ref().expect("non-roots have a parent");
                send_all(dealer, Wire::Collective(msg)).map_err(|e| zerr("send", e))
            }
            Output::Publish(msg) => {
                let (publ, _) = self.publisher.as_ref().expect("the root publishes");
                send_all(publ, Wire::Collective(msg)).map_err(|e| zerr("publish", e))
            }
            Output::Done | Output::Failed(_) => Ok(()),
        }
    }

    /// The next collective message from a child or the root, waiting at
    /// most until `deadline` (and at most a second); None if nothing came.
    /// Handshake leftovers and malformed messages are dropped here.
    pub(super) fn receive(&self, deadline: Option<Instant>) -> RhaiResult<Option<(Source, Wire)>> {
        let links = self.links()?;
        for attempt in 0..2 {
            if let Ok(frames) = recv_frames(&self.router, zmq::DONTWAIT) {
                let Some((child, rest)) = from_child(frames) else {
                    tracing::warn!(
                        engine = self.id,
                        "communicator: dropped a message without a child id"
                    );
                    return Ok(None);
                };
                return Ok(self.decoded(Source::Child(child), rest));
            }
            if let Some(sub) = &links.sub {
                if let Ok(frames) = recv_frames(sub, zmq::DONTWAIT) {
                    return Ok(self.decoded(Source::Root, frames));
                }
            }
            if attempt == 0 {
                let mut items = vec![self.router.as_poll_item(zmq::POLLIN)];
                if let Some(sub) = &links.sub {
                    items.push(sub.as_poll_item(zmq::POLLIN));
                }
                zmq::poll(&mut items, remaining(deadline)).map_err(|e| zerr("poll", e))?;
            }
        }
        Ok(None)
    }

    fn decoded(&self, source: Source, frames: Vec<zmq::Message>) -> Option<(Source, Wire)> {
        match from_frames(frames) {
            Ok(w @ Wire::Collective(_)) => Some((source, w)),
            Ok(w @ Wire::Ring(_)) if matches!(source, Source::Child(_)) => Some((source, w)),
            Ok(_) => None, // handshake leftovers
            Err(why) => {
                tracing::warn!(engine = self.id, ?source, %why, "communicator: dropped a malformed message");
                None
            }
        }
    }
}

impl Comm {
    /// Makes the ring over `ids` (fold order) and connects this engine's
    /// DEALER to the next one's ROUTER at `next_url`, once.
    pub(super) fn join_ring(
        &mut self,
        ctx: &zmq::Context,
        ids: Vec<u32>,
        next_url: &str,
    ) -> RhaiResult<()> {
        let rank = ids
            .iter()
            .position(|i| *i == self.id)
            .ok_or_else(|| err(format!("ring: engine {} is not on the ring", self.id)))?;
        let place = RingPlace {
            me: self.id,
            rank,
            ids,
        };
        if self.ring.as_ref().is_some_and(|r| *r.place() == place) {
            return Ok(());
        }
        let next = place.next();
        let dealer = ctx.socket(zmq::DEALER).map_err(|e| zerr("socket", e))?;
        secure_client(&dealer, self.curve.as_ref()).map_err(curve_err)?;
        dealer
            .set_identity(format!("r{}", self.id).as_bytes())
            .map_err(|e| zerr("identity", e))?;
        dealer.set_linger(0).ok();
        dealer
            .connect(next_url)
            .map_err(|e| zerr(&format!("connect to {next_url}"), e))?;
        let links = self.links.as_mut().ok_or_else(|| err("not connected"))?;
        links.ring_next = Some((next, dealer));
        self.ring = Some(Ring::new(place));
        Ok(())
    }
}

/// Reads a place map (`#{parent, children, root, height, tree_height,
/// engines}`) for engine `me`.
fn place_of(me: u32, place: &Map) -> RhaiResult<(Tree, usize)> {
    let field = |k: &str| place.get(k).ok_or_else(|| err(format!("place: no {k:?}")));
    let id = |k: &str, v: &rhai::Dynamic| -> RhaiResult<u32> {
        v.as_int()
            .ok()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| {
                err(format!(
                    "place: {k} is a {}, not an engine id",
                    pretty_type(v)
                ))
            })
    };
    let parent = match field("parent")? {
        p if p.is_unit() => None,
        p => Some(id("parent", p)?),
    };
    let children = field("children")?
        .read_lock::<rhai::Array>()
        .ok_or_else(|| err("place: children is not an array"))?
        .iter()
        .map(|c| id("a child", c))
        .collect::<RhaiResult<Vec<u32>>>()?;
    let root = id("root", field("root")?)?;
    let height = id("height", field("height")?)?;
    let tree_height = id("tree_height", field("tree_height")?)?;
    let engines = id("engines", field("engines")?)? as usize;
    let mut unique = children.clone();
    unique.sort_unstable();
    unique.dedup();
    if parent == Some(me)
        || children.contains(&me)
        || parent.is_some_and(|p| children.contains(&p))
        || unique.len() != children.len()
        || (parent.is_none() != (root == me))
    {
        return Err(err(format!(
            "place: engine {me} with parent {parent:?}, root {root} and children {children:?} is not a place in a tree"
        )));
    }
    if engines < children.len() + 1
        || height > tree_height
        || children.is_empty() != (height == 0)
        || (parent.is_none() && height != tree_height)
    {
        return Err(err(format!(
            "place: {engines} engines, height {height} of {tree_height}: not a place in a tree"
        )));
    }
    Ok((
        Tree {
            me,
            parent,
            children,
            root,
            height,
            tree_height,
        },
        engines,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Dynamic;

    fn place(parent: Option<i64>, children: &[i64], root: i64, heights: (i64, i64)) -> Map {
        let mut m = Map::new();
        m.insert("parent".into(), parent.map_or(Dynamic::UNIT, Dynamic::from));
        let children: rhai::Array = children.iter().map(|c| Dynamic::from(*c)).collect();
        m.insert("children".into(), children.into());
        m.insert("root".into(), root.into());
        m.insert("height".into(), heights.0.into());
        m.insert("tree_height".into(), heights.1.into());
        m.insert("engines".into(), Dynamic::from(9_i64));
        m
    }

    #[test]
    fn a_place_reads_as_the_engines_tree_and_nonsense_is_refused() {
        let (tree, engines) = place_of(1, &place(Some(0), &[2, 3], 0, (1, 2))).unwrap();
        assert_eq!(engines, 9);
        assert_eq!(
            tree,
            Tree {
                me: 1,
                parent: Some(0),
                children: vec![2, 3],
                root: 0,
                height: 1,
                tree_height: 2,
            }
        );
        assert!(place_of(0, &place(None, &[1], 0, (1, 1)))
            .unwrap()
            .0
            .is_root());
        for (me, bad) in [
            (1, place(Some(1), &[], 0, (0, 1))),     // its own parent
            (1, place(None, &[], 0, (0, 1))),        // no parent, not the root
            (0, place(Some(3), &[], 0, (0, 1))),     // the root with a parent
            (1, place(Some(0), &[1], 0, (0, 1))),    // its own child
            (1, place(Some(0), &[], 0, (3, 1))),     // taller than the tree
            (1, place(Some(-4), &[], 0, (0, 1))),    // not an id
            (1, place(Some(0), &[0], 0, (1, 2))),    // its parent as a child
            (1, place(Some(0), &[2, 2], 0, (1, 2))), // a child twice
            (1, place(Some(0), &[2], 0, (0, 2))),    // children but no height
            (0, place(None, &[1], 0, (1, 2))),       // the root not the tallest
        ] {
            assert!(place_of(me, &bad).is_err(), "{bad:?}");
        }
        let mut missing = place(Some(0), &[], 0, (0, 1));
        missing.remove("engines");
        let why = place_of(1, &missing).unwrap_err().to_string();
        assert!(why.contains("engines"), "{why}");
    }
}
