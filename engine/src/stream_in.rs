//! Receiving the chunk stream a large direct request announced
//! (`stream_frames: K` in its metadata): the K `stream_chunk` messages that
//! follow it on the same socket, in order, into an [`Assembly`].
//!
//! Other messages that arrive meanwhile are not served yet: they wait in
//! [`Io`]'s stash and are taken, in order, before the socket's next. A chunk
//! is checked for its signature before it is recognised as one of this
//! stream's (so the replay guard sees every other message once, when it is
//! served); the stream is refused — out of order, duplicated, oversized, or
//! nothing for [`stream::CHUNK_GAP`] — with an error that says which.
//!
//! An engine after the first of a relay chain (`crate::relay`) takes the
//! chunks from its relay thread instead, and a stalled relay is refused
//! naming the engines before it; the chain's first engine hands each chunk
//! to its relay thread to pass on.

use crate::core::Source;
use crate::io::Io;
use std::time::{Duration, Instant};
use tracing::warn;
use zpar_protocol::error::Chain;
use zpar_protocol::stream::{self, Assembly, StreamError};
use zpar_protocol::value::CHUNK_BYTES;
use zpar_protocol::{
    Content, Header, Message, MessageType, RawMessage, RequestMetadata, DELIMITER,
};

/// Where a stream's chunks come from.
enum Feed {
    /// From the hub, on the request's own socket; `pass_on`: this engine
    /// is the first of a relay chain and hands each chunk to its relay
    /// thread too.
    Hub { source: Source, pass_on: bool },
    /// From the engine before this one in a relay chain, through the
    /// relay thread; `through` are the chain's engines before this one.
    Relay { through: Vec<u32> },
}

impl Feed {
    /// The feed of a request: a relay chain's engines after the first
    /// take their chunks from the relay thread.
    fn of(io: &mut Io, source: Source, head: &Message) -> Feed {
        let chain = RequestMetadata::from_map(&head.metadata)
            .ok()
            .and_then(|m| m.relay)
            .unwrap_or_default();
        let has_relay = io.relay().is_some();
        match chain.iter().position(|id| *id == io.engine_id) {
            Some(0) => Feed::Hub {
                source,
                pass_on: has_relay,
            },
            Some(at) if has_relay => Feed::Relay {
                through: chain[..at].to_vec(),
            },
            _ => Feed::Hub {
                source,
                pass_on: false,
            },
        }
    }

    /// The socket chunks arrive on (the hub's link, for the hub's
    /// channels).
    fn socket<'a>(&self, io: &'a mut Io) -> Option<&'a zmq::Socket> {
        match self {
            Feed::Hub { source, .. } => io.socket(*source),
            Feed::Relay { .. } => io.relay().map(|r| r.arrived()),
        }
    }

    /// The next message of the request's own channel read off the hub's
    /// link (which carries every channel, sorted as read); None when none
    /// came, or for a feed that reads its socket itself.
    fn take_arrived(&self, io: &mut Io) -> Option<Vec<zmq::Message>> {
        match self {
            Feed::Hub { source, .. } => io.take_arrived(*source),
            Feed::Relay { .. } => None,
        }
    }

    /// Whether the feed's socket is the hub's link, read through
    /// [`Feed::take_arrived`] rather than directly.
    fn is_link(&self) -> bool {
        matches!(self, Feed::Hub { source, .. } if source.hub_channel().is_some())
    }

    /// A chunk of `msg_id` set aside while another stream came in.
    fn take_stashed(&self, io: &mut Io, msg_id: &str) -> Option<Vec<zmq::Message>> {
        match self {
            Feed::Hub { source, .. } => io.take_stashed(*source, |f| is_chunk_of(f, msg_id)),
            Feed::Relay { .. } => io.relay()?.take_stashed(|f| is_chunk_of(f, msg_id)),
        }
    }

    /// Sets aside a message that is not this stream's.
    fn stash(&self, io: &mut Io, frames: Vec<zmq::Message>) {
        match self {
            Feed::Hub { source, .. } => io.stash(*source, frames),
            Feed::Relay { .. } => {
                if let Some(relay) = io.relay() {
                    relay.stash(frames);
                }
            }
        }
    }

    /// The error for a stream that stopped coming.
    fn stalled(&self, assembly: &Assembly, waited: Duration) -> StreamError {
        match self {
            Feed::Relay { through } => StreamError::RelayStalled {
                msg_id: assembly.msg_id().to_string(),
                got: assembly.received(),
                of: assembly.of(),
                through: through.clone(),
                from: through.last().copied().unwrap_or_default(),
                waited,
            },
            Feed::Hub { .. } => assembly.truncated(waited),
        }
    }
}

