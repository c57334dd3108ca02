//! The engine process: start-up (sockets, registration, the script engine
//! with its callbacks) for a cluster's engine and for a standalone kernel.
//!
//! What an engine then does is split three ways: the decisions are the
//! core's ([`crate::core`], a state machine with no I/O), the sockets are
//! [`Io`]'s, and the loop that joins them is `serve.rs`. A cluster engine
//! can also serve as a Jupyter kernel (`--bind-kernel`, or a
//! `bind_kernel_request` on control): its kernel's sockets are served by
//! the same loop ([`crate::kernel`]).

use crate::communicator::{self, CommEnv};
use crate::core::{EngineCore, Role};
use crate::error::EngineError;
use crate::heartbeat::{Heartbeat, HeartbeatHost};
use crate::hub_watch::{HubWatch, Registered};
use crate::io::{send_on_link, Io};
use crate::kernel::{Kernel, KernelConfig, KernelHome};
use crate::relay::Relay;
use crate::serve::{Serving, Shared};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use zpar_protocol::curve::{secure_client, CurveKeys, HandshakeMonitor, HandshakeWatch};
use zpar_protocol::error::Chain;
use zpar_protocol::{
    new_id, recv_frames, Content, EngineConnection, LinkTag, Message, RegistrationRequest, Session,
    Status, UnregistrationRequest,
};

/// How to run an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The hub's engine connection file contents.
    pub connection: EngineConnection,
    /// The address the engine's communicators bind to (default: this
    /// host's address on the route to the hub; loopback for a local hub).
    pub bind_ip: Option<String>,
    /// How long to keep trying to register before giving up.
    pub registration_timeout: Duration,
    /// Default limit of script operations per request (None: unlimited).
    pub max_operations: Option<u64>,
    /// An id to ask the hub for (after a hub restart).
    pub requested_id: Option<u32>,
    /// This engine's uuid (default: a fresh one).
    pub uuid: Option<String>,
    /// How a signal handler stops the engine.
    pub stop: Option<StopSignal>,
    /// Serve as a Jupyter kernel too, from the start (`--bind-kernel`).
    pub bind_kernel: bool,
    /// Where a bound kernel writes `kernel-<engine id>.json`: the profile's
    /// `security/` folder (default: the default profile's).
    pub kernel_dir: PathBuf,
    /// A ZeroMQ context to share with other engines of this process
    /// (`zpar engine --count K`); default: one of its own.
    pub context: Option<SharedContext>,
}

/// How a signal handler stops an engine: the flag it sets, and a
/// descriptor it makes readable at the same time (a pipe it writes to,
/// never read), which an engine idle for many seconds polls so it stops at
/// once.
///
/// ```
/// use std::sync::atomic::AtomicBool;
/// static STOP: AtomicBool = AtomicBool::new(false);
/// let (read, _write) = std::os::unix::net::UnixStream::pair().unwrap();
/// let stop = zpar_engine::server::StopSignal {
///     flag: &STOP,
///     wake: std::os::fd::AsRawFd::as_raw_fd(&read),
/// };
/// # let _ = stop;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct StopSignal {
    /// Set to stop the engine.
    pub flag: &'static AtomicBool,
    /// Turns readable when `flag` is set.
    pub wake: std::os::fd::RawFd,
}

/// A ZeroMQ context engines of one process share (their sockets' I/O
/// threads and descriptors), in an [`EngineConfig`]; they share one
/// heartbeat connection to the hub too ([`HeartbeatHost`]).
///
/// ```
/// # let conn: zpar_protocol::EngineConnection = serde_json::from_str(r#"{"transport": "tcp", "ip": "127.0.0.1",
/// #   "key": "k", "signature_scheme": "hmac-sha256", "link": 1, "heartbeat": 2}"#).unwrap();
/// let shared = zpar_engine::server::SharedContext::new(zmq::Context::new());
/// let mut config = zpar_engine::EngineConfig::new(conn);
/// config.context = Some(shared.clone()); // and so for each engine of the process
/// ```
#[derive(Clone)]
pub struct SharedContext {
    context: zmq::Context,
    /// Started by the first engine that asks.
    heartbeat: Arc<Mutex<Option<Arc<HeartbeatHost>>>>,
}

impl SharedContext {
    /// Engines given clones of it share `context` and one heartbeat
    /// connection.
    pub fn new(context: zmq::Context) -> SharedContext {
        SharedContext {
            context,
            heartbeat: Default::default(),
        }
    }

