//! Relayed chunk streams: a large value the hub sends to several engines
//! travels once, along a chain of engines, instead of once per engine.
//!
//! The hub picks the chain (`hub/src/core/streams.rs`): an idle engine
//! first, then the rest of its host, then every other host's engines
//! together. It sends the request to every engine, with metadata `relay`
//! naming the chain, and the chunks to the first engine only, each with
//! [`stream::RELAY_TO`]: the relay addresses still to reach. An engine
//! passes every chunk on to the first address with the rest, signed again
//! ([`stream::relayed`]), so each host's link carries the value once in
//! and once out, and the hub's link once.
//!
//! Passing on must not wait for the engine's request loop, which may be
//! running a long script: a thread of its own ([`Relay`]) owns a PULL
//! socket that other engines push chunks to, and one PUSH per next engine.
//! It passes each chunk on as it comes, then hands it to the request loop
//! through an inproc socket, where `stream_in` takes it when the request
//! is served. The first engine's chunks come from the hub on mux: the
//! request loop hands a copy to the thread, to pass on.
//!
//! With CURVE, the relay socket is a CURVE server with the connection
//! file's pair, as the hub's sockets are, and the next engine's PUSH a
//! client of it: chunks are encrypted between hosts too. Chunks are signed
//! as every message is and checked before they are passed on.

use crate::error::EngineError;
use std::collections::{HashMap, VecDeque};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use zpar_protocol::curve::{secure_client, secure_server};
use zpar_protocol::error::Chain;
use zpar_protocol::frames::cap_inbound_frames;
use zpar_protocol::{recv_frames, send_frames, stream, CurveKeys, Limits, RawMessage, Session};

/// How many chunks may wait to be sent to one next engine (1 MiB each)
/// before further ones are dropped, and the stream fails there.
const QUEUE_CHUNKS: i32 = 1024;

/// A socket to a next engine unused this long is closed.
const IDLE_LINK: Duration = Duration::from_secs(300);

/// Chunks of another stream that arrived while one was received wait
/// this long for their request to be served, then are dropped (a stream
/// that failed here, a request that never came). Long: a request may wait
/// behind a long run.
pub(crate) const STASH_LIFE: Duration = Duration::from_secs(30 * 60);

/// What ends the relay thread when sent to it alone.
const STOP: &[u8] = b"stop";