/// Receives the `of` chunks that follow `head` on `source` (or, for an
/// engine after the first of a relay chain, through the relay thread).
pub(crate) fn receive(
    io: &mut Io,
    source: Source,
    head: &Message,
    of: u32,
) -> Result<Vec<zmq::Message>, StreamError> {
    let msg_id = &head.header.msg_id;
    let max_frames = io.session.limits.max_frames;
    if of as usize > max_frames {
        return Err(StreamError::BadChunk {
            msg_id: msg_id.clone(),
            index: 0,
            what: format!("announces {of} chunks, more than the {max_frames} allowed"),
        });
    }
    let feed = Feed::of(io, source, head);
    let mut assembly = Assembly::new(msg_id, of, max_frames * CHUNK_BYTES);
    let mut last = Instant::now();
    while !assembly.is_complete() {
        // Chunks of this stream that came while another stream was being
        // received wait in the stash: they go first.
        let frames = match feed
            .take_stashed(io, msg_id)
            .or_else(|| feed.take_arrived(io))
        {
            Some(frames) => frames,
            None if feed.is_link() => {
                // Other channels' messages keep the link busy: the gap is
                // judged by this stream's chunks alone.
                if last.elapsed() >= stream::CHUNK_GAP {
                    return Err(feed.stalled(&assembly, stream::CHUNK_GAP));
                }
                let Some(link) = feed.socket(io) else {
                    return Err(feed.stalled(&assembly, last.elapsed()));
                };
                wait_readable(link, last);
                continue;
            }
            None => {
                let Some(socket) = feed.socket(io) else {
                    return Err(feed.stalled(&assembly, last.elapsed()));
                };
                if !wait_readable(socket, last) {
                    if last.elapsed() >= stream::CHUNK_GAP {
                        return Err(feed.stalled(&assembly, stream::CHUNK_GAP));
                    }
                    continue;
                }
                match zpar_protocol::recv_frames(socket, zmq::DONTWAIT) {
                    Ok(frames) => frames,
                    Err(_) => continue,
                }
            }
        };
        let raw = match RawMessage::from_frames(frames, &io.session.limits) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %Chain(&e), "dropped a malformed message");
                continue;
            }
        };
        if let Err(e) = io.session.check_signature(&raw) {
            warn!(error = %Chain(&e), "dropped a message");
            continue;
        }
        if !raw_is_chunk_of(&raw, msg_id) {
            // Anything else waits its turn (and is verified then).
            feed.stash(io, raw.into_frames());
            continue;
        }
        // The chain's first engine passes each chunk on once it has
        // checked it (signature, replay guard): the copy goes to the relay
        // thread.
        let relayed =
            matches!(feed, Feed::Hub { pass_on: true, .. }) && !stream::relay_to(&raw).is_empty();
        let copy = relayed.then(|| raw.duplicate().into_frames());
        let chunk = match io.session.decode(raw) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %Chain(&e), "dropped a stream chunk");
                continue;
            }
        };
        if let (Some(copy), Some(relay)) = (copy, io.relay()) {
            relay.pass_on(copy);
        }
        let Content::StreamChunk(c) = &chunk.content else {
            continue;
        };
        last = Instant::now();
        assembly.accept(c, chunk.buffers)?;
    }
    Ok(assembly.into_buffers())
}

/// Waits for `socket` to be readable until the chunk gap since `last` is
/// over; false if it is not.
fn wait_readable(socket: &zmq::Socket, last: Instant) -> bool {
    let mut items = [socket.as_poll_item(zmq::POLLIN)];
    let left = stream::CHUNK_GAP.saturating_sub(last.elapsed());
    match zmq::poll(&mut items, left.as_millis() as i64) {
        Ok(_) | Err(zmq::Error::EINTR) => items[0].is_readable(),
        Err(e) => {
            warn!(error = %Chain(&e), "poll failed");
            false
        }
    }
}

/// Whether stashed frames (checked once already) are a chunk of the
/// stream `msg_id`: read from their header frames, without a copy.
fn is_chunk_of(frames: &[zmq::Message], msg_id: &str) -> bool {
    let Some(at) = frames.iter().position(|f| &f[..] == DELIMITER) else {
        return false;
    };
    let (Some(header), Some(parent)) = (frames.get(at + 2), frames.get(at + 3)) else {
        return false;
    };
    serde_json::from_slice::<Header>(header)
        .is_ok_and(|h| h.message_type() == Some(MessageType::StreamChunk))
        && serde_json::from_slice::<Header>(parent).is_ok_and(|p| p.msg_id == msg_id)
}

fn raw_is_chunk_of(raw: &RawMessage, msg_id: &str) -> bool {
    raw.header()
        .is_ok_and(|h| h.message_type() == Some(MessageType::StreamChunk))
        && raw
            .parent_header()
            .is_ok_and(|p| p.is_some_and(|p| p.msg_id == msg_id))
}
