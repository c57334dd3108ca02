//! Chunk streams: a large request or reply as a train of messages, so the
//! hub forwards piece k while piece k+1 arrives.
//!
//! A ZeroMQ multipart message moves as one: the hub cannot send the first
//! frame of a 128 MiB push on before the last has arrived, so client → hub
//! and hub → engine never overlap. A message whose buffers reach
//! [`STREAM_MIN_BYTES`] is therefore sent as
//!
//! - **a request**: the request itself, buffers removed and metadata
//!   `stream_frames: K`, *then* K `stream_chunk` messages, each with the
//!   request as parent header, `{"index": i, "of": K}` and buffer frame i;
//!   the hub records the request, fans it out, and forwards each chunk to
//!   the same engines as it arrives;
//! - **a reply**: K `stream_chunk` messages first, *then* the reply with
//!   metadata `stream_frames: K`; the hub forwards the chunks at once and
//!   records the reply as usual, so a client never takes a reply whose
//!   value is incomplete, and an engine that dies mid-stream leaves only
//!   `EngineDied`.
//!
//! Every chunk is a signed message of its own (the four JSON frames, as
//! always; buffers are not signed, as in Jupyter). The receiver puts the
//! pieces back with an [`Assembly`], which refuses a stream whose chunks
//! come out of order, twice, too large, or that says another length.
//!
//! ```
//! use zpar_protocol::stream::{Assembly, StreamError};
//! use zpar_protocol::StreamChunk;
//! let mut a = Assembly::new("m1", 2, 1 << 20);
//! assert!(!a.accept(&StreamChunk { index: 0, of: 2 }, vec![zmq::Message::from(&b"ab"[..])]).unwrap());
//! let e = a.accept(&StreamChunk { index: 0, of: 2 }, vec![zmq::Message::from(&b"ab"[..])]);
//! assert!(matches!(e, Err(StreamError::OutOfOrder { expected: 1, got: 0, .. })));
//! ```

use crate::content::StreamChunk;
use crate::frames::RawMessage;
use crate::header::Header;
use crate::message::Message;
use crate::session::Session;
use crate::value::CHUNK_BYTES;
use crate::Content;

/// Messages whose buffers reach this many bytes travel as chunk streams.
/// Below it one message is as fast (measured with `zpar bench cluster`:
/// see ARCHITECTURE.md, "Large values").
pub const STREAM_MIN_BYTES: usize = 8 << 20;

/// A request to several engines is streamed from this size on (below
/// [`STREAM_MIN_BYTES`]), so that the hub can relay it from engine to
/// engine instead of sending every engine a copy ([`RELAY_TO`]).
pub const RELAY_MIN_BYTES: usize = 1 << 20;

/// A relayed chunk's metadata key: the relay addresses (`tcp://host:port`)
/// still to reach after the engine that receives it, in order. The hub
/// sets it on the chunks it sends the first engine of a relay chain; each
/// engine passes the chunk on to the first address with the rest, signed
/// again ([`relayed`]).
pub const RELAY_TO: &str = "relay_to";

/// How long a receiver waits for the next chunk before it refuses the
/// stream as truncated.
pub const CHUNK_GAP: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a chunk stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A chunk came before its turn, or again.
    #[error("the chunk stream of {msg_id} was refused: chunk {got} came where chunk {expected} was expected (out of order or duplicated); send the value again")]
    OutOfOrder {
        /// The stream's request.
        msg_id: String,
        /// The index that was due.
        expected: u32,
        /// The index that came.
        got: u32,
    },
    /// A chunk says the stream has another length.
    #[error("the chunk stream of {msg_id} was refused: a chunk says it has {got} chunks, the request said {expected}")]
    WrongLength {
        /// The stream's request.
        msg_id: String,
        /// The request's count.
        expected: u32,
        /// The chunk's.
        got: u32,
    },
    /// A chunk without exactly one buffer frame, or one too large.
    #[error("the chunk stream of {msg_id} was refused: chunk {index} {what}")]
    BadChunk {
        /// The stream's request.
        msg_id: String,
        /// The chunk.
        index: u32,
        /// What was wrong.
        what: String,
    },
    /// No relayed chunk came in time from the engine before this one in
    /// the relay chain.
    #[error("the chunk stream of {msg_id} was refused as truncated: {got} of {of} chunks arrived, relayed through engines {through:?}, then none for {waited:?} (engine {from}, which passes them on to this engine, or one before it died or lost its link); send the value again")]
    RelayStalled {
        /// The stream's request.
        msg_id: String,
        /// Chunks received.
        got: u32,
        /// Chunks announced.
        of: u32,
        /// The engines before this one in the chain, first to last.
        through: Vec<u32>,
        /// The engine right before this one.
        from: u32,
        /// How long the receiver waited.
        waited: std::time::Duration,
    },
    /// No chunk came in time.
    #[error("the chunk stream of {msg_id} was refused as truncated: {got} of {of} chunks arrived, then none for {waited:?}; send the value again")]
    Truncated {
        /// The stream's request.
        msg_id: String,
        /// Chunks received.
        got: u32,
        /// Chunks announced.
        of: u32,
        /// How long the receiver waited.
        waited: std::time::Duration,
    },
}

