//! [`Client`]: the connection to a hub.

use crate::error::{Error, Result};
use crate::io::{ClientEvent, Command, EngineTable, IoLoop};
use crate::result::{AsyncResult, ResultState, Shape};
use crate::targets::Targets;
use serde_json::{Map, Value as Json};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zpar_protocol::connection::read_connection_file;
use zpar_protocol::stream;
use zpar_protocol::{
    AbortRequest, Channel, ClearRequest, ClientConnection, ConnectionRequest, Content,
    InterruptRequest, Message, Profile, QueueReply, QueueRequest, RequestMetadata, Session,
    ShutdownRequest,
};

/// How long [`Client::connect`] waits for the hub to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::watch::HUB_TIMEOUT;

/// A connection to a hub. Cheap to clone; all clones share one I/O thread,
/// which stops when the last clone is dropped.
///
/// The client watches the hub's heartbeat. A hub silent for
/// [`HUB_TIMEOUT`] (see [`set_hub_timeout`](Self::set_hub_timeout)) is
/// lost: every pending result fails with [`Error::HubLost`], so `get()`
/// never waits past a lost hub, and new requests fail at once with the
/// same error. When a hub comes back on the same connection file
/// (`zpar hub --reuse`), this client reconnects by itself;
/// [`events`](Self::events) reports both as [`ClientEvent::HubLost`] and
/// [`ClientEvent::HubReturned`].
///
/// ```no_run
/// use zpar_client::{Client, Value};
/// # fn main() -> zpar_client::Result<()> {
/// let client = Client::connect()?;                  // the default profile
/// client.wait_for_engines(2, std::time::Duration::from_secs(10))?;
/// let view = client.all();
/// view.push("x", Value::Int(20))?.get()?;
/// let r = view.execute("x * 2 + 2")?.get()?;
/// assert!(r.iter().all(|v| *v == Value::Int(42)));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub session: Session,
    commands: mpsc::Sender<Command>,
    wake: Waker,
    pub table: Arc<EngineTable>,
    pub connection: ClientConnection,
    io_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Whether large values may go through shared segments.
    shared_memory: AtomicBool,
    /// Engine id → whether it runs on this client's host.
    local_engines: Mutex<std::collections::BTreeMap<u32, bool>>,
}

/// How a user thread wakes the I/O thread: a byte down a socket pair that
/// the I/O thread polls, written only when no wake-up is pending, so a
/// burst of submissions costs one write and one wake-up, not one each.
pub(crate) struct Waker {
    pipe: UnixStream,
    /// Set by the byte's writer; cleared by the I/O thread before it takes
    /// the commands waiting, so a command sent after that writes again.
    pending: Arc<AtomicBool>,
}

impl Waker {
    fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            let _ = (&self.pipe).write(&[1]);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        self.wake.wake();
        if let Some(t) = self.io_thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// One request to build: where it goes and which replies it expects.
pub(crate) struct Request {
    pub channel: Channel,
    pub content: Content,
    pub metadata: Map<String, Json>,
    pub buffers: Vec<zmq::Message>,
    /// One slot per expected reply: the engine, or None for "any" (tasks).
    pub replies: Vec<Option<u32>>,
}

impl Client {
    /// Connects using the default profile's connection file
    /// (`~/.zpar/profile_default/security/zpar-client.json`, or under
    /// `$ZPAR_DIR`), like ipyparallel's `Client()`.
    pub fn connect() -> Result<Client> {
        Client::from_profile("default")
    }

    /// Connects using a named profile.
    pub fn from_profile(name: &str) -> Result<Client> {
        Client::from_file(&Profile::named(name).client_file())
    }

    /// Connects using a connection file. Its CURVE keys are checked first:
    /// a truncated or garbled key is an error naming the file and the field.
    pub fn from_file(path: &Path) -> Result<Client> {
        let conn: ClientConnection = read_connection_file(path)?;
        Client::from_connection(conn)
    }

