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
//! poll wakes when the next question is due ([`crate::watch`]).

use crate::error::Error;
use crate::result::{EngineReply, ResultState};
use crate::watch::{WatchId, Watches};
use serde_json::Value as Json;
use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use zpar_protocol::{
    recv_frames, send_frames, Channel, Content, ErrorClass, Message, ReplyMetadata, Session,
    Status, TaskReply, Value,
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
        reply: mpsc::Sender<Message>,
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
    Stop,
}

/// Replies that came before their request was tracked (a resubmit's
/// results can beat the resubmit reply); kept briefly, bounded.
const ORPHANS: usize = 4096;

/// The engine table, shared with user threads.
#[derive(Debug, Default)]
pub(crate) struct EngineTable {
    pub engines: Mutex<BTreeMap<u32, String>>,
    pub changed: Condvar,
}

pub(crate) struct IoSockets {
    pub query: zmq::Socket,
    pub mux: zmq::Socket,
    pub task: zmq::Socket,
    pub control: zmq::Socket,
    pub iopub: zmq::Socket,
    pub notification: zmq::Socket,
}

pub(crate) struct IoLoop {
    pub sockets: IoSockets,
    pub session: Session,
    pub commands: mpsc::Receiver<Command>,
    pub wake: UnixStream,
    pub table: Arc<EngineTable>,
    /// Requests awaiting replies. Weak: a result the user dropped is not
    /// kept alive here, so a map of 100,000 tasks costs nothing once taken.
    tracked: HashMap<String, (Weak<ResultState>, usize)>,
    orphans: VecDeque<(String, Message)>,
    queries: HashMap<String, mpsc::Sender<Message>>,
    watches: Watches,
    events: Option<mpsc::Sender<ClientEvent>>,
}

/// The poll's timeout when nothing is due sooner.
const IDLE_POLL: Duration = Duration::from_secs(1);

impl IoLoop {
    pub fn new(
        sockets: IoSockets,
        session: Session,
        commands: mpsc::Receiver<Command>,
        wake: UnixStream,
        table: Arc<EngineTable>,
    ) -> IoLoop {
        IoLoop {
            sockets,
            session,
            commands,
            wake,
            table,
            tracked: HashMap::new(),
            orphans: VecDeque::new(),
            queries: HashMap::new(),
            watches: Watches::default(),
            events: None,
        }
    }

