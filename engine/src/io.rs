//! The engine's sockets: the one receive path, replies, iopub output, and
//! the kernel's sockets while the engine serves as a Jupyter kernel.
//!
//! [`Io`] decides nothing: it takes frames from a [`Source`] (requests a
//! chunk stream pushed aside come first, from the stash), sends the
//! replies and iopub messages the core ([`crate::core`]) asks for, and
//! binds or unbinds the kernel. The script engine's `print` callback
//! reaches it too (`stream`), so output goes out as it happens and is
//! recorded for the reply.

use crate::core::{Reply, Source};
use crate::inbound::{decode_request, Inbound};
use crate::kernel::{Kernel, KernelError, KernelHome};
use crate::relay::Relay;
use serde_json::{Map, Value as Json};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use zpar_protocol::error::Chain;
use zpar_protocol::stream;
use zpar_protocol::{
    recv_frames, send_frames, Channel, Content, ErrorClass, Header, LinkTag, Message,
    ReplyMetadata, Session, Stream, TaskReply,
};

/// Why a reply cannot be sent as it is: a JSON frame over `limit`, which
/// the hub drops (None if every frame fits).
fn oversized(raw: &zpar_protocol::RawMessage, limit: usize) -> Option<String> {
    let (frame, bytes) = [
        ("content", raw.content.len()),
        ("metadata", raw.metadata.len()),
    ]
    .into_iter()
    .find(|(_, bytes)| *bytes > limit)?;
    Some(format!(
        "the reply's {frame} is {bytes} bytes of JSON, more than the {limit} one message \
         frame may hold, so the engine sent this error instead: values of 1 MiB or more \
         travel as buffers by themselves, so this is an error message or many values at \
         once: ask for fewer values at once"
    ))
}

/// Cuts `text` to about `keep` bytes, its first and last halves, with a
/// note of how much was left out between them.
fn shorten_output(text: &mut String, keep: usize) {
    if text.len() <= keep {
        return;
    }
    let mut head = keep / 2;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - keep / 2;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    *text = format!(
        "{}\n[zpar] ... {} bytes of output left out: more than one message may carry ...\n{}",
        &text[..head],
        tail - head,
        &text[tail..]
    );
}

/// Whether a message's metadata frame names relay hops (a relayed chunk,
/// `stream::RELAY_TO`): read without parsing.
fn names_relay_hops(frames: &[zmq::Message]) -> bool {
    let Some(at) = frames
        .iter()
        .position(|f| &f[..] == zpar_protocol::DELIMITER)
    else {
        return false;
    };
    frames.get(at + 4).is_some_and(|metadata| {
        metadata
            .windows(stream::RELAY_TO.len())
            .any(|w| w == stream::RELAY_TO.as_bytes())
    })
}

/// Sends `frames` on the engine's link to the hub, after the tag frame
/// that says what they are.
pub(crate) fn send_on_link(
    link: &zmq::Socket,
    tag: LinkTag,
    frames: Vec<zmq::Message>,
    flags: i32,
) -> zmq::Result<()> {
    link.send(tag.frame(), zmq::SNDMORE | flags)?;
    send_frames(link, frames, flags)
}

/// The place of a hub channel's queue in [`Io`]'s `arrived`.
fn queue_of(channel: Channel) -> usize {
    match channel {
        Channel::Control => 0,
        Channel::Mux => 1,
        Channel::Task => 2,
    }
}

/// How old what is known of subscriptions may be when a `status` message
/// asks whether anyone wants it ([`Io::subscribed_to`]).
const SUBSCRIPTIONS_FRESH: Duration = Duration::from_millis(1);

/// Who wants an output message ([`Io::subscribed_to`]).
struct Wanted {
    by_hub: bool,
    by_kernel: bool,
}

