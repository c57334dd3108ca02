//! Message contents: one [`Content`] enum with a variant per message type.
//!
//! Names follow ipyparallel's where one exists. Values (function arguments,
//! pushed variables, results) travel as encoded JSON from [`crate::value`],
//! with their bulk data in the message's buffers.

use crate::error::parse_json;
use crate::error::Result;
use crate::kernel::{
    BindKernelRequest, CommClose, CommInfoReply, CommInfoRequest, CommMsg, CommOpen, CompleteReply,
    CompleteRequest, InspectReply, InspectRequest, IsCompleteReply, IsCompleteRequest,
    KernelInfoReply, KernelInfoRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// Outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It worked.
    #[default]
    Ok,
    /// It failed; the reply says why.
    Error,
    /// It was aborted before it ran.
    Aborted,
}

/// The reply to a request that runs on an engine (execute, apply, push,
/// pull) or to a control or query request. On error, `ename`/`evalue` and,
/// for script errors, `line`/`column` say what happened.
///
/// On the wire it is what Jupyter's messaging spec requires (see its
/// `Serialize`): an error always carries `ename`, `evalue` and a
/// `traceback` list (possibly empty); a reply with an `execution_count`
/// and status ok (an engine's reply to a request it ran) also carries
/// `user_expressions` ({}) and `payload` ([]), as an `execute_reply` must.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct TaskReply {
    /// ok, error or aborted.
    pub status: Status,
    /// The encoded result value, if the request produced one.
    #[serde(default)]
    pub result: Option<Json>,
    /// The engine's execution counter after this request.
    #[serde(default)]
    pub execution_count: Option<u64>,
    /// Error class (`RemoteError`, `EngineDied`, `UnknownName`, ...).
    #[serde(default)]
    pub ename: Option<String>,
    /// Error message.
    #[serde(default)]
    pub evalue: Option<String>,
    /// Lines of context for the error.
    #[serde(default)]
    pub traceback: Vec<String>,
    /// Script line of the error, 1-based.
    #[serde(default)]
    pub line: Option<u32>,
    /// Script column of the error, 1-based.
    #[serde(default)]
    pub column: Option<u32>,
    /// The engine that produced the reply.
    #[serde(default)]
    pub engine_id: Option<u32>,
    /// ipyparallel's `engine_info` (`engine_uuid`, `engine_id`, `method`),
    /// set by an engine on an error of a request it ran. ipyparallel's
    /// client waits for the engine's iopub `idle` when it is present, so a
    /// reply the hub makes never carries it.
    #[serde(default)]
    pub engine_info: Option<Json>,
    /// A `shutdown_reply` of a Jupyter kernel: whether the shutdown was
    /// asked as a restart (Jupyter's field, echoed).
    #[serde(default)]
    pub restart: Option<bool>,
}

impl Serialize for TaskReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let error = self.status == Status::Error;
        let ran = self.status == Status::Ok && self.execution_count.is_some();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("status", &self.status)?;
        if let Some(r) = &self.result {
            m.serialize_entry("result", r)?;
        }
        if let Some(n) = self.execution_count {
            m.serialize_entry("execution_count", &n)?;
        }
        if error || self.ename.is_some() {
            m.serialize_entry("ename", self.ename.as_deref().unwrap_or("Error"))?;
        }
        if error || self.evalue.is_some() {
            m.serialize_entry("evalue", self.evalue.as_deref().unwrap_or(""))?;
        }
        if error || !self.traceback.is_empty() {
            m.serialize_entry("traceback", &self.traceback)?;
        }
        if ran {
            m.serialize_entry("user_expressions", &serde_json::Map::new())?;
            m.serialize_entry("payload", &[] as &[Json])?;
        }
        if let Some(l) = self.line {
            m.serialize_entry("line", &l)?;
        }
        if let Some(c) = self.column {
            m.serialize_entry("column", &c)?;
        }
        if let Some(e) = self.engine_id {
            m.serialize_entry("engine_id", &e)?;
        }
        if let Some(i) = &self.engine_info {
            m.serialize_entry("engine_info", i)?;
        }
        if let Some(r) = self.restart {
            m.serialize_entry("restart", &r)?;
        }
        m.end()
    }
}

impl TaskReply {
    /// A plain success.
    pub fn ok() -> TaskReply {
        TaskReply::default()
    }

