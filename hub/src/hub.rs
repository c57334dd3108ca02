//! The hub's poll loop: binding, routing, registration and faults.
//!
//! # Design
//!
//! One thread owns every client- and engine-facing socket and runs a
//! `zmq::poll` loop over them; the heartbeat runs on its own thread and
//! reports dead engines over an inproc pipe. Requests are verified (HMAC,
//! replay) and their header and metadata parsed — never their content or
//! buffers — then forwarded as the same frames, so a 100 MiB push costs the
//! hub no copy. A client message that names several engines (`targets` in
//! its metadata) is fanned out here, once per engine. Replies come back
//! prefixed by the engine's identity; the hub notes the reply and forwards
//! the rest, whose first frame is the client's identity.
//!
//! Engine-facing ROUTERs are `ROUTER_MANDATORY`: a message for an engine
//! whose connection is not up yet is kept and retried rather than silently
//! dropped.

use crate::heartbeat;
use crate::records::Records;
use crate::registry::{Channel, Registry};
use crate::requests::QueuedTask;
use crate::scheduler::{Scheduler, Scheme};
use crate::HubError;
use serde_json::{Map, Value as Json};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use zpar_protocol::connection::write_json_file;
use zpar_protocol::{
    recv_frames, send_frames, ClientConnection, Content, EngineConnection, Header, Message,
    Profile, Session, ShutdownRequest, TaskReply,
};

/// How to run a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Interface to bind (default 127.0.0.1).
    pub ip: String,
    /// Ports to bind, in [`PortPlan`] order; 0 picks one at random.
    pub ports: PortPlan,
    /// Where to write connection files.
    pub profile: Profile,
    /// HMAC key; a fresh random one when None.
    pub key: Option<String>,
    /// Heartbeat period.
    pub hb_period: Duration,
    /// Missed heartbeats before an engine is declared dead.
    pub hb_misses: u64,
    /// Load-balancing scheme.
    pub scheme: Scheme,
    /// Where task records live.
    pub db: Db,
    /// Largest request or result buffers recorded, in bytes (None: 64 KiB
    /// in memory, 64 MiB in SQLite).
    pub max_buffer_bytes: Option<usize>,
}

impl HubConfig {
    /// The buffer cap in force for a store.
    pub fn max_buffer(&self, sqlite: bool) -> usize {
        self.max_buffer_bytes
            .unwrap_or_else(|| crate::records::default_max_buffer(sqlite))
    }
}

/// Where the hub keeps task records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    /// In memory, at most this many records (oldest finished dropped first).
    Memory {
        /// The bound.
        limit: usize,
    },
    /// In a SQLite file; a restarted hub keeps them.
    Sqlite(PathBuf),
}

impl std::str::FromStr for Db {
    type Err = String;
    fn from_str(s: &str) -> Result<Db, String> {
        match s.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => Ok(Db::Sqlite(PathBuf::from(path))),
            _ if s == "memory" => Ok(Db::Memory {
                limit: DEFAULT_DB_LIMIT,
            }),
            _ => Err(format!("unknown --db {s:?}: use memory or sqlite:PATH")),
        }
    }
}

/// Records kept by the memory store unless told otherwise.
pub const DEFAULT_DB_LIMIT: usize = 10_000;

impl HubConfig {
    /// Defaults: loopback, random ports, 1 s heartbeats, 3 misses.
    pub fn new(profile: Profile) -> HubConfig {
        HubConfig {
            ip: "127.0.0.1".into(),
            ports: PortPlan::default(),
            profile,
            key: None,
            hb_period: Duration::from_secs(1),
            hb_misses: 3,
            scheme: Scheme::LeastLoad,
            db: Db::Memory {
                limit: DEFAULT_DB_LIMIT,
            },
            max_buffer_bytes: None,
        }
    }
}

/// Every port the hub binds; 0 means any free port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortPlan {
    /// Registration and queries.
    pub registration: u16,
    /// Heartbeat pings.
    pub hb_ping: u16,
    /// Heartbeat pongs.
    pub hb_pong: u16,
    /// Direct requests, client side.
    pub mux_client: u16,
    /// Direct requests, engine side.
    pub mux_engine: u16,
    /// Load-balanced requests, client side.
    pub task_client: u16,
    /// Load-balanced requests, engine side.
    pub task_engine: u16,
    /// Control, client side.
    pub control_client: u16,
    /// Control, engine side.
    pub control_engine: u16,
    /// Output, engine side.
    pub iopub_engine: u16,
    /// Output, client side.
    pub iopub_client: u16,
    /// Notifications.
    pub notification: u16,
}