/// The engine's sockets, and the output of the request running.
pub(crate) struct Io {
    pub(crate) session: Session,
    pub(crate) engine_id: u32,
    /// The engine's uuid, its identity on the hub's sockets; ipyparallel
    /// reads it as reply metadata `engine`.
    pub(crate) uuid: String,
    /// The DEALER to the hub's link ROUTER: registration and every
    /// channel, each message after its [`LinkTag`]. None for a standalone
    /// kernel.
    link: Option<zmq::Socket>,
    /// Messages read off the link and not yet taken, one queue per
    /// channel (control, mux, task), so control is served before the work
    /// that came ahead of it.
    arrived: [VecDeque<Vec<zmq::Message>>; 3],
    /// Registration messages read off the link, not yet taken.
    registrations: VecDeque<Vec<zmq::Message>>,
    /// The iopub topic prefixes the hub's clients subscribe to, as the
    /// hub last sent them on the link: output goes on the link only when
    /// one matches, so a message nobody reads is never built.
    hub_topics: Vec<Vec<u8>>,
    /// The kernel's iopub, bound while the engine serves as one (a cluster
    /// engine's output to the hub goes on the link).
    iopub: zmq::Socket,
    /// A cluster engine's kernel iopub is an XPUB: the topic prefixes its
    /// front ends subscribe to. None: a standalone kernel's PUB, send
    /// everything.
    subscribed: Option<Vec<Vec<u8>>>,
    /// When the subscriptions were last read (see [`Io::subscribed_to`]).
    subscriptions_read: Instant,
    /// The kernel's sockets, while the engine serves as a Jupyter kernel.
    kernel: Option<Kernel>,
    /// Where to listen when asked to serve as a kernel (cluster engines).
    kernel_home: Option<KernelHome>,
    /// The request running, as parent of its output.
    pub(crate) parent: Option<Header>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Messages that arrived on mux or task while a chunk stream was being
    /// received, served next, in order.
    stash: VecDeque<(Source, Vec<zmq::Message>)>,
    /// The relay thread, for a cluster engine (`crate::relay`).
    relay: Option<Relay>,
}

impl Io {
    /// A cluster engine's sockets: to the hub, and a kernel's home should
    /// it be asked to serve as one.
    pub(crate) fn cluster(
        session: Session,
        engine_id: u32,
        link: zmq::Socket,
        iopub: zmq::Socket,
        kernel_home: KernelHome,
        relay: Relay,
    ) -> Io {
        let uuid = session.session_id.clone();
        let mut io = Io::with(
            session,
            engine_id,
            uuid,
            Some(link),
            iopub,
            None,
            Some(kernel_home),
        );
        io.relay = Some(relay);
        io
    }

    /// A standalone kernel's sockets: no hub, the kernel bound already.
    pub(crate) fn standalone(session: Session, iopub: zmq::Socket, kernel: Kernel) -> Io {
        let uuid = session.session_id.clone();
        Io::with(session, 0, uuid, None, iopub, Some(kernel), None)
    }

    fn with(
        session: Session,
        engine_id: u32,
        uuid: String,
        link: Option<zmq::Socket>,
        iopub: zmq::Socket,
        kernel: Option<Kernel>,
        kernel_home: Option<KernelHome>,
    ) -> Io {
        Io {
            session,
            engine_id,
            uuid,
            link,
            arrived: Default::default(),
            registrations: VecDeque::new(),
            hub_topics: Vec::new(),
            subscribed: (iopub.get_socket_type().ok() == Some(zmq::XPUB)).then(Vec::new),
            subscriptions_read: Instant::now(),
            iopub,
            kernel,
            kernel_home,
            parent: None,
            stdout: String::new(),
            stderr: String::new(),
            stash: VecDeque::new(),
            relay: None,
        }
    }

    /// The relay thread's side, for a cluster engine.
    pub(crate) fn relay(&mut self) -> Option<&mut Relay> {
        self.relay.as_mut()
    }