    /// A success carrying an encoded result.
    pub fn with_result(result: Json) -> TaskReply {
        TaskReply {
            result: Some(result),
            ..TaskReply::default()
        }
    }

    /// A failure of class `ename` with message `evalue`.
    pub fn error(ename: &str, evalue: impl Into<String>) -> TaskReply {
        TaskReply {
            status: Status::Error,
            ename: Some(ename.to_string()),
            evalue: Some(evalue.into()),
            ..TaskReply::default()
        }
    }

    /// A failure as above whose traceback is the one line
    /// `ename: evalue`, for peers (ipyparallel, Jupyter front ends) that
    /// show the traceback rather than the name and message.
    pub fn error_with_traceback(ename: &str, evalue: impl Into<String>) -> TaskReply {
        let evalue = evalue.into();
        TaskReply {
            traceback: vec![format!("{ename}: {evalue}")],
            ..TaskReply::error(ename, evalue)
        }
    }
}

/// An engine asks the hub for an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegistrationRequest {
    /// The engine's uuid; also its identity on the hub's engine sockets.
    pub uuid: String,
    /// An id the engine had before (a hub restart); honoured if free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// The address the engine's peers reach it at (its host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Where other engines send it the chunks of a value the hub relays
    /// through them (`tcp://host:port`, see [`crate::stream::RELAY_TO`]);
    /// None: the hub sends it every chunk itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// The identity of the heartbeat connection this engine shares with
    /// the other engines of its process (one connection carries the
    /// heartbeats of them all); the hub counts its open connections by it.
    /// None only from an engine older than this field, which the hub
    /// refuses (it cannot serve its heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
}

/// The hub's answer to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegistrationReply {
    /// ok or error.
    pub status: Status,
    /// The engine's id.
    pub id: u32,
    /// Heartbeat period in milliseconds.
    pub hb_period_ms: u64,
    /// This hub's instance (random per start), the prefix of its pings: an
    /// engine that sees pings of another instance knows the hub restarted.
    #[serde(default)]
    pub hub_instance: String,
    /// Why registration failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evalue: Option<String>,
    /// The CURVE public key of the engines' communicators (Z85): every
    /// engine's ROUTER and PUB are CURVE servers with this pair, and its
    /// DEALER and SUB clients of it. Absent when the hub runs without
    /// CURVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_publickey: Option<String>,
    /// The secret half of that pair (Z85). The reply travels on the
    /// CURVE-encrypted registration channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_secretkey: Option<String>,
}

/// An engine leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UnregistrationRequest {
    /// The leaving engine's id.
    pub id: u32,
}

/// An engine joined or left (notification channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EngineNotification {
    /// The engine's id.
    pub id: u32,
    /// The engine's uuid.
    pub uuid: String,
    /// Why it left (`unregistered`, `heartbeat timeout`), for unregistration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A client asks to connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConnectionRequest {}

/// The engine table, sent to a connecting client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConnectionReply {
    /// ok.
    pub status: Status,
    /// Engine id → uuid.
    pub engines: BTreeMap<u32, String>,
    /// Engine id → the host it runs on, for engines that said.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<u32, String>,
    /// The hub's instance, random per start (the prefix of its heartbeat
    /// pings): a client that knows it from connecting tells a hub restarted
    /// in place from the one it connected to, whatever pings it heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_instance: Option<String>,
}

/// Asks for queue lengths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QueueRequest {
    /// Engines to report; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<u32>>,
    /// Include the msg ids of queued tasks.
    #[serde(default)]
    pub verbose: bool,
    /// Include each engine's and the hub's vitals (memory, CPU share, age
    /// of the last heartbeat): a zpar extension, for the dashboard.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vitals: bool,
}

/// One engine's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EngineQueue {
    /// Requests sent to it and not yet answered.
    pub queue: u64,
    /// Requests it has answered.
    pub completed: u64,
    /// Load-balanced tasks among `queue`.
    pub tasks: u64,
    /// With `verbose`: the msg ids in its queue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msg_ids: Vec<String>,
    /// When asked for: its process's RSS, its CPU share and how long ago
    /// its last heartbeat came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vitals: Option<crate::vitals::EngineVitals>,
}

