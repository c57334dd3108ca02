//! Chunk streams through the hub (`zpar_protocol::stream`): a large
//! request's chunks go on to its engines one by one as they arrive, and a
//! large reply's chunks go on to the client at once.
//!
//! A streamed request is recorded and fanned out like any other
//! (`requests.rs`); fanning it out opens a route from (client, msg id) to
//! its engines. Each `stream_chunk` the client sends after it is checked
//! (signed, a known route) and forwarded to every engine of the route (the
//! last takes the frames as they came, the others a copy); the route closes
//! after the announced number of chunks, when its engines are lost, or
//! [`ROUTE_LIFE`] after its last chunk (or its opening, before the first):
//! a push that takes longer than that as a whole, but keeps sending, stays
//! routed. Chunks are not recorded: records keep
//! buffers only up to a limit anyway, and mark a streamed value's as
//! dropped. Engines check order, duplicates and sizes (`Assembly`); the hub
//! only routes.
//!
//! A reply's chunks come before the reply; the hub sends each on to the
//! client the reply is for at once (not held until the next tick: they are
//! not a result, the reply that follows them is).

use super::{Action, HubCore};
use std::collections::HashMap;
use tracing::{debug, warn};
use zpar_protocol::{stream, Channel, Header, RawMessage};

/// How long a route stays open after its last chunk (or its opening) for
/// chunks that do not come.
pub(crate) const ROUTE_LIFE: f64 = 120.0;

/// Where a streamed request's chunks go.
#[derive(Debug)]
pub(crate) struct StreamRoute {
    channel: Channel,
    /// The engines' uuids (of a relayed stream: the chain's first).
    targets: Vec<Vec<u8>>,
    /// Of a relayed stream: the relay addresses of the chain's other
    /// engines, which each chunk carries (`stream::RELAY_TO`).
    relay_to: Vec<String>,
    /// Chunks still to come.
    left: u32,
    /// When it opened or last forwarded a chunk (Unix seconds).
    last_active: f64,
}

/// Routes by (client identity, request msg id).
pub(crate) type Routes = HashMap<(Vec<u8>, String), StreamRoute>;

impl HubCore {
    /// Opens the route of a streamed request fanned out to `targets`.
    /// Closes the routes whose chunks stopped coming ([`ROUTE_LIFE`]) or
    /// whose engines are all gone; on every tick and when a route opens.
    pub(super) fn close_stale_streams(&mut self, now: f64) {
        self.streams
            .retain(|_, r| now - r.last_active < ROUTE_LIFE && !r.targets.is_empty());
    }

    pub(super) fn open_stream(
        &mut self,
        route: (Vec<u8>, String),
        channel: Channel,
        targets: Vec<Vec<u8>>,
        relay_to: Vec<String>,
        frames: u32,
        now: f64,
    ) {
        self.close_stale_streams(now);
        if targets.is_empty() || frames == 0 {
            return;
        }
        self.streams.insert(
            route,
            StreamRoute {
                channel,
                targets,
                relay_to,
                left: frames,
                last_active: now,
            },
        );
    }

    /// The relay chain for a streamed request to `live` engines (id,
    /// uuid), as (id, uuid, relay address), or None to send every engine
    /// the chunks itself: for one engine, when an engine has no relay
    /// address, or when every engine is busy. The first is an engine with
    /// nothing pending, so the chain starts at once (the others pass
    /// chunks on from a thread of their own, busy or not); then the rest
    /// of its host, then each other host's engines together, so the value
    /// crosses each host's link once in and once out.
    pub(super) fn relay_chain(
        &self,
        live: &[(u32, Vec<u8>)],
    ) -> Option<Vec<(u32, Vec<u8>, String)>> {
        if live.len() < 2 || !self.config.relay {
            return None;
        }
        let mut engines = Vec::with_capacity(live.len());
        for (id, uuid) in live {
            let e = self.registry.get(*id)?;
            engines.push((
                e.host.clone().unwrap_or_default(),
                *id,
                uuid.clone(),
                e.relay.clone()?,
                e.pending().is_empty(),
            ));
        }
        let head = engines.iter().filter(|e| e.4).min_by_key(|e| e.1)?;
        let head_host = head.0.clone();
        let head_id = head.1;
        // The head first, then its host, then the other hosts, each in id order.
        engines.sort_by(|a, b| {
            let key = |e: &(String, u32, Vec<u8>, String, bool)| {
                (e.1 != head_id, e.0 != head_host, e.0.clone(), e.1)
            };
            key(a).cmp(&key(b))
        });
        Some(
            engines
                .into_iter()
                .map(|(_, id, uuid, relay, _)| (id, uuid, relay))
                .collect(),
        )
    }

    /// A client's chunk (signed; its header read): on to the route's
    /// engines.
    pub(super) fn on_client_chunk(
        &mut self,
        channel: Channel,
        raw: RawMessage,
        header: &Header,
        client: Vec<u8>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let parent = match raw.parent_header() {
            Ok(Some(p)) => p.msg_id,
            _ => return warn!(msg_id = %header.msg_id, "dropped a stream chunk without parent"),
        };
        let key = (client, parent);
        let Some(route) = self.streams.get_mut(&key) else {
            // Its stream was never opened (a refused request), or is over.
            return debug!(msg_id = %key.1, "dropped a chunk of no open stream");
        };
        if route.channel != channel {
            return warn!(msg_id = %key.1, %channel, "dropped a stream chunk sent on another channel");
        }
        route.left -= 1;
        route.last_active = now;
        let raw = match route.relay_to.is_empty() {
            true => raw,
            false => {
                let hops = route.relay_to.clone();
                stream::relayed(&self.session, raw, &hops)
            }
        };
        let targets = if route.left == 0 {
            self.streams
                .remove(&key)
                .map(|r| r.targets)
                .unwrap_or_default()
        } else {
            route.targets.clone()
        };
        let n = targets.len();
        let mut raw = Some(raw);
        for (i, uuid) in targets.into_iter().enumerate() {
            let Some(chunk) = raw.as_ref() else { break };
            let frames = if i + 1 == n {
                raw.take().map(RawMessage::into_frames).unwrap_or_default()
            } else {
                chunk.duplicate().into_frames()
            };
            out.push(Action::ToEngine {
                channel,
                uuid,
                frames,
            });
        }
    }

    /// An engine's chunk of a reply (signed): on to the client, if the
    /// request it answers is pending on that engine.
    pub(super) fn on_engine_chunk(
        &mut self,
        engine: u32,
        channel: Channel,
        raw: RawMessage,
        out: &mut Vec<Action>,
    ) {
        let parent = match raw.parent_header() {
            Ok(Some(p)) => p.msg_id,
            _ => return warn!(engine, "dropped a stream chunk without parent"),
        };
        let pending = self
            .registry
            .get(engine)
            .is_some_and(|e| e.pending().contains_key(&parent));
        if !pending || raw.identities.is_empty() {
            return debug!(engine, msg_id = %parent, "dropped a chunk of a request not pending there");
        }
        out.push(Action::ToClient {
            channel,
            frames: raw.into_frames(),
        });
    }

    /// A lost engine takes no more chunks.
    pub(super) fn close_streams_to(&mut self, uuid: &[u8]) {
        for route in self.streams.values_mut() {
            route.targets.retain(|t| t != uuid);
        }
        self.streams.retain(|_, r| !r.targets.is_empty());
    }

    /// Open routes (for tests and invariants).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}
