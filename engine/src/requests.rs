//! The request loop: control first (the hub's and the kernel's), then one
//! request at a time from mux, task and the kernel's shell, each run in the
//! namespace and answered on the socket it came from; and the watch on the
//! hub's heartbeat that re-registers after a restart.

use crate::channels::{Io, Route};
use crate::communicator::CommEnv;
use crate::convert::{encode_dynamic, to_value};
use crate::heartbeat::Heartbeat;
use crate::inbound::{decode_request, Inbound};
use crate::namespace::{Namespace, ScriptError};
use crate::server::{EngineServer, Registered};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use zpar_protocol::stream::{self, Assembly};
use zpar_protocol::value::{SharedOut, CHUNK_BYTES};
use zpar_protocol::RawMessage;
use zpar_protocol::{
    iso8601_now, recv_frames, send_frames, Channel, Content, ErrorClass, ErrorContent,
    ExecuteInput, ExecuteResult, Message, RegistrationRequest, ReplyMetadata, RequestMetadata,
    Status, TaskReply, Value,
};

/// Watches the hub's heartbeat; after a silence (the hub died), registers
/// again — same uuid, asking for the same id — once pings resume.
pub(crate) struct HubWatch {
    pub(crate) registration: zmq::Socket,
    pub(crate) heartbeat: Heartbeat,
    pub(crate) uuid: String,
    pub(crate) hb_period: Duration,
    pub(crate) lost: bool,
    pub(crate) last_attempt: Instant,
}

impl HubWatch {
    /// How much silence means the hub is gone. Before the first ping the
    /// wait is four times longer: a hub that has just registered a
    /// thousand engines at once is still setting up their connections, and
    /// its first pings reach the last of them seconds late (at 1,000
    /// engines every engine once gave up on the hub and registered again).
    fn lost_after(&self) -> Duration {
        let limit = (self.hb_period * 5).max(Duration::from_secs(2));
        if self.heartbeat.heard_any() {
            limit
        } else {
            limit * 4
        }
    }
}

pub(crate) struct Serving {
    /// None for a standalone kernel.
    pub(crate) hub: Option<HubWatch>,
    pub(crate) namespace: Namespace,
    pub(crate) io: Rc<RefCell<Io>>,
    pub(crate) comm_env: CommEnv,
    pub(crate) execution_count: u64,
    pub(crate) default_op_limit: Option<u64>,
    /// The program's own natives, to explain a call of a missing one.
    pub(crate) natives: Vec<String>,
    /// A standalone kernel's parent (Jupyter's `JPY_PARENT_PID`): when it
    /// is gone, the kernel is an orphan and stops.
    pub(crate) parent_pid: Option<u32>,
    /// Shared segments of results sent to clients on this host, oldest
    /// first. The client removes one once read; whatever is left goes after
    /// [`REPLY_SEGMENT_LIFE`] or when the engine stops (`bulk`).
    pub(crate) reply_segments: std::collections::VecDeque<(Instant, zpar_protocol::bulk::Segment)>,
}

/// Which of the engine's sockets have something to read.
#[derive(Default)]
struct Ready {
    control: bool,
    mux: bool,
    task: bool,
    kernel_control: bool,
    shell: bool,
    stdin: bool,
}

/// How many refused streams' ids are kept, to drop their chunks quietly.
const REFUSED_STREAMS: usize = 64;

/// How long a result's shared segment waits for its client.
const REPLY_SEGMENT_LIFE: Duration = Duration::from_secs(60);

