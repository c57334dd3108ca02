//! The client's I/O thread: the only owner of the client's sockets.
//!
//! # Design
//!
//! User threads never touch a socket. They sign and encode a request, hand
//! the frames to this thread over an mpsc channel, and poke a Unix socket
//! pair so the `zmq::poll` here wakes at once (zmq can poll a plain file
//! descriptor beside its own sockets). Replies are matched to their
//! `ResultState` by parent msg id and filled in; the waiting user thread
//! wakes on the result's condvar. Output streamed on iopub is filed with its
//! request, and engine joins and leaves update the engine table.
//!
//! Results the hub pushes to nobody here (another client's request fetched
//! with `get_result`) are asked for again on this loop's poll timer: the
//! poll wakes when the next question is due (`watch.rs`).
//!
//! The hub itself is watched the same way: its heartbeat pings (and any
//! other message) keep it alive; the poll also wakes when its silence would
//! reach the limit. A hub found lost fails every result still pending here
//! and every query waiting, with [`Error::HubLost`]; requests made while it
//! is gone fail at once, and the hub-facing sockets are made anew (their
//! queues discarded, so a request reported lost never reaches the next
//! hub). A hub heard again (a hub restarted with `zpar hub --reuse`
//! listens on the same ports) is back: the engine table is asked for again
//! and requests go out as before. Without a heartbeat port in the
//! connection file (older hubs), the loop asks the hub for the engine table
//! whenever it has been quiet for a second.

mod hub;
mod outcome;
mod recorded;
mod sockets;

pub(crate) use outcome::outcome_of;
pub(crate) use recorded::{entry_engine, fill_recorded, fill_watched};

use crate::error::{Error, HubLoss};
use crate::result::{EngineReply, ResultState};
use crate::watch::{HubLiveness, WatchId, Watches, HUB_TIMEOUT};
use outcome::reply_metadata;
use serde_json::Value as Json;
use sockets::IoSockets;
use std::collections::VecDeque;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use zpar_protocol::curve::{HandshakeOutcome, HandshakeWatch};
use zpar_protocol::error::Chain;
use zpar_protocol::stream::Assembly;
use zpar_protocol::value::SharedValue;
use zpar_protocol::StreamChunk;
use zpar_protocol::{
    recv_frames, send_frames, Channel, ClientConnection, Content, Message, Session, Status,
    TaskReply, Value,
};

/// One of the client's hub-facing sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Socket {
    /// A request channel: mux, task or control.
    Requests(Channel),
    /// Registration and queries.
    Query,
}

/// Something the client saw happen, for interactive front ends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// An engine printed something.
    Stream {
        /// The engine.
        engine: u32,
        /// `stdout` or `stderr`.
        name: String,
        /// The text.
        text: String,
        /// The request that printed it.
        msg_id: Option<String>,
    },
    /// An engine joined.
    EngineRegistered(u32),
    /// An engine left or died.
    EngineUnregistered {
        /// The engine.
        engine: u32,
        /// Why.
        reason: String,
    },
    /// The hub was lost: every pending result failed with
    /// [`Error::HubLost`], and requests fail at once until
    /// [`HubReturned`](Self::HubReturned).
    HubLost {
        /// The hub's registration address.
        url: String,
        /// What the client saw.
        reason: HubLoss,
    },
    /// A hub answers again on the same connection file; requests work.
    HubReturned {
        /// The hub's registration address.
        url: String,
    },
}

pub(crate) enum Command {
    Send {
        messages: Vec<(Channel, Vec<zmq::Message>)>,
        track: Vec<(String, usize)>,
        state: Arc<ResultState>,
    },
    Query {
        frames: Vec<zmq::Message>,
        msg_id: String,
        /// The hub's reply, or [`Error::HubLost`].
        reply: mpsc::Sender<Result<Message, Error>>,
    },
    Events(mpsc::Sender<ClientEvent>),
    /// A query timed out: stop waiting for its reply.
    ForgetQuery(String),
    /// Ask the hub for this recorded result until it is done, then fill
    /// `state` (see [`crate::watch`]).
    Watch {
        msg_id: String,
        state: Arc<ResultState>,
    },
    /// Forget requests whose results were dropped; answers how many.
    PurgeLocal(mpsc::Sender<usize>),
    /// How long the hub may be silent before it counts as lost.
    HubTimeout(Duration),
    /// How long a request may wait before the hub is asked about it.
    RecallAfter(Duration),
    Stop,
}

