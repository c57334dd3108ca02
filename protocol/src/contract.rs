//! The typed contracts between zpar's processes: what a request's and a
//! reply's metadata hold, which channel a request travelled on, what state a
//! task record is in, and the classes of errors the hub and engines report.
//!
//! Jupyter leaves metadata free-form (a JSON object), so it stays a map on
//! the wire and in [`Message`](crate::Message). zpar's own keys are read and
//! written only through the structs here, so a hub, an engine and a client
//! built from the same commit agree by construction. A peer that breaks the
//! contract (a `targets` that is a string, a `retries` that is negative)
//! gets a [`ProtocolError::Contract`] naming the key, never a panic.
//!
//! ```
//! use zpar_protocol::contract::RequestMetadata;
//! let meta = RequestMetadata { targets: Some(vec![0, 2]), retries: 1, ..Default::default() };
//! let map = meta.to_map();
//! assert_eq!(RequestMetadata::from_map(&map).unwrap(), meta);
//! ```

use crate::content::Status;
use crate::error::{ProtocolError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::fmt;

/// Which pair of hub sockets a request travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Direct requests to named engines.
    Mux,
    /// Load-balanced requests; the hub picks the engine.
    Task,
    /// Control requests (abort, interrupt, clear, shutdown), served before
    /// queued work.
    Control,
}

impl Channel {
    /// The name used in records and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Mux => "mux",
            Channel::Task => "task",
            Channel::Control => "control",
        }
    }

    /// The channel of a recorded name.
    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "mux" => Some(Channel::Mux),
            "task" => Some(Channel::Task),
            "control" => Some(Channel::Control),
            _ => None,
        }
    }
}

/// The first frame of every message on an engine's link (after the
/// engine's identity frame on the hub's ROUTER): the channel the message
/// belongs to, a registration message, the engine's output, or the topics
/// the hub's clients subscribe to. One connection carries them all; the
/// engine sorts what arrives by this tag, so control is still served
/// before work that arrived ahead of it (though on the wire it waits
/// behind what the hub queued on the link before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkTag {
    /// A request or reply of a channel.
    Channel(Channel),
    /// Registration, unregistration and their replies.
    Registration,
    /// Engine to hub: an iopub message (`[topic, <IDS|MSG>, …]`), which
    /// the hub publishes to its clients as it came.
    Iopub,
    /// Hub to engine: every iopub topic prefix some client subscribes to,
    /// one frame each (none: nobody listens), replacing the set sent
    /// before. The engine builds no output nobody would get.
    Subscriptions,
}

impl LinkTag {
    /// The tag frame.
    ///
    /// ```
    /// use zpar_protocol::contract::{Channel, LinkTag};
    /// for tag in [
    ///     LinkTag::Channel(Channel::Control),
    ///     LinkTag::Registration,
    ///     LinkTag::Iopub,
    ///     LinkTag::Subscriptions,
    /// ] {
    ///     assert_eq!(LinkTag::parse(tag.frame()), Some(tag));
    /// }
    /// assert_eq!(LinkTag::parse(b"x"), None);
    /// ```
    pub fn frame(self) -> &'static [u8] {
        match self {
            LinkTag::Channel(Channel::Mux) => b"m",
            LinkTag::Channel(Channel::Task) => b"t",
            LinkTag::Channel(Channel::Control) => b"c",
            LinkTag::Registration => b"r",
            LinkTag::Iopub => b"i",
            LinkTag::Subscriptions => b"s",
        }
    }

    /// The tag a frame holds, if any.
    pub fn parse(frame: &[u8]) -> Option<LinkTag> {
        match frame {
            b"m" => Some(LinkTag::Channel(Channel::Mux)),
            b"t" => Some(LinkTag::Channel(Channel::Task)),
            b"c" => Some(LinkTag::Channel(Channel::Control)),
            b"r" => Some(LinkTag::Registration),
            b"i" => Some(LinkTag::Iopub),
            b"s" => Some(LinkTag::Subscriptions),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task record stands: still waiting for its reply, or finished
/// with the reply's [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordStatus {
    /// Sent (or queued) and not answered yet.
    #[default]
    Pending,
    /// Answered, by an engine or by the hub on its behalf.
    Done(Status),
}

impl RecordStatus {
    /// `pending`, `ok`, `error` or `aborted`, as records and queries show it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Pending => "pending",
            RecordStatus::Done(Status::Ok) => "ok",
            RecordStatus::Done(Status::Error) => "error",
            RecordStatus::Done(Status::Aborted) => "aborted",
        }
    }

    /// The status of a recorded name; None for a name no zpar wrote.
    pub fn parse(name: &str) -> Option<RecordStatus> {
        Some(match name {
            "pending" => RecordStatus::Pending,
            "ok" => RecordStatus::Done(Status::Ok),
            "error" => RecordStatus::Done(Status::Error),
            "aborted" => RecordStatus::Done(Status::Aborted),
            _ => return None,
        })
    }

    /// Whether the record has its answer.
    pub fn is_finished(self) -> bool {
        self != RecordStatus::Pending
    }
}