    /// The socket of a source, while it is open: the hub's channels all
    /// arrive on the link.
    pub(crate) fn socket(&self, source: Source) -> Option<&zmq::Socket> {
        match source {
            Source::Control | Source::Mux | Source::Task => self.link.as_ref(),
            Source::KernelShell => self.kernel.as_ref().map(|k| &k.shell),
            Source::KernelControl => self.kernel.as_ref().map(|k| &k.control),
        }
    }

    /// Reads everything waiting on the link, sorting it by its tag into
    /// each channel's queue, registration answers aside, and taking the
    /// hub's subscriptions. Returns whether anything came.
    pub(crate) fn drain_link(&mut self) -> bool {
        let mut any = false;
        loop {
            let Some(link) = &self.link else {
                return false;
            };
            let frames = match recv_frames(link, zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return any,
                Err(e) => {
                    warn!(error = %Chain(&e), "receive from the hub failed");
                    return any;
                }
            };
            any = true;
            self.sort_link_message(frames);
        }
    }

    /// Puts a message read off the link (tag first) where it belongs.
    /// Also for one that came before the engine's registration answer:
    /// served as if it had come after it.
    pub(crate) fn sort_link_message(&mut self, mut frames: Vec<zmq::Message>) {
        let tag = frames.first().and_then(|t| LinkTag::parse(t));
        if tag.is_some() {
            frames.remove(0);
        }
        match tag {
            Some(LinkTag::Channel(channel)) => self.arrived[queue_of(channel)].push_back(frames),
            Some(LinkTag::Registration) => self.registrations.push_back(frames),
            Some(LinkTag::Subscriptions) => {
                self.hub_topics = frames.iter().map(|f| f.to_vec()).collect();
            }
            Some(LinkTag::Iopub) | None => {
                warn!("dropped a message from the hub with no tag an engine serves")
            }
        }
    }

    /// The next registration message from the hub, if one came.
    pub(crate) fn take_registration(&mut self) -> Option<Vec<zmq::Message>> {
        if self.registrations.is_empty() {
            self.drain_link();
        }
        self.registrations.pop_front()
    }

    /// Sends a registration message (a re-registration, a goodbye) on the
    /// link without waiting.
    pub(crate) fn send_registration(&self, frames: Vec<zmq::Message>) {
        if let Some(link) = &self.link {
            if let Err(e) = send_on_link(link, LinkTag::Registration, frames, zmq::DONTWAIT) {
                debug!(error = %Chain(&e), "registration message not sent");
            }
        }
    }

    /// The kernel's stdin socket, while there is a kernel.
    pub(crate) fn kernel_stdin(&self) -> Option<&zmq::Socket> {
        self.kernel.as_ref().map(|k| &k.stdin)
    }

    /// Whether the engine has a hub (not a standalone kernel).
    pub(crate) fn has_hub(&self) -> bool {
        self.link.is_some()
    }

    /// The next message from `source` without waiting: a stashed one
    /// first, then the socket's (for the hub's channels, the channel's
    /// queue of what came on the link). None when there is none.
    pub(crate) fn receive(&mut self, source: Source) -> Option<Vec<zmq::Message>> {
        if let Some(i) = self.stash.iter().position(|(s, _)| *s == source) {
            return self.stash.remove(i).map(|(_, frames)| frames);
        }
        if source.hub_channel().is_some() {
            return self.take_arrived(source);
        }
        match recv_frames(self.socket(source)?, zmq::DONTWAIT) {
            Ok(frames) => Some(frames),
            Err(zmq::Error::EAGAIN) => None,
            Err(e) => {
                warn!(%source, error = %Chain(&e), "receive failed");
                None
            }
        }
    }

    /// The next message from `source`, verified and decoded.
    ///
    /// A relayed chunk taken here, outside the stream being received (its
    /// stream was aborted or refused here), still goes on to the engines
    /// after this one in its chain: their streams must not fail for this
    /// engine's.
    pub(crate) fn take(&mut self, source: Source) -> Option<Inbound> {
        let frames = self.receive(source)?;
        if source != Source::Mux || self.relay.is_none() || !names_relay_hops(&frames) {
            return Some(decode_request(&mut self.session, frames));
        }
        let copy: Vec<zmq::Message> = frames.iter().map(|f| zmq::Message::from(&f[..])).collect();
        let inbound = decode_request(&mut self.session, frames);
        if let (Inbound::Request(_), Some(relay)) = (&inbound, &self.relay) {
            relay.pass_on(copy);
        }
        Some(inbound)
    }

