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

use crate::core::Source;
use crate::io::Io;
use std::time::Instant;
use tracing::warn;
use zpar_protocol::error::Chain;
use zpar_protocol::stream::{self, Assembly, StreamError};
use zpar_protocol::value::CHUNK_BYTES;
use zpar_protocol::{Content, Header, Message, MessageType, RawMessage, DELIMITER};

/// Receives the `of` chunks that follow `head` on `source`.
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
    let mut assembly = Assembly::new(msg_id, of, max_frames * CHUNK_BYTES);
    let mut last = Instant::now();
    while !assembly.is_complete() {
        // Chunks of this stream that came while another stream was being
        // received wait in the stash: they go first.
        let frames = match io.take_stashed(source, |f| is_chunk_of(f, msg_id)) {
            Some(frames) => frames,
            None => {
                if !wait_readable(io, source, last)? {
                    if last.elapsed() >= stream::CHUNK_GAP {
                        return Err(assembly.truncated(stream::CHUNK_GAP));
                    }
                    continue;
                }
                let Some(socket) = io.socket(source) else {
                    return Err(assembly.truncated(last.elapsed()));
                };
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
            io.stash(source, raw.into_frames());
            continue;
        }
        let chunk = match io.session.decode(raw) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %Chain(&e), "dropped a stream chunk");
                continue;
            }
        };
        let Content::StreamChunk(c) = &chunk.content else {
            continue;
        };
        last = Instant::now();
        assembly.accept(c, chunk.buffers)?;
    }
    Ok(assembly.into_buffers())
}

/// Waits for `source` to be readable until the chunk gap since `last` is
/// over; false if it is not.
fn wait_readable(io: &Io, source: Source, last: Instant) -> Result<bool, StreamError> {
    let Some(socket) = io.socket(source) else {
        return Ok(false);
    };
    let mut items = [socket.as_poll_item(zmq::POLLIN)];
    let left = stream::CHUNK_GAP.saturating_sub(last.elapsed());
    Ok(match zmq::poll(&mut items, left.as_millis() as i64) {
        Ok(_) | Err(zmq::Error::EINTR) => items[0].is_readable(),
        Err(e) => {
            warn!(error = %Chain(&e), "poll failed");
            false
        }
    })
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