/// Replies that came before their request was tracked (a resubmit's
/// results can beat the resubmit reply); kept briefly, bounded.
const ORPHANS: usize = 4096;

/// At most this many results are kept unread in shared memory at once
/// (each holds a file descriptor); past it they are read on arrival.
const HELD_SHARED: usize = 256;

/// The engine table and the hub's state, shared with user threads.
#[derive(Debug, Default)]
pub(crate) struct EngineTable {
    pub engines: Mutex<BTreeMap<u32, String>>,
    pub changed: Condvar,
    /// [`Error::HubLost`] while the hub is gone; None while it answers.
    pub hub_lost: Mutex<Option<Error>>,
}

impl EngineTable {
    /// The error requests fail with now, if the hub is gone.
    pub fn hub_lost(&self) -> Option<Error> {
        self.hub_lost.lock().expect("hub lock").clone()
    }
}

/// Without heartbeats to hear, the hub is asked after this much quiet.
const PROBE_PERIOD: Duration = Duration::from_secs(1);

pub(crate) struct IoLoop {
    sockets: IoSockets,
    session: Session,
    commands: mpsc::Receiver<Command>,
    wake: UnixStream,
    /// Cleared before the commands are taken ([`crate::client::Waker`]).
    wake_pending: Arc<AtomicBool>,
    table: Arc<EngineTable>,
    /// For making the sockets anew after a lost hub.
    conn: ClientConnection,
    identity: Vec<u8>,
    /// The hub's registration address, for errors and events.
    url: String,
    hub: HubLiveness,
    /// The msg id of our own connection request in flight (a probe of a
    /// hub without heartbeat port, or the table refresh when it is back),
    /// and when it went.
    probe: Option<(String, Instant)>,
    /// Engines that joined (with their uuid) or left (None), by
    /// notification, since that request went: its answer was made before
    /// some of them (the notification and the answer come on different
    /// sockets), and must not undo them.
    since_probe: Vec<(u32, Option<String>)>,
    /// When to ask for the engine table again after the hub came back
    /// (engines register again over the next seconds, and a notification
    /// published before our subscription took is never seen).
    reprobes: VecDeque<Instant>,
    /// Requests whose fate the hub's records are asked about: all those
    /// still waiting after a hub restart, or those silent for
    /// `recall_after` (`hub::RecordCheck`).
    record_check: Option<hub::RecordCheck>,
    /// Requests awaiting replies, by msg id.
    tracked: HashMap<String, Tracked>,
    /// How long a request may wait for its replies before the hub is asked
    /// what became of it (`hub::ask_about_silent`).
    recall_after: Duration,
    /// When to look for silent requests next.
    next_silent_scan: Instant,
    /// Results this thread owns until their replies are in, by msg id:
    /// those that hold shared segments the engines have yet to open. A
    /// fire-and-forget push (its result dropped at once) must land; a
    /// weak reference alone would remove its segments with the result.
    owned: HashMap<String, Arc<ResultState>>,
    orphans: VecDeque<(String, Message)>,
    queries: HashMap<String, mpsc::Sender<Result<Message, Error>>>,
    watches: Watches,
    events: Option<mpsc::Sender<ClientEvent>>,
    /// After a lost hub, the engines announced as registered since: a join
    /// seen both in a notification and in the table the hub sends back on
    /// its return is announced once. None before any loss (every
    /// notification is announced).
    announced: Option<BTreeSet<u32>>,
    /// The query socket's handshakes with the hub.
    handshake: HandshakeWatch,
    /// Why the hub refuses this client's keys, once the handshakes said
    /// so: queries fail at once with it until a handshake succeeds.
    refused: Option<String>,
    /// Result chunk streams coming in, by (request msg id, the sending
    /// engine's session): taken by the reply that follows them, dropped
    /// once every reply to the request is in.
    streams: HashMap<(String, String), Assembly>,
    /// Last: the context outlives every socket above.
    ctx: zmq::Context,
}

