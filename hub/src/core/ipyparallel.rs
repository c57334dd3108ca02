//! ipyparallel's own client on a zpar hub: the two ways its requests name
//! engines that zpar's client does not use.
//!
//! - **Routing by identity.** ipyparallel's `DirectView` and its control
//!   requests (abort, shutdown) name an engine by sending with the engine's
//!   uuid as a routing frame, so the hub sees `[client, engine uuid,
//!   <IDS|MSG>, …]` on mux or control and no metadata `targets`.
//!   [`HubCore::routed_target`] reads that frame; the request then goes to
//!   that engine as if `targets` named it (the frame stays, so the reply
//!   reaches the client with the engine's uuid in front, as ipyparallel's
//!   own hub does).
//! - **Broadcast.** `BroadcastView` sends one message with metadata
//!   `is_broadcast` and `targets` as `[uuid, id]` pairs to a scheduler zpar
//!   does not have. The ipyparallel connection file points its `broadcast`
//!   port at mux, and [`HubCore::refuse_broadcast`] answers every target
//!   with a clear error in the shape ipyparallel waits for, so nothing
//!   hangs.

use super::HubCore;
use serde_json::{json, Map, Value as Json};
use tracing::debug;
use zpar_protocol::{Channel, Content, ErrorClass, Header, Message, TaskReply};

/// What a request's second routing frame says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Routed {
    /// No routing frame past the client's (zpar's client), or a task.
    No,
    /// The uuid of this registered engine.
    Engine(u32),
    /// A frame that is no registered engine's uuid (shown lossily).
    Unknown(String),
}

/// Whether a request's metadata marks it as an ipyparallel broadcast.
pub(super) fn is_broadcast(metadata: &Map<String, Json>) -> bool {
    metadata.get("is_broadcast").and_then(Json::as_bool) == Some(true)
}

const BROADCAST_UNSUPPORTED: &str = "zpar has no broadcast scheduler, so ipyparallel's \
    BroadcastView cannot run here; use a DirectView instead (rc[:] or rc.direct_view()), \
    which the hub fans out to each engine. zpar engines run Rhai: send code with execute(), \
    not Python functions";

impl HubCore {
    /// The engine a mux or control request is routed to by identity, the
    /// way ipyparallel addresses one (see the module doc).
    pub(super) fn routed_target(&self, channel: Channel, identities: &[Vec<u8>]) -> Routed {
        if channel == Channel::Task {
            return Routed::No;
        }
        match identities.get(1) {
            None => Routed::No,
            Some(uuid) => match self.registry.id_of(uuid) {
                Some(id) => Routed::Engine(id),
                None => Routed::Unknown(String::from_utf8_lossy(uuid).into_owned()),
            },
        }
    }

    /// Answers an ipyparallel broadcast with an `Unsupported` error: one
    /// reply per target whose parent msg id is `<msg id>_<engine uuid>`
    /// (what a non-coalescing `BroadcastView` waits for), or one reply
    /// naming every target (coalescing).
    pub(super) fn refuse_broadcast(
        &mut self,
        channel: Channel,
        identities: Vec<Vec<u8>>,
        request: &Header,
        metadata: &Map<String, Json>,
    ) {
        debug!(msg_id = %request.msg_id, "refused an ipyparallel broadcast");
        let targets: Vec<Json> = metadata
            .get("targets")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let coalescing = metadata.get("is_coalescing").and_then(Json::as_bool) == Some(true);
        let reply_type = Content::reply_type_for(&request.msg_type);
        let error = || {
            Content::task_reply_of(
                &reply_type,
                TaskReply::error_with_traceback(
                    ErrorClass::Unsupported.as_str(),
                    BROADCAST_UNSUPPORTED,
                ),
            )
        };
        let mut replies = Vec::new();
        if coalescing || targets.is_empty() {
            let mut meta = Map::new();
            meta.insert("status".into(), json!("error"));
            meta.insert("is_broadcast".into(), json!(true));
            meta.insert("is_coalescing".into(), json!(coalescing));
            meta.insert("original_msg_id".into(), json!(request.msg_id));
            meta.insert("broadcast_targets".into(), Json::Array(targets.clone()));
            replies.push((request.clone(), meta));
        } else {
            for t in &targets {
                let uuid = t.get(0).and_then(Json::as_str).unwrap_or_default();
                let mut parent = request.clone();
                parent.msg_id = format!("{}_{uuid}", request.msg_id);
                let mut meta = Map::new();
                meta.insert("status".into(), json!("error"));
                meta.insert("is_broadcast".into(), json!(true));
                meta.insert("is_coalescing".into(), json!(false));
                meta.insert("engine".into(), json!(uuid));
                replies.push((parent, meta));
            }
        }
        for (parent, metadata) in replies {
            let msg = Message {
                identities: identities.clone(),
                header: self.session.header(&reply_type),
                parent_header: Some(parent),
                metadata,
                content: error(),
                buffers: vec![],
            };
            self.send_to_client(channel, msg);
        }
    }
}