impl Serving {
    pub(crate) fn serve(&mut self, server: &EngineServer) {
        loop {
            {
                let mut io = self.io.borrow_mut();
                io.stop_reason = None;
                if let Some(flag) = io.interrupt {
                    // A SIGINT between cells interrupts nothing.
                    flag.store(false, Ordering::Relaxed);
                }
                io.serve_control(false);
                io.serve_kernel_control(false);
            }
            self.serve_deferred(server);
            if self.io.borrow().shutdown
                || server
                    .stop_flag()
                    .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                return;
            }
            if self.orphaned() {
                warn!("the kernel's parent process is gone; stopping");
                return;
            }
            // Poll with a timeout so a lost wake-up can never stall us.
            let Some(ready) = self.poll() else { continue };
            self.drop_stale_segments();
            if self.hub.is_some() {
                self.watch_hub();
            }
            if ready.control || ready.kernel_control {
                continue; // control first
            }
            if ready.mux {
                self.take_request(Channel::Mux);
            }
            if ready.task {
                self.take_request(Channel::Task);
            }
            if ready.shell {
                self.take_kernel_request();
            }
            if ready.stdin {
                self.drop_stdin();
            }
        }
    }

    /// Waits up to 250 ms for any socket to have something; None if the
    /// poll itself failed (a signal).
    fn poll(&self) -> Option<Ready> {
        let io = self.io.borrow();
        let mut items = Vec::with_capacity(6);
        if let Some(hub) = &io.hub {
            items.push(hub.control.as_poll_item(zmq::POLLIN));
            items.push(hub.mux.as_poll_item(zmq::POLLIN));
            items.push(hub.task.as_poll_item(zmq::POLLIN));
        }
        if let Some(k) = &io.kernel {
            items.push(k.control.as_poll_item(zmq::POLLIN));
            items.push(k.shell.as_poll_item(zmq::POLLIN));
            items.push(k.stdin.as_poll_item(zmq::POLLIN));
        }
        // Requests stashed while a chunk stream came in are ready at once.
        let stashed = |c: Channel| io.stashed.iter().any(|(s, _)| *s == c);
        let (mux_stashed, task_stashed) = (stashed(Channel::Mux), stashed(Channel::Task));
        let timeout = if mux_stashed || task_stashed { 0 } else { 250 };
        match zmq::poll(&mut items, timeout) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return None,
            Err(e) => {
                warn!(error = %e, "poll failed");
                return None;
            }
        }
        let mut readable = items.iter().map(|i| i.is_readable());
        let mut next = || readable.next().unwrap_or(false);
        let mut ready = Ready::default();
        if io.hub.is_some() {
            (ready.control, ready.mux, ready.task) = (next(), next(), next());
            ready.mux |= mux_stashed;
            ready.task |= task_stashed;
        }
        if io.kernel.is_some() {
            (ready.kernel_control, ready.shell, ready.stdin) = (next(), next(), next());
        }
        Some(ready)
    }

    /// Removes the shared segments of results no client took within
    /// [`REPLY_SEGMENT_LIFE`]; before each request and on every turn of the
    /// loop, so an idle engine does not keep them.
    fn drop_stale_segments(&mut self) {
        while self
            .reply_segments
            .front()
            .is_some_and(|(at, _)| at.elapsed() > REPLY_SEGMENT_LIFE)
        {
            self.reply_segments.pop_front();
        }
    }

    /// Whether a standalone kernel's parent is gone (this process has a new
    /// parent: it was adopted).
    fn orphaned(&self) -> bool {
        #[cfg(unix)]
        {
            self.parent_pid
                .is_some_and(|p| std::os::unix::process::parent_id() != p)
        }
        #[cfg(not(unix))]
        {
            false
        }
    }

    /// Nothing is ever asked on stdin (Rhai has no `input()`), so whatever
    /// comes there is read and dropped.
    fn drop_stdin(&self) {
        let io = self.io.borrow();
        let Some(k) = &io.kernel else { return };
        while let Ok(frames) = recv_frames(&k.stdin, zmq::DONTWAIT) {
            warn!(
                frames = frames.len(),
                "dropped a message on the kernel's stdin channel: the kernel never asks for input"
            );
        }
    }

    fn watch_hub(&mut self) {
        let Some(hub) = &mut self.hub else { return };
        let silence = hub.heartbeat.silence();
        if hub.heartbeat.take_hub_changed() {
            warn!("the hub restarted; registering again");
            hub.lost = true;
        } else if hub.heartbeat.take_unknown()
            && !hub.lost
            && hub.last_attempt.elapsed() > hub.hb_period * 2
        {
            // Answers to pongs sent before this engine (re)registered are
            // ignored: the hub knows it by now.
            warn!("the hub dropped this engine (a network cut?); registering again");
            hub.lost = true;
        } else if !hub.lost && silence > hub.lost_after() {
            warn!(silence = ?silence, "no heartbeat from the hub; will register again when it is back");
            hub.lost = true;
        }
        // Answers to our re-registration.
        while let Ok(frames) = recv_frames(&hub.registration, zmq::DONTWAIT) {
            let mut io = self.io.borrow_mut();
            match io.session.decode_frames(frames) {
                Ok(Message {
                    content: Content::RegistrationReply(r),
                    ..
                }) if r.status == Status::Ok => {
                    if r.id != io.engine_id {
                        warn!(
                            old = io.engine_id,
                            new = r.id,
                            "the restarted hub gave this engine a new id"
                        );
                        io.engine_id = r.id;
                    }
                    let registered = match Registered::from_reply(r) {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(error = %e, "the hub's registration reply has bad communicator keys");
                            continue;
                        }
                    };
                    info!(engine = registered.id, "registered with the hub again");
                    hub.heartbeat.set_hub(&registered.hub_instance);
                    hub.lost = false;
                    hub.hb_period = registered.hb_period;
                    *self.comm_env.curve.borrow_mut() = registered.communicator_keys;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "bad message on the registration channel"),
            }
        }
        let back = silence < hub.hb_period * 2;
        if hub.lost && back && hub.last_attempt.elapsed() > Duration::from_millis(500) {
            hub.last_attempt = Instant::now();
            let io = self.io.borrow();
            let req = Message::new(
                &io.session,
                Content::RegistrationRequest(RegistrationRequest {
                    uuid: hub.uuid.clone(),
                    id: Some(io.engine_id),
                    host: Some(self.comm_env.advertise.clone()),
                }),
            );
            let _ = send_frames(
                &hub.registration,
                io.session.encode(&req).into_frames(),
                zmq::DONTWAIT,
            );
        }
    }

    fn serve_deferred(&mut self, server: &EngineServer) {
        let deferred = std::mem::take(&mut self.io.borrow_mut().deferred);
        for msg in deferred {
            // Clearing also rebuilds the script engine, dropping any state
            // natives hold (communicators and their sockets).
            let engine = server.script_engine(&self.io, &self.comm_env);
            self.namespace = Namespace::new(engine);
            let mut io = self.io.borrow_mut();
            let meta = io.basic_metadata();
            io.reply(
                Route::Hub(Channel::Control),
                &msg,
                Content::ClearReply(TaskReply::ok()),
                meta,
                vec![],
            );
        }
    }

    fn take_request(&mut self, channel: Channel) {
        let route = Route::Hub(channel);
        let msg = {
            let mut io = self.io.borrow_mut();
            let io = &mut *io;
            let Some(hub) = &io.hub else { return };
            let stashed = io.stashed.iter().position(|(c, _)| *c == channel);
            let frames = match stashed.and_then(|i| io.stashed.remove(i)) {
                Some((_, frames)) => frames,
                None => match recv_frames(hub.socket(channel), zmq::DONTWAIT) {
                    Ok(f) => f,
                    Err(zmq::Error::EAGAIN) => return,
                    Err(e) => {
                        warn!(error = %e, "receive failed");
                        return;
                    }
                },
            };
            match decode_request(&mut io.session, frames) {
                Inbound::Request(m) => m,
                Inbound::Bad { request, why } => {
                    io.reply_bad(route, &request, &why);
                    return;
                }
                Inbound::Dropped(e) => {
                    warn!(error = %e, "dropped a bad request");
                    return;
                }
            }
        };
        if let Content::StreamChunk(c) = &msg.content {
            // A chunk of a stream refused, aborted or already over.
            let parent = msg.parent_header.as_ref().map(|p| p.msg_id.as_str());
            let io = self.io.borrow();
            if !parent.is_some_and(|p| io.refused_streams.iter().any(|r| r == p)) {
                warn!(msg_id = ?parent, index = c.index, "dropped a chunk of no stream being received");
            }
            return;
        }
        let mut msg = msg;
        {
            let mut io = self.io.borrow_mut();
            if io.aborted.remove(&msg.header.msg_id) {
                io.reply_aborted(route, &msg);
                return;
            }
        }
        let streamed = msg
            .metadata
            .contains_key("stream_frames")
            .then(|| RequestMetadata::from_map(&msg.metadata).ok())
            .flatten()
            .and_then(|m| m.stream_frames);
        if let Some(of) = streamed {
            match self.receive_stream(channel, &msg, of) {
                Ok(buffers) => msg.buffers = buffers,
                Err(e) => {
                    warn!(error = %e, "refused a chunk stream");
                    let mut io = self.io.borrow_mut();
                    if io.refused_streams.len() >= REFUSED_STREAMS {
                        io.refused_streams.pop_front();
                    }
                    io.refused_streams.push_back(msg.header.msg_id.clone());
                    io.reply_bad(route, &msg, &e.to_string());
                    return;
                }
            }
        }
        self.run_request(route, msg);
    }

    /// Receives the `of` chunks that follow the streamed request `head` on
    /// `channel`, in order; other requests that arrive meanwhile wait in
    /// the stash. Refuses the stream (out of order, duplicated, oversized,
    /// or nothing for [`stream::CHUNK_GAP`]) with an error saying which.
    fn receive_stream(
        &mut self,
        channel: Channel,
        head: &Message,
        of: u32,
    ) -> Result<Vec<zmq::Message>, stream::StreamError> {
        let mut io = self.io.borrow_mut();
        let max_frames = io.session.limits.max_frames;
        let mut assembly = Assembly::new(&head.header.msg_id, of, max_frames * CHUNK_BYTES);
        if of as usize > max_frames {
            return Err(stream::StreamError::BadChunk {
                msg_id: head.header.msg_id.clone(),
                index: 0,
                what: format!("announces {of} chunks, more than the {max_frames} allowed"),
            });
        }
        let mut last = Instant::now();
        while !assembly.is_complete() {
            // Chunks of this stream that came while another stream was
            // being received wait in the stash: they go first.
            let stashed = take_stashed_chunk(&mut io.stashed, channel, &head.header.msg_id);
            let raw = match stashed {
                Some(raw) => raw,
                None => {
                    let ready = {
                        let Some(hub) = &io.hub else {
                            return Err(assembly.truncated(last.elapsed()));
                        };
                        let sock = hub.socket(channel);
                        let mut items = [sock.as_poll_item(zmq::POLLIN)];
                        let left = stream::CHUNK_GAP.saturating_sub(last.elapsed());
                        match zmq::poll(&mut items, left.as_millis() as i64) {
                            Ok(_) | Err(zmq::Error::EINTR) => items[0].is_readable(),
                            Err(e) => {
                                warn!(error = %e, "poll failed");
                                false
                            }
                        }
                    };
                    if !ready {
                        if last.elapsed() >= stream::CHUNK_GAP {
                            return Err(assembly.truncated(stream::CHUNK_GAP));
                        }
                        continue;
                    }
                    let Some(hub) = &io.hub else {
                        return Err(assembly.truncated(last.elapsed()));
                    };
                    let frames = match recv_frames(hub.socket(channel), zmq::DONTWAIT) {
                        Ok(f) => f,
                        Err(_) => continue,
                    };
                    // A chunk of this stream is taken here, anything else waits its
                    // turn (and is verified then: the replay guard sees it once).
                    let raw = match RawMessage::from_frames(frames, &io.session.limits) {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(error = %e, "dropped a malformed message");
                            continue;
                        }
                    };
                    if let Err(e) = io.session.check_signature(&raw) {
                        warn!(error = %e, "dropped a message");
                        continue;
                    }
                    let is_ours = raw.header().is_ok_and(|h| h.msg_type == "stream_chunk")
                        && raw
                            .parent_header()
                            .is_ok_and(|p| p.is_some_and(|p| p.msg_id == head.header.msg_id));
                    if !is_ours {
                        io.stashed.push_back((channel, raw.into_frames()));
                        continue;
                    }
                    raw
                }
            };
            let chunk = match io.session.decode(raw) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "dropped a stream chunk");
                    continue;
                }
            };
            let Content::StreamChunk(c) = &chunk.content else {
                continue;
            };
            last = Instant::now();
            assembly.accept(c, chunk.buffers)?;
        }
        Ok(assembly.into_buffers())
    }

    /// Runs one request in the namespace and answers it on `route`. A
    /// kernel's execute follows Jupyter's rules: `silent` publishes neither
    /// `execute_input` nor `execute_result` and does not count, nor does
    /// `store_history: false`; its reply carries no `result` (front ends
    /// read the value from iopub). A hub's execute counts always and
    /// publishes its input (zpar's clients send `silent` to get the value
    /// in the reply instead of on iopub).
    pub(crate) fn run_request(&mut self, route: Route, msg: Message) {
        let from_kernel = matches!(route, Route::Kernel(_));
        let stop_on_error =
            from_kernel && matches!(&msg.content, Content::ExecuteRequest(r) if r.stop_on_error);
        let started = iso8601_now();
        let limits = RequestMetadata::from_map(&msg.metadata).unwrap_or_default();
        {
            let mut io = self.io.borrow_mut();
            io.parent = Some(msg.header.clone());
            io.publish_status("busy");
            io.stdout.clear();
            io.stderr.clear();
            io.stop_reason = None;
            // A request's own limit wins; 0 there means "no limit".
            // Checked when the request was decoded (`inbound`).
            io.op_limit = match limits.max_operations {
                Some(0) => None,
                Some(n) => Some(n),
                None => self.default_op_limit,
            };
            io.deadline = limits
                .timeout
                .filter(|t| *t > 0.0)
                .map(|t| (Instant::now() + Duration::from_secs_f64(t), t));
        }
        let mut buffers = Vec::new();
        self.drop_stale_segments();
        // A client on this host takes a large result from shared memory.
        let mut shared = limits
            .shared_host
            .as_deref()
            .filter(|h| *h == zpar_protocol::bulk::host_id() && zpar_protocol::bulk::available())
            .map(|_| SharedOut::new(zpar_protocol::bulk::SHARED_MIN_BYTES));
        let outcome: Result<Option<Json>, ScriptError> = match &msg.content {
            Content::ExecuteRequest(r) => {
                let silent = r.silent;
                if !from_kernel || (!silent && r.store_history) {
                    self.execution_count += 1;
                }
                if !(from_kernel && silent) {
                    self.io
                        .borrow_mut()
                        .publish(Content::ExecuteInput(ExecuteInput {
                            code: r.code.clone(),
                            execution_count: self.execution_count,
                        }));
                }
                self.namespace.execute(&r.code).map(|d| {
                    if d.is_unit() {
                        return None;
                    }
                    let shown = d.to_string();
                    if !silent {
                        let mut data = std::collections::BTreeMap::new();
                        data.insert("text/plain".to_string(), Json::String(shown.clone()));
                        self.io
                            .borrow_mut()
                            .publish(Content::ExecuteResult(ExecuteResult {
                                execution_count: self.execution_count,
                                data,
                                metadata: Default::default(),
                            }));
                    }
                    // A value that cannot travel is shown, not sent.
                    Some(match to_value(&d) {
                        Ok(v) => v.encode_into(&mut buffers),
                        Err(_) => Value::Str(shown).encode_into(&mut buffers),
                    })
                })
            }
            Content::ApplyRequest(r) => decode_values(&r.args, &msg.buffers)
                .and_then(|args| self.namespace.apply(&r.f, args))
                .and_then(|d| {
                    encode_dynamic(&d, &mut buffers, shared.as_mut()).map_err(|e| {
                        ScriptError::new("NotTransferable", format!("the result of apply: {e}"))
                    })
                })
                .map(Some),
            Content::PushRequest(r) => r
                .namespace
                .iter()
                .try_for_each(|(name, json)| {
                    let v = Value::decode(json, &msg.buffers)
                        .map_err(|e| ScriptError::new("BadArgument", format!("{name}: {e}")))?;
                    self.namespace.push(name, v)
                })
                .map(|_| None),
            Content::PullRequest(r) => {
                let mut encoded = Vec::with_capacity(r.names.len());
                let mut failed = None;
                for n in &r.names {
                    let got = self.namespace.lookup(n).and_then(|d| {
                        encode_dynamic(&d, &mut buffers, shared.as_mut())
                            .map_err(|e| ScriptError::new("NotTransferable", format!("{n}: {e}")))
                    });
                    match got {
                        Ok(j) => encoded.push(j),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None if r.single && encoded.len() == 1 => Ok(encoded.pop()),
                    None => Ok(Some(Json::Array(encoded))),
                }
            }
            // ipyparallel's apply (and its push, pull and map, which are
            // applies) carries pickled Python in its buffers (`inbound`).
            Content::Unknown { msg_type, .. } if msg_type == "apply_request" => Err(
                ScriptError::new(ErrorClass::Unsupported.as_str(), PICKLED_PYTHON),
            ),
            other => Err(ScriptError::new(
                ErrorClass::UnknownMessageType.as_str(),
                format!("{} is not a request an engine serves", other.msg_type()),
            )),
        };
        let failed = outcome.is_err();
        let now = Instant::now();
        match &outcome {
            Ok(_) => self.reply_segments.extend(
                shared
                    .into_iter()
                    .flat_map(|s| s.segments)
                    .map(|seg| (now, seg)),
            ),
            Err(_) => drop(shared), // an error sends no value: its segments go now
        }
        let mut io = self.io.borrow_mut();
        let mut reply = match outcome {
            Ok(result) => TaskReply {
                result: result.filter(|_| !from_kernel),
                ..TaskReply::default()
            },
            Err(e) => {
                buffers.clear();
                let e = crate::server::explain_missing(e, io.engine_id, &self.natives);
                let mut r = TaskReply::error_with_traceback(&e.ename, e.message.clone());
                if let (Some(l), Some(c)) = (e.line, e.column) {
                    r.traceback.push(format!("  at line {l}, column {c}"));
                }
                r.line = e.line;
                r.column = e.column;
                // ipyparallel's shape; with it, its client waits for our
                // `idle`, which follows the reply below.
                r.engine_info = Some(serde_json::json!({
                    "engine_uuid": io.uuid,
                    "engine_id": io.engine_id,
                    "method": msg.header.msg_type.trim_end_matches("_request"),
                }));
                if matches!(msg.content, Content::ExecuteRequest(_)) {
                    io.publish(Content::Error(ErrorContent {
                        ename: e.ename.clone(),
                        evalue: e.message.clone(),
                        traceback: r.traceback.clone(),
                    }));
                }
                r
            }
        };
        reply.engine_id = Some(io.engine_id);
        reply.execution_count = Some(self.execution_count);
        let meta = ReplyMetadata {
            engine: Some(io.engine_id),
            engine_uuid: Some(io.uuid.clone()),
            status: Some(reply.status),
            started: Some(started),
            completed: Some(iso8601_now()),
            follow: limits.follow,
            after: limits.after,
            stdout: std::mem::take(&mut io.stdout),
            stderr: std::mem::take(&mut io.stderr),
            stream_frames: None,
        }
        .to_map();
        if from_kernel {
            buffers.clear();
        }
        let reply_type = Content::reply_type_for(&msg.header.msg_type);
        io.reply(
            route,
            &msg,
            Content::task_reply_of(&reply_type, reply),
            meta,
            buffers,
        );
        io.publish_status("idle");
        io.parent = None;
        drop(io);
        self.namespace.drop_replaced();
        if failed && stop_on_error {
            self.abort_waiting_cells();
        }
    }
}