    /// The shared ZeroMQ context.
    pub fn context(&self) -> &zmq::Context {
        &self.context
    }

    /// The heartbeat host for the hub at `url`: the one the engines share,
    /// started by the first to ask (one asking for another hub gets one of
    /// its own).
    fn heartbeat_host(
        &self,
        url: &str,
        curve: Option<&CurveKeys>,
    ) -> Result<Arc<HeartbeatHost>, EngineError> {
        let mut slot = self.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(host) if host.serves(url, curve) && host.is_running() => Ok(host.clone()),
            Some(host) if !host.serves(url, curve) => {
                HeartbeatHost::start(&self.context, url, curve)
            }
            // None yet, or its thread ended (a failed poll): a new one.
            _ => {
                let host = HeartbeatHost::start(&self.context, url, curve)?;
                *slot = Some(host.clone());
                Ok(host)
            }
        }
    }
}

impl std::fmt::Debug for SharedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedContext")
    }
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
            bind_kernel: false,
            kernel_dir: zpar_protocol::Profile::named("default").security_dir(),
            context: None,
        }
    }
}

/// A hook that adds natives to a script engine.
type Setup = Box<dyn Fn(&mut rhai::Engine)>;

/// A configured engine, ready to register and serve.
///
/// ```no_run
/// use zpar_engine::{EngineConfig, EngineServer};
/// let conn = zpar_protocol::connection::read_connection_file(
///     &zpar_protocol::Profile::named("default").engine_file()).unwrap();
/// let mut server = EngineServer::new(EngineConfig::new(conn));
/// // A custom engine registers its own native functions:
/// server.on_setup(|engine| { engine.register_fn("triple", |x: i64| 3 * x); });
/// server.run().unwrap();
/// ```
pub struct EngineServer {
    start: Start,
    setups: Vec<Setup>,
}

/// What to start: a cluster's engine, or a kernel with no hub.
enum Start {
    Cluster(Box<EngineConfig>),
    Kernel(KernelConfig),
}

impl EngineServer {
    /// An engine for this configuration.
    pub fn new(config: EngineConfig) -> EngineServer {
        EngineServer {
            start: Start::Cluster(Box::new(config)),
            setups: Vec::new(),
        }
    }

    /// A standalone Jupyter kernel: an engine with no hub, listening where
    /// the configuration's connection file says (what `zpar kernel -f FILE`
    /// runs).
    ///
    /// ```no_run
    /// use zpar_engine::{EngineServer, KernelConfig};
    /// let config = KernelConfig::new("/run/user/1000/jupyter/kernel-1.json");
    /// EngineServer::kernel(config).run().unwrap();
    /// ```
    pub fn kernel(config: KernelConfig) -> EngineServer {
        EngineServer {
            start: Start::Kernel(config),
            setups: Vec::new(),
        }
    }

    /// Adds native functions or types to every script engine this server
    /// builds (at start and after `clear`).
    pub fn on_setup(&mut self, f: impl Fn(&mut rhai::Engine) + 'static) -> &mut Self {
        self.setups.push(Box::new(f));
        self
    }

    /// Registers with the hub and serves until shut down; a standalone
    /// kernel serves its kernel until shut down.
    pub fn run(self) -> Result<(), EngineError> {
        match &self.start {
            Start::Cluster(config) => self.run_cluster_engine(config),
            Start::Kernel(config) => self.run_standalone(config),
        }
    }