/// Puts one stream's pieces back together.
#[derive(Debug)]
pub struct Assembly {
    msg_id: String,
    of: u32,
    next: u32,
    bytes: usize,
    max_bytes: usize,
    buffers: Vec<zmq::Message>,
}

impl Assembly {
    /// A stream of `of` chunks for the request `msg_id`, at most
    /// `max_bytes` in all.
    pub fn new(msg_id: &str, of: u32, max_bytes: usize) -> Assembly {
        Assembly {
            msg_id: msg_id.to_string(),
            of,
            next: 0,
            bytes: 0,
            max_bytes,
            buffers: Vec::with_capacity(of.min(1 << 16) as usize),
        }
    }

    /// The request this stream belongs to.
    pub fn msg_id(&self) -> &str {
        &self.msg_id
    }

    /// Chunks received so far.
    pub fn received(&self) -> u32 {
        self.next
    }

    /// How many chunks the stream has.
    pub fn of(&self) -> u32 {
        self.of
    }

    /// Whether every chunk is in.
    pub fn is_complete(&self) -> bool {
        self.next == self.of
    }

    /// Takes one chunk. Returns true once the last is in (then
    /// [`into_buffers`](Self::into_buffers) has them all, in order).
    pub fn accept(
        &mut self,
        chunk: &StreamChunk,
        buffers: Vec<zmq::Message>,
    ) -> Result<bool, StreamError> {
        let bad = |what: String| StreamError::BadChunk {
            msg_id: self.msg_id.clone(),
            index: chunk.index,
            what,
        };
        if chunk.of != self.of {
            return Err(StreamError::WrongLength {
                msg_id: self.msg_id.clone(),
                expected: self.of,
                got: chunk.of,
            });
        }
        if chunk.index != self.next {
            return Err(StreamError::OutOfOrder {
                msg_id: self.msg_id.clone(),
                expected: self.next,
                got: chunk.index,
            });
        }
        let [frame]: [zmq::Message; 1] = buffers
            .try_into()
            .map_err(|b: Vec<_>| bad(format!("has {} buffer frames, not one", b.len())))?;
        if frame.len() > CHUNK_BYTES {
            return Err(bad(format!(
                "holds {} bytes, more than a chunk's {CHUNK_BYTES}",
                frame.len()
            )));
        }
        self.bytes += frame.len();
        if self.bytes > self.max_bytes {
            return Err(bad(format!(
                "brings the stream to {} bytes, more than the {} allowed",
                self.bytes, self.max_bytes
            )));
        }
        self.buffers.push(frame);
        self.next += 1;
        Ok(self.is_complete())
    }

    /// The buffers received so far, in order (all of them once
    /// [`is_complete`](Self::is_complete)).
    pub fn into_buffers(self) -> Vec<zmq::Message> {
        self.buffers
    }

    /// The error for a stream that stopped: what arrived, of how many.
    pub fn truncated(&self, waited: std::time::Duration) -> StreamError {
        StreamError::Truncated {
            msg_id: self.msg_id.clone(),
            got: self.next,
            of: self.of,
            waited,
        }
    }
}

/// Whether a message's buffers are large enough to stream.
pub fn worth_streaming(buffers: &[zmq::Message]) -> bool {
    buffers.iter().map(|b| b.len()).sum::<usize>() >= STREAM_MIN_BYTES
}

/// Whether a request to `engines` engines is worth streaming: from
/// [`STREAM_MIN_BYTES`] for one engine, from [`RELAY_MIN_BYTES`] for
/// several (so the hub may relay it).
///
/// ```
/// use zpar_protocol::stream::worth_streaming_to;
/// let two_mib = vec![zmq::Message::from(vec![0u8; 2 << 20])];
/// assert!(!worth_streaming_to(&two_mib, 1));
/// assert!(worth_streaming_to(&two_mib, 4));
/// ```
pub fn worth_streaming_to(buffers: &[zmq::Message], engines: usize) -> bool {
    let bytes = buffers.iter().map(|b| b.len()).sum::<usize>();
    bytes >= STREAM_MIN_BYTES || (engines > 1 && bytes >= RELAY_MIN_BYTES)
}