pub(crate) struct Sockets {
    pub(crate) query: zmq::Socket,
    pub(crate) mux_client: zmq::Socket,
    pub(crate) mux_engine: zmq::Socket,
    pub(crate) task_client: zmq::Socket,
    pub(crate) task_engine: zmq::Socket,
    pub(crate) control_client: zmq::Socket,
    pub(crate) control_engine: zmq::Socket,
    pub(crate) iopub_engine: zmq::Socket,
    pub(crate) iopub_client: zmq::Socket,
    pub(crate) notification: zmq::Socket,
    pub(crate) hb_pipe: zmq::Socket,
}

impl Sockets {
    fn client(&self, ch: Channel) -> &zmq::Socket {
        match ch {
            Channel::Mux => &self.mux_client,
            Channel::Task => &self.task_client,
            Channel::Control => &self.control_client,
        }
    }

    fn engine(&self, ch: Channel) -> &zmq::Socket {
        match ch {
            Channel::Mux => &self.mux_engine,
            Channel::Task => &self.task_engine,
            Channel::Control => &self.control_engine,
        }
    }
}

/// A message waiting for its engine's connection to come up.
pub(crate) struct Unroutable {
    channel: Channel,
    engine: Vec<u8>,
    frames: Vec<zmq::Message>,
    since: Instant,
}

/// A bound hub, ready to [`run`](Hub::run).
pub struct Hub {
    pub(crate) config: HubConfig,
    pub(crate) sockets: Sockets,
    pub(crate) session: Session,
    pub(crate) registry: Registry,
    pub(crate) scheduler: Scheduler,
    pub(crate) records: Records,
    /// Load-balanced tasks not yet assigned (waiting for dependencies or
    /// engines).
    pub(crate) waiting: VecDeque<QueuedTask>,
    /// Replies of this loop iteration, sent once their records are durable.
    pub(crate) outbox: Vec<(Channel, Vec<zmq::Message>)>,
    pub(crate) unroutable: VecDeque<Unroutable>,
    /// Random per start; the prefix of every heartbeat ping.
    pub(crate) instance: String,
    /// Bytes of large messages forwarded since memory was last released.
    big_bytes_since_trim: usize,
    hb_thread: Option<std::thread::JoinHandle<()>>,
    client_connection: ClientConnection,
    engine_connection: EngineConnection,
    files: Vec<PathBuf>,
    stopping: bool,
    _ctx: zmq::Context,
}

