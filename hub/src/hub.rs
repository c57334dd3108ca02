//! The hub's I/O: binding, the poll loop, and turning the core's actions
//! into socket sends.
//!
//! # Design
//!
//! One thread owns every client- and engine-facing socket and runs a
//! `zmq::poll` loop over them; the heartbeat runs on its own thread and
//! reports lost engines over an inproc pipe. Every message received becomes
//! an [`Event`] for the [`HubCore`], which decides everything (see
//! [`crate::core`]); the loop performs the [`Action`]s it returns, in order.
//! After each batch of messages the loop sends the core a [`Event::Tick`],
//! whose actions commit the batch's records and then release the batch's
//! replies. Iopub is forwarded here without the core: it is a plain
//! SUB → PUB relay.
//!
//! Engine-facing ROUTERs are `ROUTER_MANDATORY`: a message for an engine
//! whose connection is not up yet is kept and retried rather than silently
//! dropped.

use crate::core::{Action, CoreConfig, Event, Frames, HubCore, LossReason};
use crate::handshakes::HandshakeLog;
use crate::heartbeat;
use crate::records::{Records, SqliteStore};
use crate::scheduler::Scheme;
use crate::HubError;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};
use zpar_protocol::connection::write_json_file;
use zpar_protocol::curve::{self, CurveKeys};
use zpar_protocol::{
    recv_frames, send_frames, Channel, ClientConnection, EngineConnection, Profile, Session,
};

/// How to run a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Interface to bind (default 127.0.0.1; `0.0.0.0` for all).
    pub ip: String,
    /// The address written into the connection files, for peers to connect
    /// to (default: `ip`, or this host's outward address when `ip` is a
    /// wildcard).
    pub location: Option<String>,
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
    /// Whether every socket encrypts with CURVE (default: when `ip` is
    /// not loopback).
    pub curve: CurveMode,
    /// The CURVE keypair when it does (`--reuse` keeps the files'); a fresh
    /// one when None.
    pub curve_keys: Option<CurveKeys>,
}

/// Whether the hub encrypts with CURVE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CurveMode {
    /// On when the hub binds anything but loopback (`zpar hub`'s default).
    #[default]
    Auto,
    /// Always on (`--curve`).
    On,
    /// Off (`--no-curve`); a warning when the hub binds beyond loopback.
    Off,
}

impl HubConfig {
    /// The address peers connect to: `location`, else `ip` (for a wildcard
    /// `ip`, this host's outward address). Errors when `ip` is not an
    /// address of this host, or when no outward address can be found.
    pub fn location(&self) -> Result<String, HubError> {
        if !zpar_protocol::net::is_local_address(&self.ip) {
            return Err(HubError::NotLocal {
                ip: self.ip.clone(),
            });
        }
        if let Some(l) = &self.location {
            return Ok(l.clone());
        }
        if !zpar_protocol::net::is_wildcard(&self.ip) {
            return Ok(self.ip.clone());
        }
        zpar_protocol::net::outward_address()
            .map(|a| a.to_string())
            .ok_or_else(|| HubError::NoLocation {
                ip: self.ip.clone(),
            })
    }

    /// Whether this hub encrypts: [`CurveMode::On`], or
    /// [`CurveMode::Auto`] with an `ip` that is not loopback.
    pub fn curve_on(&self) -> bool {
        match self.curve {
            CurveMode::On => true,
            CurveMode::Off => false,
            CurveMode::Auto => !zpar_protocol::net::is_loopback(&self.ip),
        }
    }

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

impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Memory { .. } => f.write_str("memory"),
            Db::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
        }
    }
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
            location: None,
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
            curve: CurveMode::Auto,
            curve_keys: None,
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

struct Sockets {
    query: zmq::Socket,
    mux_client: zmq::Socket,
    mux_engine: zmq::Socket,
    task_client: zmq::Socket,
    task_engine: zmq::Socket,
    control_client: zmq::Socket,
    control_engine: zmq::Socket,
    iopub_engine: zmq::Socket,
    iopub_client: zmq::Socket,
    notification: zmq::Socket,
    hb_pipe: zmq::Socket,
}