    fn run_cluster_engine(&self, config: &EngineConfig) -> Result<(), EngineError> {
        let conn = &config.connection;
        let ctx = config
            .context
            .as_ref()
            .map(|c| c.context().clone())
            .unwrap_or_default();
        // Shared segments a killed engine or client of this host left.
        zpar_protocol::bulk::sweep_stale();
        let uuid = config.uuid.clone().unwrap_or_else(new_id);
        let mut session = Session::new(conn.key.as_bytes(), &conn.signature_scheme, "engine")?;
        session.session_id = uuid.clone();

        // Checked before anything connects: a garbled key is an error
        // naming the field, not a wait for a hub that cannot answer.
        let curve = conn.curve()?;
        // Every socket to the hub carries ZeroMQ's heartbeats, so a
        // connection that died silently is dropped and made anew instead of
        // swallowing what is sent on it (`zpar_protocol::keepalive`).
        let socket = |kind: zmq::SocketType| -> Result<zmq::Socket, EngineError> {
            let s = ctx.socket(kind)?;
            zpar_protocol::keepalive::set_zmtp_heartbeats(&s)?;
            secure_client(&s, curve.as_ref())?;
            s.set_linger(1000)?;
            Ok(s)
        };
        // One connection to the hub for registration and every channel
        // (each message after its tag); its handshakes are watched, so
        // keys that do not fit the hub's end the wait at once with the
        // reason.
        let mut link = socket(zmq::DEALER)?;
        link.set_identity(uuid.as_bytes())?;
        let handshakes = HandshakeMonitor::attach(&ctx, &link)?;
        link.connect(&conn.url(conn.link))?;
        // Output goes to the hub on the link. This XPUB is bound only
        // while the engine serves as a Jupyter kernel: plain, as front
        // ends are, and it tells what they subscribe to, so no message
        // nobody reads is built (`Io::publish`).
        let iopub = ctx.socket(zmq::XPUB)?;
        iopub.set_linger(1000)?;
        // One heartbeat connection for all the engines of this process.
        let heartbeat_url = conn.url(conn.heartbeat);
        let heartbeat_host = match &config.context {
            Some(shared) => shared.heartbeat_host(&heartbeat_url, curve.as_ref())?,
            None => HeartbeatHost::start(&ctx, &heartbeat_url, curve.as_ref())?,
        };
        let heartbeat = Heartbeat::join(&heartbeat_host, uuid.as_bytes())?;

        let (ip, advertise) = bind_address(config.bind_ip.as_deref(), &conn.ip);
        // Other engines pass relayed chunks to it (`crate::relay`); the hub
        // learns its address at registration.
        let relay = Relay::start(
            &ctx,
            &ip,
            &advertise,
            curve.as_ref(),
            &conn.key,
            &conn.signature_scheme,
        )?;
        let relay_url = relay.url.clone();
        let mut early = Vec::new();
        let registered = register(
            &mut session,
            &link,
            &handshakes,
            &uuid,
            (&advertise, &relay_url, heartbeat.route()),
            config,
            &mut early,
        );
        handshakes.detach(&mut link);
        let registered = registered?;
        let engine_id = registered.id;
        let hb_period = registered.hb_period;
        heartbeat.set_hub(&registered.hub_instance);
        info!(engine = engine_id, uuid = %uuid, curve = curve.is_some(), natives = ?self.native_functions(), "registered with the hub");

        let kernel_home = KernelHome {
            ctx: ctx.clone(),
            bind_ip: ip.clone(),
            advertise: advertise.clone(),
            key: conn.key.clone(),
            signature_scheme: conn.signature_scheme.clone(),
            dir: config.kernel_dir.clone(),
        };
        let mut io = Io::cluster(session, engine_id, link, iopub, kernel_home, relay);
        for frames in early {
            io.sort_link_message(frames);
        }
        let core = EngineCore::new(
            Role::Cluster,
            engine_id,
            uuid.clone(),
            config.max_operations,
            self.native_functions(),
        );
        let shared = Shared::new(io, core, None);
        info!(bind = %ip, %advertise, "communicators bind here");
        let comm_env = CommEnv {
            ctx: ctx.clone(),
            ip,
            advertise,
            engine_id,
            curve: Rc::new(RefCell::new(registered.communicator_keys)),
        };
        let make_engine = || self.script_engine(&shared, &comm_env);
        let watch = HubWatch::new(heartbeat, uuid.clone(), hb_period, relay_url);
        let mut serving = Serving::new(
            shared.clone(),
            &make_engine,
            Some(watch),
            comm_env.clone(),
            (config.stop.map(|s| s.flag), config.stop.map(|s| s.wake)),
            None,
        );
        let bound = match config.bind_kernel {
            true => shared.io.borrow_mut().bind_kernel().map(|_| ()),
            false => Ok(()),
        };
        if bound.is_ok() {
            serving.serve();
        }

        // Leave politely so the hub need not wait for missed heartbeats.
        let (bye, engine_id) = {
            let io = shared.io.borrow();
            let id = io.engine_id;
            let bye = io.session.encode(&Message::new(
                &io.session,
                Content::UnregistrationRequest(UnregistrationRequest { id }),
            ));
            (bye, id)
        };
        shared.io.borrow().send_registration(bye.into_frames());
        drop(serving);
        bound?;
        info!(engine = engine_id, "engine stopped");
        Ok(())
    }

