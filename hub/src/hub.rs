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
//! replies. Iopub is relayed here without the core: engines' output comes
//! on their links and goes out on the clients' XPUB as it came, and the
//! topics clients subscribe to go to the engines ([`crate::subscriptions`]).
//!
//! Each engine holds its link (one ROUTER for registration, every channel
//! and its output, each message after a [`LinkTag`] frame), and each
//! engine process a heartbeat connection its engines share. The link
//! ROUTER is
//! `ROUTER_MANDATORY`: a message for an engine whose connection is not up
//! is kept and retried rather than silently dropped.

pub use crate::config::{CurveMode, Db, HubConfig, PortPlan, DEFAULT_DB_LIMIT};
use crate::core::{Action, CoreConfig, EngineRoom, Event, Frames, HubCore, LossReason};
use crate::error::HubError;
use crate::handshakes::HandshakeLog;
use crate::heartbeat;
use crate::records::{Records, SqliteStore};
use crate::subscriptions::Subscriptions;
use crate::unroutable::{Sent, Unroutable};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};
use zpar_protocol::connection::write_json_file;
use zpar_protocol::curve::{self, CurveKeys};
use zpar_protocol::{
    recv_frames, send_frames, Channel, ClientConnection, EngineConnection, LinkTag, Session,
};

struct Sockets {
    query: zmq::Socket,
    mux_client: zmq::Socket,
    task_client: zmq::Socket,
    control_client: zmq::Socket,
    /// The engines' links.
    link: zmq::Socket,
    iopub_client: zmq::Socket,
    notification: zmq::Socket,
    hb_pipe: zmq::Socket,
}

/// A socket the loop polls: its place in [`Sockets::poll_items`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Registration and queries.
    Query,
    /// Direct requests from clients.
    MuxClient,
    /// Load-balanced requests from clients.
    TaskClient,
    /// Control requests from clients.
    ControlClient,
    /// Engines' links: replies of every channel, registrations, output.
    Link,
    /// Clients' iopub subscriptions, passed on to the engines.
    IopubClient,
    /// The heartbeat thread's pipe (engines lost); last, so that the slots
    /// before it are exactly the peers' sockets.
    HeartbeatPipe,
}

impl Slot {
    /// Every slot, in polling order.
    const ALL: [Slot; 7] = [
        Slot::Query,
        Slot::MuxClient,
        Slot::TaskClient,
        Slot::ControlClient,
        Slot::Link,
        Slot::IopubClient,
        Slot::HeartbeatPipe,
    ];

    /// How many slots hold peers' sockets (all before the heartbeat pipe).
    const PEERS: usize = Slot::HeartbeatPipe as usize;

    /// The order in which one pass of the loop serves what is ready:
    /// control first, then queries, engines' replies (and output) before
    /// new requests. (Subscriptions and the heartbeat pipe are served
    /// apart.)
    const SERVE_ORDER: [Slot; 5] = [
        Slot::ControlClient,
        Slot::Query,
        Slot::Link,
        Slot::MuxClient,
        Slot::TaskClient,
    ];

    /// For a client-facing channel's socket, its channel; None for the
    /// others.
    fn client_channel(self) -> Option<Channel> {
        match self {
            Slot::MuxClient => Some(Channel::Mux),
            Slot::TaskClient => Some(Channel::Task),
            Slot::ControlClient => Some(Channel::Control),
            Slot::Query | Slot::Link | Slot::IopubClient | Slot::HeartbeatPipe => None,
        }
    }
}

/// Which slots a poll found readable.
struct Ready([bool; Slot::ALL.len()]);

impl Ready {
    /// Nothing readable (a poll that timed out).
    const NONE: Ready = Ready([false; Slot::ALL.len()]);

    fn has(&self, slot: Slot) -> bool {
        self.0[slot as usize]
    }
}

impl Sockets {
    /// The socket polled in `slot`.
    fn polled(&self, slot: Slot) -> &zmq::Socket {
        match slot {
            Slot::Query => &self.query,
            Slot::MuxClient => &self.mux_client,
            Slot::TaskClient => &self.task_client,
            Slot::ControlClient => &self.control_client,
            Slot::Link => &self.link,
            Slot::IopubClient => &self.iopub_client,
            Slot::HeartbeatPipe => &self.hb_pipe,
        }
    }

