//! The hub's logic as a state machine with no I/O.
//!
//! [`HubCore::handle`] takes one [`Event`] — a message from a client or an
//! engine, an engine lost, a tick — and the current time, and returns the
//! [`Action`]s to perform, in order: frames to send to an engine or a client,
//! a notification to publish, records to commit, heartbeats to start or stop
//! watching. The poll loop in [`crate::hub`] only receives frames, calls
//! `handle` and performs the actions; nothing here touches a socket, a clock
//! or a thread, so every rule below is unit-tested by feeding events and
//! reading actions.
//!
//! What the core owns:
//!
//! - the engine table ([`registry`]) and the load-balancing choice
//!   ([`scheduler`]);
//! - fan-out of a direct request to its targets ([`requests`]), named by
//!   metadata `targets` or, as ipyparallel does, by the engine's uuid as a
//!   routing frame; ipyparallel's broadcasts refused clearly
//!   ([`ipyparallel`]);
//! - the chunk streams of large direct requests and results, forwarded
//!   chunk by chunk as they arrive ([`streams`]);
//! - the load-balanced queue: `after`/`follow` dependencies, retries, and
//!   the fate of an engine's work when it is lost ([`tasks`]);
//! - registration and every query on the registration channel
//!   ([`queries`]);
//! - the task records, and their ordering: every reply to a client waits in
//!   the core until the next [`Event::Tick`], which returns
//!   [`Action::CommitRecords`] *before* those replies. A `kill -9` of the
//!   hub therefore never loses the record of a result a client has seen.
//!
//! Frames stay [`zmq::Message`]s (plain buffers; no socket needed), so a
//! 100 MiB push is forwarded as the frames that came, without a copy.
//!
//! ```
//! use zpar_hub::core::{Action, CoreConfig, Event, HubCore};
//! use zpar_hub::records::Records;
//! use zpar_protocol::{Content, Message, RegistrationRequest, Session};
//!
//! let session = Session::new(b"key", "hmac-sha256", "hub").unwrap();
//! let mut core = HubCore::new(session, CoreConfig::default(), Records::memory(100, 1 << 16));
//! let engine = Session::new(b"key", "hmac-sha256", "engine").unwrap();
//! let mut hello = Message::new(&engine, Content::RegistrationRequest(RegistrationRequest {
//!     uuid: "e0".into(), id: None, host: None, relay: None,
//!     heartbeat: Some("heartbeat-1".into()) }));
//! hello.identities = vec![b"e0".to_vec()];
//! let frames = engine.encode(&hello).into_frames();
//! let actions = core.handle(Event::Query { frames }, 0.0);
//! assert!(matches!(&actions[0], Action::Watch { uuid } if uuid == b"e0"));
//! let sent = core.handle(Event::Tick, 0.0); // the registration reply goes out
//! assert!(sent.iter().any(|a| matches!(a, Action::ToQuery { .. })));
//! ```

mod ipyparallel;
mod queries;
pub mod queued;
mod recall;
pub mod registry;
mod requests;
pub mod scheduler;
mod streams;
mod tasks;
#[cfg(test)]
mod tests;

use crate::records::{Records, TaskRecord};
use queued::QueuedTask;
use registry::Registry;
use scheduler::{Scheduler, Scheme};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;
use tracing::{debug, warn};
use zpar_protocol::error::Chain;
use zpar_protocol::{
    Channel, Content, ErrorClass, Header, Message, RecordStatus, ReplyMetadata, Session, Status,
    TaskReply,
};

/// Frames as they travel: plain buffers, no socket needed.
pub type Frames = Vec<zmq::Message>;