impl fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of an error reply (its `ename`). The hub's and the engines' own
/// classes are variants; a script's error class (`RuntimeError`,
/// `SyntaxError`, ...) is [`ErrorClass::Script`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The engine died (or was dropped) before answering.
    EngineDied,
    /// A target engine is not registered.
    UnknownEngine,
    /// No engine can take the request.
    NoEngines,
    /// A direct request named no targets.
    NoTargets,
    /// The receiver does not serve this message type on this channel.
    UnknownMessageType,
    /// The request was signed correctly but its content or metadata break
    /// the contract (a `code` that is a number, a `targets` that is text).
    BadRequest,
    /// A peer asked for something only another peer may do.
    NotPermitted,
    /// A task ran past its time limit on the engine.
    Timeout,
    /// An `after`/`follow` dependency can never be met.
    ImpossibleDependency,
    /// An `after` dependency finished, but not successfully.
    DependencyFailed,
    /// The hub restarted while the request was pending.
    HubRestarted,
    /// The hub could not read or write its task records.
    DatabaseError,
    /// The running script was stopped: an interrupt from a client, the
    /// kernel's front end or SIGINT, or the engine shutting down.
    Interrupted,
    /// The script ran more Rhai operations than its request allowed
    /// (`max_operations`).
    OperationLimit,
    /// The engine was asked to serve as a Jupyter kernel and could not
    /// (its sockets could not bind, its file could not be written).
    KernelBindFailed,
    /// The hub could not deliver the request: its engine's connection for
    /// that channel did not come up within the hub's bound.
    Undelivered,
    /// The request, or its reply, was lost on a connection that dropped
    /// and came back; the message says whether the request ran.
    Lost,
    /// A request zpar can never serve, whoever sends it: pickled Python in
    /// an `apply_request` (engines run Rhai), ipyparallel's broadcast
    /// scheduler. The message says what to use instead.
    Unsupported,
    /// The request, or its reply, has a JSON frame larger than a message
    /// may carry ([`crate::Limits::max_json_frame`]); the message names
    /// the limit and what to send instead.
    TooLarge,
    /// The script failed; the class is the script error's.
    Script(String),
}