    /// Connects to the hub a connection describes.
    pub fn from_connection(conn: ClientConnection) -> Result<Client> {
        Client::from_connection_timeout(conn, CONNECT_TIMEOUT)
    }

    /// Like [`from_connection`](Self::from_connection) with a chosen wait.
    pub fn from_connection_timeout(conn: ClientConnection, timeout: Duration) -> Result<Client> {
        let session = Session::new(conn.key.as_bytes(), &conn.signature_scheme, "client")?;
        let mut io_session = Session::new(conn.key.as_bytes(), &conn.signature_scheme, "client")?;
        io_session.session_id = session.session_id.clone();
        let identity = session.session_id.as_bytes().to_vec();
        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| Error::Cluster(format!("wake pipe: {e}")))?;
        wake_tx.set_nonblocking(true).ok();
        wake_rx.set_nonblocking(true).ok();
        let wake_pending = Arc::new(AtomicBool::new(false));
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let table = Arc::new(EngineTable::default());
        let io = IoLoop::new(
            conn.clone(),
            identity,
            io_session,
            cmd_rx,
            wake_rx,
            wake_pending.clone(),
            table.clone(),
        )?;
        let thread = std::thread::Builder::new()
            .name("zpar-client-io".into())
            .spawn(move || io.run())
            .map_err(|e| Error::Cluster(format!("spawning the I/O thread: {e}")))?;
        let client = Client {
            inner: Arc::new(Inner {
                session,
                commands: cmd_tx,
                wake: Waker {
                    pipe: wake_tx,
                    pending: wake_pending,
                },
                table,
                connection: conn,
                io_thread: Mutex::new(Some(thread)),
                shared_memory: AtomicBool::new(
                    std::env::var("ZPAR_SHARED_MEMORY").map_or(true, |v| v != "0"),
                ),
                local_engines: Mutex::new(Default::default()),
            }),
        };
        // Segments a killed client or engine of this host left behind.
        zpar_protocol::bulk::sweep_stale();
        client.refresh_engines(timeout)?;
        Ok(client)
    }

    /// This client's session id (its identity at the hub).
    pub fn session_id(&self) -> &str {
        &self.inner.session.session_id
    }

    /// The connection this client uses.
    pub fn connection(&self) -> &ClientConnection {
        &self.inner.connection
    }

    /// Whether large values (arrays and blobs of at least
    /// [`SHARED_MIN_BYTES`](zpar_protocol::bulk::SHARED_MIN_BYTES)) to and
    /// from engines on this client's host go through shared memory
    /// (`/dev/shm`, written once whatever the number of engines) instead of
    /// the hub's sockets. On by default; off with `ZPAR_SHARED_MEMORY=0`.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// client.set_shared_memory(false); // every byte through the hub
    /// # Ok(()) }
    /// ```
    pub fn set_shared_memory(&self, enabled: bool) {
        self.inner.shared_memory.store(enabled, Ordering::Relaxed);
    }

    /// Whether large values to `ids` may go through shared segments: shared
    /// memory is on and available, the hub is reached over loopback and
    /// every engine said it runs at a loopback address. (A segment also
    /// names the writer's boot id, which the reader checks.)
    pub(crate) fn shares_host_with(&self, ids: &[u32]) -> bool {
        if ids.is_empty()
            || !self.inner.shared_memory.load(Ordering::Relaxed)
            || !zpar_protocol::bulk::available()
            || !is_loopback(&self.inner.connection.ip)
        {
            return false;
        }
        let missing = {
            let known = self.inner.local_engines.lock().expect("local lock");
            ids.iter().any(|id| !known.contains_key(id))
        };
        if missing {
            let Ok(hosts) = self.engine_hosts(CONNECT_TIMEOUT) else {
                return false;
            };
            let mut known = self.inner.local_engines.lock().expect("local lock");
            for id in ids {
                known.insert(*id, hosts.get(id).is_some_and(|h| is_loopback(h)));
            }
        }
        let known = self.inner.local_engines.lock().expect("local lock");
        ids.iter().all(|id| known.get(id).copied().unwrap_or(false))
    }