    /// The next message of a hub channel read off the link (reading what
    /// waits there first if none is), leaving the stash alone; None for
    /// the kernel's sources, or when nothing came.
    pub(crate) fn take_arrived(&mut self, source: Source) -> Option<Vec<zmq::Message>> {
        let queue = queue_of(source.hub_channel()?);
        if self.arrived[queue].is_empty() {
            self.drain_link();
        }
        self.arrived[queue].pop_front()
    }

    /// Whether a hub channel's message waits, read off the link already
    /// or stashed.
    pub(crate) fn has_arrived(&self, source: Source) -> bool {
        source
            .hub_channel()
            .is_some_and(|c| !self.arrived[queue_of(c)].is_empty())
            || self.has_stashed(source)
    }

    /// Sets a message aside to be served after the stream being received.
    pub(crate) fn stash(&mut self, source: Source, frames: Vec<zmq::Message>) {
        self.stash.push_back((source, frames));
    }

    /// Whether a message waits in the stash for `source`.
    pub(crate) fn has_stashed(&self, source: Source) -> bool {
        self.stash.iter().any(|(s, _)| *s == source)
    }

    /// Takes the first stashed message of `source` that `wanted` picks,
    /// leaving the others in their order.
    pub(crate) fn take_stashed(
        &mut self,
        source: Source,
        wanted: impl Fn(&[zmq::Message]) -> bool,
    ) -> Option<Vec<zmq::Message>> {
        let i = self
            .stash
            .iter()
            .position(|(s, frames)| *s == source && wanted(frames))?;
        self.stash.remove(i).map(|(_, frames)| frames)
    }

    /// Publishes output, with `parent` as the parent header: to the hub on
    /// the link, and on the kernel's iopub while there is a kernel, each
    /// only if someone there subscribed to it.
    pub(crate) fn publish(&mut self, parent: Option<Header>, content: Content) {
        let topic = zpar_protocol::contract::iopub_topic(
            parent.as_ref().map(|p| p.session.as_str()),
            self.engine_id,
            content.msg_type(),
        );
        let status = matches!(content, Content::Status(_));
        let Wanted { by_hub, by_kernel } = self.subscribed_to(&topic, status);
        if !by_hub && !by_kernel {
            return; // nobody subscribed: not even built
        }
        let msg_type = content.msg_type().to_string();
        let mut msg = Message::new(&self.session, content);
        msg.parent_header = parent;
        msg.metadata = self.basic_metadata();
        let mut raw = self.session.encode(&msg);
        let limit = self.session.limits.max_json_frame;
        if raw.content.len() > limit {
            // The hub's iopub would drop the connection that carried it:
            // a notice goes instead, a stream message of its own (the
            // reply still says how the request ended).
            warn!(
                msg_type,
                bytes = raw.content.len(),
                "iopub message too large; a notice sent instead"
            );
            let notice = Stream {
                name: "stderr".into(),
                text: format!(
                    "[zpar] a {msg_type} output of {} bytes was not sent: more than the {limit} \
                     one message frame may hold\n",
                    raw.content.len()
                ),
            };
            return self.publish(msg.parent_header, Content::Stream(notice));
        }
        raw.identities = vec![zmq::Message::from(topic.as_bytes())];
        let frames = raw.into_frames();
        match (by_hub, by_kernel, &self.link) {
            (true, _, Some(link)) => {
                if by_kernel {
                    let copy = frames.iter().map(|f| zmq::Message::from(&f[..])).collect();
                    if let Err(e) = send_frames(&self.iopub, copy, zmq::DONTWAIT) {
                        debug!(error = %Chain(&e), "kernel iopub message dropped");
                    }
                }
                if let Err(e) = send_on_link(link, LinkTag::Iopub, frames, zmq::DONTWAIT) {
                    debug!(error = %Chain(&e), "iopub message dropped");
                }
            }
            _ => {
                if let Err(e) = send_frames(&self.iopub, frames, zmq::DONTWAIT) {
                    debug!(error = %Chain(&e), "kernel iopub message dropped");
                }
            }
        }
    }