impl Sockets {
    /// What the loop polls, in this order: the query socket, mux, task and
    /// control (client side, then engine side), iopub from the engines,
    /// and last the heartbeat thread's pipe.
    fn poll_items(&self) -> [zmq::PollItem<'_>; 9] {
        [
            self.query.as_poll_item(zmq::POLLIN),
            self.mux_client.as_poll_item(zmq::POLLIN),
            self.mux_engine.as_poll_item(zmq::POLLIN),
            self.task_client.as_poll_item(zmq::POLLIN),
            self.task_engine.as_poll_item(zmq::POLLIN),
            self.control_client.as_poll_item(zmq::POLLIN),
            self.control_engine.as_poll_item(zmq::POLLIN),
            self.iopub_engine.as_poll_item(zmq::POLLIN),
            self.hb_pipe.as_poll_item(zmq::POLLIN),
        ]
    }

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
struct Unroutable {
    channel: Channel,
    engine: Vec<u8>,
    frames: Vec<zmq::Message>,
    since: Instant,
}

/// A bound hub, ready to [`run`](Hub::run).
pub struct Hub {
    config: HubConfig,
    sockets: Sockets,
    core: HubCore,
    unroutable: VecDeque<Unroutable>,
    /// Bytes received since freed memory was last given back.
    bytes_since_trim: usize,
    /// Idle trims still due: large messages are freed by ZeroMQ's I/O
    /// thread once sent, after the trim that followed their arrival.
    idle_trims_due: u8,
    hb_thread: Option<std::thread::JoinHandle<()>>,
    client_connection: ClientConnection,
    engine_connection: EngineConnection,
    files: Vec<PathBuf>,
    stopping: bool,
    /// After `sockets`: the log reads their monitors until they are closed
    /// (a monitor nobody reads would stall libzmq's I/O thread).
    _handshakes: HandshakeLog,
    _ctx: zmq::Context,
}

fn bind(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    ip: &str,
    port: u16,
    curve: Option<&CurveKeys>,
) -> Result<(zmq::Socket, u16), HubError> {
    let s = ctx.socket(kind)?;
    curve::secure_server(&s, curve)?;
    s.set_linger(1000)?;
    s.set_sndhwm(0)?;
    s.set_rcvhwm(0)?;
    s.set_backlog(LISTEN_BACKLOG)?;
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
        raise_open_file_limit();
        let location = config.location()?;
        // Folders 0700, files 0600; what an earlier run left open, tightened.
        config.profile.create()?;
        // Shared segments a killed engine or client of this host left.
        zpar_protocol::bulk::sweep_stale();
        let ctx = zmq::Context::new();
        let ip = config.ip.as_str();
        let keys = match (config.curve_on(), &config.curve_keys) {
            (false, _) => None,
            (true, Some(keys)) => Some(keys.clone()),
            (true, None) => Some(CurveKeys::generate()?),
        };
        if keys.is_none() && !zpar_protocol::net::is_loopback(ip) {
            warn!(
                ip,
                "CURVE encryption is off, and the hub listens beyond this host: code, data and \
                 results cross the network in clear text (signed, not hidden); drop --no-curve \
                 to encrypt"
            );
        }
        let curve = keys.as_ref();
        let p = config.ports;
        let (query, registration) = bind(&ctx, zmq::ROUTER, ip, p.registration, curve)?;
        let (hb_ping_sock, hb_ping) = bind(&ctx, zmq::PUB, ip, p.hb_ping, curve)?;
        let (hb_pong_sock, hb_pong) = bind(&ctx, zmq::ROUTER, ip, p.hb_pong, curve)?;
        let (mux_client, mux_c) = bind(&ctx, zmq::ROUTER, ip, p.mux_client, curve)?;
        let (mux_engine, mux_e) = bind(&ctx, zmq::ROUTER, ip, p.mux_engine, curve)?;
        let (task_client, task_c) = bind(&ctx, zmq::ROUTER, ip, p.task_client, curve)?;
        let (task_engine, task_e) = bind(&ctx, zmq::ROUTER, ip, p.task_engine, curve)?;
        let (control_client, control_c) = bind(&ctx, zmq::ROUTER, ip, p.control_client, curve)?;
        let (control_engine, control_e) = bind(&ctx, zmq::ROUTER, ip, p.control_engine, curve)?;
        let (iopub_engine, iopub_e) = bind(&ctx, zmq::SUB, ip, p.iopub_engine, curve)?;
        iopub_engine.set_subscribe(b"")?;
        let (iopub_client, iopub_c) = bind(&ctx, zmq::PUB, ip, p.iopub_client, curve)?;
        let (notification, notif) = bind(&ctx, zmq::PUB, ip, p.notification, curve)?;
        // Peers whose keys do not fit are logged (debug) from the sockets'
        // monitors; the monitors are attached here, on the owning thread.
        let handshakes = HandshakeLog::spawn(
            &ctx,
            &[
                ("registration", &query),
                ("hb_ping", &hb_ping_sock),
                ("hb_pong", &hb_pong_sock),
                ("mux (clients)", &mux_client),
                ("mux (engines)", &mux_engine),
                ("task (clients)", &task_client),
                ("task (engines)", &task_engine),
                ("control (clients)", &control_client),
                ("control (engines)", &control_engine),
                ("iopub (engines)", &iopub_engine),
                ("iopub (clients)", &iopub_client),
                ("notification", &notification),
            ],
        )?;
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
            ip: location.clone(),
            key: key.clone(),
            signature_scheme: zpar_protocol::SIGNATURE_SCHEME.into(),
            registration,
            mux: mux_c,
            task: task_c,
            control: control_c,
            iopub: iopub_c,
            notification: notif,
            hb_ping: Some(hb_ping),
            curve_publickey: keys.as_ref().map(|k| k.public().to_string()),
            curve_secretkey: keys.as_ref().map(|k| k.secret().to_string()),
        };
        let engine_connection = EngineConnection {
            transport: "tcp".into(),
            ip: location.clone(),
            key,
            signature_scheme: zpar_protocol::SIGNATURE_SCHEME.into(),
            registration,
            hb_ping,
            hb_pong,
            mux: mux_e,
            task: task_e,
            control: control_e,
            iopub: iopub_e,
            curve_publickey: keys.as_ref().map(|k| k.public().to_string()),
            curve_secretkey: keys.as_ref().map(|k| k.secret().to_string()),
        };
        let records = match &config.db {
            Db::Memory { limit } => Records::memory(*limit, config.max_buffer(false)),
            Db::Sqlite(path) => {
                SqliteStore::create_private_files(path).map_err(|source| HubError::DbFile {
                    path: path.clone(),
                    source,
                })?;
                Records::sqlite(path, config.max_buffer(true)).map_err(|source| HubError::Db {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let core = HubCore::new(
            session,
            CoreConfig {
                scheme: config.scheme,
                hb_period: config.hb_period,
                instance,
                max_buffer_bytes: config.max_buffer(matches!(config.db, Db::Sqlite(_))),
                // Engines' communicators get a pair of their own at
                // registration, made fresh by each hub.
                communicator_keys: match &keys {
                    Some(_) => Some(CurveKeys::generate()?),
                    None => None,
                },
                ..CoreConfig::default()
            },
            records,
        );
        let files = vec![
            config.profile.client_file(),
            config.profile.engine_file(),
            config.profile.security_dir().join(IPYPARALLEL_CLIENT_FILE),
        ];
        write_json_file(&files[0], &client_connection)?;
        write_json_file(&files[1], &engine_connection)?;
        let scheme = config.scheme.to_string();
        write_json_file(&files[2], &ipyparallel_client(&client_connection, &scheme))?;
        Ok(Hub {
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
            core,
            unroutable: VecDeque::new(),
            bytes_since_trim: 0,
            idle_trims_due: 0,
            hb_thread: Some(hb_thread),
            client_connection,
            engine_connection,
            files,
            stopping: false,
            _handshakes: handshakes,
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

    /// True when no peer's socket has anything to read right now (the
    /// heartbeat pipe aside).
    fn idle(&self) -> bool {
        let mut items = self.sockets.poll_items();
        matches!(zmq::poll(&mut items[..8], 0), Ok(0))
    }

    /// Serves until `stop` is set or a client asks the hub to shut down.
    pub fn run(mut self, stop: &AtomicBool) -> Result<(), HubError> {
        info!(
            ip = %self.config.ip,
            registration = self.client_connection.registration,
            profile = %self.config.profile.dir.display(),
            curve = self.client_connection.curve_publickey.is_some(),
            "hub listening"
        );
        const BATCH: usize = 256;
        while !stop.load(Ordering::Relaxed) && !self.stopping {
            let timeout = if self.unroutable.is_empty() { 200 } else { 2 };
            // Hand freed memory back so the hub's RSS stays small however
            // long it runs: every 64 MiB that passes (one 128 MiB push, or
            // some 30,000 small tasks), and whenever the hub catches up
            // after a burst of a few MiB (a batch of tasks answered).
            if self.bytes_since_trim > TRIM_AFTER_BYTES
                || (self.bytes_since_trim > TRIM_WHEN_IDLE_BYTES && self.idle())
            {
                release_free_memory();
                self.bytes_since_trim = 0;
                self.idle_trims_due = 2;
            }
            let mut heard = std::collections::HashSet::new();
            let ready: Vec<bool> = {
                let mut items = self.sockets.poll_items();
                match zmq::poll(&mut items, timeout) {
                    Ok(0) if self.idle_trims_due > 0 => {
                        // Idle after large transfers: what was sent since is
                        // freed by now; give it back (a 4-engine 128 MiB
                        // fan-out through the hub otherwise leaves the RSS
                        // at 300 MiB).
                        release_free_memory();
                        self.idle_trims_due -= 1;
                        vec![false; items.len()]
                    }
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
                    // One message at a time, each handled as it is taken, so
                    // a chunk of a large stream goes on before the next is
                    // received (`core::streams`).
                    for _ in 0..BATCH {
                        let socket = if from_engine {
                            self.sockets.engine(channel)
                        } else {
                            self.sockets.client(channel)
                        };
                        let Some(frames) = drain(socket, 1, &mut self.bytes_since_trim).pop()
                        else {
                            break;
                        };
                        let event = if from_engine {
                            if let Some(uuid) = frames.first() {
                                heard.insert(uuid.to_vec());
                            }
                            Event::EngineReply { channel, frames }
                        } else {
                            Event::ClientRequest { channel, frames }
                        };
                        self.handle(event);
                    }
                }
                if idx == 5 && ready[0] {
                    for frames in drain(&self.sockets.query, BATCH, &mut self.bytes_since_trim) {
                        self.handle(Event::Query { frames });
                    }
                }
            }
            if ready[7] {
                for frames in drain(
                    &self.sockets.iopub_engine,
                    BATCH,
                    &mut self.bytes_since_trim,
                ) {
                    if let Err(e) = send_frames(&self.sockets.iopub_client, frames, zmq::DONTWAIT) {
                        debug!(error = %e, "iopub message dropped");
                    }
                }
            }
            self.handle(Event::Tick);
            self.retry_unroutable();
            // A reply is as good as a pong: a busy machine delays pongs, not
            // the work engines answer.
            if !heard.is_empty() {
                let mut msg: Vec<Vec<u8>> = vec![heartbeat::ALIVE.to_vec()];
                msg.extend(heard.drain());
                let _ = self.sockets.hb_pipe.send_multipart(msg, 0);
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Lets the core handle an event, and performs its actions in order.
    fn handle(&mut self, event: Event) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for action in self.core.handle(event, now) {
            self.perform(action);
        }
    }

    fn perform(&mut self, action: Action) {
        let sent = match action {
            Action::ToEngine {
                channel,
                uuid,
                frames,
            } => {
                self.route(channel, uuid, frames);
                Ok(())
            }
            Action::ToClient { channel, frames } => {
                send_frames(self.sockets.client(channel), frames, zmq::DONTWAIT)
            }
            Action::ToQuery { frames } => send_frames(&self.sockets.query, frames, zmq::DONTWAIT),
            Action::Notify { frames } => {
                send_frames(&self.sockets.notification, frames, zmq::DONTWAIT)
            }
            Action::CommitRecords => {
                if let Err(e) = self.core.records_mut().flush() {
                    warn!(error = %e, "task records not committed");
                }
                Ok(())
            }
            Action::Watch { uuid } => self
                .sockets
                .hb_pipe
                .send_multipart([heartbeat::WATCH, &uuid[..]], 0),
            Action::Forget { uuid } => self
                .sockets
                .hb_pipe
                .send_multipart([heartbeat::FORGET, &uuid[..]], 0),
            Action::Stop => {
                self.stopping = true;
                Ok(())
            }
        };
        if let Err(e) = sent {
            debug!(error = %e, "a message to a departed peer was dropped");
        }
    }

    fn drain_heartbeat(&mut self) {
        while let Ok(frames) = recv_frames(&self.sockets.hb_pipe, zmq::DONTWAIT) {
            if frames.first().map(|f| &f[..]) == Some(heartbeat::DEAD) {
                if let Some(uuid) = frames.get(1) {
                    self.handle(Event::EngineLost {
                        uuid: uuid.to_vec(),
                        reason: LossReason::MissedHeartbeats,
                    });
                }
            }
        }
    }

    /// Sends frames to an engine; keeps them for later if its connection is
    /// not up yet.
    fn route(&mut self, channel: Channel, uuid: Vec<u8>, frames: Frames) {
        let sock = self.sockets.engine(channel);
        match sock.send(&uuid[..], zmq::SNDMORE | zmq::DONTWAIT) {
            Ok(()) => {
                if let Err(e) = send_frames(sock, frames, 0) {
                    warn!(error = %e, "forwarding to an engine failed");
                }
            }
            Err(zmq::Error::EHOSTUNREACH) | Err(zmq::Error::EAGAIN) => {
                self.unroutable.push_back(Unroutable {
                    channel,
                    engine: uuid,
                    frames,
                    since: Instant::now(),
                })
            }
            Err(e) => warn!(error = %e, "forwarding to an engine failed"),
        }
    }

    fn retry_unroutable(&mut self) {
        for _ in 0..self.unroutable.len() {
            let Some(u) = self.unroutable.pop_front() else {
                break;
            };
            if self.core.registry().id_of(&u.engine).is_none() {
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

    fn shutdown(&mut self) {
        if !self.stopping {
            // Stopped by a signal: engines are told to stop too.
            self.handle(Event::Stop);
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

/// Receives up to `max` waiting messages from `socket`, counting their
/// bytes into `bytes`.
fn drain(socket: &zmq::Socket, max: usize, bytes: &mut usize) -> Vec<Frames> {
    let mut batch = Vec::new();
    while batch.len() < max {
        match recv_frames(socket, zmq::DONTWAIT) {
            Ok(frames) => {
                *bytes += frames.iter().map(|f| f.len()).sum::<usize>();
                batch.push(frames);
            }
            Err(zmq::Error::EAGAIN) => break,
            Err(e) => {
                warn!(error = %e, "receive failed");
                break;
            }
        }
    }
    batch
}

/// Pending connections each listening socket queues (ZeroMQ's default is
/// 100; the kernel caps it at `net.core.somaxconn`). A thousand engines
/// connect at once, and a connection that finds the queue full waits for
/// TCP's one-second SYN retry: registration took seconds longer.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Bytes after which the hub gives freed memory back to the system.
const TRIM_AFTER_BYTES: usize = 64 << 20;

/// Bytes after which the hub gives freed memory back once it has nothing
/// left to read.
const TRIM_WHEN_IDLE_BYTES: usize = 4 << 20;

/// Returns freed heap memory to the OS. glibc keeps freed blocks for reuse,
/// so after forwarding a few hundred MiB the hub's RSS would stay at its
/// peak; `malloc_trim` (glibc only; a no-op elsewhere) gives it back. It
/// earns its place: in `zpar bench cluster` (128 MiB pushes and pulls, then
/// three rounds of mixed work) the hub's RSS stays at its 90 MiB peak
/// without it and returns to 31–33 MiB with it.
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

/// Raises this process's soft limit on open files to its hard limit. Every
/// engine holds seven connections to the hub, so the common soft limit of
/// 1,024 would stop a hub at about 140 engines, while the hard limit
/// (often 524,288) allows thousands.
fn raise_open_file_limit() {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        #[repr(C)]
        struct Rlimit {
            soft: u64,
            hard: u64,
        }
        extern "C" {
            fn getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
            fn setrlimit(resource: i32, limit: *const Rlimit) -> i32;
        }
        const RLIMIT_NOFILE: i32 = 7;
        let mut limit = Rlimit { soft: 0, hard: 0 };
        // SAFETY: both calls read or write only the struct passed, whose
        // layout is the kernel's `struct rlimit` on these 64-bit targets.
        unsafe {
            if getrlimit(RLIMIT_NOFILE, &mut limit) != 0 || limit.soft >= limit.hard {
                return;
            }
            let old = limit.soft;
            limit.soft = limit.hard;
            if setrlimit(RLIMIT_NOFILE, &limit) == 0 {
                debug!(
                    from = old,
                    to = limit.hard,
                    "raised the limit on open files"
                );
            }
        }
    }
}

/// The name ipyparallel's `Client()` looks for in a profile's security
/// folder; written beside `zpar-client.json`.
pub const IPYPARALLEL_CLIENT_FILE: &str = "ipcontroller-client.json";

/// The client connection file in ipyparallel's form (ipyparallel 9.x reads
/// every key below in `Client.__init__`): the same ports and key as
/// `zpar-client.json`. zpar has no broadcast scheduler, so `broadcast` is
/// the mux port, where the hub answers a `BroadcastView` with a clear error
/// (`core::ipyparallel`).
fn ipyparallel_client(c: &ClientConnection, scheme: &str) -> serde_json::Value {
    serde_json::json!({
        "interface": format!("{}://{}", c.transport, c.ip),
        "location": c.ip,
        "ssh": "",
        "key": c.key,
        "signature_scheme": c.signature_scheme,
        "pack": "json",
        "unpack": "json",
        // ipyparallel's name; its Client makes its own client keypair.
        "curve_serverkey": c.curve_publickey,
        "task_scheme": scheme,
        "registration": c.registration,
        "control": c.control,
        "mux": c.mux,
        "task": c.task,
        "iopub": c.iopub,
        "notification": c.notification,
        "broadcast": c.mux,
    })
}