/// Queue lengths per engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QueueReply {
    /// ok.
    pub status: Status,
    /// Engine id → its queue.
    pub engines: BTreeMap<u32, EngineQueue>,
    /// Load-balanced tasks not yet assigned to an engine.
    pub unassigned: u64,
    /// When vitals were asked for: the hub's memory and CPU share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<crate::vitals::HubVitals>,
    /// ipyparallel's shape, as its `Client.queue_status` reads it: each
    /// engine's queue again, under its id as a top-level key. Any other
    /// top-level key reads in here.
    #[serde(flatten)]
    pub ipyparallel: BTreeMap<String, Json>,
}

/// Asks for the results of earlier requests by msg id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResultRequest {
    /// The msg ids.
    pub msg_ids: Vec<String>,
}

/// Results by msg id. Finished ones come in `results` (records as JSON),
/// with their buffers in the message's buffers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResultReply {
    /// ok, or error if an id is unknown.
    pub status: Status,
    /// Ids still running.
    pub pending: Vec<String>,
    /// Ids finished.
    pub completed: Vec<String>,
    /// Finished records by msg id.
    #[serde(default)]
    pub results: BTreeMap<String, Json>,
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evalue: Option<String>,
    /// ipyparallel's shape, as its `Client.get_result` reads it: each
    /// finished msg id that ran on one engine as a top-level key, holding
    /// `header`, `result_header`, `result_content`, `result_metadata` and
    /// `io`. Any other top-level key reads in here.
    #[serde(flatten)]
    pub ipyparallel: BTreeMap<String, Json>,
}

/// Asks for every msg id the hub has recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HistoryRequest {}

/// Every recorded msg id, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HistoryReply {
    /// ok.
    pub status: Status,
    /// The msg ids.
    pub history: Vec<String>,
}

/// Queries task records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DbRequest {
    /// Conditions on record fields: `{field: value}` for equality or
    /// `{field: {"$gt": v, "$lt": w, ...}}` for ranges.
    pub query: Json,
    /// Fields to return; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

/// Matching task records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DbReply {
    /// ok or error.
    pub status: Status,
    /// The records.
    pub records: Vec<Json>,
    /// Why the query failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evalue: Option<String>,
    /// ipyparallel's buffer counts per record (its `db_query` reads both
    /// keys); zpar records travel without buffers, so always null.
    #[serde(default)]
    pub buffer_lens: Option<Vec<u64>>,
    /// As `buffer_lens`, for the records' results.
    #[serde(default)]
    pub result_buffer_lens: Option<Vec<u64>>,
}

/// Forgets finished task records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PurgeRequest {
    /// These msg ids.
    #[serde(default)]
    pub msg_ids: Vec<String>,
    /// Or every finished record.
    #[serde(default)]
    pub all: bool,
}

/// Runs earlier requests again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResubmitRequest {
    /// The msg ids to run again.
    pub msg_ids: Vec<String>,
}

/// Old msg id → new msg id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResubmitReply {
    /// ok or error.
    pub status: Status,
    /// Old → new msg ids.
    pub resubmitted: BTreeMap<String, String>,
    /// New msg id → the engines it went to (empty for a load-balanced task,
    /// which the hub assigns later).
    #[serde(default)]
    pub engines: BTreeMap<String, Vec<u32>>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evalue: Option<String>,
}

/// Runs code in the engine's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecuteRequest {
    /// Rhai source.
    pub code: String,
    /// Don't publish the result on iopub.
    #[serde(default)]
    pub silent: bool,
    /// Count it in the execution counter (Jupyter field).
    #[serde(default = "yes")]
    pub store_history: bool,
    /// Jupyter field, unused.
    #[serde(default)]
    pub user_expressions: BTreeMap<String, String>,
    /// Jupyter field, always false: engines have no stdin.
    #[serde(default)]
    pub allow_stdin: bool,
    /// Jupyter's: after an error, abort the cells waiting behind this one
    /// (a kernel's shell honours it; the hub's requests do not).
    #[serde(default)]
    pub stop_on_error: bool,
}

fn yes() -> bool {
    true
}

/// Calls a function on the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ApplyRequest {
    /// A closure (`|a, b| a + b`), a function definition (`fn f(a) {..}`)
    /// or the name of a function or function-valued variable on the engine.
    pub f: String,
    /// Encoded argument values; `{"$zpar": "ref", "name": n}` names an engine
    /// variable.
    #[serde(default)]
    pub args: Vec<Json>,
}