/// Why an ipyparallel `apply_request` (pickled Python in its buffers) gets
/// an `Unsupported` error.
const PICKLED_PYTHON: &str = "zpar engines run Rhai and cannot load pickled Python: \
    ipyparallel's apply, push, pull and map send Python functions and objects as pickles. \
    Send Rhai code as a string instead, with execute() or %px";

fn decode_values(args: &[Json], buffers: &[zmq::Message]) -> Result<Vec<Value>, ScriptError> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            Value::decode(a, buffers)
                .map_err(|e| ScriptError::new("BadArgument", format!("argument {i}: {e}")))
        })
        .collect()
}

/// Takes the first stashed message on `channel` that is a chunk of the
/// stream `msg_id`, leaving the others in their order.
fn take_stashed_chunk(
    stash: &mut std::collections::VecDeque<(Channel, Vec<zmq::Message>)>,
    channel: Channel,
    msg_id: &str,
) -> Option<RawMessage> {
    let limits = zpar_protocol::Limits::default();
    for i in 0..stash.len() {
        if stash[i].0 != channel {
            continue;
        }
        let (_, frames) = stash.remove(i)?;
        let raw = match RawMessage::from_frames(frames, &limits) {
            Ok(r) => r,
            Err(e) => {
                // It was read once already; it cannot be read now.
                warn!(error = %e, "dropped a malformed stashed message");
                return None;
            }
        };
        let ours = raw.header().is_ok_and(|h| h.msg_type == "stream_chunk")
            && raw
                .parent_header()
                .is_ok_and(|p| p.is_some_and(|p| p.msg_id == msg_id));
        if ours {
            return Some(raw);
        }
        stash.insert(i, (channel, raw.into_frames()));
    }
    None
}