impl ErrorClass {
    /// The `ename` on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorClass::EngineDied => "EngineDied",
            ErrorClass::UnknownEngine => "UnknownEngine",
            ErrorClass::NoEngines => "NoEngines",
            ErrorClass::NoTargets => "NoTargets",
            ErrorClass::UnknownMessageType => "UnknownMessageType",
            ErrorClass::BadRequest => "BadRequest",
            ErrorClass::NotPermitted => "NotPermitted",
            ErrorClass::Timeout => "Timeout",
            ErrorClass::ImpossibleDependency => "ImpossibleDependency",
            ErrorClass::DependencyFailed => "DependencyFailed",
            ErrorClass::HubRestarted => "HubRestarted",
            ErrorClass::DatabaseError => "DatabaseError",
            ErrorClass::Interrupted => "Interrupted",
            ErrorClass::OperationLimit => "OperationLimit",
            ErrorClass::KernelBindFailed => "KernelBindFailed",
            ErrorClass::Undelivered => "Undelivered",
            ErrorClass::Lost => "Lost",
            ErrorClass::Unsupported => "Unsupported",
            ErrorClass::TooLarge => "TooLarge",
            ErrorClass::Script(name) => name,
        }
    }

    /// The class of an `ename`; any name zpar does not define is a script's.
    pub fn parse(ename: &str) -> ErrorClass {
        match ename {
            "EngineDied" => ErrorClass::EngineDied,
            "UnknownEngine" => ErrorClass::UnknownEngine,
            "NoEngines" => ErrorClass::NoEngines,
            "NoTargets" => ErrorClass::NoTargets,
            "UnknownMessageType" => ErrorClass::UnknownMessageType,
            "BadRequest" => ErrorClass::BadRequest,
            "NotPermitted" => ErrorClass::NotPermitted,
            "Timeout" => ErrorClass::Timeout,
            "ImpossibleDependency" => ErrorClass::ImpossibleDependency,
            "DependencyFailed" => ErrorClass::DependencyFailed,
            "HubRestarted" => ErrorClass::HubRestarted,
            "DatabaseError" => ErrorClass::DatabaseError,
            "Interrupted" => ErrorClass::Interrupted,
            "OperationLimit" => ErrorClass::OperationLimit,
            "KernelBindFailed" => ErrorClass::KernelBindFailed,
            "Undelivered" => ErrorClass::Undelivered,
            "Lost" => ErrorClass::Lost,
            "Unsupported" => ErrorClass::Unsupported,
            "TooLarge" => ErrorClass::TooLarge,
            other => ErrorClass::Script(other.to_string()),
        }
    }

    /// Whether the hub refused the request without any engine seeing it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ErrorClass::NoTargets
                | ErrorClass::UnknownMessageType
                | ErrorClass::BadRequest
                | ErrorClass::NotPermitted
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ErrorClass {
    fn from(ename: &str) -> ErrorClass {
        ErrorClass::parse(ename)
    }
}

/// What a client says about a request in its metadata.
///
/// On the mux and control channels `targets` names the engines (the hub fans
/// the request out); on the task channel it restricts where the hub may run
/// it. `after`, `follow` and `retries` apply to load-balanced tasks;
/// `max_operations` and `timeout` bound the work on the engine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestMetadata {
    /// Engine ids (one id or a list on the wire).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "one_or_many"
    )]
    pub targets: Option<Vec<u32>>,
    /// Run only after these msg ids finished successfully.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Run on an engine that ran all of these msg ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow: Vec<String>,
    /// How many times to run it again elsewhere if its engine dies.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// With a `shutdown_request`: stop the hub too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hub: bool,
    /// Rhai operations the engine allows this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_operations: Option<u64>,
    /// Seconds the engine allows this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// The client shares the engine's host (the same boot id): a large
    /// result may come back in a shared segment ([`crate::bulk`]) rather
    /// than in buffer frames. Holds the client's boot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_host: Option<String>,
    /// The request's buffers follow it as this many `stream_chunk`
    /// messages ([`crate::stream`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_frames: Option<u32>,
    /// Set by the hub on a load-balanced task it sends again after its
    /// engine was lost: how many times it was sent before (absent on the
    /// first). It also makes the retry's signed frames, and so its
    /// signature, differ from the first attempt's, which an engine's
    /// replay guard would refuse.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// A name the client gives the request, kept in its task records and
    /// queried like any field (`{"label": {"$glob": "fit-*"}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Set by the hub on a streamed request it relays: the chain of
    /// engines its chunks pass through, in order. The first takes them
    /// from the hub; each other engine takes them from the one before it
    /// (`crate::stream::RELAY_TO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Vec<u32>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `targets`: one id or a list of ids. Read straight off the wire, without
