//! The engine process: registration, the request loop, control and output.
//!
//! # Design
//!
//! One thread does everything that touches the namespace and the hub's
//! channels: it polls control, mux and task, runs one request at a time, and
//! replies on the socket the request came from. Control is read before queued
//! work. While a script runs, Rhai's progress callback polls the control
//! socket every [`CONTROL_CHECK_OPS`] operations on this same thread, so an
//! interrupt, abort or shutdown is served mid-script without a second thread
//! touching the sockets. `print` output goes out on iopub as it happens and
//! is recorded with the reply. The heartbeat runs on a thread of its own
//! ([`crate::heartbeat`]).

use crate::communicator::{self, CommEnv};
use crate::convert::{encode_dynamic, to_value};
use crate::heartbeat::Heartbeat;
use crate::namespace::{Namespace, ScriptError};
use crate::EngineError;
use serde_json::{json, Map, Value as Json};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use zpar_protocol::{
    iso8601_now, new_id, recv_frames, send_frames, Content, EngineConnection, ExecuteResult,
    Header, Message, RegistrationRequest, Session, Status, Stream, TaskReply,
    UnregistrationRequest, Value,
};

/// How many script operations run between two looks at the control socket.
pub const CONTROL_CHECK_OPS: u64 = 1024;

/// How to run an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The hub's engine connection file contents.
    pub connection: EngineConnection,
    /// The address the engine's communicators bind to (default: the hub's
    /// address, which on one machine is loopback).
    pub bind_ip: Option<String>,
    /// How long to keep trying to register before giving up.
    pub registration_timeout: Duration,
    /// Default limit of script operations per request (None: unlimited).
    pub max_operations: Option<u64>,
    /// An id to ask the hub for (after a hub restart).
    pub requested_id: Option<u32>,
    /// This engine's uuid (default: a fresh one).
    pub uuid: Option<String>,
    /// Set from outside (a signal handler) to stop the engine.
    pub stop: Option<&'static AtomicBool>,
}

impl EngineConfig {
    /// Defaults for a connection: 30 s to register, no operation limit.
    pub fn new(connection: EngineConnection) -> EngineConfig {
        EngineConfig {
            connection,
            bind_ip: None,
            registration_timeout: Duration::from_secs(30),
            max_operations: None,
            requested_id: None,
            uuid: None,
            stop: None,
        }
    }
}

/// The sockets and per-request state the script callbacks also reach.
struct Io {
    session: Session,
    engine_id: u32,
    control: zmq::Socket,
    mux: zmq::Socket,
    task: zmq::Socket,
    iopub: zmq::Socket,
    /// The request being run, as parent of its output.
    parent: Option<Header>,
    stdout: String,
    stderr: String,
    /// Why the running script must stop, once something asked.
    stop_reason: Option<String>,
    op_limit: Option<u64>,
    /// When the running request must stop, and its timeout in seconds.
    deadline: Option<(Instant, f64)>,
    shutdown: bool,
    aborted: HashSet<String>,
    /// Control requests that need the namespace (clear), served after the
    /// running request.
    deferred: Vec<Message>,
}

impl Io {
    fn publish(&mut self, content: Content) {
        let mut msg = Message::new(&self.session, content);
        msg.parent_header = self.parent.clone();
        msg.metadata.insert("engine".into(), json!(self.engine_id));
        let mut raw = self.session.encode(&msg);
        raw.identities = vec![zmq::Message::from(
            format!("engine.{}.{}", self.engine_id, msg.header.msg_type).as_bytes(),
        )];
        if let Err(e) = send_frames(&self.iopub, raw.into_frames(), zmq::DONTWAIT) {
            debug!(error = %e, "iopub message dropped");
        }
    }

    fn stream(&mut self, name: &str, text: &str) {
        let mut line = text.to_string();
        line.push('\n');
        if name == "stdout" {
            self.stdout.push_str(&line);
        } else {
            self.stderr.push_str(&line);
        }
        self.publish(Content::Stream(Stream {
            name: name.to_string(),
            text: line,
        }));
    }

    fn reply(
        &mut self,
        socket: Channel,
        request: &Message,
        content: Content,
        metadata: Map<String, Json>,
        buffers: Vec<zmq::Message>,
    ) {
        let mut reply = request.reply(&self.session, content);
        reply.metadata = metadata;
        reply.buffers = buffers;
        let raw = self.session.encode_owned(reply);
        let sock = match socket {
            Channel::Control => &self.control,
            Channel::Mux => &self.mux,
            Channel::Task => &self.task,
        };
        if let Err(e) = send_frames(sock, raw.into_frames(), 0) {
            warn!(error = %e, "reply not sent");
        }
    }