/// The engine's side of the relay thread (see the module doc).
pub(crate) struct Relay {
    /// The address other engines send relayed chunks to.
    pub(crate) url: String,
    /// Chunks relayed to this engine, read by the request loop.
    arrived: zmq::Socket,
    /// Chunks for the thread to pass on (the chain's first engine's).
    pass_on: zmq::Socket,
    /// Chunks of other streams that came while one was received.
    stash: VecDeque<(Instant, Vec<zmq::Message>)>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Binds the relay socket on `bind_ip` (advertised as `advertise`) and
    /// starts the thread. `key` and `scheme` sign passed-on chunks.
    pub(crate) fn start(
        ctx: &zmq::Context,
        bind_ip: &str,
        advertise: &str,
        curve: Option<&CurveKeys>,
        key: &str,
        scheme: &str,
    ) -> Result<Relay, EngineError> {
        let session = Session::new(key.as_bytes(), scheme, "engine")?;
        let inbound = ctx.socket(zmq::PULL)?;
        secure_server(&inbound, curve)?;
        inbound.set_linger(0)?;
        inbound.set_rcvhwm(0)?;
        cap_inbound_frames(&inbound, &Limits::default())?;
        inbound
            .bind(&format!("tcp://{bind_ip}:*"))
            .map_err(|source| EngineError::Bind {
                what: "the relay socket",
                ip: bind_ip.to_string(),
                source,
            })?;
        let port = inbound
            .get_last_endpoint()?
            .ok()
            .and_then(|e| e.rsplit(':').next().map(str::to_string))
            .unwrap_or_default();
        let url = format!("tcp://{advertise}:{port}");

        let pipe = format!("inproc://zpar-relay-{}", zpar_protocol::new_id());
        let to_main = ctx.socket(zmq::PUSH)?;
        to_main.set_sndhwm(0)?;
        to_main.set_linger(0)?;
        to_main.bind(&format!("{pipe}-arrived"))?;
        let arrived = ctx.socket(zmq::PULL)?;
        arrived.set_rcvhwm(0)?;
        arrived.set_linger(0)?;
        arrived.connect(&format!("{pipe}-arrived"))?;
        let from_main = ctx.socket(zmq::PULL)?;
        from_main.set_rcvhwm(0)?;
        from_main.set_linger(0)?;
        from_main.bind(&format!("{pipe}-pass"))?;
        let pass_on = ctx.socket(zmq::PUSH)?;
        pass_on.set_sndhwm(0)?;
        pass_on.set_linger(0)?;
        pass_on.connect(&format!("{pipe}-pass"))?;

        let mut thread = RelayThread {
            ctx: ctx.clone(),
            session,
            curve: curve.cloned(),
            inbound,
            from_main,
            to_main,
            links: HashMap::new(),
            broken: HashMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name("zpar-relay".into())
            .spawn(move || thread.run())
            .map_err(|source| EngineError::Spawn {
                what: "the relay thread",
                source,
            })?;
        debug!(%url, "relay socket bound");
        Ok(Relay {
            url,
            arrived,
            pass_on,
            stash: VecDeque::new(),
            thread: Some(handle),
        })
    }

    /// The socket relayed chunks arrive on.
    pub(crate) fn arrived(&self) -> &zmq::Socket {
        &self.arrived
    }

    /// Hands the thread a copy of a chunk from the hub, to pass on to the
    /// addresses it names.
    pub(crate) fn pass_on(&self, frames: Vec<zmq::Message>) {
        if let Err(e) = send_frames(&self.pass_on, frames, zmq::DONTWAIT) {
            warn!(error = %e, "could not hand a chunk to the relay thread");
        }
    }

    /// Between requests: takes the relayed chunks no stream has read (of a
    /// stream aborted or refused here, or whose request waits) into the
    /// stash, and drops those older than [`STASH_LIFE`], so they do not
    /// hold memory for as long as the engine lives.
    pub(crate) fn tidy(&mut self) {
        while let Ok(frames) = recv_frames(&self.arrived, zmq::DONTWAIT) {
            self.stash.push_back((Instant::now(), frames));
        }
        self.stash.retain(|(at, _)| at.elapsed() < STASH_LIFE);
    }

    /// Sets aside a chunk of another stream.
    pub(crate) fn stash(&mut self, frames: Vec<zmq::Message>) {
        self.stash.push_back((Instant::now(), frames));
    }

    /// Takes the first stashed chunk `wanted` picks; drops chunks stashed
    /// longer than [`STASH_LIFE`] (of a stream that failed here, or whose
    /// request never came).
    pub(crate) fn take_stashed(
        &mut self,
        wanted: impl Fn(&[zmq::Message]) -> bool,
    ) -> Option<Vec<zmq::Message>> {
        let before = self.stash.len();
        self.stash.retain(|(at, _)| at.elapsed() < STASH_LIFE);
        if self.stash.len() < before {
            debug!(
                dropped = before - self.stash.len(),
                "dropped relayed chunks whose request never came"
            );
        }
        let i = self.stash.iter().position(|(_, f)| wanted(f))?;
        self.stash.remove(i).map(|(_, frames)| frames)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.pass_on.send(STOP, zmq::DONTWAIT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread's sockets.
struct RelayThread {
    ctx: zmq::Context,
    session: Session,
    curve: Option<CurveKeys>,
    /// Chunks from the engine before this one.
    inbound: zmq::Socket,
    /// Chunks the request loop hands over to pass on, or [`STOP`].
    from_main: zmq::Socket,
    /// Chunks for the request loop.
    to_main: zmq::Socket,
    /// A PUSH to each next engine, by relay address, and its last use.
    links: HashMap<String, (zmq::Socket, Instant)>,
    /// Streams (next engine's address, request msg id) a chunk of which
    /// could not be sent: their later chunks are not sent either, so the
    /// next engine sees the stream stop (and says so) rather than a gap.
    broken: HashMap<(String, String), Instant>,
}

impl RelayThread {
    fn run(&mut self) {
        loop {
            let mut items = [
                self.inbound.as_poll_item(zmq::POLLIN),
                self.from_main.as_poll_item(zmq::POLLIN),
            ];
            // Woken by what comes; the links it keeps are closed after
            // minutes unused, so with none there is nothing to wait for.
            let timeout = if self.links.is_empty() && self.broken.is_empty() {
                -1
            } else {
                10_000
            };
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return warn!(error = %e, "the relay thread's poll failed; it stops"),
            }
            let (from_peer, from_main) = (items[0].is_readable(), items[1].is_readable());
            while let Some(frames) = from_main
                .then(|| recv_frames(&self.from_main, zmq::DONTWAIT).ok())
                .flatten()
            {
                if frames.len() == 1 && &frames[0][..] == STOP {
                    return;
                }
                if let Ok(raw) = RawMessage::from_frames(frames, &self.session.limits) {
                    self.pass(raw);
                }
            }
            while let Some(frames) = from_peer
                .then(|| recv_frames(&self.inbound, zmq::DONTWAIT).ok())
                .flatten()
            {
                self.take_from_peer(frames);
            }
            self.links.retain(|_, (_, used)| used.elapsed() < IDLE_LINK);
            self.broken.retain(|_, at| at.elapsed() < IDLE_LINK);
        }
    }

    /// A chunk from the engine before this one: checked, passed on, then
    /// handed to the request loop as it came.
    fn take_from_peer(&mut self, frames: Vec<zmq::Message>) {
        let raw = match RawMessage::from_frames(frames, &self.session.limits) {
            Ok(raw) => raw,
            Err(e) => return warn!(error = %Chain(&e), "dropped a malformed relayed message"),
        };
        if let Err(e) = self.session.check_signature(&raw) {
            return warn!(error = %Chain(&e), "dropped a relayed message");
        }
        if !stream::relay_to(&raw).is_empty() {
            self.pass(raw.duplicate());
        }
        if let Err(e) = send_frames(&self.to_main, raw.into_frames(), zmq::DONTWAIT) {
            warn!(error = %e, "could not hand a relayed chunk to the request loop");
        }
    }

    /// Sends `chunk` to the first address it names, with the rest.
    fn pass(&mut self, chunk: RawMessage) {
        let hops = stream::relay_to(&chunk);
        let Some((next, rest)) = hops.split_first() else {
            return;
        };
        let stream_id = chunk
            .parent_header()
            .ok()
            .flatten()
            .map(|p| p.msg_id)
            .unwrap_or_default();
        let key = (next.clone(), stream_id);
        if self.broken.contains_key(&key) {
            return;
        }
        let chunk = stream::relayed(&self.session, chunk, rest);
        let sent = self
            .link(next)
            .and_then(|link| send_frames(link, chunk.into_frames(), zmq::DONTWAIT));
        if let Err(e) = sent {
            warn!(error = %e, to = %next, msg_id = %key.1, queued = QUEUE_CHUNKS,
                "the next engine of a relay takes no more chunks (gone, or its queue is full); \
                 the rest of this stream is not sent to it");
            self.broken.insert(key, Instant::now());
        }
    }

    /// The PUSH to `url`, made on first use.
    fn link(&mut self, url: &str) -> zmq::Result<&zmq::Socket> {
        if !self.links.contains_key(url) {
            let s = self.ctx.socket(zmq::PUSH)?;
            secure_client(&s, self.curve.as_ref()).map_err(|_| zmq::Error::EINVAL)?;
            s.set_sndhwm(QUEUE_CHUNKS)?;
            s.set_linger(0)?;
            zpar_protocol::keepalive::set_zmtp_heartbeats(&s)?;
            s.connect(url)?;
            self.links.insert(url.to_string(), (s, Instant::now()));
        }
        let (socket, used) = self.links.get_mut(url).expect("just made");
        *used = Instant::now();
        Ok(socket)
    }
}