/// Sets variables in the engine's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PushRequest {
    /// Name → encoded value.
    pub namespace: BTreeMap<String, Json>,
}

/// Reads variables from the engine's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PullRequest {
    /// The names.
    pub names: Vec<String>,
    /// Reply with the one value rather than an array.
    #[serde(default)]
    pub single: bool,
}

/// Aborts queued requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AbortRequest {
    /// These msg ids, or every queued one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_ids: Option<Vec<String>>,
    /// zpar's own: stop the running request too, if it is one of
    /// `msg_ids` (or any, when absent); it is answered `aborted`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub running: bool,
}

/// Hub → engine: requests the hub forwarded to this engine and has heard
/// nothing back about for a while (zpar's own message). It goes on the
/// channel those requests went by, so it arrives after every one of them
/// that arrived at all: an id the engine has not seen by then was lost on
/// the way (a connection that dropped and came back).
///
/// ```
/// use zpar_protocol::{Content, RecallRequest};
/// let ask = Content::RecallRequest(RecallRequest { msg_ids: vec!["m1".into()] });
/// assert_eq!(ask.msg_type(), "recall_request");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RecallRequest {
    /// The requests' msg ids.
    pub msg_ids: Vec<String>,
}

/// Engine → hub: the answer to a [`RecallRequest`]. The replies the engine
/// still held went out again just before it; the ids it could not answer
/// that way are named here. Ids it names in neither list are still being
/// worked on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RecallReply {
    /// Ok.
    pub status: Status,
    /// Ids the engine has no trace of.
    #[serde(default)]
    pub unknown: Vec<String>,
    /// How many of the latest requests on this channel the engine
    /// remembers (None: every one since it started). An unknown id with
    /// fewer requests sent after it than this never arrived.
    #[serde(default)]
    pub remembered: Option<u64>,
    /// Ids the engine answered whose replies it no longer holds (too
    /// large, or too many since).
    #[serde(default)]
    pub answered_not_kept: Vec<String>,
}

/// Stops the running script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InterruptRequest {}

/// Empties the engine's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClearRequest {}

/// Stops an engine, or (with `hub`) the whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ShutdownRequest {
    /// Jupyter field, unused.
    #[serde(default)]
    pub restart: bool,
    /// Stop the hub too, after the engines.
    #[serde(default)]
    pub hub: bool,
}

/// A stream of output from an engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stream {
    /// `stdout` or `stderr`.
    pub name: String,
    /// The text.
    pub text: String,
}

/// The code an engine is about to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecuteInput {
    /// The code.
    pub code: String,
    /// The execution counter.
    pub execution_count: u64,
}

/// The value of the last expression of an execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecuteResult {
    /// The execution counter.
    pub execution_count: u64,
    /// MIME bundle; `text/plain` holds the display form.
    pub data: BTreeMap<String, Json>,
    /// Jupyter field.
    #[serde(default)]
    pub metadata: BTreeMap<String, Json>,
}

/// An error, as published on iopub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ErrorContent {
    /// Error class.
    pub ename: String,
    /// Error message.
    pub evalue: String,
    /// Context lines.
    #[serde(default)]
    pub traceback: Vec<String>,
}

/// One piece of a large request's or reply's buffers, sent as its own
/// message so that the hub forwards piece k while piece k+1 arrives (see
/// [`crate::stream`]). Its parent header is the request's; its one buffer
/// frame is the piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StreamChunk {
    /// Which piece, from 0.
    pub index: u32,
    /// How many pieces the stream has.
    pub of: u32,
}

/// busy / idle / starting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusContent {
    /// The state.
    pub execution_state: String,
}