    fn basic_metadata(&self) -> Map<String, Json> {
        let mut m = Map::new();
        m.insert("engine".into(), json!(self.engine_id));
        m
    }

    /// Reads and serves everything waiting on control. Returns true if the
    /// running script must stop.
    fn serve_control(&mut self, running: bool) -> bool {
        loop {
            let frames = match recv_frames(&self.control, zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    warn!(error = %e, "control socket failed");
                    break;
                }
            };
            let msg = match self.session.decode_frames(frames) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "dropped a bad control message");
                    continue;
                }
            };
            let meta = self.basic_metadata();
            match &msg.content {
                Content::InterruptRequest(_) => {
                    if running {
                        self.stop_reason = Some("Interrupted|interrupted by the client".into());
                    }
                    self.reply(
                        Channel::Control,
                        &msg,
                        Content::InterruptReply(TaskReply::ok()),
                        meta,
                        vec![],
                    );
                }
                Content::AbortRequest(r) => {
                    match &r.msg_ids {
                        Some(ids) => self.aborted.extend(ids.iter().cloned()),
                        None => self.abort_queued(),
                    }
                    self.reply(
                        Channel::Control,
                        &msg,
                        Content::AbortReply(TaskReply::ok()),
                        meta,
                        vec![],
                    );
                }
                Content::ShutdownRequest(_) => {
                    info!(engine = self.engine_id, "shutdown requested");
                    self.shutdown = true;
                    self.stop_reason = Some("Interrupted|the engine is shutting down".into());
                    self.reply(
                        Channel::Control,
                        &msg,
                        Content::ShutdownReply(TaskReply::ok()),
                        meta,
                        vec![],
                    );
                }
                Content::ClearRequest(_) => self.deferred.push(msg),
                other => {
                    let reply_type = reply_type_for(other.msg_type());
                    let err = TaskReply::error(
                        "UnknownMessageType",
                        format!(
                            "{} is not a control request an engine serves",
                            other.msg_type()
                        ),
                    );
                    self.reply(
                        Channel::Control,
                        &msg,
                        Content::task_reply_of(&reply_type, err),
                        meta,
                        vec![],
                    );
                }
            }
        }
        self.stop_reason.is_some()
    }

    /// Answers every request already waiting on mux and task as aborted.
    fn abort_queued(&mut self) {
        for channel in [Channel::Mux, Channel::Task] {
            loop {
                let sock = if channel == Channel::Mux {
                    &self.mux
                } else {
                    &self.task
                };
                let Ok(frames) = recv_frames(sock, zmq::DONTWAIT) else {
                    break;
                };
                match self.session.decode_frames(frames) {
                    Ok(m) => self.reply_aborted(channel, &m),
                    Err(e) => warn!(error = %e, "dropped a bad queued message"),
                }
            }
        }
    }

    fn reply_aborted(&mut self, channel: Channel, msg: &Message) {
        let reply_type = reply_type_for(&msg.header.msg_type);
        let r = TaskReply {
            status: Status::Aborted,
            engine_id: Some(self.engine_id),
            ..TaskReply::default()
        };
        let meta = self.basic_metadata();
        self.reply(
            channel,
            msg,
            Content::task_reply_of(&reply_type, r),
            meta,
            vec![],
        );
    }

    /// Called by the script engine's progress callback.
    fn check_progress(&mut self, ops: u64) -> Option<String> {
        if let Some(limit) = self.op_limit {
            if ops > limit {
                return Some(format!(
                    "OperationLimit|the request exceeded its limit of {limit} operations"
                ));
            }
        }
        if ops.is_multiple_of(CONTROL_CHECK_OPS) {
            if let Some((d, secs)) = self.deadline {
                if Instant::now() >= d {
                    return Some(format!(
                        "Timeout|the request ran past its timeout of {secs} s"
                    ));
                }
            }
            if matches!(self.control.poll(zmq::POLLIN, 0), Ok(n) if n > 0) {
                self.serve_control(true);
            }
        }
        self.stop_reason.clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Control,
    Mux,
    Task,
}

fn reply_type_for(request_type: &str) -> String {
    Content::reply_type(request_type)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}_reply", request_type.trim_end_matches("_request")))
}