    /// Who wants a message of `topic`: the hub (one of its clients'
    /// subscriptions matches), the kernel's front ends (one of theirs
    /// does; always, for a standalone kernel's PUB).
    ///
    /// Reads what changed since last asked: the link's messages (the hub
    /// sends the whole set of its clients' topics when it changes), and
    /// the kernel's XPUB, which hands each prefix's first subscription and
    /// last unsubscription to the engine as a message (`1` or `0`, then
    /// the prefix). For a `status` message (`busy`/`idle`, two a request,
    /// which zpar's own clients never subscribe to) they are read at most
    /// every [`SUBSCRIPTIONS_FRESH`]: a look at an empty socket costs a
    /// system call, a third of what an engine spent on a trivial request.
    fn subscribed_to(&mut self, topic: &str, status: bool) -> Wanted {
        let matches =
            |subscribed: &[Vec<u8>]| subscribed.iter().any(|s| topic.as_bytes().starts_with(s));
        if !status || self.subscriptions_read.elapsed() >= SUBSCRIPTIONS_FRESH {
            self.subscriptions_read = Instant::now();
            self.drain_link();
            if let (Some(subscribed), Some(_)) = (&mut self.subscribed, &self.kernel) {
                while let Ok(change) = self.iopub.recv_bytes(zmq::DONTWAIT) {
                    match change.split_first() {
                        Some((1, prefix)) => subscribed.push(prefix.to_vec()),
                        Some((0, prefix)) => {
                            if let Some(i) = subscribed.iter().position(|s| s == prefix) {
                                subscribed.swap_remove(i);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Wanted {
            by_hub: self.link.is_some() && matches(&self.hub_topics),
            by_kernel: self.kernel.is_some() && self.subscribed.as_deref().is_none_or(matches),
        }
    }

    /// Output of the running script (`print` is stdout, `debug` stderr):
    /// published at once, and kept for the reply.
    pub(crate) fn stream(&mut self, name: &str, text: &str) {
        let mut line = text.to_string();
        line.push('\n');
        if name == "stdout" {
            self.stdout.push_str(&line);
        } else {
            self.stderr.push_str(&line);
        }
        let parent = self.parent.clone();
        self.publish(
            parent,
            Content::Stream(Stream {
                name: name.to_string(),
                text: line,
            }),
        );
    }

    /// Sends a reply where its request came from, under a header of its
    /// own (the reply itself is borrowed: the core may keep it to send
    /// again). A large result of a direct request goes as a chunk stream,
    /// chunks first, so the hub passes each on while the next is sent
    /// ([`zpar_protocol::stream`]).
    pub(crate) fn reply(&mut self, reply: &Reply, buffers: Vec<zmq::Message>) {
        let Reply {
            to,
            content,
            metadata,
        } = reply;
        let Some(sock) = self.socket(to.source) else {
            // The kernel stopped (a shutdown_request) while its request ran.
            return debug!(source = %to.source, "reply dropped: its socket is closed");
        };
        // The hub's channels share the link: each message goes after its
        // channel's tag.
        let tag = to.source.hub_channel().map(LinkTag::Channel);
        let send = |frames: Vec<zmq::Message>| match tag {
            Some(tag) => send_on_link(sock, tag, frames, 0),
            None => send_frames(sock, frames, 0),
        };
        let streamed =
            to.source.hub_channel() == Some(Channel::Mux) && stream::worth_streaming(&buffers);
        let started = metadata.contains_key("started");
        // A run's reply says when it started; one made at once starts now.
        let metadata: Cow<Map<String, Json>> = if started && !streamed {
            Cow::Borrowed(metadata)
        } else {
            let mut m = metadata.clone();
            if !started {
                m.insert("started".into(), Json::String(zpar_protocol::iso8601_now()));
            }
            if streamed {
                ReplyMetadata::mark_streamed(&mut m, buffers.len() as u32);
            }
            Cow::Owned(m)
        };
        let header = self.session.header(content.msg_type());
        let mut raw = self.session.encode_parts(
            &to.identities,
            &header,
            Some(&to.header),
            &metadata,
            content,
        );
        let limit = self.session.limits.max_json_frame;
        let metadata = if raw.metadata.len() > limit {
            // Printed output past what a message carries: its ends are
            // kept, with a note; the request's outcome stands.
            let mut m = metadata.into_owned();
            for stream in ["stdout", "stderr"] {
                if let Some(Json::String(text)) = m.get_mut(stream) {
                    shorten_output(text, limit / 4);
                }
            }
            raw = self
                .session
                .encode_parts(&to.identities, &header, Some(&to.header), &m, content);
            Cow::Owned(m)
        } else {
            metadata
        };
        if let Some(refusal) = oversized(&raw, limit) {
            // The hub would drop it and the client wait for good: the
            // client gets this error instead, at once.
            warn!(msg_id = %to.header.msg_id, "{refusal}");
            let mut metadata = metadata.into_owned();
            metadata.retain(|k, _| k != "stdout" && k != "stderr" && k != "stream_frames");
            metadata.insert("status".into(), Json::String("error".into()));
            let error = Content::task_reply_of(
                content.msg_type(),
                TaskReply::error(ErrorClass::TooLarge.as_str(), refusal),
            );
            let raw = self.session.encode_parts(
                &to.identities,
                &header,
                Some(&to.header),
                &metadata,
                &error,
            );
            if let Err(e) = send(raw.into_frames()) {
                warn!(error = %Chain(&e), "reply not sent");
            }
            return;
        }
        raw.buffers = if streamed {
            for chunk in stream::chunks_of(&self.session, &to.header, &to.identities, buffers) {
                if let Err(e) = send(self.session.encode_owned(chunk).into_frames()) {
                    warn!(error = %Chain(&e), "result chunk not sent");
                }
            }
            Vec::new()
        } else {
            buffers
        };
        if let Err(e) = send(raw.into_frames()) {
            warn!(error = %Chain(&e), "reply not sent");
        }
    }

    /// Metadata naming this engine, by id (zpar) and uuid (ipyparallel).
    fn basic_metadata(&self) -> Map<String, Json> {
        ReplyMetadata::naming(self.engine_id, &self.uuid).to_map()
    }

    /// Starts serving as a Jupyter kernel (if not already): the binding a
    /// `bind_kernel_reply` carries.
    pub(crate) fn bind_kernel(&mut self) -> Result<zpar_protocol::Value, KernelError> {
        if let Some(k) = &self.kernel {
            return Ok(k.binding(self.engine_id));
        }
        let Some(home) = &self.kernel_home else {
            return Err(KernelError::NoHome);
        };
        let kernel = Kernel::bind(&home.ctx, &self.iopub, home.plan(self.engine_id))?;
        let binding = kernel.binding(self.engine_id);
        self.kernel = Some(kernel);
        Ok(binding)
    }

    /// Stops serving as a kernel: closes its sockets, removes its file.
    pub(crate) fn unbind_kernel(&mut self) {
        if let Some(k) = self.kernel.take() {
            k.unbind_iopub(&self.iopub);
            // The next kernel's front ends subscribe anew.
            while self.iopub.recv_bytes(zmq::DONTWAIT).is_ok() {}
            if let Some(subscribed) = &mut self.subscribed {
                subscribed.clear();
            }
        }
    }
}