macro_rules! contents {
    ($($(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal,)*) => {
        /// Every message type zpar knows, one variant each.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Content {
            $($(#[$doc])* $variant($ty),)*
            /// A type zpar does not know; kept so a peer can answer it.
            Unknown {
                /// The header's msg_type.
                msg_type: String,
                /// The content as it came.
                content: Json,
            },
        }

        /// Every message type zpar knows, without its content: what a
        /// header's `msg_type` names, read once through the one table.
        ///
        /// ```
        /// use zpar_protocol::MessageType;
        /// assert_eq!(MessageType::parse("stream_chunk"), Some(MessageType::StreamChunk));
        /// assert_eq!(MessageType::StreamChunk.name(), "stream_chunk");
        /// assert_eq!(MessageType::parse("frobnicate_request"), None);
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $($(#[$doc])* $variant,)*
        }

        impl MessageType {
            /// The type a wire name names; None for a type zpar does not know.
            pub fn parse(msg_type: &str) -> Option<MessageType> {
                match msg_type {
                    $($name => Some(MessageType::$variant),)*
                    _ => None,
                }
            }

            /// The wire name.
            pub fn name(self) -> &'static str {
                match self {
                    $(MessageType::$variant => $name,)*
                }
            }
        }

        impl Content {
            /// The wire name of this message type.
            pub fn msg_type(&self) -> &str {
                match self {
                    $(Content::$variant(_) => $name,)*
                    Content::Unknown { msg_type, .. } => msg_type,
                }
            }

            /// Parses content JSON according to its header's msg_type.
            pub fn from_json(msg_type: &str, bytes: &[u8]) -> Result<Content> {
                match msg_type {
                    $($name => Ok(Content::$variant(parse_json(concat!("content of ", $name), bytes)?)),)*
                    other => Ok(Content::Unknown {
                        msg_type: other.to_string(),
                        content: parse_json("content", bytes)?,
                    }),
                }
            }

            /// Serializes the content. A reply with status error always
            /// carries `ename`, `evalue` and `traceback` (Jupyter's rule),
            /// whatever its type.
            pub fn to_json(&self) -> Vec<u8> {
                let checked = matches!(
                    self,
                    Content::ResultReply(_)
                        | Content::DbReply(_)
                        | Content::ResubmitReply(_)
                        | Content::HistoryReply(_)
                        | Content::QueueReply(_)
                        | Content::ConnectionReply(_)
                        | Content::RegistrationReply(_)
                        | Content::Unknown { .. }
                );
                let r = if checked {
                    let mut v = match self {
                        $(Content::$variant(c) => serde_json::to_value(c),)*
                        Content::Unknown { content, .. } => Ok(content.clone()),
                    }
                    .expect("contents serialize");
                    conform_error(&mut v);
                    serde_json::to_vec(&v)
                } else {
                    match self {
                        $(Content::$variant(c) => serde_json::to_vec(c),)*
                        Content::Unknown { content, .. } => serde_json::to_vec(content),
                    }
                };
                r.expect("contents serialize")
            }
        }
    };
}

contents! {
    /// Engine → hub: give me an id.
    RegistrationRequest(RegistrationRequest) = "registration_request",
    /// Hub → engine: your id.
    RegistrationReply(RegistrationReply) = "registration_reply",
    /// Engine → hub: I am leaving.
    UnregistrationRequest(UnregistrationRequest) = "unregistration_request",
    /// Hub → engine: noted.
    UnregistrationReply(TaskReply) = "unregistration_reply",
    /// Hub → clients: an engine joined.
    RegistrationNotification(EngineNotification) = "registration_notification",
    /// Hub → clients: an engine left.
    UnregistrationNotification(EngineNotification) = "unregistration_notification",
    /// Client → hub: hello.
    ConnectionRequest(ConnectionRequest) = "connection_request",
    /// Hub → client: the engines.
    ConnectionReply(ConnectionReply) = "connection_reply",
    /// Client → hub: queue lengths.
    QueueRequest(QueueRequest) = "queue_request",
    /// Hub → client: queue lengths.
    QueueReply(QueueReply) = "queue_reply",
    /// Client → hub: results by msg id.
    ResultRequest(ResultRequest) = "result_request",
    /// Hub → client: results.
    ResultReply(ResultReply) = "result_reply",
    /// Client → hub: all msg ids.
    HistoryRequest(HistoryRequest) = "history_request",
    /// Hub → client: all msg ids.
    HistoryReply(HistoryReply) = "history_reply",
    /// Client → hub: query task records.
    DbRequest(DbRequest) = "db_request",
    /// Hub → client: task records.
    DbReply(DbReply) = "db_reply",
    /// Client → hub: forget records.
    PurgeRequest(PurgeRequest) = "purge_request",
    /// Hub → client: forgotten.
    PurgeReply(TaskReply) = "purge_reply",
    /// Client → hub: run again.
    ResubmitRequest(ResubmitRequest) = "resubmit_request",
    /// Hub → client: the new ids.
    ResubmitReply(ResubmitReply) = "resubmit_reply",
    /// Run code.
    ExecuteRequest(ExecuteRequest) = "execute_request",
    /// Code ran.
    ExecuteReply(TaskReply) = "execute_reply",
    /// Call a function.
    ApplyRequest(ApplyRequest) = "apply_request",
    /// The function returned.
    ApplyReply(TaskReply) = "apply_reply",
    /// Set variables.
    PushRequest(PushRequest) = "push_request",
    /// Variables set.
    PushReply(TaskReply) = "push_reply",
    /// Read variables.
    PullRequest(PullRequest) = "pull_request",
    /// The variables.
    PullReply(TaskReply) = "pull_reply",
    /// Abort queued requests.
    AbortRequest(AbortRequest) = "abort_request",
    /// Aborted.
    AbortReply(TaskReply) = "abort_reply",
    /// Stop the running script.
    InterruptRequest(InterruptRequest) = "interrupt_request",
    /// Interrupted.
    InterruptReply(TaskReply) = "interrupt_reply",
    /// Empty the namespace.
    ClearRequest(ClearRequest) = "clear_request",
    /// Emptied.
    ClearReply(TaskReply) = "clear_reply",
    /// Stop.
    ShutdownRequest(ShutdownRequest) = "shutdown_request",
    /// Stopping.
    ShutdownReply(TaskReply) = "shutdown_reply",
    /// A piece of a large request's or reply's buffers.
    StreamChunk(StreamChunk) = "stream_chunk",
    /// Output text (iopub).
    Stream(Stream) = "stream",
    /// Code about to run (iopub).
    ExecuteInput(ExecuteInput) = "execute_input",
    /// An execute's value (iopub).
    ExecuteResult(ExecuteResult) = "execute_result",
    /// An error (iopub).
    Error(ErrorContent) = "error",
    /// Busy or idle (iopub).
    Status(StatusContent) = "status",
    /// Jupyter: who is this kernel?
    KernelInfoRequest(KernelInfoRequest) = "kernel_info_request",
    /// Jupyter: the kernel's protocol, implementation and language.
    KernelInfoReply(KernelInfoReply) = "kernel_info_reply",
    /// Jupyter: is this code ready to run?
    IsCompleteRequest(IsCompleteRequest) = "is_complete_request",
    /// Jupyter: complete, incomplete or invalid.
    IsCompleteReply(IsCompleteReply) = "is_complete_reply",
    /// Jupyter: completions at a cursor.
    CompleteRequest(CompleteRequest) = "complete_request",
    /// Jupyter: the completions.
    CompleteReply(CompleteReply) = "complete_reply",
    /// Jupyter: what is the name at a cursor?
    InspectRequest(InspectRequest) = "inspect_request",
    /// Jupyter: its type and value.
    InspectReply(InspectReply) = "inspect_reply",
    /// Jupyter: which comms are open?
    CommInfoRequest(CommInfoRequest) = "comm_info_request",
    /// Jupyter: the open comms.
    CommInfoReply(CommInfoReply) = "comm_info_reply",
    /// Jupyter: a front end opens a comm (shell).
    CommOpen(CommOpen) = "comm_open",
    /// Jupyter: a message on a comm (shell).
    CommMsg(CommMsg) = "comm_msg",
    /// Jupyter: a comm closed (iopub, or shell from a front end).
    CommClose(CommClose) = "comm_close",
    /// Hub → engine: what became of these requests?
    RecallRequest(RecallRequest) = "recall_request",
    /// Engine → hub: the ids it could not answer again.
    RecallReply(RecallReply) = "recall_reply",
    /// Serve the Jupyter kernel protocol too (control).
    BindKernelRequest(BindKernelRequest) = "bind_kernel_request",
    /// Bound: the kernel's connection (control).
    BindKernelReply(TaskReply) = "bind_kernel_reply",
}

/// Gives an error content (`"status": "error"`) the fields Jupyter's spec
/// makes mandatory in every error: `ename`, `evalue`, `traceback`.
fn conform_error(v: &mut Json) {
    let Some(m) = v.as_object_mut() else { return };
    if m.get("status").and_then(Json::as_str) != Some("error") {
        return;
    }
    m.entry("ename").or_insert_with(|| Json::from("Error"));
    m.entry("evalue").or_insert_with(|| Json::from(""));
    m.entry("traceback").or_insert_with(|| Json::Array(vec![]));
}

impl Content {
    /// The reply payload, for the reply types that carry a [`TaskReply`].
    pub fn task_reply(&self) -> Option<&TaskReply> {
        match self {
            Content::ExecuteReply(r)
            | Content::ApplyReply(r)
            | Content::PushReply(r)
            | Content::PullReply(r)
            | Content::AbortReply(r)
            | Content::InterruptReply(r)
            | Content::ClearReply(r)
            | Content::ShutdownReply(r)
            | Content::PurgeReply(r)
            | Content::BindKernelReply(r)
            | Content::UnregistrationReply(r) => Some(r),
            _ => None,
        }
    }

    /// The reply type that answers a request type, if zpar serves it.
    pub fn reply_type(request_type: &str) -> Option<&'static str> {
        TASK_REPLIES
            .iter()
            .find(|(req, _)| *req == request_type)
            .map(|(_, rep)| *rep)
    }

    /// The reply type for any request type: zpar's pairing where it has
    /// one, else Jupyter's convention (`foo_request` → `foo_reply`), so even
    /// a request nobody serves can be answered.
    pub fn reply_type_for(request_type: &str) -> String {
        match Content::reply_type(request_type) {
            Some(r) => r.to_string(),
            None => format!("{}_reply", request_type.trim_end_matches("_request")),
        }
    }

    /// A [`TaskReply`]-carrying content of type `reply_type`. Reply types
    /// that do not carry a [`TaskReply`] become [`Content::Unknown`].
    pub fn task_reply_of(reply_type: &str, reply: TaskReply) -> Content {
        let wrap: fn(TaskReply) -> Content = match MessageType::parse(reply_type) {
            Some(MessageType::ExecuteReply) => Content::ExecuteReply,
            Some(MessageType::ApplyReply) => Content::ApplyReply,
            Some(MessageType::PushReply) => Content::PushReply,
            Some(MessageType::PullReply) => Content::PullReply,
            Some(MessageType::AbortReply) => Content::AbortReply,
            Some(MessageType::InterruptReply) => Content::InterruptReply,
            Some(MessageType::ClearReply) => Content::ClearReply,
            Some(MessageType::ShutdownReply) => Content::ShutdownReply,
            Some(MessageType::PurgeReply) => Content::PurgeReply,
            Some(MessageType::UnregistrationReply) => Content::UnregistrationReply,
            Some(MessageType::BindKernelReply) => Content::BindKernelReply,
            _ => {
                return Content::Unknown {
                    msg_type: reply_type.to_string(),
                    content: serde_json::to_value(&reply).expect("replies serialize"),
                }
            }
        };
        wrap(reply)
    }

    /// The reply to a request of type `request_type`, carrying `reply`:
    /// its paired type from [`TASK_REPLIES`], else Jupyter's convention
    /// (see [`Content::reply_type_for`]).
    ///
    /// ```
    /// use zpar_protocol::{Content, TaskReply};
    /// let c = Content::reply_to("execute_request", TaskReply::ok());
    /// assert_eq!(c.msg_type(), "execute_reply");
    /// assert_eq!(Content::reply_to("frob_request", TaskReply::ok()).msg_type(), "frob_reply");
    /// ```
    pub fn reply_to(request_type: &str, reply: TaskReply) -> Content {
        match Content::reply_type(request_type) {
            Some(paired) => Content::task_reply_of(paired, reply),
            None => Content::task_reply_of(&Content::reply_type_for(request_type), reply),
        }
    }
}

/// Every request type answered by a [`TaskReply`], with its reply type: the
/// one place the pairing is written.
pub const TASK_REPLIES: &[(&str, &str)] = &[
    ("execute_request", "execute_reply"),
    ("apply_request", "apply_reply"),
    ("push_request", "push_reply"),
    ("pull_request", "pull_reply"),
    ("abort_request", "abort_reply"),
    ("interrupt_request", "interrupt_reply"),
    ("clear_request", "clear_reply"),
    ("shutdown_request", "shutdown_reply"),
    ("purge_request", "purge_reply"),
    ("unregistration_request", "unregistration_reply"),
    ("bind_kernel_request", "bind_kernel_reply"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_by_type() {
        let c = Content::ExecuteRequest(ExecuteRequest {
            code: "1 + 1".into(),
            ..Default::default()
        });
        let back = Content::from_json(c.msg_type(), &c.to_json()).unwrap();
        assert_eq!(back, c);
        let r = Content::ApplyReply(TaskReply::error("RemoteError", "boom"));
        assert_eq!(Content::from_json("apply_reply", &r.to_json()).unwrap(), r);
    }

    fn json_of(c: &Content) -> Json {
        serde_json::from_slice(&c.to_json()).unwrap()
    }

    #[test]
    fn every_error_carries_ename_evalue_and_a_traceback_list() {
        // Jupyter's spec: all three, always; the traceback may be empty.
        let e = json_of(&Content::ExecuteReply(TaskReply::error(
            "NoTargets",
            "none",
        )));
        assert_eq!(e["ename"], "NoTargets");
        assert_eq!(e["evalue"], "none");
        assert_eq!(e["traceback"], serde_json::json!([]));
        let bare = TaskReply {
            status: Status::Error,
            ..Default::default()
        };
        let e = json_of(&Content::ApplyReply(bare));
        assert!(e["ename"].is_string() && e["evalue"].is_string(), "{e}");
        assert!(e["traceback"].is_array(), "{e}");
        let tb = TaskReply::error_with_traceback("PickledPython", "no");
        assert_eq!(tb.traceback, vec!["PickledPython: no".to_string()]);
        // Replies that are not TaskReplies too.
        let db = json_of(&Content::DbReply(DbReply {
            status: Status::Error,
            evalue: Some("bad query".into()),
            ..Default::default()
        }));
        assert_eq!(db["evalue"], "bad query");
        assert!(
            db["ename"].is_string() && db["traceback"].is_array(),
            "{db}"
        );
        let ok = json_of(&Content::DbReply(DbReply::default()));
        assert!(ok.get("ename").is_none(), "{ok}");
        // ipyparallel's db_query reads both keys.
        assert!(ok["buffer_lens"].is_null() && ok["result_buffer_lens"].is_null());
    }

    #[test]
    fn an_ok_execute_reply_has_jupyters_fields() {
        let r = TaskReply {
            execution_count: Some(3),
            ..TaskReply::ok()
        };
        let v = json_of(&Content::ExecuteReply(r.clone()));
        assert_eq!(v["status"], "ok");
        assert_eq!(v["execution_count"], 3);
        assert_eq!(v["user_expressions"], serde_json::json!({}));
        assert_eq!(v["payload"], serde_json::json!([]));
        assert!(
            v.get("ename").is_none() && v.get("traceback").is_none(),
            "{v}"
        );
        // And it still reads back as the same reply.
        let back = Content::from_json("execute_reply", &Content::ExecuteReply(r.clone()).to_json());
        assert_eq!(back.unwrap(), Content::ExecuteReply(r));
    }

    #[test]
    fn unknown_types_keep_their_json() {
        let c = Content::from_json("frobnicate_request", br#"{"x": 1}"#).unwrap();
        assert_eq!(c.msg_type(), "frobnicate_request");
        assert!(matches!(c, Content::Unknown { .. }));
    }

    #[test]
    fn wrong_shapes_name_the_type() {
        let e = Content::from_json("execute_request", br#"{"code": 5}"#).unwrap_err();
        assert!(e.to_string().contains("execute_request"), "{e}");
        let e = Content::from_json("registration_reply", br#"{}"#).unwrap_err();
        let shown = crate::error::Chain(&e).to_string();
        assert!(shown.contains("missing field"), "{shown}");
    }

    #[test]
    fn every_request_with_a_reply_maps_back() {
        for req in [
            "execute_request",
            "apply_request",
            "pull_request",
            "shutdown_request",
        ] {
            let rep = Content::reply_type(req).unwrap();
            let c = Content::task_reply_of(rep, TaskReply::ok());
            assert_eq!(c.msg_type(), rep);
            assert!(c.task_reply().is_some());
        }
        for (req, rep) in TASK_REPLIES {
            assert_eq!(Content::reply_type_for(req), *rep);
            let c = Content::task_reply_of(rep, TaskReply::error("BadRequest", "x"));
            assert_eq!(c.msg_type(), *rep);
            assert!(c.task_reply().is_some(), "{rep} carries a TaskReply");
        }
        assert_eq!(Content::reply_type_for("frob_request"), "frob_reply");
    }
}