/// A hook that adds natives to a script engine.
type Setup = Box<dyn Fn(&mut rhai::Engine)>;

/// A configured engine, ready to register and serve.
///
/// ```no_run
/// use zpar_engine::{EngineConfig, EngineServer};
/// let conn = zpar_protocol::connection::read_json_file(
///     &zpar_protocol::Profile::named("default").engine_file()).unwrap();
/// let mut server = EngineServer::new(EngineConfig::new(conn));
/// // A custom engine registers its own native functions:
/// server.on_setup(|engine| { engine.register_fn("triple", |x: i64| 3 * x); });
/// server.run().unwrap();
/// ```
pub struct EngineServer {
    config: EngineConfig,
    setups: Vec<Setup>,
}

impl EngineServer {
    /// An engine for this configuration.
    pub fn new(config: EngineConfig) -> EngineServer {
        EngineServer {
            config,
            setups: Vec::new(),
        }
    }

    /// Adds native functions or types to every script engine this server
    /// builds (at start and after `clear`).
    pub fn on_setup(&mut self, f: impl Fn(&mut rhai::Engine) + 'static) -> &mut Self {
        self.setups.push(Box::new(f));
        self
    }

    /// Registers with the hub and serves until shut down.
    pub fn run(self) -> Result<(), EngineError> {
        let conn = &self.config.connection;
        let ctx = zmq::Context::new();
        let uuid = self.config.uuid.clone().unwrap_or_else(new_id);
        let mut session = Session::new(conn.key.as_bytes(), &conn.signature_scheme, "engine")?;
        session.session_id = uuid.clone();

        let dealer = |port: u16| -> Result<zmq::Socket, EngineError> {
            let s = ctx.socket(zmq::DEALER)?;
            s.set_identity(uuid.as_bytes())?;
            s.set_linger(1000)?;
            s.connect(&conn.url(port))?;
            Ok(s)
        };
        let registration = dealer(conn.registration)?;
        let control = dealer(conn.control)?;
        let mux = dealer(conn.mux)?;
        let task = dealer(conn.task)?;
        let iopub = ctx.socket(zmq::PUB)?;
        iopub.set_linger(1000)?;
        iopub.connect(&conn.url(conn.iopub))?;
        let heartbeat = Heartbeat::start(
            &ctx,
            &conn.url(conn.hb_ping),
            &conn.url(conn.hb_pong),
            uuid.as_bytes(),
        )?;

        let (engine_id, hb_period, hub_instance) =
            register(&mut session, &registration, &uuid, &self.config)?;
        heartbeat.set_hub(&hub_instance);
        info!(engine = engine_id, uuid = %uuid, "registered with the hub");

        let io = Rc::new(RefCell::new(Io {
            session,
            engine_id,
            control,
            mux,
            task,
            iopub,
            parent: None,
            stdout: String::new(),
            stderr: String::new(),
            stop_reason: None,
            op_limit: None,
            deadline: None,
            shutdown: false,
            aborted: HashSet::new(),
            deferred: Vec::new(),
        }));
        let comm_env = CommEnv {
            ctx: ctx.clone(),
            ip: self
                .config
                .bind_ip
                .clone()
                .unwrap_or_else(|| conn.ip.clone()),
            engine_id,
        };
        let mut state = Serving {
            namespace: Namespace::new(self.script_engine(&io, &comm_env)),
            io,
            comm_env,
            execution_count: 0,
            default_op_limit: self.config.max_operations,
            hub: HubWatch {
                registration,
                heartbeat,
                uuid: uuid.clone(),
                hb_period,
                lost: false,
                last_attempt: Instant::now(),
            },
        };
        state.serve(&self);

        // Leave politely so the hub need not wait for missed heartbeats.
        let (bye, engine_id) = {
            let io = state.io.borrow();
            let id = io.engine_id;
            let bye = io.session.encode(&Message::new(
                &io.session,
                Content::UnregistrationRequest(UnregistrationRequest { id }),
            ));
            (bye, id)
        };
        let _ = send_frames(&state.hub.registration, bye.into_frames(), zmq::DONTWAIT);
        drop(state);
        info!(engine = engine_id, "engine stopped");
        Ok(())
    }