/// serde's buffering of untagged enums: an execute on 1,000 engines carries
/// 1,000 ids, and every one of the 1,000 engines reads them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<u32>>, D::Error> {
    struct Targets;
    const EXPECTED: &str = "`targets`: an engine id or a list of engine ids";
    fn id<E: serde::de::Error>(v: u64) -> std::result::Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("{EXPECTED}, not {v}")))
    }
    impl<'de> serde::de::Visitor<'de> for Targets {
        type Value = Option<Vec<u32>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(
            self,
            d: D2,
        ) -> std::result::Result<Self::Value, D2::Error> {
            d.deserialize_any(Targets)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
            Ok(Some(vec![id(v)?]))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!("{EXPECTED}, not {v}"))),
            }
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(v) = seq.next_element::<u64>()? {
                ids.push(id(v)?);
            }
            Ok(Some(ids))
        }
    }
    d.deserialize_option(Targets)
}

impl RequestMetadata {
    /// Reads zpar's keys from a request's metadata; other keys are ignored
    /// (Jupyter and ipyparallel put their own there).
    pub fn from_map(map: &Map<String, Json>) -> Result<RequestMetadata> {
        from_map("request metadata", map)
    }

    /// The metadata map to send.
    pub fn to_map(&self) -> Map<String, Json> {
        to_map(self)
    }

    /// Marks a request's metadata as followed by `frames` stream chunks,
    /// keeping every other key.
    pub fn mark_streamed(map: &mut Map<String, Json>, frames: u32) {
        map.insert("stream_frames".into(), Json::from(frames));
    }
}

/// What an engine (or the hub, for a reply it makes itself) says about a
/// reply in its metadata.
///
/// The engine is named twice, because ipyparallel's client reads the key
/// `engine` as the engine's uuid (it looks the id up in its own engine
/// table) while zpar's client wants the id: `engine_id` on the wire is
/// [`ReplyMetadata::engine`], `engine` on the wire is
/// [`ReplyMetadata::engine_uuid`]. An integer `engine` (a zpar peer from
/// before this split) still reads as the id.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReplyMetadata {
    /// The engine that ran the request; None for a reply the hub made
    /// without any engine (a refused request). Wire key `engine_id`.
    #[serde(rename = "engine_id", default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<u32>,
    /// The engine's uuid (its identity on the hub's engine sockets), as
    /// ipyparallel reads it. Wire key `engine`.
    #[serde(rename = "engine", default, skip_serializing_if = "Option::is_none")]
    pub engine_uuid: Option<String>,
    /// The request's `follow` dependencies, echoed as ipyparallel reads
    /// them.
    #[serde(default)]
    pub follow: Vec<String>,
    /// The request's `after` dependencies, echoed likewise.
    #[serde(default)]
    pub after: Vec<String>,
    /// The reply's status, repeated here as ipyparallel reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// When the engine started the request (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When the engine finished it (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
    /// What the request printed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    /// What it wrote to stderr.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// The reply's buffers came before it as this many `stream_chunk`
    /// messages ([`crate::stream`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_frames: Option<u32>,
}

impl ReplyMetadata {
    /// Metadata that names the engine replying, by id (zpar) and uuid
    /// (ipyparallel reads it as `engine`), and nothing else.
    ///
    /// ```
    /// use zpar_protocol::ReplyMetadata;
    /// let m = ReplyMetadata::naming(3, "e-3").to_map();
    /// assert_eq!(m["engine"], "e-3");
    /// ```
    pub fn naming(engine: u32, uuid: &str) -> ReplyMetadata {
        ReplyMetadata {
            engine: Some(engine),
            engine_uuid: Some(uuid.to_string()),
            ..Default::default()
        }
    }

    /// Marks a reply's metadata as preceded by `frames` stream chunks,
    /// keeping every other key.
    pub fn mark_streamed(map: &mut Map<String, Json>, frames: u32) {
        map.insert("stream_frames".into(), Json::from(frames));
    }

    /// Reads zpar's keys from a reply's (or an iopub message's) metadata.
    pub fn from_map(map: &Map<String, Json>) -> Result<ReplyMetadata> {
        if map.get("engine").is_some_and(Json::is_number) && !map.contains_key("engine_id") {
            // An older peer's id under `engine`.
            let mut map = map.clone();
            if let Some(id) = map.remove("engine") {
                map.insert("engine_id".into(), id);
            }
            return from_map("reply metadata", &map);
        }
        from_map("reply metadata", map)
    }