/// Something that happened, for the core to act on.
#[derive(Debug)]
pub enum Event {
    /// A client's message on a client-facing mux, task or control socket;
    /// the first frame is the client's identity.
    ClientRequest {
        /// Which socket.
        channel: Channel,
        /// The frames as received.
        frames: Frames,
    },
    /// An engine's message of the mux, task or control channel, off its
    /// link (the tag taken off); the first frame is the engine's identity
    /// (its uuid).
    EngineReply {
        /// Which channel.
        channel: Channel,
        /// The frames as received.
        frames: Frames,
    },
    /// A message on the registration/query socket (a client connecting or
    /// asking about queues and records) or a registration tagged on an
    /// engine's link (an engine registering or leaving).
    Query {
        /// The frames as received; the first is the sender's identity.
        frames: Frames,
    },
    /// The heartbeat's report of one beat: which engines answered, their
    /// vitals and the hub's.
    Beat(crate::heartbeat::BeatReport),
    /// The heartbeat lost an engine.
    EngineLost {
        /// The engine's uuid.
        uuid: Vec<u8>,
        /// Why.
        reason: LossReason,
    },
    /// A message for an engine that the loop could not deliver within its
    /// bound: the engine's connection for that channel never came up.
    Undeliverable {
        /// Which socket.
        channel: Channel,
        /// The engine's uuid.
        uuid: Vec<u8>,
        /// The message, as in [`Action::ToEngine`].
        frames: Frames,
        /// How long the loop tried, in seconds (for the error message).
        waited: f64,
    },
    /// The end of a batch of events: commit what was recorded, then let the
    /// replies that waited for it go out.
    Tick,
    /// The hub is stopping (a signal): tell every engine to stop.
    Stop,
}

/// Why an engine is no longer registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// It asked to leave.
    Unregistered,
    /// It stopped answering heartbeats: it died, or hangs in native code.
    MissedHeartbeats,
}

impl LossReason {
    /// Whether the engine failed (rather than leaving in good order).
    pub fn is_failure(self) -> bool {
        self == LossReason::MissedHeartbeats
    }

    /// The reason as notifications and error messages give it.
    pub fn describe(self) -> &'static str {
        match self {
            LossReason::Unregistered => "unregistered",
            LossReason::MissedHeartbeats => {
                "missed heartbeats: the engine died or hangs in native code"
            }
        }
    }
}

/// What the poll loop must do, in the order given.
#[derive(Debug)]
pub enum Action {
    /// Send frames to an engine on one of its sockets (the loop puts the
    /// engine's identity in front).
    ToEngine {
        /// Which socket.
        channel: Channel,
        /// The engine's uuid, its identity on the hub's engine sockets.
        uuid: Vec<u8>,
        /// The message.
        frames: Frames,
    },
    /// Send a reply to a client; the frames start with its identity.
    ToClient {
        /// Which client-facing socket.
        channel: Channel,
        /// The message.
        frames: Frames,
    },
    /// Answer on the registration/query socket; the frames start with the
    /// asker's identity.
    ToQuery {
        /// The message.
        frames: Frames,
    },
    /// Publish on the notification socket.
    Notify {
        /// The message.
        frames: Frames,
    },
    /// Make every record written so far durable; nothing after this action
    /// may go out before it is done.
    CommitRecords,
    /// Start watching an engine's heartbeat.
    Watch {
        /// The engine's uuid.
        uuid: Vec<u8>,
    },
    /// Stop watching an engine's heartbeat.
    Forget {
        /// The engine's uuid.
        uuid: Vec<u8>,
    },
    /// Stop the hub once the actions before this one are done.
    Stop,
}

/// [`CoreConfig::no_engine_limit`] unless configured.
pub const DEFAULT_NO_ENGINE_LIMIT: Duration = Duration::from_secs(60);

/// The settings the core needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How the load-balanced queue picks engines.
    pub scheme: Scheme,
    /// The heartbeat period engines are told at registration.
    pub hb_period: Duration,
    /// This hub's instance, random per start: engines notice a restarted
    /// hub by it.
    pub instance: String,
    /// Largest buffers recorded with a request or result, in bytes.
    pub max_buffer_bytes: usize,
    /// The CURVE keypair engines' communicators use, handed to each engine
    /// in its registration reply; None when the hub runs without CURVE.
    pub communicator_keys: Option<zpar_protocol::CurveKeys>,
    /// How long a load-balanced task that is ready to run waits while no
    /// engine is registered to run it (none started yet, or the last one
    /// died) before it fails with `NoEngines`. Time spent waiting for
    /// dependencies, or for busy engines, does not count: a long queue on
    /// live engines is normal. ipyparallel and Dask keep such tasks
    /// forever, which turns a cluster whose engines never came up into a
    /// silent hang; a minute covers engines that are still starting or
    /// re-registering after a hub restart, and the error says what to do.
    pub no_engine_limit: Duration,
    /// Relay a streamed request for several engines along a chain of them
    /// (`streams.rs`); off, the hub sends every engine every chunk.
    pub relay: bool,
    /// How many engines the hub's limit on open files leaves room for (None:
    /// unknown, no limit): past it a registration is refused, saying why,
    /// instead of the engine waiting for connections the hub cannot accept.
    pub engine_room: Option<EngineRoom>,
    /// How long a request forwarded to an engine may go unanswered before
    /// the hub asks the engine what became of it ([`recall`]): long enough
    /// that most requests are answered first, short enough that a request
    /// lost on a dropped connection is noticed while its user still waits.
    pub recall_after: Duration,
}