    fn script_engine(&self, io: &Rc<RefCell<Io>>, comm_env: &CommEnv) -> rhai::Engine {
        let mut engine = rhai::Engine::new();
        engine.set_max_expr_depths(256, 256);
        engine.set_max_call_levels(256);
        crate::arrays::register(&mut engine);
        communicator::register(&mut engine, comm_env.clone());
        let out = io.clone();
        engine.on_print(move |s| out.borrow_mut().stream("stdout", s));
        let err = io.clone();
        engine.on_debug(move |s, _, pos| {
            let text = if pos.is_none() {
                s.to_string()
            } else {
                format!("{s} ({pos})")
            };
            err.borrow_mut().stream("stderr", &text)
        });
        let prog = io.clone();
        engine.on_progress(move |ops| prog.borrow_mut().check_progress(ops).map(Into::into));
        for setup in &self.setups {
            setup(&mut engine);
        }
        engine
    }
}

/// Sends registration requests until the hub answers or time runs out.
fn register(
    session: &mut Session,
    socket: &zmq::Socket,
    uuid: &str,
    config: &EngineConfig,
) -> Result<(u32, Duration, String), EngineError> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        let req = Message::new(
            session,
            Content::RegistrationRequest(RegistrationRequest {
                uuid: uuid.to_string(),
                id: config.requested_id,
            }),
        );
        send_frames(socket, session.encode(&req).into_frames(), zmq::DONTWAIT).ok();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if socket.poll(zmq::POLLIN, left.as_millis().max(1) as i64)? == 0 {
                continue;
            }
            let frames = recv_frames(socket, 0)?;
            match session.decode_frames(frames) {
                Ok(Message {
                    content: Content::RegistrationReply(r),
                    ..
                }) => {
                    if r.status != Status::Ok {
                        return Err(EngineError::Refused(r.evalue.unwrap_or_default()));
                    }
                    return Ok((
                        r.id,
                        Duration::from_millis(r.hb_period_ms.max(1)),
                        r.hub_instance,
                    ));
                }
                Ok(other) => debug!(msg_type = %other.header.msg_type, "ignored while registering"),
                Err(e) => warn!(error = %e, "bad message while registering"),
            }
        }
        if started.elapsed() >= config.registration_timeout {
            return Err(EngineError::NoHub {
                url: config.connection.url(config.connection.registration),
                waited: config.registration_timeout,
            });
        }
        wait = (wait * 2).min(Duration::from_secs(2));
        debug!("no registration reply yet; retrying");
    }
}

/// Watches the hub's heartbeat; after a silence (the hub died), registers
/// again — same uuid, asking for the same id — once pings resume.
struct HubWatch {
    registration: zmq::Socket,
    heartbeat: Heartbeat,
    uuid: String,
    hb_period: Duration,
    lost: bool,
    last_attempt: Instant,
}

impl HubWatch {
    /// How much silence means the hub is gone.
    fn lost_after(&self) -> Duration {
        (self.hb_period * 5).max(Duration::from_secs(2))
    }
}

struct Serving {
    hub: HubWatch,
    namespace: Namespace,
    io: Rc<RefCell<Io>>,
    comm_env: CommEnv,
    execution_count: u64,
    default_op_limit: Option<u64>,
}