/// A request awaiting its replies.
pub(crate) struct Tracked {
    /// Its result. Weak: a result the user dropped is not kept alive here,
    /// so a map of 100,000 tasks costs nothing once taken.
    state: Weak<ResultState>,
    /// Replies still to come.
    left: usize,
    /// When to ask the hub about it if it is still waiting.
    ask_at: Instant,
    /// How many times the hub was asked so far.
    asked: u32,
}

/// [`Client::set_recall_after`](crate::Client::set_recall_after) unless set.
pub const DEFAULT_RECALL_AFTER: Duration = Duration::from_secs(30);

/// The poll's timeout when nothing is due sooner.
const IDLE_POLL: Duration = Duration::from_secs(1);

impl IoLoop {
    /// Connects the sockets to the hub `conn` describes, as `identity`.
    pub fn new(
        conn: ClientConnection,
        identity: Vec<u8>,
        session: Session,
        commands: mpsc::Receiver<Command>,
        wake: UnixStream,
        wake_pending: Arc<AtomicBool>,
        table: Arc<EngineTable>,
    ) -> Result<IoLoop, Error> {
        let ctx = zmq::Context::new();
        let sockets = IoSockets::connect(&ctx, &conn, &identity, &session.session_id)?;
        let handshake = HandshakeWatch::new(conn.curve_publickey.is_some());
        Ok(IoLoop {
            sockets,
            session,
            commands,
            wake,
            wake_pending,
            table,
            url: conn.url(conn.registration),
            conn,
            identity,
            hub: HubLiveness::new(HUB_TIMEOUT),
            probe: None,
            since_probe: Vec::new(),
            reprobes: hub::REPROBES_MS
                .iter()
                .map(|ms| Instant::now() + Duration::from_millis(*ms))
                .collect(),
            record_check: None,
            tracked: HashMap::new(),
            recall_after: DEFAULT_RECALL_AFTER,
            next_silent_scan: Instant::now(),
            owned: HashMap::new(),
            orphans: VecDeque::new(),
            queries: HashMap::new(),
            watches: Watches::default(),
            events: None,
            announced: None,
            handshake,
            refused: None,
            streams: HashMap::new(),
            ctx,
        })
    }