    /// Serves a kernel with no hub until a `shutdown_request`, a stop
    /// signal, or its parent's end.
    fn run_standalone(&self, config: &KernelConfig) -> Result<(), EngineError> {
        let plan = crate::kernel::plan_for(&config.connection_file)?;
        let session = Session::new(
            plan.connection.key.as_bytes(),
            &plan.connection.signature_scheme,
            "kernel",
        )?;
        let ctx = zmq::Context::new();
        let iopub = ctx.socket(zmq::PUB)?;
        iopub.set_linger(1000)?;
        let ip = plan.bind_ip.clone();
        let kernel = Kernel::bind(&ctx, &iopub, plan)?;
        if let Some(ready) = &config.on_ready {
            ready(&kernel.connection, &config.connection_file);
        }
        let uuid = session.session_id.clone();
        let io = Io::standalone(session, iopub, kernel);
        let core = EngineCore::new(
            Role::Standalone,
            0,
            uuid,
            config.max_operations,
            self.native_functions(),
        );
        let shared = Shared::new(io, core, config.interrupt);
        let comm_env = CommEnv {
            ctx: ctx.clone(),
            ip: ip.clone(),
            advertise: ip,
            engine_id: 0,
            // No hub, so no communicator keys: a standalone kernel's
            // communicators (if a cell makes one) are plain.
            curve: Default::default(),
        };
        let make_engine = || self.script_engine(&shared, &comm_env);
        let mut serving = Serving::new(
            shared.clone(),
            &make_engine,
            None,
            comm_env.clone(),
            // A kernel's parent is looked for every 2 s anyway.
            (config.stop, None),
            config.parent_pid,
        );
        serving.serve();
        drop(serving);
        info!(file = %config.connection_file.display(), "kernel stopped");
        Ok(())
    }