impl Serving {
    fn serve(&mut self, server: &EngineServer) {
        loop {
            {
                let mut io = self.io.borrow_mut();
                io.stop_reason = None;
                io.serve_control(false);
            }
            self.serve_deferred(server);
            if self.io.borrow().shutdown
                || server
                    .config
                    .stop
                    .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                return;
            }
            // Poll with a timeout so a lost wake-up can never stall us.
            let (mux_ready, task_ready, control_ready) = {
                let io = self.io.borrow();
                let mut items = [
                    io.control.as_poll_item(zmq::POLLIN),
                    io.mux.as_poll_item(zmq::POLLIN),
                    io.task.as_poll_item(zmq::POLLIN),
                ];
                match zmq::poll(&mut items, 250) {
                    Ok(_) => {}
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => {
                        warn!(error = %e, "poll failed");
                        continue;
                    }
                }
                (
                    items[1].is_readable(),
                    items[2].is_readable(),
                    items[0].is_readable(),
                )
            };
            self.watch_hub();
            if control_ready {
                continue; // control first
            }
            if mux_ready {
                self.take_request(Channel::Mux);
            }
            if task_ready {
                self.take_request(Channel::Task);
            }
        }
    }

    fn watch_hub(&mut self) {
        let silence = self.hub.heartbeat.silence();
        if self.hub.heartbeat.take_hub_changed() {
            warn!("the hub restarted; registering again");
            self.hub.lost = true;
        } else if !self.hub.lost && silence > self.hub.lost_after() {
            warn!(silence = ?silence, "no heartbeat from the hub; will register again when it is back");
            self.hub.lost = true;
        }
        // Answers to our re-registration.
        while let Ok(frames) = recv_frames(&self.hub.registration, zmq::DONTWAIT) {
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
                    info!(engine = r.id, "registered again with the restarted hub");
                    self.hub.heartbeat.set_hub(&r.hub_instance);
                    self.hub.lost = false;
                    self.hub.hb_period = Duration::from_millis(r.hb_period_ms.max(1));
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "bad message on the registration channel"),
            }
        }
        let back = silence < self.hub.hb_period * 2;
        if self.hub.lost && back && self.hub.last_attempt.elapsed() > Duration::from_millis(500) {
            self.hub.last_attempt = Instant::now();
            let io = self.io.borrow();
            let req = Message::new(
                &io.session,
                Content::RegistrationRequest(RegistrationRequest {
                    uuid: self.hub.uuid.clone(),
                    id: Some(io.engine_id),
                }),
            );
            let _ = send_frames(
                &self.hub.registration,
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
                Channel::Control,
                &msg,
                Content::ClearReply(TaskReply::ok()),
                meta,
                vec![],
            );
        }
    }

    fn take_request(&mut self, channel: Channel) {
        let msg = {
            let mut io = self.io.borrow_mut();
            let sock = if channel == Channel::Mux {
                &io.mux
            } else {
                &io.task
            };
            let frames = match recv_frames(sock, zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    warn!(error = %e, "receive failed");
                    return;
                }
            };
            match io.session.decode_frames(frames) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "dropped a bad request");
                    return;
                }
            }
        };
        {
            let mut io = self.io.borrow_mut();
            if io.aborted.remove(&msg.header.msg_id) {
                io.reply_aborted(channel, &msg);
                return;
            }
        }
        self.run_request(channel, msg);
    }

    fn run_request(&mut self, channel: Channel, msg: Message) {
        let started = iso8601_now();
        {
            let mut io = self.io.borrow_mut();
            io.parent = Some(msg.header.clone());
            io.stdout.clear();
            io.stderr.clear();
            io.stop_reason = None;
            // A request's own limit wins; 0 there means "no limit".
            io.op_limit = match msg.metadata.get("max_operations").and_then(Json::as_u64) {
                Some(0) => None,
                Some(n) => Some(n),
                None => self.default_op_limit,
            };
            io.deadline = msg
                .metadata
                .get("timeout")
                .and_then(Json::as_f64)
                .filter(|t| *t > 0.0)
                .map(|t| (Instant::now() + Duration::from_secs_f64(t), t));
        }
        let mut buffers = Vec::new();
        let outcome: Result<Option<Json>, ScriptError> = match &msg.content {
            Content::ExecuteRequest(r) => {
                self.execution_count += 1;
                let silent = r.silent;
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
                    encode_dynamic(&d, &mut buffers).map_err(|e| {
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
                        encode_dynamic(&d, &mut buffers)
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
            other => Err(ScriptError::new(
                "UnknownMessageType",
                format!("{} is not a request an engine serves", other.msg_type()),
            )),
        };
        let mut io = self.io.borrow_mut();
        let mut reply = match outcome {
            Ok(result) => TaskReply {
                result,
                ..TaskReply::default()
            },
            Err(e) => {
                buffers.clear();
                let mut r = TaskReply::error(&e.ename, e.message.clone());
                r.line = e.line;
                r.column = e.column;
                r
            }
        };
        reply.engine_id = Some(io.engine_id);
        reply.execution_count = Some(self.execution_count);
        let mut meta = io.basic_metadata();
        meta.insert("started".into(), Json::String(started));
        meta.insert("completed".into(), Json::String(iso8601_now()));
        meta.insert(
            "stdout".into(),
            Json::String(std::mem::take(&mut io.stdout)),
        );
        meta.insert(
            "stderr".into(),
            Json::String(std::mem::take(&mut io.stderr)),
        );
        let reply_type = reply_type_for(&msg.header.msg_type);
        io.reply(
            channel,
            &msg,
            Content::task_reply_of(&reply_type, reply),
            meta,
            buffers,
        );
        io.parent = None;
    }
}

fn decode_values(args: &[Json], buffers: &[zmq::Message]) -> Result<Vec<Value>, ScriptError> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            Value::decode(a, buffers)
                .map_err(|e| ScriptError::new("BadArgument", format!("argument {i}: {e}")))
        })
        .collect()
}