    pub fn run(mut self) {
        let fd = self.wake.as_raw_fd();
        loop {
            let ready: [bool; 9] = {
                let s = &self.sockets;
                let mut items = vec![
                    zmq::PollItem::from_fd(fd, zmq::POLLIN),
                    s.mux.as_poll_item(zmq::POLLIN),
                    s.task.as_poll_item(zmq::POLLIN),
                    s.control.as_poll_item(zmq::POLLIN),
                    s.query.as_poll_item(zmq::POLLIN),
                    s.iopub.as_poll_item(zmq::POLLIN),
                    s.notification.as_poll_item(zmq::POLLIN),
                    s.handshakes.socket().as_poll_item(zmq::POLLIN),
                ];
                if let Some(hb) = &s.heartbeat {
                    items.push(hb.as_poll_item(zmq::POLLIN));
                }
                match zmq::poll(&mut items, self.poll_timeout_ms()) {
                    Ok(_) => std::array::from_fn(|i| items.get(i).is_some_and(|p| p.is_readable())),
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => {
                        warn!(error = %Chain(&e), "client poll failed; the client stops");
                        return;
                    }
                }
            };
            if ready[0] {
                let mut buf = [0u8; 256];
                while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
            }
            // Commands may be waiting even without a wake byte (coalesced):
            // from here on a new command writes one again.
            self.wake_pending.swap(false, Ordering::SeqCst);
            // Until a handshake has succeeded, its events are read before
            // any command: a query that comes after the hub refused this
            // client's keys is failed at once, not sent on a socket whose
            // only connection libzmq has given up (a mechanism mismatch).
            let shaken = self.handshake.outcome() == HandshakeOutcome::Succeeded;
            if ready[7] || !shaken {
                self.drain_handshakes();
            }
            if !self.drain_commands() {
                return;
            }
            // Anything from the hub is life; pings also name its instance.
            let now = Instant::now();
            if ready[8] {
                self.drain_heartbeat(now);
            }
            if ready[1..7].iter().any(|r| *r) {
                let change = self.hub.heard(now);
                self.on_hub_change(change);
            }
            for (i, socket) in [
                (1, Socket::Requests(Channel::Mux)),
                (2, Socket::Requests(Channel::Task)),
                (3, Socket::Requests(Channel::Control)),
                (4, Socket::Query),
            ] {
                if ready[i] {
                    self.drain_socket(socket);
                }
            }
            if ready[5] {
                self.drain_iopub();
            }
            if ready[6] {
                self.drain_notifications();
            }
            // Draining a flood of replies can take seconds on a loaded
            // machine; they all came from the hub, so the hub was heard
            // until now, not only when the drain began.
            if ready[1..7].iter().any(|r| *r) {
                let change = self.hub.heard(Instant::now());
                self.on_hub_change(change);
            }
            self.ask_watched();
            self.watch_hub();
        }
    }

    /// Milliseconds until the next watched result is due or the hub's
    /// silence reaches the limit, at most [`IDLE_POLL`].
    fn poll_timeout_ms(&self) -> i64 {
        let now = Instant::now();
        let wait = [
            self.watches.next_wake(),
            self.hub.deadline(),
            self.reprobes.front().copied(),
        ]
        .into_iter()
        .flatten()
        .map(|at| at.saturating_duration_since(now))
        .fold(IDLE_POLL, Duration::min);
        // Round up, so a due time 0.4 ms away does not spin the loop.
        wait.as_micros().div_ceil(1000) as i64
    }

    /// Sends a `result_request` for every watched result that is due.
    fn ask_watched(&mut self) {
        let now = Instant::now();
        for (watch, msg_id) in self.watches.due(now) {
            let ask = Message::new(
                &self.session,
                Content::ResultRequest(zpar_protocol::ResultRequest {
                    msg_ids: vec![msg_id.clone()],
                }),
            );
            let query_id = ask.header.msg_id.clone();
            match send_frames(
                &self.sockets.query,
                self.session.encode_owned(ask).into_frames(),
                0,
            ) {
                Ok(()) => self.watches.asked(watch, query_id, now),
                Err(e) => {
                    warn!(error = %Chain(&e), %msg_id, "result request not sent; asking again later");
                    self.watches.again(watch, now);
                }
            }
        }
    }

    /// The hub's answer about a watched result: fill it if it is done,
    /// otherwise ask again later.
    fn on_watch_reply(
        &mut self,
        watch: WatchId,
        msg_id: String,
        state: Option<Arc<ResultState>>,
        msg: Message,
    ) {
        let Some(state) = state else {
            return self.watches.finish(watch); // the user dropped it
        };
        let recorded = match &msg.content {
            Content::ResultReply(r) if r.status == Status::Ok => {
                r.results.get(&msg_id).and_then(Json::as_array)
            }
            Content::ResultReply(r) => {
                debug!(%msg_id, error = ?r.evalue, "result request failed; asking again later");
                None
            }
            _ => {
                warn!(%msg_id, msg_type = %msg.header.msg_type, "unexpected reply to a result request");
                None
            }
        };
        match recorded {
            Some(entries) => {
                fill_watched(&state, &msg_id, entries, &msg.buffers);
                self.watches.finish(watch);
            }
            None => self.watches.again(watch, Instant::now()),
        }
    }

