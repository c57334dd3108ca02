//! Requests from clients and replies from engines: checking, recording,
//! fanning out to targets, and routing replies back.

use super::ipyparallel::{self, Routed};
use super::queued::QueuedTask;
use super::registry::Pending;
use super::{Action, Frames, HubCore};
use crate::records::{Parts, TaskRecord};
use tracing::{debug, warn};
use zpar_protocol::error::Chain;
use zpar_protocol::{
    Channel, ErrorClass, Header, MessageType, ProtocolError, RawMessage, RecordStatus,
    ReplyMetadata, RequestMetadata, ShutdownRequest, Status, TaskReply,
};

/// What a record takes from a reply's content. Read without the rest: the
/// record keeps the content as the text that came, so building the result
/// value's JSON tree (a thousand numbers, say) would be thrown away.
#[derive(serde::Deserialize)]
struct ReplyOutcome {
    status: Status,
    #[serde(default)]
    ename: Option<String>,
    #[serde(default)]
    evalue: Option<String>,
}

/// A message's frames as a record keeps them; its buffers only if `small`.
pub(crate) fn parts_of(raw: &RawMessage, small: bool) -> Parts {
    Parts {
        header: text_of(&raw.header),
        metadata: text_of(&raw.metadata),
        content: text_of(&raw.content),
        buffers: if small {
            raw.buffers.iter().map(|b| b.to_vec()).collect()
        } else {
            Vec::new()
        },
        buffers_dropped: !small,
        in_shared_memory: (mentions(&raw.content, b"\"shm\"")
            || mentions(&raw.content, b"\"holds\""))
            && serde_json::from_slice::<serde_json::Value>(&raw.content)
                .is_ok_and(|c| !zpar_protocol::value::shared_segments(&c).is_empty()),
    }
}

/// How many stream chunks follow a request (`zpar_protocol::stream`). Only
/// a metadata frame that names the key is parsed: small requests pay a scan
/// of their few bytes, not a parse.
fn stream_frames(raw: &RawMessage) -> Option<u32> {
    metadata_naming(raw, b"\"stream_frames\"").and_then(|m| m.stream_frames)
}

/// The request's `label`, if its metadata gives one (read only then).
fn label_of(raw: &RawMessage) -> Option<String> {
    metadata_naming(raw, b"\"label\"").and_then(|m| m.label)
}

/// The request's metadata, parsed only if its frame holds `key` (quoted).
fn metadata_naming(raw: &RawMessage, key: &[u8]) -> Option<RequestMetadata> {
    if !mentions(&raw.metadata, key) {
        return None;
    }
    raw.metadata()
        .ok()
        .and_then(|m| RequestMetadata::from_map(&m).ok())
}

/// Whether a signed JSON frame holds `needle` (a quick test before a parse).
pub(super) fn mentions(frame: &[u8], needle: &[u8]) -> bool {
    frame.windows(needle.len()).any(|w| w == needle)
}

