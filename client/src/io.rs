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

use crate::error::Error;
use crate::result::{EngineReply, ResultState};
use serde_json::Value as Json;
use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use tracing::{debug, warn};
use zpar_protocol::{
    recv_frames, send_frames, Content, Message, Session, Status, TaskReply, Value,
};

/// Which hub channel a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Direct requests to named engines.
    Mux,
    /// Load-balanced tasks.
    Task,
    /// Control (abort, interrupt, clear, shutdown).
    Control,
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
    events: Option<mpsc::Sender<ClientEvent>>,
}

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
                match zmq::poll(&mut items, 1000) {
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
            for (i, channel) in [
                (1, Channel::Mux),
                (2, Channel::Task),
                (3, Channel::Control),
                (4, Channel::Query),
            ] {
                if ready[i] {
                    self.drain_socket(channel);
                }
            }
            if ready[5] {
                self.drain_iopub();
            }
            if ready[6] {
                self.drain_notifications();
            }
        }
    }

    fn socket(&self, channel: Channel) -> &zmq::Socket {
        match channel {
            Channel::Mux => &self.sockets.mux,
            Channel::Task => &self.sockets.task,
            Channel::Control => &self.sockets.control,
            Channel::Query => &self.sockets.query,
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
                        if let Err(e) = send_frames(self.socket(channel), frames, 0) {
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

    fn drain_socket(&mut self, channel: Channel) {
        loop {
            let frames = match recv_frames(self.socket(channel), zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => return warn!(error = %e, "receive failed"),
            };
            let msg = match self.session.decode_frames(frames) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, ?channel, "dropped a bad reply");
                    continue;
                }
            };
            let Some(parent) = msg.parent_header.as_ref().map(|p| p.msg_id.clone()) else {
                debug!("dropped a reply without parent");
                continue;
            };
            if channel == Channel::Query {
                if let Some(tx) = self.queries.remove(&parent) {
                    let _ = tx.send(msg);
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
        let meta_engine = msg
            .metadata
            .get("engine")
            .and_then(Json::as_u64)
            .map(|e| e as u32);
        let engine = r.engine_id.or(meta_engine);
        let outcome = outcome_of(r, engine.unwrap_or(u32::MAX), &msg_id, &msg.buffers);
        let reply = EngineReply::new(engine, &msg_id, outcome, r, &msg.metadata);
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
            let engine = msg
                .metadata
                .get("engine")
                .and_then(Json::as_u64)
                .map(|e| e as u32);
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
    engine: u32,
    msg_id: &str,
    buffers: &[zmq::Message],
) -> Result<Value, Error> {
    match r.status {
        Status::Ok => match &r.result {
            None => Ok(Value::Unit),
            Some(json) => Value::decode(json, buffers).map_err(Error::from),
        },
        Status::Aborted => Err(Error::Aborted {
            engine,
            msg_id: msg_id.to_string(),
        }),
        Status::Error => {
            let ename = r.ename.clone().unwrap_or_else(|| "Error".into());
            let message = r.evalue.clone().unwrap_or_default();
            Err(match ename.as_str() {
                "EngineDied" => Error::EngineDied {
                    engine,
                    msg_id: msg_id.to_string(),
                },
                "UnknownEngine" => Error::UnknownEngine(engine),
                "NoEngines" => Error::NoEngines,
                "NoTargets" | "UnknownMessageType" | "NotPermitted" => {
                    Error::Hub { ename, message }
                }
                "Timeout" => Error::Timeout {
                    waited: std::time::Duration::ZERO,
                    what: format!("request {msg_id} on engine {engine}: {message}"),
                },
                _ => Error::RemoteError {
                    engine,
                    ename,
                    message,
                    line: r.line,
                    column: r.column,
                },
            })
        }
    }
}