/// How many engines fit in the hub's limit on open files
/// ([`CoreConfig::engine_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineRoom {
    /// The hub's limit on open files (`ulimit -n`, after raising the soft
    /// limit to the hard one).
    pub files: u64,
    /// Connections to engines it leaves room for: each engine's link, and
    /// a heartbeat connection per process of engines.
    pub connections: usize,
}

impl EngineRoom {
    /// Descriptors kept for the hub itself (its bound sockets, monitors,
    /// the record store) and for a few dozen clients.
    pub const RESERVED_FILES: u64 = 192;

    /// The room a limit of `files` open files leaves.
    ///
    /// ```
    /// use zpar_hub::core::EngineRoom;
    /// let room = EngineRoom::for_files(1024);
    /// assert_eq!(room.connections, 832); // 1024 - 192
    /// assert_eq!(room.engines(1), 416); // each in a process of its own
    /// assert_eq!(room.engines(40), 811); // 40 to a process
    /// assert_eq!(EngineRoom::for_files(100).engines(1), 0);
    /// ```
    pub fn for_files(files: u64) -> EngineRoom {
        EngineRoom {
            files,
            connections: files.saturating_sub(Self::RESERVED_FILES) as usize,
        }
    }

    /// Engines it leaves room for when `per_process` engines share each
    /// heartbeat connection (`zpar engine --count`).
    pub fn engines(&self, per_process: usize) -> usize {
        let k = per_process.max(1);
        self.connections * k / (k + 1)
    }
}

/// [`CoreConfig::recall_after`] unless configured.
pub const DEFAULT_RECALL_AFTER: Duration = Duration::from_secs(30);

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            scheme: Scheme::LeastLoad,
            hb_period: Duration::from_secs(1),
            instance: "hub".into(),
            max_buffer_bytes: 64 << 10,
            communicator_keys: None,
            engine_room: None,
            relay: true,
            no_engine_limit: DEFAULT_NO_ENGINE_LIMIT,
            recall_after: DEFAULT_RECALL_AFTER,
        }
    }
}

/// The hub's state: engines, queue, records. See the [module](self) docs.
pub struct HubCore {
    pub(crate) config: CoreConfig,
    /// Registrations refused for want of room since the last warning, and
    /// when that was (Unix seconds): warned at most every 10 s.
    pub(crate) room_refusals: (u64, f64),
    pub(crate) session: Session,
    pub(crate) registry: Registry,
    pub(crate) scheduler: Scheduler,
    pub(crate) records: Records,
    /// Load-balanced tasks not yet assigned (waiting for dependencies or
    /// engines), oldest first.
    pub(crate) waiting: VecDeque<QueuedTask>,
    /// Replies held until the records they depend on are committed.
    held: Vec<Action>,
    /// Records were written since the last commit.
    uncommitted: bool,
    /// Open chunk streams of large requests ([`streams`]).
    streams: streams::Routes,
    /// When the hub last looked for silent requests ([`recall`]).
    last_recall_scan: f64,
    /// The hub process's memory and CPU share, from the last beat.
    hub_vitals: zpar_protocol::vitals::HubVitals,
}