    pub fn run(mut self) {
        let fd = self.wake.as_raw_fd();
        loop {
            let ready: [bool; 7] = {
                let s = &self.sockets;
                let mut items = [
                    zmq::PollItem::from_fd(fd, zmq::POLLIN),
                    s.mux.as_poll_item(zmq::POLLIN),
                    s.task.as_poll_item(zmq::POLLIN),
                    s.control.as_poll_item(zmq::POLLIN),
                    s.query.as_poll_item(zmq::POLLIN),
                    s.iopub.as_poll_item(zmq::POLLIN),
                    s.notification.as_poll_item(zmq::POLLIN),
                ];
                match zmq::poll(&mut items, self.poll_timeout_ms()) {
                    Ok(_) => std::array::from_fn(|i| items[i].is_readable()),
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => {
                        warn!(error = %e, "client poll failed; the client stops");
                        return;
                    }
                }
            };
            if ready[0] {
                let mut buf = [0u8; 256];
                while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
            }
            // Commands may be waiting even without a wake byte (coalesced).
            if !self.drain_commands() {
                return;
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
            self.ask_watched();
        }
    }

    /// Milliseconds until the next watched result is due, at most
    /// [`IDLE_POLL`].
    fn poll_timeout_ms(&self) -> i64 {
        let wait = match self.watches.next_wake() {
            Some(at) => at.saturating_duration_since(Instant::now()).min(IDLE_POLL),
            None => IDLE_POLL,
        };
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
                    warn!(error = %e, %msg_id, "result request not sent; asking again later");
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
                crate::records::fill_watched(&state, &msg_id, entries, &msg.buffers);
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
                Ok(Command::Send {
                    messages,
                    track,
                    state,
                }) => {
                    let ids: Vec<String> = track.iter().map(|(id, _)| id.clone()).collect();
                    for (msg_id, n) in track {
                        self.tracked.insert(msg_id, (Arc::downgrade(&state), n));
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
                            warn!(error = %e, "request not sent");
                        }
                    }
                }
                Ok(Command::Query {
                    frames,
                    msg_id,
                    reply,
                }) => {
                    self.queries.insert(msg_id, reply);
                    if let Err(e) = send_frames(&self.sockets.query, frames, 0) {
                        warn!(error = %e, "query not sent");
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
                    self.tracked.retain(|_, (w, _)| w.strong_count() > 0);
                    self.orphans.clear();
                    let _ = tx.send(before - self.tracked.len());
                }
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
                Err(e) => return warn!(error = %e, "receive failed"),
            };
            let msg = match self.session.decode_frames(frames) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, ?socket, "dropped a bad reply");
                    continue;
                }
            };
            let Some(parent) = msg.parent_header.as_ref().map(|p| p.msg_id.clone()) else {
                debug!("dropped a reply without parent");
                continue;
            };
            if socket == Socket::Query {
                if let Some(tx) = self.queries.remove(&parent) {
                    let _ = tx.send(msg);
                } else if let Some((watch, msg_id, state)) = self.watches.answer(&parent) {
                    self.on_watch_reply(watch, msg_id, state, msg);
                }
                continue;
            }
            self.file_reply(parent, msg);
        }
    }

    fn file_reply(&mut self, msg_id: String, msg: Message) {
        let Some((weak, left)) = self.tracked.get_mut(&msg_id) else {
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
        let outcome = outcome_of(r, engine, &msg_id, &msg.buffers);
        let reply = EngineReply::new(engine, &msg_id, outcome, r, metadata);
        if state.fill(reply, engine.is_some()) {
            *left -= 1;
            if *left == 0 {
                self.tracked.remove(&msg_id);
            }
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
                    debug!(error = %e, "dropped a bad iopub message");
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
                    .and_then(|(w, _)| w.upgrade())
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
                    debug!(error = %e, "dropped a bad notification");
                    continue;
                }
            };
            let event = match msg.content {
                Content::RegistrationNotification(n) => {
                    self.table
                        .engines
                        .lock()
                        .expect("table lock")
                        .insert(n.id, n.uuid);
                    ClientEvent::EngineRegistered(n.id)
                }
                Content::UnregistrationNotification(n) => {
                    self.table.engines.lock().expect("table lock").remove(&n.id);
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

/// Turns a reply's content into a value or an error.
pub(crate) fn outcome_of(
    r: &TaskReply,
    engine: Option<u32>,
    msg_id: &str,
    buffers: &[zmq::Message],
) -> Result<Value, Error> {
    let msg_id = msg_id.to_string();
    let ename = r.ename.clone().unwrap_or_else(|| "Error".into());
    let message = r.evalue.clone().unwrap_or_default();
    let class = ErrorClass::parse(&ename);
    let from_hub = |ename: String, message: String| Error::Hub { ename, message };
    match (r.status, engine) {
        (Status::Ok, _) => match &r.result {
            None => Ok(Value::Unit),
            Some(json) => Value::decode(json, buffers).map_err(Error::from),
        },
        (Status::Aborted, Some(engine)) => Err(Error::Aborted { engine, msg_id }),
        (Status::Aborted, None) => Err(from_hub(ename, message)),
        (Status::Error, engine) => Err(match (class, engine) {
            (ErrorClass::NoEngines, _) => Error::NoEngines,
            (ErrorClass::EngineDied, Some(engine)) => Error::EngineDied { engine, msg_id },
            (ErrorClass::UnknownEngine, Some(engine)) => Error::UnknownEngine(engine),
            (ErrorClass::Timeout, Some(engine)) => Error::TaskTimeout {
                engine,
                msg_id,
                message,
            },
            (class, _) if class.is_refusal() => from_hub(ename, message),
            // A failure the hub reported without any engine (a dependency
            // that failed, a record it could not read).
            (_, None) => from_hub(ename, message),
            (_, Some(engine)) => Error::RemoteError {
                engine,
                ename,
                message,
                line: r.line,
                column: r.column,
            },
        }),
    }
}

/// zpar's keys in a reply's metadata; a reply that breaks the contract is
/// read as if it had none, with a log line.
fn reply_metadata(msg: &Message) -> ReplyMetadata {
    ReplyMetadata::from_map(&msg.metadata).unwrap_or_else(|e| {
        debug!(error = %e, msg_type = %msg.header.msg_type, "reply metadata ignored");
        ReplyMetadata::default()
    })
}