    /// Reads a metadata frame as it came; a frame that breaks the contract
    /// reads as empty metadata (the caller logs the error).
    pub fn from_bytes(bytes: &[u8]) -> Result<ReplyMetadata> {
        let map: Map<String, Json> =
            serde_json::from_slice(bytes).map_err(|source| ProtocolError::Contract {
                what: "reply metadata",
                key: None,
                source,
            })?;
        ReplyMetadata::from_map(&map)
    }

    /// The metadata map to send.
    pub fn to_map(&self) -> Map<String, Json> {
        to_map(self)
    }
}

fn from_map<T: serde::de::DeserializeOwned>(
    what: &'static str,
    map: &Map<String, Json>,
) -> Result<T> {
    T::deserialize(map).map_err(|source| {
        // serde names the expected type, not the key: find the key that
        // fails on its own.
        let key = map
            .iter()
            .find(|(k, v)| {
                let alone: Map<String, Json> = [((*k).clone(), (*v).clone())].into_iter().collect();
                T::deserialize(&alone).is_err()
            })
            .map(|(k, _)| k.clone());
        ProtocolError::Contract { what, key, source }
    })
}

fn to_map<T: Serialize>(value: &T) -> Map<String, Json> {
    match serde_json::to_value(value) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The topic of an engine's iopub message: the requesting client's session
/// first, then the message type, then `engine.<id>`; a message of no
/// client's request is `engine.<id>.<msg_type>`, as ipyparallel names its
/// topics. The hub passes clients' subscriptions on to the engines, so an
/// engine sends only what some client subscribed to: a zpar client its own
/// requests' `stream` output ([`iopub_subscription`]); Jupyter's and
/// ipyparallel's clients subscribe to everything and never read the topic.
///
/// ```
/// use zpar_protocol::contract::{iopub_subscription, iopub_topic};
/// let topic = iopub_topic(Some("abc"), 3, "stream");
/// assert_eq!(topic, "abc/stream/engine.3");
/// assert!(topic.starts_with(&iopub_subscription("abc")));
/// assert!(!iopub_topic(Some("abc"), 3, "status").starts_with(&iopub_subscription("abc")));
/// assert_eq!(iopub_topic(None, 3, "status"), "engine.3.status");
/// ```
pub fn iopub_topic(session: Option<&str>, engine: u32, msg_type: &str) -> String {
    match session {
        Some(s) => format!("{s}/{msg_type}/engine.{engine}"),
        None => format!("engine.{engine}.{msg_type}"),
    }
}

/// The iopub prefix a zpar client with `session` subscribes to: the
/// `stream` output of its own requests, the only iopub it reads (see
/// [`iopub_topic`]; values, errors and `busy`/`idle` come in the replies).
pub fn iopub_subscription(session: &str) -> String {
    format!("{session}/stream/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Json) -> Map<String, Json> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn targets_are_one_id_or_many() {
        let one = RequestMetadata::from_map(&map(json!({"targets": 3}))).unwrap();
        assert_eq!(one.targets, Some(vec![3]));
        let many = RequestMetadata::from_map(&map(json!({"targets": [0, 1]}))).unwrap();
        assert_eq!(many.targets, Some(vec![0, 1]));
        let none = RequestMetadata::from_map(&map(json!({"other": "ipyparallel's"}))).unwrap();
        assert_eq!(none, RequestMetadata::default());
        let null = RequestMetadata::from_map(&map(json!({"targets": null}))).unwrap();
        assert_eq!(null.targets, None);
        let all: Vec<u32> = (0..1000).collect();
        let wide = RequestMetadata::from_map(&map(json!({ "targets": all }))).unwrap();
        assert_eq!(wide.targets, Some(all));
    }

    #[test]
    fn broken_metadata_is_an_error_naming_the_key() {
        for (bad, key) in [
            (json!({"targets": "all"}), "targets"),
            (json!({"targets": [-1]}), "targets"),
            (json!({"targets": -1}), "targets"),
            (json!({"targets": 1u64 << 40}), "targets"),
            (json!({"targets": [0, 1.5]}), "targets"),
            (json!({"targets": {"0": 1}}), "targets"),
            (json!({"retries": -2}), "retries"),
            (json!({"after": "m1"}), "after"),
            (json!({"hub": "yes", "ipyparallel": "its own"}), "`hub`"),
        ] {
            let e = RequestMetadata::from_map(&map(bad.clone())).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("request metadata"), "{bad}: {text}");
            assert!(text.contains(key), "{bad}: {text}");
        }
        let e = ReplyMetadata::from_map(&map(json!({"engine_id": "zero"}))).unwrap_err();
        assert!(e.to_string().contains("reply metadata"), "{e}");
        assert!(e.to_string().contains("engine_id"), "{e}");
    }

    #[test]
    fn metadata_round_trips() {
        let req = RequestMetadata {
            targets: Some(vec![1]),
            after: vec!["a".into()],
            follow: vec!["b".into()],
            retries: 2,
            hub: true,
            max_operations: Some(10),
            timeout: Some(1.5),
            shared_host: Some("boot".into()),
            stream_frames: Some(3),
            attempt: 1,
            label: Some("fit-1".into()),
            relay: Some(vec![2, 0, 1]),
        };
        assert_eq!(RequestMetadata::from_map(&req.to_map()).unwrap(), req);
        assert!(RequestMetadata::default().to_map().is_empty());
        let rep = ReplyMetadata {
            engine: Some(4),
            engine_uuid: Some("e-uuid".into()),
            status: Some(Status::Error),
            started: Some("2026-01-01T00:00:00.000000Z".into()),
            completed: None,
            follow: vec!["f".into()],
            after: vec![],
            stdout: "hi\n".into(),
            stderr: String::new(),
            stream_frames: Some(2),
        };
        assert_eq!(ReplyMetadata::from_map(&rep.to_map()).unwrap(), rep);
        let bytes = serde_json::to_vec(&rep.to_map()).unwrap();
        assert_eq!(ReplyMetadata::from_bytes(&bytes).unwrap(), rep);
    }

    #[test]
    fn reply_metadata_names_the_engine_as_ipyparallel_and_zpar_read_it() {
        let rep = ReplyMetadata {
            engine: Some(2),
            engine_uuid: Some("e-uuid".into()),
            status: Some(Status::Ok),
            ..Default::default()
        };
        let m = rep.to_map();
        // ipyparallel: `engine` is the uuid; it also reads follow and after.
        assert_eq!(m["engine"], json!("e-uuid"));
        assert_eq!(m["engine_id"], json!(2));
        assert_eq!(m["status"], json!("ok"));
        assert_eq!(m["follow"], json!([]));
        assert_eq!(m["after"], json!([]));
        // An older peer's integer `engine` is the id.
        let old = ReplyMetadata::from_map(&map(json!({"engine": 3}))).unwrap();
        assert_eq!(old.engine, Some(3));
        assert_eq!(old.engine_uuid, None);
    }

    #[test]
    fn names_round_trip() {
        for c in [Channel::Mux, Channel::Task, Channel::Control] {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("iopub"), None);
        for s in [
            RecordStatus::Pending,
            RecordStatus::Done(Status::Ok),
            RecordStatus::Done(Status::Error),
            RecordStatus::Done(Status::Aborted),
        ] {
            assert_eq!(RecordStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RecordStatus::parse("running"), None);
        for e in [
            ErrorClass::EngineDied,
            ErrorClass::BadRequest,
            ErrorClass::HubRestarted,
            ErrorClass::Unsupported,
            ErrorClass::Script("RuntimeError".into()),
        ] {
            assert_eq!(ErrorClass::parse(e.as_str()), e);
        }
        assert!(ErrorClass::NoTargets.is_refusal());
        assert!(!ErrorClass::EngineDied.is_refusal());
    }
}