impl HubCore {
    /// A core over `records`. Records left pending by an earlier run (a
    /// restart on SQLite) can never finish: they are marked failed, and
    /// engine ids already used stay unused.
    pub fn new(session: Session, config: CoreConfig, mut records: Records) -> HubCore {
        let mut registry = Registry::default();
        if let Some(max) = records.max_engine().unwrap_or(None) {
            registry.reserve_ids_below(max + 1);
        }
        let orphans = records.pending().unwrap_or_default();
        if !orphans.is_empty() {
            warn!(
                count = orphans.len(),
                "records pending from before a restart are marked failed"
            );
        }
        for r in orphans {
            let _ = records.update(&r.msg_id, r.engine, |r| {
                r.status = RecordStatus::Done(Status::Error);
                r.ename = Some(ErrorClass::HubRestarted.to_string());
                r.evalue = Some("the hub restarted while this request was pending".into());
            });
        }
        if let Err(e) = records.flush() {
            warn!(error = %Chain(&e), "task records not committed");
        }
        HubCore {
            scheduler: Scheduler::new(config.scheme),
            config,
            room_refusals: (0, f64::NEG_INFINITY),
            session,
            registry,
            records,
            waiting: VecDeque::new(),
            held: Vec::new(),
            uncommitted: false,
            streams: Default::default(),
            last_recall_scan: f64::NEG_INFINITY,
            hub_vitals: Default::default(),
        }
    }