/// The relay addresses a chunk still has to reach after its receiver
/// ([`RELAY_TO`]); empty for a chunk that is not relayed, or whose
/// metadata does not say.
pub fn relay_to(raw: &RawMessage) -> Vec<String> {
    if !raw
        .metadata
        .windows(RELAY_TO.len())
        .any(|w| w == RELAY_TO.as_bytes())
    {
        return Vec::new();
    }
    raw.metadata()
        .ok()
        .and_then(|mut m| m.remove(RELAY_TO))
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// `chunk` with [`RELAY_TO`] set to `hops` (removed when empty), signed
/// again by `session`. The buffers are not signed, so this costs a few
/// hundred bytes of JSON and one HMAC, whatever the chunk's size.
pub fn relayed(session: &Session, mut chunk: RawMessage, hops: &[String]) -> RawMessage {
    let mut metadata = chunk.metadata().unwrap_or_default();
    if hops.is_empty() {
        metadata.remove(RELAY_TO);
    } else {
        metadata.insert(RELAY_TO.into(), serde_json::json!(hops));
    }
    if let Ok(json) = serde_json::to_vec(&metadata) {
        chunk.metadata = json.into();
    }
    chunk.signature = session.sign(chunk.signed_parts()).into_bytes().into();
    chunk
}

/// The chunk messages carrying `buffers`, one frame each, with `parent`
/// as parent header and `identities` for routing. Unsigned: the caller's
/// session signs them as it encodes.
pub fn chunks_of(
    session: &crate::Session,
    parent: &Header,
    identities: &[Vec<u8>],
    buffers: Vec<zmq::Message>,
) -> Vec<Message> {
    let of = buffers.len() as u32;
    buffers
        .into_iter()
        .enumerate()
        .map(|(i, frame)| Message {
            identities: identities.to_vec(),
            header: session.header("stream_chunk"),
            parent_header: Some(parent.clone()),
            metadata: Default::default(),
            content: Content::StreamChunk(StreamChunk {
                index: i as u32,
                of,
            }),
            buffers: vec![frame],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Vec<zmq::Message> {
        vec![zmq::Message::from(&vec![7u8; n][..])]
    }

    fn chunk(index: u32, of: u32) -> StreamChunk {
        StreamChunk { index, of }
    }

    #[test]
    fn a_stream_in_order_assembles_its_buffers_in_order() {
        let mut a = Assembly::new("m", 3, 100);
        assert!(!a.accept(&chunk(0, 3), frame(1)).unwrap());
        assert!(!a.accept(&chunk(1, 3), frame(2)).unwrap());
        assert!(a.accept(&chunk(2, 3), frame(3)).unwrap());
        assert!(a.is_complete());
        let got = a.into_buffers();
        assert_eq!(got.iter().map(|f| f.len()).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn out_of_order_duplicated_oversized_and_mislabelled_chunks_are_refused() {
        let mut a = Assembly::new("m", 3, 10);
        let e = a.accept(&chunk(1, 3), frame(1)).unwrap_err();
        assert!(matches!(
            e,
            StreamError::OutOfOrder {
                expected: 0,
                got: 1,
                ..
            }
        ));
        a.accept(&chunk(0, 3), frame(1)).unwrap();
        let e = a.accept(&chunk(0, 3), frame(1)).unwrap_err();
        assert!(e.to_string().contains("out of order or duplicated"), "{e}");
        let e = a.accept(&chunk(1, 4), frame(1)).unwrap_err();
        assert!(matches!(
            e,
            StreamError::WrongLength {
                expected: 3,
                got: 4,
                ..
            }
        ));
        let e = a.accept(&chunk(1, 3), frame(20)).unwrap_err();
        assert!(e.to_string().contains("more than the 10 allowed"), "{e}");
        let mut b = Assembly::new("m", 1, usize::MAX);
        let e = b.accept(&chunk(0, 1), frame(CHUNK_BYTES + 1)).unwrap_err();
        assert!(e.to_string().contains("more than a chunk's"), "{e}");
        let e = b.accept(&chunk(0, 1), vec![]).unwrap_err();
        assert!(e.to_string().contains("0 buffer frames"), "{e}");
        let t = b.truncated(CHUNK_GAP).to_string();
        assert!(t.contains("0 of 1 chunks arrived"), "{t}");
    }
}