    /// [`Error::HubLost`] while the hub is lost (requests fail with it at
    /// once); None while it answers.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// if let Some(e) = client.hub_lost() {
    ///     eprintln!("{e}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn hub_lost(&self) -> Option<Error> {
        self.inner.table.hub_lost()
    }

    /// How long the hub may be silent (no heartbeat, no message) before
    /// this client counts it as lost; [`HUB_TIMEOUT`] (3 s) unless set.
    /// A hub with a slower heartbeat gets at least three of its beats.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// client.set_hub_timeout(std::time::Duration::from_secs(10))?;
    /// # Ok(()) }
    /// ```
    pub fn set_hub_timeout(&self, limit: Duration) -> Result<()> {
        self.command(Command::HubTimeout(limit))
    }

    /// How long a request may wait for its replies before this client asks
    /// the hub what became of it; [`DEFAULT_RECALL_AFTER`](crate::io::DEFAULT_RECALL_AFTER)
    /// (30 s) unless set. What the hub finished comes from its records (a
    /// reply lost on a connection that dropped); what it runs waits on,
    /// asked about again after twice as long each time; what it never
    /// received fails with [`Error::Hub`] `Lost`, and did not run.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// client.set_recall_after(std::time::Duration::from_secs(5))?;
    /// # Ok(()) }
    /// ```
    pub fn set_recall_after(&self, after: Duration) -> Result<()> {
        self.command(Command::RecallAfter(after))
    }

    /// Fails with [`Error::HubLost`] while the hub is lost.
    fn ensure_hub(&self) -> Result<()> {
        match self.hub_lost() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) fn command(&self, c: Command) -> Result<()> {
        self.inner.commands.send(c).map_err(|_| Error::Closed)?;
        self.inner.wake.wake();
        Ok(())
    }

    /// Sends a query on the registration channel and waits for its reply.
    pub(crate) fn query(&self, content: Content, timeout: Duration) -> Result<Message> {
        self.ensure_hub()?;
        let msg = Message::new(&self.inner.session, content);
        let msg_id = msg.header.msg_id.clone();
        let forget = msg_id.clone();
        let what = msg.header.msg_type.clone();
        let (tx, rx) = mpsc::channel();
        let frames = self.inner.session.encode(&msg).into_frames();
        self.command(Command::Query {
            frames,
            msg_id,
            reply: tx,
        })?;
        rx.recv_timeout(timeout).map_err(|e| match e {
            // No answer in time; a hub found lost answers with HubLost.
            mpsc::RecvTimeoutError::Timeout => {
                // Stop waiting for it, so unanswered queries do not pile up.
                let _ = self.command(Command::ForgetQuery(forget));
                Error::NoHub {
                    url: self
                        .inner
                        .connection
                        .url(self.inner.connection.registration),
                    waited: timeout,
                }
                .with_context(&what)
            }
            mpsc::RecvTimeoutError::Disconnected => Error::Closed,
        })?
    }

    /// Asks the hub for the engine table and stores it.
    pub fn refresh_engines(&self, timeout: Duration) -> Result<Vec<u32>> {
        let reply = self.query(Content::ConnectionRequest(ConnectionRequest {}), timeout)?;
        let Content::ConnectionReply(r) = reply.content else {
            return Err(Error::Hub {
                ename: "UnexpectedReply".into(),
                message: format!("{} to a connection request", reply.header.msg_type),
            });
        };
        let ids: Vec<u32> = r.engines.keys().copied().collect();
        *self.inner.table.engines.lock().expect("table lock") = r.engines;
        self.inner.table.changed.notify_all();
        Ok(ids)
    }

    /// Where each engine runs: engine id → the address it told the hub its
    /// peers reach it at (engines that did not say are left out).
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// for (id, host) in client.engine_hosts(std::time::Duration::from_secs(5))? {
    ///     println!("engine {id} runs on {host}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn engine_hosts(
        &self,
        timeout: Duration,
    ) -> Result<std::collections::BTreeMap<u32, String>> {
        let reply = self.query(Content::ConnectionRequest(ConnectionRequest {}), timeout)?;
        match reply.content {
            Content::ConnectionReply(r) => Ok(r.hosts),
            other => Err(Error::Hub {
                ename: "UnexpectedReply".into(),
                message: format!("{} to a connection request", other.msg_type()),
            }),
        }
    }

    /// The ids of the registered engines, as this client last heard.
    pub fn ids(&self) -> Vec<u32> {
        self.inner
            .table
            .engines
            .lock()
            .expect("table lock")
            .keys()
            .copied()
            .collect()
    }

    /// Waits until at least `n` engines are registered.
    pub fn wait_for_engines(&self, n: usize, timeout: Duration) -> Result<Vec<u32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.ids();
            if ids.len() >= n {
                return Ok(ids);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    waited: timeout,
                    what: format!("{n} engines (have {})", ids.len()),
                });
            }
            {
                // Notifications wake us; a periodic refresh covers any that
                // were published before our subscription took.
                let table = self.inner.table.engines.lock().expect("table lock");
                let _ = self
                    .inner
                    .table
                    .changed
                    .wait_timeout(table, left.min(Duration::from_millis(100)))
                    .expect("table lock");
            }
            if self.ids().len() < n {
                self.refresh_engines(left.max(Duration::from_millis(100)))?;
            }
        }
    }

    /// Receives what happens from now on (streamed output, engines joining
    /// and leaving, the hub lost and back). Only the latest receiver gets
    /// events.
    ///
    /// ```no_run
    /// use zpar_client::ClientEvent;
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// for event in client.events()? {
    ///     if let ClientEvent::HubLost { url, reason } = event {
    ///         eprintln!("lost the hub at {url}: {reason}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> Result<mpsc::Receiver<ClientEvent>> {
        let (tx, rx) = mpsc::channel();
        self.command(Command::Events(tx))?;
        Ok(rx)
    }

    /// Resolves targets to engine ids now.
    pub(crate) fn resolve(&self, targets: &Targets) -> Result<Vec<u32>> {
        self.ensure_hub()?;
        let ids = self.ids();
        let ids = match targets {
            Targets::All => ids,
            Targets::List(list) => {
                for t in list {
                    if !ids.contains(t) {
                        return Err(Error::UnknownEngine(*t));
                    }
                }
                // An engine named twice runs the request once, as the hub
                // does: `[0, 0]` means engine 0, with one result slot.
                let mut seen = std::collections::HashSet::with_capacity(list.len());
                list.iter().copied().filter(|t| seen.insert(*t)).collect()
            }
        };
        if ids.is_empty() {
            return Err(Error::NoEngines);
        }
        Ok(ids)
    }

    /// Signs and sends requests; one [`AsyncResult`] covers all replies.
    pub(crate) fn submit(&self, requests: Vec<Request>, shape: Shape) -> Result<AsyncResult> {
        self.submit_notify(requests, shape, None)
    }

    /// Like [`submit`](Self::submit), keeping `segments` (the shared
    /// memory the requests name) until every reply is in, also when the
    /// [`AsyncResult`] is dropped first: the I/O thread owns them then
    /// (a fire-and-forget push must still land).
    pub(crate) fn submit_shared(
        &self,
        requests: Vec<Request>,
        shape: Shape,
        segments: Vec<zpar_protocol::bulk::Segment>,
    ) -> Result<AsyncResult> {
        self.submit_keeping(requests, shape, None, segments)
    }

    /// Like [`submit`](Self::submit); `notify` is told `tag` on completion.
    pub(crate) fn submit_notify(
        &self,
        requests: Vec<Request>,
        shape: Shape,
        notify: Option<(mpsc::Sender<usize>, usize)>,
    ) -> Result<AsyncResult> {
        self.submit_keeping(requests, shape, notify, Vec::new())
    }

    /// Signs and sends requests whose result keeps `segments` until every
    /// reply is in. The segments are in the result before the I/O thread
    /// hears of it, so it knows to own the result until then.
    fn submit_keeping(
        &self,
        requests: Vec<Request>,
        shape: Shape,
        notify: Option<(mpsc::Sender<usize>, usize)>,
        segments: Vec<zpar_protocol::bulk::Segment>,
    ) -> Result<AsyncResult> {
        self.ensure_hub()?;
        // More frames than a receiver accepts would be dropped on the way
        // (by the hub, or by the engine for a chunk stream): refuse here.
        let limit = self.inner.session.limits.max_buffers();
        if let Some(r) = requests.iter().find(|r| r.buffers.len() > limit) {
            return Err(Error::TooManyBuffers {
                buffers: r.buffers.len(),
                limit,
            });
        }
        let mut slots = Vec::new();
        let mut messages = Vec::with_capacity(requests.len());
        let mut track = Vec::with_capacity(requests.len());
        for r in requests {
            let mut msg = Message::new(&self.inner.session, r.content);
            msg.metadata = r.metadata;
            let id = msg.header.msg_id.clone();
            for engine in &r.replies {
                slots.push((id.clone(), *engine));
            }
            track.push((id, r.replies.len()));
            // A large request to named engines goes as a chunk stream: the
            // hub forwards each chunk as it comes (`stream`), and relays a
            // value for several engines from engine to engine. Load-balanced
            // requests wait in the hub's queue, whole.
            let streamed = stream::worth_streaming_to(&r.buffers, r.replies.len());
            let chunks = if r.channel == Channel::Mux && streamed {
                RequestMetadata::mark_streamed(&mut msg.metadata, r.buffers.len() as u32);
                stream::chunks_of(&self.inner.session, &msg.header, &[], r.buffers)
            } else {
                msg.buffers = r.buffers;
                Vec::new()
            };
            let raw = self.inner.session.encode_owned(msg);
            let limit = self.inner.session.limits.max_json_frame;
            for (frame, bytes) in [
                ("content", raw.content.len()),
                ("metadata", raw.metadata.len()),
            ] {
                if bytes > limit {
                    return Err(Error::TooLarge {
                        frame,
                        bytes,
                        limit,
                    });
                }
            }
            messages.push((r.channel, raw.into_frames()));
            for chunk in chunks {
                messages.push((
                    r.channel,
                    self.inner.session.encode_owned(chunk).into_frames(),
                ));
            }
        }
        let state = ResultState::new(slots);
        if let Some((tx, tag)) = notify {
            state.notify_when_done(tx, tag);
        }
        state.keep_segments(segments);
        self.command(Command::Send {
            messages,
            track,
            state: state.clone(),
        })?;
        Ok(AsyncResult::new(state, shape))
    }

    /// A control request to each target.
    fn control(&self, targets: &Targets, content: Content) -> Result<AsyncResult> {
        let ids = self.resolve(targets)?;
        let meta = RequestMetadata {
            targets: Some(ids.clone()),
            ..Default::default()
        }
        .to_map();
        self.submit(
            vec![Request {
                channel: Channel::Control,
                content,
                metadata: meta,
                buffers: vec![],
                replies: ids.into_iter().map(Some).collect(),
            }],
            Shape::PerReply,
        )
    }

    /// Per-engine queue lengths and completed counts.
    pub fn queue_status(&self) -> Result<QueueReply> {
        self.ask_queue_status(QueueRequest::default())
    }

    /// [`queue_status`](Self::queue_status) with vitals: each engine's
    /// process RSS, serving-thread CPU share and the age of its last
    /// heartbeat (in [`EngineQueue::vitals`](zpar_protocol::EngineQueue)),
    /// and the hub's own memory and CPU share (in `hub`). Engines report
    /// theirs every few heartbeats, so a new engine's may be absent at
    /// first.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// let status = client.queue_status_with_vitals()?;
    /// for (id, q) in &status.engines {
    ///     let rss = q.vitals.and_then(|v| v.rss).unwrap_or(0);
    ///     println!("engine {id}: {} MiB", rss >> 20);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn queue_status_with_vitals(&self) -> Result<QueueReply> {
        self.ask_queue_status(QueueRequest {
            vitals: true,
            ..QueueRequest::default()
        })
    }

    fn ask_queue_status(&self, request: QueueRequest) -> Result<QueueReply> {
        let reply = self.query(Content::QueueRequest(request), CONNECT_TIMEOUT)?;
        match reply.content {
            Content::QueueReply(q) => Ok(q),
            other => Err(Error::Hub {
                ename: "UnexpectedReply".into(),
                message: format!("{} to a queue request", other.msg_type()),
            }),
        }
    }

    /// Aborts queued requests on the targets: the given msg ids, or all
    /// queued work when `msg_ids` is None. Each aborted request is
    /// answered [`Error::Aborted`]; running code goes on (see
    /// [`abort_running`](Self::abort_running)).
    pub fn abort(
        &self,
        targets: impl Into<Targets>,
        msg_ids: Option<Vec<String>>,
    ) -> Result<AsyncResult> {
        self.control(
            &targets.into(),
            Content::AbortRequest(AbortRequest {
                msg_ids,
                running: false,
            }),
        )
    }

    /// Like [`abort`](Self::abort), and also stops the request running on
    /// each target if it is one of `msg_ids` (any, when None): it is
    /// interrupted and answered [`Error::Aborted`], like the queued ones;
    /// the engines serve on. A script in a long native call stops when
    /// the call returns.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// let stuck = client.view(0).execute("loop {}")?;
    /// client.abort_running(0u32, Some(stuck.msg_ids().to_vec()))?.get()?;
    /// assert!(matches!(stuck.get(), Err(zpar_client::Error::Aborted { .. })));
    /// # Ok(()) }
    /// ```
    pub fn abort_running(
        &self,
        targets: impl Into<Targets>,
        msg_ids: Option<Vec<String>>,
    ) -> Result<AsyncResult> {
        self.control(
            &targets.into(),
            Content::AbortRequest(AbortRequest {
                msg_ids,
                running: true,
            }),
        )
    }

    /// Stops the script running on each target; the engines stay up.
    pub fn interrupt(&self, targets: impl Into<Targets>) -> Result<AsyncResult> {
        self.control(
            &targets.into(),
            Content::InterruptRequest(InterruptRequest {}),
        )
    }

    /// Empties the namespace of each target.
    pub fn clear(&self, targets: impl Into<Targets>) -> Result<AsyncResult> {
        self.control(&targets.into(), Content::ClearRequest(ClearRequest {}))
    }

    /// Stops engines; with `hub`, the hub stops every engine and then
    /// itself.
    pub fn shutdown(&self, targets: impl Into<Targets>, hub: bool) -> Result<AsyncResult> {
        let content = Content::ShutdownRequest(ShutdownRequest {
            restart: false,
            hub,
        });
        if hub {
            let meta = RequestMetadata {
                hub: true,
                ..Default::default()
            }
            .to_map();
            return self.submit(
                vec![Request {
                    channel: Channel::Control,
                    content,
                    metadata: meta,
                    buffers: vec![],
                    replies: vec![None],
                }],
                Shape::PerReply,
            );
        }
        self.control(&targets.into(), content)
    }
}

impl Error {
    fn with_context(self, what: &str) -> Error {
        match self {
            Error::NoHub { url, waited } => Error::NoHub {
                url: format!("{url} (no answer to {what})"),
                waited,
            },
            other => other,
        }
    }
}

/// Whether `host` is a loopback address (or `localhost`).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