    /// Handles one event at time `now` (Unix seconds), returning what to do.
    pub fn handle(&mut self, event: Event, now: f64) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::ClientRequest { channel, frames } => {
                self.on_client_request(channel, frames, now, &mut out)
            }
            Event::EngineReply { channel, frames } => {
                self.on_engine_reply(channel, frames, now, &mut out)
            }
            Event::Query { frames } => self.on_query(frames, now, &mut out),
            Event::Beat(report) => self.on_beat(report, now),
            Event::EngineLost { uuid, reason } => {
                if let Some(id) = self.registry.id_of(&uuid) {
                    self.engine_lost(id, reason, now, &mut out);
                }
            }
            Event::Undeliverable {
                channel,
                uuid,
                frames,
                waited,
            } => self.on_undeliverable(channel, &uuid, frames, waited, now),
            Event::Tick => {
                self.close_stale_streams(now);
                self.expire_engineless_tasks(now, &mut out);
                self.recall_silent_requests(now, &mut out);
                self.on_tick(&mut out)
            }
            Event::Stop => self.stop_engines(&mut out),
        }
        out
    }

    /// The records, to read (or to commit, when the loop performs
    /// [`Action::CommitRecords`]).
    pub fn records_mut(&mut self) -> &mut Records {
        &mut self.records
    }

    /// The engine table.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Load-balanced tasks not yet assigned.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Makes the random choices of the `random` scheme follow `seed`.
    pub fn seed_scheduler(&mut self, seed: u64) {
        self.scheduler = Scheduler::seeded(self.config.scheme, seed);
    }

    /// Notes who answered a beat and the vitals they reported.
    fn on_beat(&mut self, report: crate::heartbeat::BeatReport, now: f64) {
        self.hub_vitals = report.hub;
        for (uuid, vitals) in report.answered {
            let Some(id) = self.registry.id_of(&uuid) else {
                continue;
            };
            if let Some(engine) = self.registry.get_mut(id) {
                engine.last_beat = Some(now);
                if let Some(v) = vitals {
                    engine.vitals = v;
                }
            }
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        if self.uncommitted {
            out.push(Action::CommitRecords);
            self.uncommitted = false;
        }
        out.append(&mut self.held);
    }

    /// Checks what must always hold, panicking with what broke. Tests call
    /// it after every event.
    pub fn check_invariants(&self) {
        let mut seen_tasks = HashSet::new();
        for e in self.registry.engines() {
            assert_eq!(
                self.registry.id_of(&e.uuid),
                Some(e.id),
                "engine {} is not found by its uuid",
                e.id
            );
            for (msg_id, p) in e.pending() {
                if p.channel == Channel::Task {
                    assert!(
                        seen_tasks.insert(msg_id.clone()),
                        "task {msg_id} is pending on two engines"
                    );
                }
                if !p.client.is_empty() {
                    let recs = self.records.get(msg_id).unwrap_or_default();
                    let rec = recs.iter().find(|r| r.engine == Some(e.id));
                    assert!(
                        rec.is_some_and(|r| r.status == RecordStatus::Pending),
                        "request {msg_id} is pending on engine {} but its record is not",
                        e.id
                    );
                }
            }
        }
        for t in &self.waiting {
            assert!(
                !seen_tasks.contains(&t.header.msg_id),
                "task {} is both waiting and on an engine",
                t.header.msg_id
            );
            let recs = self.records.get(&t.header.msg_id).unwrap_or_default();
            assert!(
                recs.iter()
                    .any(|r| r.engine.is_none() && r.status == RecordStatus::Pending),
                "waiting task {} has no pending unassigned record",
                t.header.msg_id
            );
        }
    }

    // ----- helpers shared by the handlers -----

    /// Records a new request.
    pub(crate) fn insert_record(&mut self, rec: TaskRecord) {
        self.uncommitted = true;
        if let Err(e) = self.records.insert(rec) {
            warn!(error = %Chain(&e), "task record not written");
        }
    }

    /// Changes the record of (msg id, engine).
    pub(crate) fn update_record(
        &mut self,
        msg_id: &str,
        engine: Option<u32>,
        f: impl FnOnce(&mut TaskRecord),
    ) {
        self.uncommitted = true;
        if let Err(e) = self.records.update(msg_id, engine, f) {
            warn!(error = %Chain(&e), %msg_id, "task record not updated");
        }
    }

    /// Marks a record failed by the hub (no engine reply).
    pub(crate) fn fail_record(
        &mut self,
        msg_id: &str,
        engine: Option<u32>,
        class: &ErrorClass,
        why: &str,
        now: f64,
    ) {
        self.update_record(msg_id, engine, |r| {
            r.status = RecordStatus::Done(Status::Error);
            r.ename = Some(class.to_string());
            r.evalue = Some(why.to_string());
            r.received = Some(now);
        });
    }

    /// Fails a request taken off engine `engine`'s pending list (`p`)
    /// with `class`: logged, recorded, and answered once to its client.
    pub(crate) fn fail_pending(
        &mut self,
        engine: u32,
        msg_id: &str,
        p: registry::Pending,
        class: ErrorClass,
        why: String,
        now: f64,
    ) {
        warn!(engine, %msg_id, "{why}");
        self.fail_record(msg_id, Some(engine), &class, &why, now);
        if !p.client.is_empty() {
            self.reject(
                p.channel,
                vec![p.client],
                &p.header,
                Some(engine),
                class,
                why,
            );
        }
    }

    /// Holds a reply to a client until the next commit.
    pub(crate) fn reply_to_client(&mut self, channel: Channel, frames: Frames) {
        self.held.push(Action::ToClient { channel, frames });
    }

    /// Holds a hub-made message for a client.
    pub(crate) fn send_to_client(&mut self, channel: Channel, msg: Message) {
        let frames = self.session.encode_owned(msg).into_frames();
        self.reply_to_client(channel, frames);
    }

    /// Holds an error reply to a request the hub answers itself.
    pub(crate) fn reject(
        &mut self,
        channel: Channel,
        identities: Vec<Vec<u8>>,
        request: &Header,
        engine: Option<u32>,
        class: ErrorClass,
        evalue: String,
    ) {
        debug!(msg_id = %request.msg_id, ename = %class, %evalue, "request answered by the hub");
        let reply_type = Content::reply_type_for(&request.msg_type);
        let mut r = TaskReply::error(class.as_str(), evalue);
        r.engine_id = engine;
        let metadata = ReplyMetadata {
            engine,
            status: Some(Status::Error),
            ..Default::default()
        };
        let msg = Message {
            identities,
            header: self.session.header(&reply_type),
            parent_header: Some(request.clone()),
            metadata: metadata.to_map(),
            content: Content::task_reply_of(&reply_type, r),
            buffers: vec![],
        };
        self.send_to_client(channel, msg);
    }

    /// A hub-made notification for every client.
    pub(crate) fn notify(&self, content: Content, out: &mut Vec<Action>) {
        let msg = Message::new(&self.session, content);
        let frames = self.session.encode_owned(msg).into_frames();
        out.push(Action::Notify { frames });
    }

    /// Tells every engine to stop.
    pub(crate) fn stop_engines(&mut self, out: &mut Vec<Action>) {
        for e in self.registry.engines() {
            let msg = Message::new(
                &self.session,
                Content::ShutdownRequest(zpar_protocol::ShutdownRequest::default()),
            );
            out.push(Action::ToEngine {
                channel: Channel::Control,
                uuid: e.uuid.clone(),
                frames: self.session.encode_owned(msg).into_frames(),
            });
        }
    }
}