/// A JSON frame's text (verified frames are UTF-8 JSON; anything else is
/// kept lossily rather than failing the record).
fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl HubCore {
    /// Whether a message's buffers are small enough to record.
    fn small(&self, raw: &RawMessage) -> bool {
        raw.buffers.iter().map(|b| b.len()).sum::<usize>() <= self.config.max_buffer_bytes
    }

    /// The request as a new pending record.
    pub(crate) fn record_of(
        &self,
        raw: &RawMessage,
        header: &Header,
        client: &[u8],
        channel: Channel,
        engine: Option<u32>,
        now: f64,
    ) -> TaskRecord {
        TaskRecord {
            msg_id: header.msg_id.clone(),
            engine,
            client: String::from_utf8_lossy(client).into_owned(),
            msg_type: header.msg_type.clone(),
            channel,
            submitted: now,
            started: None,
            completed: None,
            received: None,
            status: RecordStatus::Pending,
            request: parts_of(raw, self.small(raw) && stream_frames(raw).is_none()),
            result: None,
            stdout: String::new(),
            stderr: String::new(),
            ename: None,
            evalue: None,
            label: label_of(raw),
        }
    }

    pub(super) fn on_client_request(
        &mut self,
        channel: Channel,
        frames: Frames,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let (raw, too_large) = match self.split(frames) {
            Ok(split) => split,
            Err(e) => {
                return warn!(error = %Chain(&e), %channel, "dropped a malformed client message")
            }
        };
        if let Err(e) = self.session.verify(&raw) {
            return warn!(error = %Chain(&e), %channel, "dropped a client message");
        }
        let header = match raw.header() {
            Ok(h) => h,
            Err(e) => return warn!(error = %Chain(&e), %channel, "dropped a client message"),
        };
        let identities: Vec<Vec<u8>> = raw.identities.iter().map(|f| f.to_vec()).collect();
        if identities.is_empty() {
            return warn!("dropped a client message without identity");
        }
        if let Some(e) = too_large {
            warn!(error = %Chain(&e), %channel, msg_id = %header.msg_id, "refused a request too large");
            let why = format!(
                "{e}: the request was not sent on; values of 1 MiB or more travel as buffers \
                 with zpar's own clients, so send large data as buffer frames, or split it over \
                 several requests"
            );
            return self.reject(
                channel,
                identities,
                &header,
                None,
                ErrorClass::TooLarge,
                why,
            );
        }
        if header.message_type() == Some(MessageType::StreamChunk) {
            let client = identities[0].clone();
            return self.on_client_chunk(channel, raw, &header, client, now, out);
        }
        // From here on the request is signed and has a header: it gets an
        // answer, whatever else is wrong with it.
        let map = raw.metadata();
        if channel != Channel::Task {
            if let Ok(map) = &map {
                if ipyparallel::is_broadcast(map) {
                    return self.refuse_broadcast(channel, identities, &header, map);
                }
            }
        }
        let metadata = match map.and_then(|m| RequestMetadata::from_map(&m)) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %Chain(&e), %channel, msg_id = %header.msg_id, "refused a request");
                return self.reject(
                    channel,
                    identities,
                    &header,
                    None,
                    ErrorClass::BadRequest,
                    Chain(&e).to_string(),
                );
            }
        };
        if channel == Channel::Control
            && header.message_type() == Some(MessageType::ShutdownRequest)
        {
            let content_says = serde_json::from_slice::<ShutdownRequest>(&raw.content)
                .map(|r| r.hub)
                .unwrap_or(false);
            if content_says || metadata.hub {
                return self.shutdown_cluster(identities, header, out);
            }
        }
        if channel == Channel::Task {
            let client = identities[0].clone();
            let rec = self.record_of(&raw, &header, &client, channel, None, now);
            self.insert_record(rec);
            self.waiting.push_back(QueuedTask {
                after: metadata.after,
                follow: metadata.follow,
                allowed: metadata.targets,
                retries: metadata.retries,
                attempt: 0,
                no_engine_since: None,
                header,
                identities,
                raw,
            });
            return self.schedule_waiting(now, out);
        }
        // ipyparallel names the engine by a routing frame, not `targets`.
        let targets = match (self.routed_target(channel, &identities), metadata.targets) {
            (Routed::No, targets) | (Routed::Unknown(_), targets @ Some(_)) => targets,
            (Routed::Engine(id), None) => Some(vec![id]),
            (Routed::Engine(id), Some(t)) if t == [id] => Some(t),
            (Routed::Engine(id), Some(t)) => {
                return self.reject(
                    channel,
                    identities,
                    &header,
                    None,
                    ErrorClass::BadRequest,
                    format!(
                        "the request is routed to engine {id} by its identity frame but names engines {t:?} in metadata \"targets\"; name the engines one way"
                    ),
                );
            }
            (Routed::Unknown(uuid), None) => {
                return self.reject(
                    channel,
                    identities,
                    &header,
                    None,
                    ErrorClass::UnknownEngine,
                    format!(
                        "the request is routed to engine uuid {uuid:?}, which is not registered \
                         (it died, left or never existed); ask the hub for the engines \
                         (connection_request) and use one of theirs"
                    ),
                );
            }
        };
        self.fan_out(channel, raw, header, identities, targets, now, out);
    }

    /// Sends a direct or control request to each of its targets, recording
    /// it once per engine; unknown targets get an error reply each.
    #[allow(clippy::too_many_arguments)]
    fn fan_out(
        &mut self,
        channel: Channel,
        raw: RawMessage,
        header: Header,
        identities: Vec<Vec<u8>>,
        targets: Option<Vec<u32>>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let targets = match targets {
            Some(t) if !t.is_empty() => t,
            _ => {
                return self.reject(
                    channel,
                    identities,
                    &header,
                    None,
                    ErrorClass::NoTargets,
                    "the request names no target engines (metadata \"targets\", or an \
                     engine's uuid as the routing frame after the client's)"
                        .into(),
                )
            }
        };
        let client = identities[0].clone();
        // An engine named twice runs the request once: one record, one copy
        // and one reply per engine. Sending it twice would record it twice
        // and send the engine the same signature twice, which its replay
        // guard drops, so the second record and the client's second slot
        // would stay pending forever. Refusing would fail work the client
        // plainly asked for; `[0, 0]` means engine 0.
        let named = targets.len();
        let mut seen = std::collections::HashSet::with_capacity(named);
        let targets: Vec<u32> = targets.into_iter().filter(|id| seen.insert(*id)).collect();
        if targets.len() < named {
            debug!(msg_id = %header.msg_id, named, distinct = targets.len(),
                "a request names engines more than once; each runs it once");
        }
        let mut live = Vec::with_capacity(targets.len());
        for id in targets {
            match self.registry.get(id) {
                Some(e) => live.push((id, e.uuid.clone())),
                None => self.reject(
                    channel,
                    identities.clone(),
                    &header,
                    Some(id),
                    ErrorClass::UnknownEngine,
                    format!("engine {id} is not registered (it died, left or never existed)"),
                ),
            }
        }
        let n = live.len();
        let streamed = stream_frames(&raw);
        let chain = streamed.and_then(|_| self.relay_chain(&live));
        let raw = if n > 1 {
            let relay: Option<Vec<u32>> = chain.as_ref().map(|c| c.iter().map(|e| e.0).collect());
            self.for_each_target(raw, relay)
        } else {
            raw
        };
        if let Some(frames) = streamed {
            let msg_id = header.msg_id.clone();
            let (uuids, relay_to) = match &chain {
                // The chunks go to the chain's first engine only, which
                // passes them on (`streams.rs`).
                Some(chain) => (
                    vec![chain[0].1.clone()],
                    chain[1..].iter().map(|e| e.2.clone()).collect(),
                ),
                None => (live.iter().map(|(_, u)| u.clone()).collect(), Vec::new()),
            };
            let route = (client.clone(), msg_id);
            self.open_stream(route, channel, uuids, relay_to, frames, now);
        }
        let mut raw = Some(raw);
        for (i, (id, uuid)) in live.into_iter().enumerate() {
            let Some(request) = raw.as_ref() else { break };
            let rec = self.record_of(request, &header, &client, channel, Some(id), now);
            self.insert_record(rec);
            // The last target takes the frames as they came; the others a copy.
            let frames = if i + 1 == n {
                raw.take().map(RawMessage::into_frames)
            } else {
                Some(request.duplicate().into_frames())
            };
            let pending = Pending::new(client.clone(), header.clone(), channel, now);
            self.registry
                .add_pending(id, header.msg_id.clone(), pending);
            out.push(Action::ToEngine {
                channel,
                uuid,
                frames: frames.unwrap_or_default(),
            });
        }
    }

    /// The request as each of several engines gets it: its metadata
    /// without `targets` (the engines never read it) and, for a relayed
    /// stream, with the `relay` chain, signed again by the hub. An execute
    /// on a thousand engines carries a thousand ids, and each engine would
    /// verify, parse and the hub record them all: a thousand times more
    /// work than the request itself. So it is encoded and signed once
    /// here, then sent to every target.
    fn for_each_target(&self, mut raw: RawMessage, relay: Option<Vec<u32>>) -> RawMessage {
        let Ok(mut metadata) = raw.metadata() else {
            return raw;
        };
        let had_targets = metadata.remove("targets").is_some();
        if let Some(chain) = relay {
            metadata.insert("relay".into(), chain.into());
        } else if !had_targets {
            return raw;
        }
        let Ok(json) = serde_json::to_vec(&metadata) else {
            return raw;
        };
        raw.metadata = json.into();
        raw.signature = self.session.sign(raw.signed_parts()).into_bytes().into();
        raw
    }

    pub(super) fn on_engine_reply(
        &mut self,
        channel: Channel,
        mut frames: Frames,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        if frames.is_empty() {
            return;
        }
        let uuid = frames.remove(0);
        let Some(engine) = self.registry.id_of(&uuid) else {
            return debug!(%channel, "dropped a reply from an unregistered engine");
        };
        let (raw, too_large) = match self.split(frames) {
            Ok(split) => split,
            Err(e) => {
                return warn!(error = %Chain(&e), engine, "dropped a malformed engine message")
            }
        };
        if let Err(e) = self.session.verify(&raw) {
            return warn!(error = %Chain(&e), engine, "dropped an engine message");
        }
        if let Some(e) = too_large {
            return self.refuse_reply_too_large(engine, channel, &raw, e, now, out);
        }
        if mentions(&raw.header, b"\"stream_chunk\"")
            && raw
                .header()
                .is_ok_and(|h| h.message_type() == Some(MessageType::StreamChunk))
        {
            return self.on_engine_chunk(engine, channel, raw, out);
        }
        self.heard_on(engine, channel);
        if mentions(&raw.header, b"\"recall_reply\"")
            && raw
                .header()
                .is_ok_and(|h| h.message_type() == Some(MessageType::RecallReply))
        {
            return self.on_recall_reply(engine, channel, &raw, now, out);
        }
        let parent = match raw.parent_header() {
            Ok(Some(p)) => p,
            Ok(None) => return warn!(engine, "dropped an engine reply without parent"),
            Err(e) => return warn!(error = %Chain(&e), engine, "dropped an engine message"),
        };
        let was_pending = self.registry.complete(engine, &parent.msg_id).is_some();
        if was_pending {
            self.record_reply(engine, &parent.msg_id, &raw, now);
        } else if channel == Channel::Task {
            // A late reply of an earlier attempt: the task was given to
            // another engine (or failed) when this one was lost. The client
            // gets one answer per task, never two.
            return debug!(engine, msg_id = %parent.msg_id, "dropped a reply of an earlier attempt");
        }
        if !raw.identities.is_empty() {
            self.reply_to_client(channel, raw.into_frames());
        }
        if channel == Channel::Task {
            self.schedule_waiting(now, out);
        }
    }

    /// Splits a peer's frames: the message, and whether a frame of it is
    /// larger than the limits allow. A message whose header itself is too
    /// large cannot be answered (nor read cheaply): that is the error.
    fn split(&self, frames: Frames) -> Result<(RawMessage, Option<ProtocolError>), ProtocolError> {
        let limits = &self.session.limits;
        let raw = RawMessage::split(frames, limits)?;
        match raw.check_sizes(limits) {
            Ok(()) => Ok((raw, None)),
            Err(e) if raw.header.len() <= limits.max_json_frame => Ok((raw, Some(e))),
            Err(e) => Err(e),
        }
    }

    /// An engine's reply with a frame too large to forward (the client
    /// would drop it): its request fails with `TooLarge`, recorded and
    /// answered to its client once, and the engine is free again.
    fn refuse_reply_too_large(
        &mut self,
        engine: u32,
        channel: Channel,
        raw: &RawMessage,
        e: ProtocolError,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        self.heard_on(engine, channel);
        let parent = match raw.parent_header() {
            Ok(Some(p)) => p,
            _ => return warn!(error = %Chain(&e), engine, "dropped an engine message too large"),
        };
        let Some(p) = self.registry.complete(engine, &parent.msg_id) else {
            return warn!(error = %Chain(&e), engine, msg_id = %parent.msg_id,
                "dropped a reply too large to a request no longer pending");
        };
        let why = format!(
            "engine {engine}'s reply was too large to pass on ({e}); print less, or ask for \
             fewer values at once"
        );
        self.fail_pending(engine, &parent.msg_id, p, ErrorClass::TooLarge, why, now);
        if channel == Channel::Task {
            self.schedule_waiting(now, out);
        }
    }

    /// A message the loop could not deliver to engine `uuid`: the request
    /// it is (or the streamed request it is a chunk of) fails with
    /// `Undelivered`, answered to its client once, instead of waiting for
    /// a reply that cannot come.
    pub(super) fn on_undeliverable(
        &mut self,
        channel: Channel,
        uuid: &[u8],
        frames: Frames,
        waited: f64,
        now: f64,
    ) {
        let Some(engine) = self.registry.id_of(uuid) else {
            return; // lost meanwhile: its pending requests were failed then
        };
        let raw = match RawMessage::from_frames(frames, &self.session.limits) {
            Ok(r) => r,
            Err(e) => {
                return warn!(error = %Chain(&e), engine, "an undeliverable message is unreadable")
            }
        };
        let Ok(header) = raw.header() else {
            return warn!(engine, "an undeliverable message has no header");
        };
        let msg_id = if header.message_type() == Some(MessageType::StreamChunk) {
            match raw.parent_header() {
                Ok(Some(p)) => p.msg_id,
                _ => return,
            }
        } else {
            header.msg_id
        };
        let Some(pending) = self.registry.drop_pending(engine, &msg_id) else {
            // Answered or failed already (a later chunk of a failed stream).
            return debug!(engine, %msg_id, "an undeliverable message of a request no longer pending");
        };
        let why = format!(
            "the hub could not deliver the request to engine {engine}: the engine's {channel}              connection did not come up within {waited:.0} s (it registered, but its {channel}              socket never connected, or a firewall blocks it); check the engine's log and              network, then submit again"
        );
        warn!(engine, %msg_id, %channel, "{why}");
        self.fail_record(&msg_id, Some(engine), &ErrorClass::Undelivered, &why, now);
        if !pending.client.is_empty() {
            self.reject(
                pending.channel,
                vec![pending.client],
                &pending.header,
                Some(engine),
                ErrorClass::Undelivered,
                why,
            );
        }
    }

    fn record_reply(&mut self, engine: u32, msg_id: &str, raw: &RawMessage, now: f64) {
        let metadata = ReplyMetadata::from_bytes(&raw.metadata).unwrap_or_else(|e| {
            warn!(error = %Chain(&e), engine, %msg_id, "recording a reply without its metadata");
            ReplyMetadata::default()
        });
        let reply: ReplyOutcome = serde_json::from_slice(&raw.content).unwrap_or_else(|e| {
            warn!(error = %Chain(&e), engine, %msg_id, "recording a reply whose content is not a reply");
            ReplyOutcome {
                status: Status::Error,
                ename: Some(ErrorClass::BadRequest.as_str().to_string()),
                evalue: Some(format!("the engine's reply is not readable: {e}")),
            }
        });
        let result = parts_of(raw, self.small(raw) && metadata.stream_frames.is_none());
        self.update_record(msg_id, Some(engine), |r| {
            r.engine = Some(engine);
            r.status = RecordStatus::Done(reply.status);
            r.started = metadata.started;
            r.completed = metadata.completed;
            r.received = Some(now);
            r.stdout = metadata.stdout;
            r.stderr = metadata.stderr;
            r.ename = reply.ename;
            r.evalue = reply.evalue;
            r.result = Some(result);
        });
    }

    /// Stops every engine, answers the client, then stops the hub.
    fn shutdown_cluster(
        &mut self,
        identities: Vec<Vec<u8>>,
        request: Header,
        out: &mut Vec<Action>,
    ) {
        tracing::info!("shutdown requested by a client");
        self.stop_engines(out);
        let msg = zpar_protocol::Message {
            identities,
            header: self.session.header(MessageType::ShutdownReply.name()),
            parent_header: Some(request),
            metadata: Default::default(),
            content: zpar_protocol::Content::ShutdownReply(TaskReply::ok()),
            buffers: vec![],
        };
        self.send_to_client(Channel::Control, msg);
        self.on_tick(out);
        out.push(Action::Stop);
    }
}