    fn socket(&self, socket: Socket) -> &zmq::Socket {
        match socket {
            Socket::Requests(Channel::Mux) => &self.sockets.mux,
            Socket::Requests(Channel::Task) => &self.sockets.task,
            Socket::Requests(Channel::Control) => &self.sockets.control,
            Socket::Query => &self.sockets.query,
        }
    }

    /// Returns false when told to stop.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Send { state, .. } | Command::Watch { state, .. })
                    if self.hub.is_lost() =>
                {
                    if let Some(error) = self.table.hub_lost() {
                        state.fail_open(&error);
                    }
                }
                Ok(Command::Query { reply, .. }) if self.refused.is_some() => {
                    let _ = reply.send(Err(self.refusal()));
                }
                Ok(Command::Query { reply, .. }) if self.hub.is_lost() => {
                    if let Some(error) = self.table.hub_lost() {
                        let _ = reply.send(Err(error));
                    }
                }
                Ok(Command::Send {
                    messages,
                    track,
                    state,
                }) => {
                    let ids: Vec<String> = track.iter().map(|(id, _)| id.clone()).collect();
                    let own = state.holds_segments();
                    let ask_at = Instant::now() + self.recall_after;
                    for (msg_id, n) in track {
                        if own {
                            self.owned.insert(msg_id.clone(), state.clone());
                        }
                        let tracked = Tracked {
                            state: Arc::downgrade(&state),
                            left: n,
                            ask_at,
                            asked: 0,
                        };
                        self.tracked.insert(msg_id, tracked);
                    }
                    if !self.orphans.is_empty() {
                        let (mine, rest): (VecDeque<_>, VecDeque<_>) =
                            std::mem::take(&mut self.orphans)
                                .into_iter()
                                .partition(|(id, _)| ids.contains(id));
                        self.orphans = rest;
                        for (id, msg) in mine {
                            self.file_reply(id, msg);
                        }
                    }
                    for (channel, frames) in messages {
                        if let Err(e) =
                            send_frames(self.socket(Socket::Requests(channel)), frames, 0)
                        {
                            warn!(error = %Chain(&e), "request not sent");
                        }
                    }
                }
                Ok(Command::Query {
                    frames,
                    msg_id,
                    reply,
                }) => {
                    // Never a blocking send: after a mechanism mismatch the
                    // socket has no connection and never gets one, and a
                    // blocking send would hang this thread for good. The
                    // query then waits for the refusal (or its timeout).
                    self.queries.insert(msg_id, reply);
                    match send_frames(&self.sockets.query, frames, zmq::DONTWAIT) {
                        Ok(()) => {}
                        Err(zmq::Error::EAGAIN) => {
                            debug!("query not sent: the hub's connection is gone or full")
                        }
                        Err(e) => warn!(error = %Chain(&e), "query not sent"),
                    }
                }
                Ok(Command::Events(tx)) => self.events = Some(tx),
                Ok(Command::ForgetQuery(id)) => {
                    self.queries.remove(&id);
                }
                Ok(Command::Watch { msg_id, state }) => {
                    self.watches.add(msg_id, &state, Instant::now());
                    debug!(watched = self.watches.len(), "watching a pending result");
                }
                Ok(Command::PurgeLocal(tx)) => {
                    let before = self.tracked.len();
                    self.tracked.retain(|_, t| t.state.strong_count() > 0);
                    self.orphans.clear();
                    let _ = tx.send(before - self.tracked.len());
                }
                Ok(Command::HubTimeout(limit)) => self.hub.set_limit(limit),
                Ok(Command::RecallAfter(after)) => self.recall_after = after,
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn drain_socket(&mut self, socket: Socket) {
        loop {
            let frames = match recv_frames(self.socket(socket), zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => return warn!(error = %Chain(&e), "receive failed"),
            };
            let msg = match self.session.decode_frames(frames) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %Chain(&e), ?socket, "dropped a bad reply");
                    continue;
                }
            };
            let Some(parent) = msg.parent_header.as_ref().map(|p| p.msg_id.clone()) else {
                debug!("dropped a reply without parent");
                continue;
            };
            if let Content::StreamChunk(chunk) = &msg.content {
                self.on_result_chunk(parent, chunk.clone(), msg);
                continue;
            }
            if socket == Socket::Query {
                // The hub names its instance when asked for its engines
                // (at connect, in probes): another one is a restart.
                if let Content::ConnectionReply(r) = &msg.content {
                    if let Some(instance) = &r.hub_instance {
                        let change = self.hub.instance_seen(instance.as_bytes());
                        self.on_hub_change(change);
                    }
                }
                if self.is_record_check(&parent) {
                    self.on_record_check_reply(msg);
                } else if self.probe.as_ref().is_some_and(|(id, _)| *id == parent) {
                    self.probe = None;
                    self.on_probe_reply(msg);
                } else if let Some(tx) = self.queries.remove(&parent) {
                    let _ = tx.send(Ok(msg));
                } else if let Some((watch, msg_id, state)) = self.watches.answer(&parent) {
                    self.on_watch_reply(watch, msg_id, state, msg);
                }
                continue;
            }
            self.file_reply(parent, msg);
        }
    }

    fn file_reply(&mut self, msg_id: String, msg: Message) {
        let Some(Tracked {
            state: weak, left, ..
        }) = self.tracked.get_mut(&msg_id)
        else {
            debug!(%msg_id, "reply to a request not tracked (yet)");
            if self.orphans.len() >= ORPHANS {
                self.orphans.pop_front();
            }
            self.orphans.push_back((msg_id, msg));
            return;
        };
        let Some(state) = weak.upgrade() else {
            self.tracked.remove(&msg_id); // the result was dropped
            return;
        };
        let fallback = TaskReply::error(
            "UnknownReply",
            format!("unexpected reply type {}", msg.header.msg_type),
        );
        let r = msg.content.task_reply().unwrap_or(&fallback);
        let metadata = reply_metadata(&msg);
        let engine = r.engine_id.or(metadata.engine);
        // A streamed result: its buffers came before it, in chunks.
        let streamed = metadata.stream_frames.map(|of| {
            let key = (msg_id.clone(), msg.header.session.clone());
            match self.streams.remove(&key) {
                Some(a) if a.is_complete() && a.of() == of => Ok(a.into_buffers()),
                Some(a) => Err(Error::Value(format!(
                    "the result of {msg_id} came with {} of its {of} chunks",
                    a.received()
                ))),
                None => Err(Error::Value(format!(
                    "the result of {msg_id} came without its {of} chunks"
                ))),
            }
        });
        // A result that is one array in shared memory is kept there, its
        // segment opened and its name removed, and read only when asked
        // for: straight into its place for a gather, and never in this
        // thread. Past `HELD_SHARED` open segments, results are read here.
        let kept = match (&streamed, r.status, &r.result) {
            (None, Status::Ok, Some(json))
                if zpar_protocol::bulk::detached_count() < HELD_SHARED =>
            {
                SharedValue::open(json)
            }
            _ => None,
        };
        let (outcome, shared) = match (kept, &streamed) {
            (Some(Ok(v)), _) => (Ok(Value::Unit), Some(v)),
            (Some(Err(e)), _) => (Err(Error::from(e)), None),
            (None, None) => (outcome_of(r, engine, &msg_id, &msg.buffers), None),
            (None, Some(Ok(buffers))) => (outcome_of(r, engine, &msg_id, buffers), None),
            (None, Some(Err(e))) => (Err(e.clone()), None),
        };
        // A result that came in shared memory was read: its segment goes.
        if let (None, Some(result)) = (&shared, &r.result) {
            for name in zpar_protocol::value::shared_segments(result) {
                zpar_protocol::bulk::remove_segment(&name);
            }
        }
        let reply = EngineReply::new(engine, &msg_id, outcome, r, metadata);
        if state.fill_shared(reply, engine.is_some(), shared) {
            *left -= 1;
            if *left == 0 {
                self.tracked.remove(&msg_id);
                self.owned.remove(&msg_id);
                // Chunks of an engine that died mid-stream: never a value.
                self.streams.retain(|(id, _), _| *id != msg_id);
            }
        }
    }

    /// A chunk of a streamed result: into its assembly, which the reply
    /// after it takes. A chunk of no request this client waits for, or one
    /// that breaks its stream, is dropped (the reply then says so).
    fn on_result_chunk(&mut self, parent: String, chunk: StreamChunk, msg: Message) {
        if !self.tracked.contains_key(&parent) {
            return debug!(msg_id = %parent, "dropped a result chunk of a request not waited for");
        }
        let key = (parent, msg.header.session.clone());
        let assembly = self
            .streams
            .entry(key.clone())
            .or_insert_with(|| Assembly::new(&key.0, chunk.of, usize::MAX));
        if let Err(e) = assembly.accept(&chunk, msg.buffers) {
            warn!(error = %Chain(&e), "dropped a result stream");
            // Kept, incomplete: the reply after it fails clearly.
            let of = assembly.of();
            self.streams
                .insert(key.clone(), Assembly::new(&key.0, of, 0));
        }
    }

    fn drain_iopub(&mut self) {
        loop {
            let frames = match recv_frames(&self.sockets.iopub, zmq::DONTWAIT) {
                Ok(f) => f,
                Err(_) => return,
            };
            let msg = match self.session.decode_frames(frames) {
                Ok(m) => m,
                Err(e) => {
                    debug!(error = %Chain(&e), "dropped a bad iopub message");
                    continue;
                }
            };
            let mine = msg
                .parent_header
                .as_ref()
                .is_some_and(|p| p.session == self.session.session_id);
            if !mine {
                continue;
            }
            let engine = reply_metadata(&msg).engine;
            if let (Content::Stream(s), Some(engine)) = (&msg.content, engine) {
                let parent = msg.parent_header.as_ref().map(|p| p.msg_id.clone());
                if let Some(state) = parent
                    .as_ref()
                    .and_then(|p| self.tracked.get(p))
                    .and_then(|t| t.state.upgrade())
                {
                    state.stream(parent.as_deref().unwrap_or_default(), engine, &s.text);
                }
                self.emit(ClientEvent::Stream {
                    engine,
                    name: s.name.clone(),
                    text: s.text.clone(),
                    msg_id: parent,
                });
            }
        }
    }

    fn drain_notifications(&mut self) {
        loop {
            let frames = match recv_frames(&self.sockets.notification, zmq::DONTWAIT) {
                Ok(f) => f,
                Err(_) => return,
            };
            let msg = match self.session.decode_frames(frames) {
                Ok(m) => m,
                Err(e) => {
                    debug!(error = %Chain(&e), "dropped a bad notification");
                    continue;
                }
            };
            let event = match msg.content {
                Content::RegistrationNotification(n) => {
                    if self.probe.is_some() {
                        self.since_probe.push((n.id, Some(n.uuid.clone())));
                    }
                    self.table
                        .engines
                        .lock()
                        .expect("table lock")
                        .insert(n.id, n.uuid);
                    if self.announced.as_mut().is_some_and(|a| !a.insert(n.id)) {
                        self.table.changed.notify_all();
                        continue;
                    }
                    ClientEvent::EngineRegistered(n.id)
                }
                Content::UnregistrationNotification(n) => {
                    if self.probe.is_some() {
                        self.since_probe.push((n.id, None));
                    }
                    self.table.engines.lock().expect("table lock").remove(&n.id);
                    if let Some(a) = &mut self.announced {
                        a.remove(&n.id);
                    }
                    ClientEvent::EngineUnregistered {
                        engine: n.id,
                        reason: n.reason.unwrap_or_default(),
                    }
                }
                _ => continue,
            };
            self.table.changed.notify_all();
            self.emit(event);
        }
    }

    fn emit(&mut self, event: ClientEvent) {
        if let Some(tx) = &self.events {
            if tx.send(event).is_err() {
                self.events = None;
            }
        }
    }
}