fn bind(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    ip: &str,
    port: u16,
) -> Result<(zmq::Socket, u16), HubError> {
    let s = ctx.socket(kind)?;
    s.set_linger(1000)?;
    s.set_sndhwm(0)?;
    s.set_rcvhwm(0)?;
    let addr = if port == 0 {
        format!("tcp://{ip}:*")
    } else {
        format!("tcp://{ip}:{port}")
    };
    s.bind(&addr).map_err(|source| HubError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let endpoint = s.get_last_endpoint()?.unwrap_or_default();
    let bound = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(HubError::Bind {
            addr,
            source: zmq::Error::EINVAL,
        })?;
    Ok((s, bound))
}

impl Hub {
    /// Binds every socket, starts the heartbeat and writes the connection
    /// files.
    pub fn bind(config: HubConfig) -> Result<Hub, HubError> {
        let ctx = zmq::Context::new();
        let ip = config.ip.as_str();
        let p = config.ports;
        let (query, registration) = bind(&ctx, zmq::ROUTER, ip, p.registration)?;
        let (hb_ping_sock, hb_ping) = bind(&ctx, zmq::PUB, ip, p.hb_ping)?;
        let (hb_pong_sock, hb_pong) = bind(&ctx, zmq::ROUTER, ip, p.hb_pong)?;
        let (mux_client, mux_c) = bind(&ctx, zmq::ROUTER, ip, p.mux_client)?;
        let (mux_engine, mux_e) = bind(&ctx, zmq::ROUTER, ip, p.mux_engine)?;
        let (task_client, task_c) = bind(&ctx, zmq::ROUTER, ip, p.task_client)?;
        let (task_engine, task_e) = bind(&ctx, zmq::ROUTER, ip, p.task_engine)?;
        let (control_client, control_c) = bind(&ctx, zmq::ROUTER, ip, p.control_client)?;
        let (control_engine, control_e) = bind(&ctx, zmq::ROUTER, ip, p.control_engine)?;
        let (iopub_engine, iopub_e) = bind(&ctx, zmq::SUB, ip, p.iopub_engine)?;
        iopub_engine.set_subscribe(b"")?;
        let (iopub_client, iopub_c) = bind(&ctx, zmq::PUB, ip, p.iopub_client)?;
        let (notification, notif) = bind(&ctx, zmq::PUB, ip, p.notification)?;
        for s in [&mux_engine, &task_engine, &control_engine] {
            s.set_router_mandatory(true)?;
        }
        let pipe_addr = format!("inproc://zpar-hb-{}", zpar_protocol::new_id());
        let instance = zpar_protocol::new_id()[..8].to_string();
        let hb_pipe = ctx.socket(zmq::PAIR)?;
        hb_pipe.bind(&pipe_addr)?;
        let hb_end = ctx.socket(zmq::PAIR)?;
        hb_end.connect(&pipe_addr)?;
        let hb_thread = heartbeat::spawn(
            hb_ping_sock,
            hb_pong_sock,
            hb_end,
            config.hb_period,
            config.hb_misses,
            instance.clone(),
        );

        let key = config.key.clone().unwrap_or_else(zpar_protocol::new_id);
        let session = Session::new(key.as_bytes(), zpar_protocol::SIGNATURE_SCHEME, "hub")?;
        let client_connection = ClientConnection {
            transport: "tcp".into(),
            ip: config.ip.clone(),
            key: key.clone(),
            signature_scheme: zpar_protocol::SIGNATURE_SCHEME.into(),
            registration,
            mux: mux_c,
            task: task_c,
            control: control_c,
            iopub: iopub_c,
            notification: notif,
        };
        let engine_connection = EngineConnection {
            transport: "tcp".into(),
            ip: config.ip.clone(),
            key,
            signature_scheme: zpar_protocol::SIGNATURE_SCHEME.into(),
            registration,
            hb_ping,
            hb_pong,
            mux: mux_e,
            task: task_e,
            control: control_e,
            iopub: iopub_e,
        };
        let mut records = match &config.db {
            Db::Memory { limit } => Records::memory(*limit, config.max_buffer(false)),
            Db::Sqlite(path) => {
                Records::sqlite(path, config.max_buffer(true)).map_err(|source| HubError::Db {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let mut registry = Registry::default();
        if let Some(max) = records.max_engine().unwrap_or(None) {
            // Ids stay unique across restarts.
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
                r.status = "error".into();
                r.ename = Some("HubRestarted".into());
                r.evalue = Some("the hub restarted while this request was pending".into());
            });
        }
        let _ = records.flush();
        let files = vec![config.profile.client_file(), config.profile.engine_file()];
        write_json_file(&files[0], &client_connection)?;
        write_json_file(&files[1], &engine_connection)?;
        Ok(Hub {
            scheduler: Scheduler::new(config.scheme),
            config,
            sockets: Sockets {
                query,
                mux_client,
                mux_engine,
                task_client,
                task_engine,
                control_client,
                control_engine,
                iopub_engine,
                iopub_client,
                notification,
                hb_pipe,
            },
            session,
            registry,
            records,
            waiting: VecDeque::new(),
            outbox: Vec::new(),
            instance,
            big_bytes_since_trim: 0,
            hb_thread: Some(hb_thread),
            client_connection,
            engine_connection,
            files,
            unroutable: VecDeque::new(),
            stopping: false,
            _ctx: ctx,
        })
    }

    /// What clients connect to.
    pub fn client_connection(&self) -> &ClientConnection {
        &self.client_connection
    }

    /// What engines connect to.
    pub fn engine_connection(&self) -> &EngineConnection {
        &self.engine_connection
    }

    /// Serves until `stop` is set or a client asks the hub to shut down.
    pub fn run(mut self, stop: &AtomicBool) -> Result<(), HubError> {
        info!(
            ip = %self.config.ip,
            registration = self.client_connection.registration,
            profile = %self.config.profile.dir.display(),
            "hub listening"
        );
        const BATCH: usize = 256;
        while !stop.load(Ordering::Relaxed) && !self.stopping {
            let timeout = if self.unroutable.is_empty() { 200 } else { 2 };
            // Big messages (a 128 MiB push) pass through in full; once the hub
            // is idle, hand the freed memory back so its RSS stays small.
            if self.big_bytes_since_trim > TRIM_AFTER_BYTES && self.outbox.is_empty() {
                release_free_memory();
                self.big_bytes_since_trim = 0;
            }
            let ready: Vec<bool> = {
                let s = &self.sockets;
                let mut items = [
                    s.query.as_poll_item(zmq::POLLIN),
                    s.mux_client.as_poll_item(zmq::POLLIN),
                    s.mux_engine.as_poll_item(zmq::POLLIN),
                    s.task_client.as_poll_item(zmq::POLLIN),
                    s.task_engine.as_poll_item(zmq::POLLIN),
                    s.control_client.as_poll_item(zmq::POLLIN),
                    s.control_engine.as_poll_item(zmq::POLLIN),
                    s.iopub_engine.as_poll_item(zmq::POLLIN),
                    s.hb_pipe.as_poll_item(zmq::POLLIN),
                ];
                match zmq::poll(&mut items, timeout) {
                    Ok(_) => items.iter().map(|i| i.is_readable()).collect(),
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if ready[8] {
                self.drain_heartbeat();
            }
            // Control first, then queries, replies before new requests.
            for (idx, channel, from_engine) in [
                (6, Channel::Control, true),
                (5, Channel::Control, false),
                (2, Channel::Mux, true),
                (4, Channel::Task, true),
                (1, Channel::Mux, false),
                (3, Channel::Task, false),
            ] {
                if ready[idx] {
                    if from_engine {
                        self.drain(
                            BATCH,
                            |h| h.sockets.engine(channel),
                            |h, f| h.on_engine_reply(channel, f),
                        );
                    } else {
                        self.drain(
                            BATCH,
                            |h| h.sockets.client(channel),
                            |h, f| h.on_client_request(channel, f),
                        );
                    }
                }
                if idx == 5 && ready[0] {
                    self.drain(BATCH, |h| &h.sockets.query, Hub::on_query);
                }
            }
            if ready[7] {
                self.drain(
                    BATCH,
                    |h| &h.sockets.iopub_engine,
                    |h, f| {
                        if let Err(e) = send_frames(&h.sockets.iopub_client, f, zmq::DONTWAIT) {
                            debug!(error = %e, "iopub message dropped");
                        }
                    },
                );
            }
            self.flush_records();
            self.retry_unroutable();
        }
        self.shutdown();
        Ok(())
    }

    fn drain(
        &mut self,
        max: usize,
        socket: impl Fn(&Hub) -> &zmq::Socket,
        mut handle: impl FnMut(&mut Hub, Vec<zmq::Message>),
    ) {
        for _ in 0..max {
            match recv_frames(socket(self), zmq::DONTWAIT) {
                Ok(frames) => {
                    let size: usize = frames.iter().map(|f| f.len()).sum();
                    if size > 1 << 20 {
                        self.big_bytes_since_trim += size;
                    }
                    handle(self, frames)
                }
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    warn!(error = %e, "receive failed");
                    return;
                }
            }
        }
    }

    fn drain_heartbeat(&mut self) {
        while let Ok(frames) = recv_frames(&self.sockets.hb_pipe, zmq::DONTWAIT) {
            if frames.first().map(|f| &f[..]) == Some(heartbeat::DEAD) {
                if let Some(id) = frames.get(1).and_then(|u| self.registry.id_of(u)) {
                    self.engine_gone(
                        id,
                        "missed heartbeats: the engine died or hangs in native code",
                    );
                }
            }
        }
    }

    /// An error reply to a request the hub cannot forward.
    pub(crate) fn reject(
        &self,
        channel: Channel,
        identities: Vec<Vec<u8>>,
        request: &Header,
        engine: Option<u32>,
        ename: &str,
        evalue: String,
    ) {
        debug!(msg_id = %request.msg_id, %ename, %evalue, "request rejected");
        let reply_type = Content::reply_type(&request.msg_type)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}_reply", request.msg_type.trim_end_matches("_request")));
        let mut r = TaskReply::error(ename, evalue);
        r.engine_id = engine;
        let meta = crate::requests::error_metadata(engine);
        let msg = Message {
            identities,
            header: self.session.header(&reply_type),
            parent_header: Some(request.clone()),
            metadata: meta,
            content: Content::task_reply_of(&reply_type, r),
            buffers: vec![],
        };
        self.send(self.sockets.client(channel), msg);
    }

    /// Sends frames to an engine; keeps them for later if its connection is
    /// not up yet.
    pub(crate) fn route(&mut self, channel: Channel, uuid: &[u8], frames: Vec<zmq::Message>) {
        let sock = self.sockets.engine(channel);
        match sock.send(uuid, zmq::SNDMORE | zmq::DONTWAIT) {
            Ok(()) => {
                if let Err(e) = send_frames(sock, frames, 0) {
                    warn!(error = %e, "forwarding to an engine failed");
                }
            }
            Err(zmq::Error::EHOSTUNREACH) | Err(zmq::Error::EAGAIN) => {
                self.unroutable.push_back(Unroutable {
                    channel,
                    engine: uuid.to_vec(),
                    frames,
                    since: Instant::now(),
                })
            }
            Err(e) => warn!(error = %e, "forwarding to an engine failed"),
        }
    }

    /// Makes this iteration's records durable, then sends the replies that
    /// waited for them.
    pub(crate) fn flush_records(&mut self) {
        if let Err(e) = self.records.flush() {
            warn!(error = %e, "task records not committed");
        }
        for (channel, frames) in std::mem::take(&mut self.outbox) {
            if let Err(e) = send_frames(self.sockets.client(channel), frames, zmq::DONTWAIT) {
                debug!(error = %e, "reply to a departed client dropped");
            }
        }
    }

    fn retry_unroutable(&mut self) {
        for _ in 0..self.unroutable.len() {
            let Some(u) = self.unroutable.pop_front() else {
                break;
            };
            if self.registry.id_of(&u.engine).is_none() {
                continue; // the engine is gone; its pending requests were failed
            }
            if u.since.elapsed() > Duration::from_secs(30) {
                warn!("dropped a message for an engine that never connected its sockets");
                continue;
            }
            let sock = self.sockets.engine(u.channel);
            match sock.send(&u.engine[..], zmq::SNDMORE | zmq::DONTWAIT) {
                Ok(()) => {
                    let _ = send_frames(sock, u.frames, 0);
                }
                Err(_) => self.unroutable.push_back(u),
            }
        }
    }

    pub(crate) fn notify(&self, content: Content) {
        let msg = Message::new(&self.session, content);
        self.send(&self.sockets.notification, msg);
    }

    /// Stops every engine, answers the client, then stops the loop.
    pub(crate) fn shutdown_cluster(&mut self, identities: Vec<Vec<u8>>, request: Header) {
        info!("shutdown requested by a client");
        self.stop_engines();
        let reply = Message {
            identities,
            header: self.session.header("shutdown_reply"),
            parent_header: Some(request),
            metadata: Map::new(),
            content: Content::ShutdownReply(TaskReply::ok()),
            buffers: vec![],
        };
        self.send(&self.sockets.control_client, reply);
        self.stopping = true;
    }

    /// Sends every engine a shutdown request.
    fn stop_engines(&mut self) {
        for id in self.registry.ids() {
            let uuid = self
                .registry
                .get(id)
                .map(|e| e.uuid.clone())
                .unwrap_or_default();
            let msg = Message::new(
                &self.session,
                Content::ShutdownRequest(ShutdownRequest::default()),
            );
            let raw = self.session.encode(&msg);
            self.route(Channel::Control, &uuid, raw.into_frames());
        }
    }

    fn shutdown(&mut self) {
        if !self.stopping {
            // Stopped by a signal: engines are told to stop too.
            self.stop_engines();
        }
        let _ = self.sockets.hb_pipe.send(heartbeat::STOP, 0);
        if let Some(t) = self.hb_thread.take() {
            let _ = t.join();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        info!("hub stopped");
    }
}

/// Large-message bytes after which an idle hub releases freed memory.
const TRIM_AFTER_BYTES: usize = 64 << 20;

/// Returns freed heap memory to the OS. glibc keeps freed blocks for reuse,
/// so after forwarding a few hundred MiB the hub's RSS would stay at its
/// peak; `malloc_trim` (glibc only; a no-op elsewhere) gives it back.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only walks glibc's own heap; it takes no
        // pointers of ours and is safe to call at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

pub(crate) fn parse_ids(v: &Json) -> Option<Vec<u32>> {
    match v {
        Json::Array(a) => a
            .iter()
            .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect(),
        Json::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(|n| vec![n]),
        _ => None,
    }
}