    /// The signatures of the native functions this server's setups add
    /// (`simulate(i64, i64) -> f64`), sorted: what a script sees from
    /// `native_functions()`. Empty for a plain `zpar engine`.
    ///
    /// ```
    /// use zpar_engine::{EngineConfig, EngineServer};
    /// # let conn: zpar_protocol::EngineConnection = serde_json::from_str(r#"{"transport": "tcp", "ip": "127.0.0.1",
    /// #   "key": "k", "signature_scheme": "hmac-sha256", "link": 1, "heartbeat": 2}"#).unwrap();
    /// let mut server = EngineServer::new(EngineConfig::new(conn));
    /// server.on_setup(|e| { e.register_fn("triple", |x: i64| 3 * x); });
    /// assert_eq!(server.native_functions(), vec!["triple(i64) -> i64".to_string()]);
    /// ```
    pub fn native_functions(&self) -> Vec<String> {
        let mut bare = rhai::Engine::new_raw();
        for setup in &self.setups {
            setup(&mut bare);
        }
        let mut out: Vec<String> = bare
            .gen_fn_signatures(false)
            .into_iter()
            .map(|s| s.replace("_: ", ""))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A script engine with zpar's natives, the program's own, and the
    /// callbacks that reach the engine's sockets and core.
    fn script_engine(&self, shared: &Rc<Shared>, comm_env: &CommEnv) -> rhai::Engine {
        let mut engine = rhai::Engine::new();
        engine.set_max_expr_depths(256, 256);
        engine.set_max_call_levels(256);
        crate::arrays::register(&mut engine);
        communicator::register(&mut engine, comm_env.clone());
        let out = shared.clone();
        engine.on_print(move |s| out.io.borrow_mut().stream("stdout", s));
        let err = shared.clone();
        engine.on_debug(move |s, _, pos| {
            let text = if pos.is_none() {
                s.to_string()
            } else {
                format!("{s} ({pos})")
            };
            err.io.borrow_mut().stream("stderr", &text)
        });
        let progress = shared.clone();
        engine.on_progress(move |ops| progress.on_progress(ops).map(rhai::Dynamic::from));
        let natives: rhai::Array = self
            .native_functions()
            .into_iter()
            .map(Into::into)
            .collect();
        engine.register_fn("native_functions", move || natives.clone());
        for setup in &self.setups {
            setup(&mut engine);
        }
        engine
    }
}

/// Sends registration requests on the link until the hub answers, time
/// runs out, or the security handshake with the hub fails (`handshakes`
/// watches the link).
fn register(
    session: &mut Session,
    socket: &zmq::Socket,
    handshakes: &HandshakeMonitor,
    uuid: &str,
    (host, relay, heartbeat): (&str, &str, &str),
    config: &EngineConfig,
    early: &mut Vec<Vec<zmq::Message>>,
) -> Result<Registered, EngineError> {
    let started = Instant::now();
    // A request waits in the socket until the hub is there to take it, so
    // asking again only helps when one was lost (a hub that restarted):
    // not too soon, or a thousand engines registering at once ask the
    // busy hub several times each.
    let mut wait = Duration::from_millis(500);
    let url = config.connection.url(config.connection.link);
    let mut told = Duration::ZERO;
    let mut watch = HandshakeWatch::new(config.connection.curve_publickey.is_some());
    loop {
        // A wait of more than 5 s says what it waits for, then again every
        // 10 s: a person can tell a wait from a hang.
        let waited = started.elapsed();
        if waited >= Duration::from_secs(5) && waited >= told {
            warn!(hub = %url, waited = ?Duration::from_secs(waited.as_secs()), "waiting for the hub to answer the registration");
            told = waited + Duration::from_secs(10);
        }
        let req = Message::new(
            session,
            Content::RegistrationRequest(RegistrationRequest {
                uuid: uuid.to_string(),
                id: config.requested_id,
                host: Some(host.to_string()),
                relay: Some(relay.to_string()),
                heartbeat: Some(heartbeat.to_string()),
            }),
        );
        send_on_link(
            socket,
            LinkTag::Registration,
            session.encode(&req).into_frames(),
            zmq::DONTWAIT,
        )
        .ok();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut items = [
                socket.as_poll_item(zmq::POLLIN),
                handshakes.socket().as_poll_item(zmq::POLLIN),
            ];
            zmq::poll(&mut items, left.as_millis().max(1) as i64)?;
            if items[1].is_readable() {
                while let Some((event, _)) = handshakes.try_next() {
                    watch.feed(&event);
                }
                if let Some(reason) = watch.outcome().refusal() {
                    return Err(EngineError::Handshake { url, reason });
                }
            }
            if !items[0].is_readable() {
                continue;
            }
            let mut frames = recv_frames(socket, 0)?;
            if frames.first().and_then(|t| LinkTag::parse(t)) != Some(LinkTag::Registration) {
                // Work can come before the answer: the hub sends tasks
                // that waited for an engine as it registers one, and holds
                // its answer until its records are committed; its
                // clients' iopub topics come as it registers one too.
                // Kept, in order, for the request loop.
                early.push(frames);
                continue;
            }
            frames.remove(0);
            match session.decode_frames(frames) {
                Ok(Message {
                    content: Content::RegistrationReply(r),
                    ..
                }) => {
                    if r.status != Status::Ok {
                        return Err(EngineError::Refused(r.evalue.unwrap_or_default()));
                    }
                    return Registered::from_reply(r);
                }
                Ok(other) => debug!(msg_type = %other.header.msg_type, "ignored while registering"),
                Err(e) => warn!(error = %Chain(&e), "bad message while registering"),
            }
        }
        if started.elapsed() >= config.registration_timeout {
            return Err(EngineError::NoHub {
                url,
                waited: config.registration_timeout,
            });
        }
        wait = (wait * 2).min(Duration::from_secs(2));
        debug!("no registration reply yet; retrying");
    }
}

/// Where communicators bind and what they advertise: `--ip` if given (a
/// wildcard binds every interface and advertises the address toward the
/// hub), else this host's address on the route to the hub.
fn bind_address(requested: Option<&str>, hub_ip: &str) -> (String, String) {
    let toward_hub = || {
        zpar_protocol::net::address_toward(hub_ip)
            .map(|a| a.to_string())
            .unwrap_or_else(|e| {
                warn!(error = %Chain(&e), hub = %hub_ip, "cannot tell the route to the hub; advertising its address");
                hub_ip.to_string()
            })
    };
    match requested {
        Some(ip) if zpar_protocol::net::is_wildcard(ip) => (ip.to_string(), toward_hub()),
        Some(ip) => (ip.to_string(), ip.to_string()),
        None => {
            let ip = toward_hub();
            (ip.clone(), ip)
        }
    }
}

#[cfg(test)]
mod bind_tests {
    use super::bind_address;

    #[test]
    fn communicators_bind_toward_the_hub_unless_told() {
        assert_eq!(
            bind_address(None, "127.0.0.1"),
            ("127.0.0.1".into(), "127.0.0.1".into())
        );
        assert_eq!(
            bind_address(Some("0.0.0.0"), "127.0.0.1"),
            ("0.0.0.0".into(), "127.0.0.1".into())
        );
        assert_eq!(
            bind_address(Some("10.1.2.3"), "127.0.0.1"),
            ("10.1.2.3".into(), "10.1.2.3".into())
        );
    }
}