    /// True when no peer's socket has anything to read right now (the
    /// heartbeat pipe aside).
    fn caught_up(&self) -> bool {
        let mut items = self.poll_items();
        matches!(zmq::poll(&mut items[..Slot::PEERS], 0), Ok(0))
    }

    /// What the loop polls, in [`Slot`] order.
    fn poll_items(&self) -> [zmq::PollItem<'_>; Slot::ALL.len()] {
        Slot::ALL.map(|slot| self.polled(slot).as_poll_item(zmq::POLLIN))
    }

    fn client(&self, ch: Channel) -> &zmq::Socket {
        match ch {
            Channel::Mux => &self.mux_client,
            Channel::Task => &self.task_client,
            Channel::Control => &self.control_client,
        }
    }
}

/// How long a message waits for its engine's connection to come up before
/// its request fails with `Undelivered`.
const UNROUTABLE_LIMIT: Duration = Duration::from_secs(30);

/// Engines heard from (any reply), told to the heartbeat thread as pongs,
/// at most every quarter beat: under a flood of replies the loop turns
/// thousands of times a second, and one message a turn to the heartbeat
/// thread was as many wake-ups there.
struct Alive {
    heard: std::collections::HashSet<Vec<u8>>,
    told: Instant,
}

impl Alive {
    fn new() -> Alive {
        Alive {
            heard: Default::default(),
            told: Instant::now(),
        }
    }

    fn heard(&mut self, uuid: &[u8]) {
        if !self.heard.contains(uuid) {
            self.heard.insert(uuid.to_vec());
        }
    }

    /// The engines heard since last told, once `every` has passed.
    fn due(&mut self, every: Duration) -> Option<Vec<Vec<u8>>> {
        if self.heard.is_empty() || self.told.elapsed() < every {
            return None;
        }
        self.told = Instant::now();
        Some(self.heard.drain().collect())
    }
}

/// A bound hub, ready to [`run`](Hub::run).
pub struct Hub {
    config: HubConfig,
    sockets: Sockets,
    core: HubCore,
    unroutable: Unroutable,
    /// Engines heard from, for the heartbeat thread.
    alive: Alive,
    /// Engines that registered over their link: the answers to them go
    /// there, not to the query socket.
    registered_on_link: std::collections::HashSet<Vec<u8>>,
    /// The iopub topics clients subscribe to, and the engines owed them.
    subscriptions: Subscriptions,
    /// After a failed commit of the task records: the commit, then every
    /// reply after it, in order, until a commit succeeds (tried again each
    /// turn of the loop). A client never sees a result whose record is not
    /// on disk; the records wait in the store's memory.
    held_for_commit: VecDeque<Action>,
    /// Commits failed in a row (for the log).
    commit_failures: u32,
    /// When freed memory is given back to the system.
    trim: MemoryTrim,
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

/// Who connects to a bound socket and for what: how the hub finds dead
/// peers, and how much each connection may buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peers {
    /// Engines (thousands): they ping, the hub keeps no timer per
    /// connection.
    Engines,
    /// Engines' heartbeats: as [`Peers::Engines`], and each connection
    /// carries only pings and pongs, so its buffers are small
    /// (`net::small_buffers`): a tenth of the hub's memory per engine.
    EngineHeartbeats,
    /// Clients (a few): the hub pings them too, so output it keeps sending
    /// to a client that vanished (TCP keepalive never probes a connection
    /// in use) is dropped within 20 s, not queued for the kernel's minutes.
    Clients,
}

fn bind(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    ip: &str,
    port: u16,
    curve: Option<&CurveKeys>,
    peers: Peers,
) -> Result<(zmq::Socket, u16), HubError> {
    let mut s = ctx.socket(kind)?;
    if peers == Peers::EngineHeartbeats {
        zpar_protocol::net::small_buffers(&mut s)?;
    }
    curve::secure_server(&s, curve)?;
    // A connection whose peer vanished without a word is dropped, not kept
    // until the kernel's TCP timeouts (`keepalive`).
    zpar_protocol::keepalive::shed_silent_peers(&s)?;
    if peers == Peers::Clients {
        zpar_protocol::keepalive::set_zmtp_heartbeats(&s)?;
    }
    s.set_linger(1000)?;
    s.set_sndhwm(0)?;
    s.set_rcvhwm(0)?;
    s.set_backlog(LISTEN_BACKLOG)?;
    // A frame larger than any zpar sends costs its sender the connection,
    // not the hub its memory.
    zpar_protocol::frames::cap_inbound_frames(&s, &zpar_protocol::Limits::default())?;
    let addr = if port == 0 {
        bind_any_port(&s, ip)?
    } else {
        let addr = format!("tcp://{ip}:{port}");
        s.bind(&addr).map_err(|source| HubError::Bind {
            addr: addr.clone(),
            source,
        })?;
        addr
    };
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

/// Binds `s` to a free port of our choosing below the kernel's ephemeral
/// range ([`zpar_protocol::net::listen_ports`]), so that a hub restarted
/// with `--reuse` finds its ports free again; the kernel's choice when that
/// range is unknown or too crowded. Returns the address asked for.
fn bind_any_port(s: &zmq::Socket, ip: &str) -> Result<String, HubError> {
    if let Some(ports) = zpar_protocol::net::listen_ports() {
        for _ in 0..64 {
            let addr = format!("tcp://{ip}:{}", fastrand::u16(ports.clone()));
            match s.bind(&addr) {
                Ok(()) => return Ok(addr),
                Err(zmq::Error::EADDRINUSE) => continue,
                Err(source) => return Err(HubError::Bind { addr, source }),
            }
        }
    }
    let addr = format!("tcp://{ip}:*");
    s.bind(&addr).map_err(|source| HubError::Bind {
        addr: addr.clone(),
        source,
    })?;
    Ok(addr)
}

impl Hub {
    /// Binds every socket, starts the heartbeat and writes the connection
    /// files.
    pub fn bind(config: HubConfig) -> Result<Hub, HubError> {
        let descriptors = raise_open_file_limit();
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
        // Clients' queries (engines register over their link).
        let (query, registration) =
            bind(&ctx, zmq::ROUTER, ip, p.registration, curve, Peers::Clients)?;
        // Clients hear the hub's pings on a PUB; engines get theirs on the
        // ROUTER they answer on (one connection each, not two).
        let (hb_ping_sock, hb_ping) = bind(&ctx, zmq::PUB, ip, p.hb_ping, curve, Peers::Clients)?;
        let (heartbeat_sock, heartbeat_port) = bind(
            &ctx,
            zmq::ROUTER,
            ip,
            p.heartbeat,
            curve,
            Peers::EngineHeartbeats,
        )?;
        // An engine that reconnects under its uuid (its old connection died
        // unnoticed) gets its pings on the new connection.
        heartbeat_sock.set_router_handover(true)?;
        let (mux_client, mux_c) = bind(&ctx, zmq::ROUTER, ip, p.mux_client, curve, Peers::Clients)?;
        let (task_client, task_c) =
            bind(&ctx, zmq::ROUTER, ip, p.task_client, curve, Peers::Clients)?;
        // Each engine's one connection for registration and every
        // channel: a connection per channel cost the hub a descriptor and
        // ZeroMQ's buffers per engine and channel.
        let (link, link_port) = bind(&ctx, zmq::ROUTER, ip, p.link, curve, Peers::Engines)?;
        let (control_client, control_c) = bind(
            &ctx,
            zmq::ROUTER,
            ip,
            p.control_client,
            curve,
            Peers::Clients,
        )?;
        // Engines' output comes on their links and goes out here; what
        // clients subscribe to on this XPUB goes to the engines, so an
        // engine sends only what some client reads (zpar's clients read
        // their own requests' output; Jupyter's and ipyparallel's read
        // everything).
        let (iopub_client, iopub_c) =
            bind(&ctx, zmq::XPUB, ip, p.iopub_client, curve, Peers::Clients)?;
        let (notification, notif) =
            bind(&ctx, zmq::PUB, ip, p.notification, curve, Peers::Clients)?;
        // Peers whose keys do not fit are logged (debug) from the sockets'
        // monitors; the monitors are attached here, on the owning thread.
        let handshakes = HandshakeLog::spawn(
            &ctx,
            &[
                ("registration", &query),
                ("hb_ping", &hb_ping_sock),
                ("heartbeat (engines)", &heartbeat_sock),
                ("link (engines)", &link),
                ("mux (clients)", &mux_client),
                ("task (clients)", &task_client),
                ("control (clients)", &control_client),
                ("iopub (clients)", &iopub_client),
                ("notification", &notification),
            ],
            descriptors,
        )?;
        link.set_router_mandatory(true)?;
        // An engine whose connection dropped reconnects under its uuid at
        // once; the hub may not have noticed the old connection die (a
        // cable pulled: no reset ever comes). The new one takes the uuid
        // over instead of being refused.
        link.set_router_handover(true)?;
        let pipe_addr = format!("inproc://zpar-hb-{}", zpar_protocol::new_id());
        let instance = zpar_protocol::new_id()[..8].to_string();
        let hb_pipe = ctx.socket(zmq::PAIR)?;
        hb_pipe.bind(&pipe_addr)?;
        let hb_end = ctx.socket(zmq::PAIR)?;
        hb_end.connect(&pipe_addr)?;
        let hb_thread = heartbeat::spawn(
            hb_ping_sock,
            heartbeat_sock,
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
            link: link_port,
            heartbeat: heartbeat_port,
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
                recall_after: config.recall_after,
                engine_room: descriptors.map(EngineRoom::for_files),
                relay: config.relay,
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
                task_client,
                control_client,
                link,
                iopub_client,
                notification,
                hb_pipe,
            },
            core,
            unroutable: Unroutable::default(),
            alive: Alive::new(),
            registered_on_link: Default::default(),
            subscriptions: Subscriptions::default(),
            held_for_commit: VecDeque::new(),
            commit_failures: 0,
            trim: MemoryTrim::default(),
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
            self.trim.after_traffic(|| self.sockets.caught_up());
            let ready = {
                let mut items = self.sockets.poll_items();
                match zmq::poll(&mut items, timeout) {
                    Ok(0) => {
                        self.trim.when_quiet();
                        Ready::NONE
                    }
                    Ok(_) => Ready(std::array::from_fn(|i| items[i].is_readable())),
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            for slot in Slot::SERVE_ORDER {
                if !ready.has(slot) {
                    continue;
                }
                if slot == Slot::Query {
                    for frames in drain(&self.sockets.query, BATCH, &mut self.trim.bytes_since) {
                        self.handle(Event::Query { frames });
                    }
                    continue;
                }
                // One message at a time, each handled as it is taken, so
                // a chunk of a large stream goes on before the next is
                // received (`core::streams`).
                for _ in 0..BATCH {
                    let socket = self.sockets.polled(slot);
                    let Some(frames) = drain(socket, 1, &mut self.trim.bytes_since).pop() else {
                        break;
                    };
                    match slot.client_channel() {
                        Some(channel) => self.handle(Event::ClientRequest { channel, frames }),
                        None => self.on_link_message(frames),
                    }
                }
            }
            if ready.has(Slot::HeartbeatPipe) {
                self.drain_heartbeat();
            }
            if ready.has(Slot::IopubClient) {
                // (Un)subscriptions: one frame each; the engines hear the
                // set as it stands after them.
                let mut changed = false;
                while let Ok(change) = self.sockets.iopub_client.recv_bytes(zmq::DONTWAIT) {
                    changed |= self.subscriptions.client_change(&change);
                }
                if changed {
                    self.subscriptions.owe_all();
                }
            }
            self.handle(Event::Tick);
            self.retry_held_commit();
            self.retry_unroutable();
            self.send_subscriptions();
            // A reply is as good as a pong: a busy machine delays pongs, not
            // the work engines answer.
            if let Some(uuids) = self.alive.due(self.config.hb_period / 4) {
                let mut msg: Vec<Vec<u8>> = vec![heartbeat::ALIVE.to_vec()];
                msg.extend(uuids);
                let _ = self.sockets.hb_pipe.send_multipart(msg, 0);
            }
        }
        self.shutdown();
        Ok(())
    }

    /// A message on an engine's link (`[uuid, tag, message…]`): the tag
    /// says which channel it is a reply of, or that it is a registration.
    fn on_link_message(&mut self, mut frames: Frames) {
        let Some(uuid) = frames.first() else { return };
        self.alive.heard(uuid);
        let tag = frames.get(1).and_then(|t| LinkTag::parse(t));
        let Some(tag) = tag else {
            return warn!(engine = %String::from_utf8_lossy(uuid), "dropped a message without a channel tag on an engine's link");
        };
        frames.remove(1);
        match tag {
            LinkTag::Channel(channel) => self.handle(Event::EngineReply { channel, frames }),
            LinkTag::Iopub => {
                // `[uuid, topic, …]`: published as it came, topic first.
                frames.remove(0);
                if let Err(e) = send_frames(&self.sockets.iopub_client, frames, zmq::DONTWAIT) {
                    debug!(error = %e, "iopub message dropped");
                }
            }
            LinkTag::Subscriptions => {
                warn!(engine = %String::from_utf8_lossy(&frames[0]), "dropped a subscription message an engine sent (only the hub sends them)")
            }
            LinkTag::Registration => {
                if !self.registered_on_link.contains(&frames[0][..]) {
                    self.registered_on_link.insert(frames[0].to_vec());
                }
                // An engine registered already that registers again (a
                // process restarted under its uuid, or a link that dropped
                // with the set in it) is sent the topics again: only a
                // fresh registration is watched, and owed them, anew.
                if self.core.registry().id_of(&frames[0]).is_some() {
                    self.subscriptions.engine_joined(&frames[0]);
                }
                self.handle(Event::Query { frames });
            }
        }
    }

    /// Lets the core handle an event, and performs its actions in order.
    fn handle(&mut self, event: Event) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let actions = self.core.handle(event, now);
        self.perform_all(actions);
    }

    /// Performs actions in order; once a commit fails, the commit and the
    /// replies after it wait in [`Hub::held_for_commit`] (sends to engines
    /// and heartbeat bookkeeping go on: they reveal no result).
    fn perform_all(&mut self, actions: impl IntoIterator<Item = Action>) {
        for action in actions {
            let waits_for_commit = matches!(
                action,
                Action::CommitRecords
                    | Action::ToClient { .. }
                    | Action::ToQuery { .. }
                    | Action::Stop
            );
            if waits_for_commit && !self.held_for_commit.is_empty() {
                self.held_for_commit.push_back(action);
                continue;
            }
            if let Action::CommitRecords = action {
                self.commit_records();
                continue;
            }
            self.perform(action);
        }
    }

    /// Commits the task records; on failure holds the commit (and so every
    /// reply after it) for the next try.
    fn commit_records(&mut self) {
        match self.core.records_mut().flush() {
            Ok(()) => {
                if self.commit_failures > 0 {
                    info!(
                        failed_tries = self.commit_failures,
                        "task records committed; the replies held for them go out"
                    );
                    self.commit_failures = 0;
                }
            }
            Err(e) => {
                if self.commit_failures == 0 {
                    warn!(error = %zpar_protocol::error::Chain(&e), "task records not committed: the replies that depend on them are held, and the commit is tried again each turn (is the disk full, or the database file locked by another process?)");
                } else {
                    debug!(error = %zpar_protocol::error::Chain(&e), tries = self.commit_failures + 1, "task records still not committed");
                }
                self.commit_failures += 1;
                self.held_for_commit.push_back(Action::CommitRecords);
            }
        }
    }

    /// Tries a failed commit again; on success the replies held behind it
    /// go out in order.
    fn retry_held_commit(&mut self) {
        if self.held_for_commit.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held_for_commit);
        self.perform_all(held);
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
            Action::ToQuery { frames } => {
                let to_link = frames
                    .first()
                    .is_some_and(|u| self.registered_on_link.contains(&u[..]));
                if to_link {
                    let mut frames = frames;
                    let uuid = frames.remove(0);
                    match send_on_link(&self.sockets, LinkTag::Registration, &uuid, frames) {
                        Sent::Done => Ok(()),
                        Sent::NotConnected(_) => Err(zmq::Error::EHOSTUNREACH),
                    }
                } else {
                    send_frames(&self.sockets.query, frames, zmq::DONTWAIT)
                }
            }
            Action::Notify { frames } => {
                send_frames(&self.sockets.notification, frames, zmq::DONTWAIT)
            }
            Action::CommitRecords => {
                self.commit_records();
                Ok(())
            }
            Action::Watch { uuid } => {
                // The topics go at once, ahead of the tasks the engine's
                // registration lets the core send it next.
                self.subscriptions.engine_joined(&uuid);
                self.send_subscriptions();
                self.sockets
                    .hb_pipe
                    .send_multipart([heartbeat::WATCH, &uuid[..]], 0)
            }
            Action::Forget { uuid } => {
                self.registered_on_link.remove(&uuid);
                self.subscriptions.engine_left(&uuid);
                self.sockets
                    .hb_pipe
                    .send_multipart([heartbeat::FORGET, &uuid[..]], 0)
            }
            Action::Stop => {
                self.stopping = true;
                Ok(())
            }
        };
        if let Err(e) = sent {
            debug!(error = %e, "a message to a departed peer was dropped");
        }
    }

    /// The heartbeat thread's news: each beat's report, and losses, last.
    fn drain_heartbeat(&mut self) {
        let mut lost = Vec::new();
        while let Ok(frames) = recv_frames(&self.sockets.hb_pipe, zmq::DONTWAIT) {
            match frames.first().map(|f| &f[..]) {
                Some(heartbeat::DEAD) => lost.extend(frames.get(1).map(|u| u.to_vec())),
                Some(heartbeat::VITALS) => {
                    let report = heartbeat::BeatReport::from_frames(&frames[1..]);
                    self.handle(Event::Beat(report));
                }
                _ => {}
            }
        }
        if lost.is_empty() {
            return;
        }
        // Every reply an engine sent before it was found dead is read
        // first, so finished work is recorded and answered, not failed
        // with EngineDied (or, for a task with retries, run twice). The
        // batch limit of the loop may have left replies behind: the links
        // are read to the end before acting on a loss.
        while let Some(frames) = drain(&self.sockets.link, 1, &mut self.trim.bytes_since).pop() {
            self.on_link_message(frames);
        }
        for uuid in lost {
            self.handle(Event::EngineLost {
                uuid,
                reason: LossReason::MissedHeartbeats,
            });
        }
    }

    /// Sends frames to an engine; keeps them for later if its connection is
    /// not up yet, or if earlier ones wait for it ([`crate::unroutable`]).
    fn route(&mut self, channel: Channel, uuid: Vec<u8>, frames: Frames) {
        let sockets = &self.sockets;
        self.unroutable
            .route(channel, uuid, frames, Instant::now(), |c, u, f| {
                send_to_engine(sockets, c, u, f)
            });
    }

    /// Tries the messages waiting for their engine's connection again. A
    /// message that waited past [`UNROUTABLE_LIMIT`] goes to the core,
    /// which fails its request with `Undelivered` and tells the client.
    fn retry_unroutable(&mut self) {
        let sockets = &self.sockets;
        let registry = self.core.registry();
        let expired = self.unroutable.retry(
            Instant::now(),
            UNROUTABLE_LIMIT,
            |uuid| registry.id_of(uuid).is_none(),
            |c, u, f| send_to_engine(sockets, c, u, f),
        );
        for w in expired {
            self.handle(Event::Undeliverable {
                channel: w.channel,
                uuid: w.engine,
                frames: w.frames,
                waited: UNROUTABLE_LIMIT.as_secs_f64(),
            });
        }
    }

    /// Sends the iopub topics to the engines owed them (registered, or
    /// not reached since the set changed).
    fn send_subscriptions(&mut self) {
        if !self.subscriptions.any_owed() {
            return;
        }
        let sockets = &self.sockets;
        self.subscriptions.pay(|uuid, topics| {
            let frames = topics.into_iter().map(zmq::Message::from).collect();
            matches!(
                send_on_link(sockets, LinkTag::Subscriptions, uuid, frames),
                Sent::Done
            )
        });
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

/// Sends `frames` to engine `uuid` on its link, tagged with `channel`:
/// the frames back if its link is not up.
fn send_to_engine(sockets: &Sockets, channel: Channel, uuid: &[u8], frames: Frames) -> Sent {
    send_on_link(sockets, LinkTag::Channel(channel), uuid, frames)
}

/// Sends `frames` to engine `uuid` on its link after `tag` (the tag alone
/// when there are none): the frames back if its link is not up.
fn send_on_link(sockets: &Sockets, tag: LinkTag, uuid: &[u8], frames: Frames) -> Sent {
    let sock = &sockets.link;
    match sock.send(uuid, zmq::SNDMORE | zmq::DONTWAIT) {
        Ok(()) => {
            let more = if frames.is_empty() { 0 } else { zmq::SNDMORE };
            let tagged = sock
                .send(tag.frame(), more)
                .and_then(|()| send_frames(sock, frames, 0));
            if let Err(e) = tagged {
                warn!(error = %e, "forwarding to an engine failed");
            }
            Sent::Done
        }
        Err(zmq::Error::EHOSTUNREACH) | Err(zmq::Error::EAGAIN) => Sent::NotConnected(frames),
        Err(e) => {
            warn!(error = %e, "forwarding to an engine failed");
            Sent::Done
        }
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

/// When the hub gives freed memory back to the system
/// ([`release_free_memory`]), by two rules: [`after_traffic`] and
/// [`when_quiet`].
///
/// [`after_traffic`]: MemoryTrim::after_traffic
/// [`when_quiet`]: MemoryTrim::when_quiet
#[derive(Debug, Default)]
struct MemoryTrim {
    /// Bytes received since freed memory was last given back.
    bytes_since: usize,
    /// Quiet polls that will still trim (rule two).
    quiet_trims_due: u8,
}

/// Bytes after which the hub gives freed memory back, busy or not (one
/// 128 MiB push, or some 30,000 small tasks).
const TRIM_AFTER_BYTES: usize = 64 << 20;

/// Bytes after which the hub gives freed memory back as soon as it has
/// caught up (a batch of tasks answered).
const TRIM_WHEN_CAUGHT_UP_BYTES: usize = 4 << 20;

/// Quiet polls that trim again after a trim of rule one.
const QUIET_TRIMS_AFTER_TRAFFIC: u8 = 2;

impl MemoryTrim {
    /// Rule one, *after traffic*, checked before each poll: trim when
    /// [`TRIM_AFTER_BYTES`] have arrived since the last trim, or when
    /// [`TRIM_WHEN_CAUGHT_UP_BYTES`] have and `caught_up()` (no peer has
    /// anything to read). So the hub's RSS stays small however long it
    /// runs. A trim here arms rule two.
    fn after_traffic(&mut self, caught_up: impl FnOnce() -> bool) {
        if self.bytes_since > TRIM_AFTER_BYTES
            || (self.bytes_since > TRIM_WHEN_CAUGHT_UP_BYTES && caught_up())
        {
            release_free_memory();
            self.bytes_since = 0;
            self.quiet_trims_due = QUIET_TRIMS_AFTER_TRAFFIC;
        }
    }

    /// Rule two, *when quiet*, on a poll that timed out: trim again, up to
    /// [`QUIET_TRIMS_AFTER_TRAFFIC`] times after a trim of rule one. Large
    /// messages are freed by ZeroMQ's I/O thread once sent, after the trim
    /// that followed their arrival; without this a 4-engine 128 MiB fan-out
    /// through the hub leaves its RSS at 300 MiB.
    fn when_quiet(&mut self) {
        if self.quiet_trims_due > 0 {
            release_free_memory();
            self.quiet_trims_due -= 1;
        }
    }
}

/// Returns freed heap memory to the OS. glibc keeps freed blocks for reuse,
/// so after forwarding a few hundred MiB the hub's RSS would stay at its
/// peak; `malloc_trim` (glibc only; a no-op elsewhere) gives it back. It
/// earns its place: in `zpar bench cluster` (128 MiB pushes and pulls, then
/// three rounds of mixed work) the hub's RSS stays at its 90 MiB peak
/// without it and returns to 31–33 MiB with it.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap; it takes no pointers
    // of ours and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises this process's soft limit on open files to its hard limit. Every
/// engine holds a connection to the hub, and every engine process a
/// heartbeat connection, so the common soft limit of 1,024 would stop a hub
/// at about 400 engines, while the hard limit (often 524,288) allows
/// thousands.
fn raise_open_file_limit() -> Option<u64> {
    let files = zpar_protocol::net::raise_open_file_limit()?;
    let room = EngineRoom::for_files(files);
    info!(
        files,
        engines_one_per_process = room.engines(1),
        engines_packed_40_per_heartbeat = room.engines(40),
        "the limit on open files leaves room for this many engines (each holds its link to the \
         hub, and each engine process one heartbeat connection); registrations past it are \
         refused, naming the limit"
    );
    Some(files)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_polled_in_their_own_order_and_the_peers_come_first() {
        for (i, slot) in Slot::ALL.iter().enumerate() {
            assert_eq!(*slot as usize, i, "{slot:?}");
        }
        assert_eq!(Slot::ALL[Slot::PEERS], Slot::HeartbeatPipe);
        for slot in Slot::SERVE_ORDER {
            assert!((slot as usize) < Slot::PEERS, "{slot:?} is a peer's socket");
        }
        // Every channel is served from clients, and the engines' link.
        let served: Vec<_> = Slot::SERVE_ORDER
            .iter()
            .filter_map(|s| s.client_channel())
            .collect();
        for channel in [Channel::Mux, Channel::Task, Channel::Control] {
            assert!(served.contains(&channel), "{channel}");
        }
        assert!(Slot::SERVE_ORDER.contains(&Slot::Link));
    }

    #[test]
    fn ports_left_to_the_hub_are_below_the_kernels_ephemeral_range() {
        // A restart on the same ports (`--reuse`) must not meet them taken
        // as some connection's source port.
        let Some(ports) = zpar_protocol::net::listen_ports() else {
            return; // not Linux, or a host whose ephemeral range leaves no room
        };
        let ctx = zmq::Context::new();
        for _ in 0..4 {
            let (_socket, port) =
                bind(&ctx, zmq::ROUTER, "127.0.0.1", 0, None, Peers::Engines).unwrap();
            assert!(ports.contains(&port), "{port} outside {ports:?}");
        }
    }

    #[test]
    fn memory_is_trimmed_after_traffic_then_twice_when_quiet() {
        // Little traffic: no trim, caught up or not.
        let mut trim = MemoryTrim {
            bytes_since: TRIM_WHEN_CAUGHT_UP_BYTES,
            ..MemoryTrim::default()
        };
        trim.after_traffic(|| true);
        assert_eq!(trim.bytes_since, TRIM_WHEN_CAUGHT_UP_BYTES);
        trim.when_quiet();
        assert_eq!(trim.quiet_trims_due, 0);
        // A burst, still busy: no trim yet; caught up: trim, rule two armed.
        trim.bytes_since = TRIM_WHEN_CAUGHT_UP_BYTES + 1;
        trim.after_traffic(|| false);
        assert_eq!(trim.bytes_since, TRIM_WHEN_CAUGHT_UP_BYTES + 1);
        trim.after_traffic(|| true);
        assert_eq!((trim.bytes_since, trim.quiet_trims_due), (0, 2));
        trim.when_quiet();
        trim.when_quiet();
        assert_eq!(trim.quiet_trims_due, 0);
        trim.when_quiet();
        assert_eq!(trim.quiet_trims_due, 0);
        // Heavy traffic trims busy or not, without asking.
        trim.bytes_since = TRIM_AFTER_BYTES + 1;
        trim.after_traffic(|| panic!("not asked above TRIM_AFTER_BYTES"));
        assert_eq!((trim.bytes_since, trim.quiet_trims_due), (0, 2));
    }
}
