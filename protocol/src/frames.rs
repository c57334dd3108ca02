//! The lowest layer: zmq frames ⇄ [`RawMessage`].
//!
//! A raw message is the frame sequence split at the `<IDS|MSG>` delimiter,
//! with the four JSON frames kept as bytes. Nothing here parses JSON or checks
//! signatures, so a router can look at a raw message, verify it and forward it
//! without decoding its content or copying its buffers.

use crate::error::{ProtocolError, Result};
#[cfg(doc)]
use crate::value::CHUNK_BYTES;
use zmq::Message as Frame;

/// The frame that separates routing identities from the message proper.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Size limits a receiver enforces before looking inside a message, and
/// (through [`cap_inbound_frames`]) its sockets before reading a frame.
///
/// zpar's own senders keep under them: values put their arrays, blobs and
/// large text into buffer frames of at most [`CHUNK_BYTES`], and a
/// request or reply whose JSON frame would pass `max_json_frame` is
/// refused or answered with `TooLarge` before it is sent. So the largest
/// frame zpar sends is a JSON frame of `max_json_frame`, and every bound
/// socket refuses anything larger ([`Limits::max_wire_frame`]).
///
/// ```
/// let limits = zpar_protocol::Limits { max_json_frame: 1 << 20, ..Default::default() };
/// assert!(limits.max_frames > 0);
/// assert!(limits.max_wire_frame() > 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header, parent header, metadata or content frame, in bytes.
    pub max_json_frame: usize,
    /// Largest buffer frame, in bytes.
    pub max_buffer_frame: usize,
    /// Most frames in one message, identities and buffers included.
    pub max_frames: usize,
}

impl Limits {
    /// The most buffers a sender may put in one message that its receivers
    /// accept under these limits: [`Limits::max_frames`] less the delimiter,
    /// the signature, the four JSON frames and up to
    /// [`Limits::ROUTING_FRAMES`] identities the hub and the routers on the
    /// way add. A message with more is dropped by its receiver, so senders
    /// refuse it first with an error that says so.
    pub fn max_buffers(&self) -> usize {
        self.max_frames.saturating_sub(6 + Self::ROUTING_FRAMES)
    }

    /// Identity frames a message may gain on its way (client, engine,
    /// routers in between), counted out of [`Limits::max_buffers`].
    pub const ROUTING_FRAMES: usize = 4;
}

impl Limits {
    /// The largest frame a socket takes from the wire: the largest JSON or
    /// buffer frame allowed, and a margin for a signature or a routing
    /// identity. A peer that sends a larger frame loses its connection
    /// before the frame is read into memory (`ZMQ_MAXMSGSIZE`).
    pub fn max_wire_frame(&self) -> usize {
        self.max_json_frame.max(self.max_buffer_frame) + WIRE_FRAME_MARGIN
    }
}

/// What a frame on the wire may have beyond [`Limits::max_wire_frame`]'s
/// largest JSON or buffer frame.
const WIRE_FRAME_MARGIN: usize = 64 << 10;

/// Makes `socket` drop any connection that sends a frame larger than
/// [`Limits::max_wire_frame`], before the frame is read into memory. Set
/// on every socket zpar binds (the hub's, an engine's communicator and
/// kernel sockets): anyone who can reach a port could otherwise make its
/// owner hold a frame of any size, signed or not.
///
/// ```
/// let ctx = zmq::Context::new();
/// let router = ctx.socket(zmq::ROUTER).unwrap();
/// zpar_protocol::frames::cap_inbound_frames(&router, &zpar_protocol::Limits::default()).unwrap();
/// assert_eq!(router.get_maxmsgsize().unwrap(), zpar_protocol::Limits::default().max_wire_frame() as i64);
/// ```
pub fn cap_inbound_frames(socket: &zmq::Socket, limits: &Limits) -> zmq::Result<()> {
    socket.set_maxmsgsize(limits.max_wire_frame() as i64)
}

impl Default for Limits {
    /// JSON frames and buffer frames of up to 64 MiB (zpar's own buffers
    /// are 1 MiB chunks), 65,536 frames a message.
    fn default() -> Self {
        Limits {
            max_json_frame: 64 << 20,
            max_buffer_frame: 64 << 20,
            max_frames: 1 << 16,
        }
    }
}

/// One message as frames: identities, signature, the four JSON frames still
/// as bytes, and buffers.
#[derive(Debug)]
pub struct RawMessage {
    /// Routing identities (ROUTER prefixes), outermost first.
    pub identities: Vec<Frame>,
    /// The hex HMAC signature (empty when signing is off).
    pub signature: Frame,
    /// The header JSON.
    pub header: Frame,
    /// The parent header JSON (`{}` when there is no parent).
    pub parent_header: Frame,
    /// The metadata JSON.
    pub metadata: Frame,
    /// The content JSON.
    pub content: Frame,
    /// Binary buffers, neither signed nor parsed.
    pub buffers: Vec<Frame>,
}

impl RawMessage {
    /// Splits a received frame sequence, enforcing `limits`.
    ///
    /// ```
    /// use zpar_protocol::{RawMessage, Limits};
    /// let frames: Vec<zmq::Message> = ["id", "<IDS|MSG>", "", "{}", "{}", "{}", "{}"]
    ///     .iter().map(|s| zmq::Message::from(*s)).collect();
    /// let raw = RawMessage::from_frames(frames, &Limits::default()).unwrap();
    /// assert_eq!(raw.identities.len(), 1);
    /// ```
    pub fn from_frames(frames: Vec<Frame>, limits: &Limits) -> Result<RawMessage> {
        let raw = RawMessage::split(frames, limits)?;
        raw.check_sizes(limits)?;
        Ok(raw)
    }

    /// Splits a received frame sequence, enforcing `limits` on the count
    /// of frames but not on their sizes: for a receiver that answers a
    /// message too large ([`RawMessage::check_sizes`]) instead of
    /// dropping it. [`RawMessage::from_frames`] checks both.
    pub fn split(frames: Vec<Frame>, limits: &Limits) -> Result<RawMessage> {
        if frames.len() > limits.max_frames {
            return Err(ProtocolError::TooManyFrames {
                found: frames.len(),
                limit: limits.max_frames,
            });
        }
        let total = frames.len();
        let Some(delim) = frames.iter().position(|f| &f[..] == DELIMITER) else {
            return Err(ProtocolError::NoDelimiter { frames: total });
        };
        let after = total - delim - 1;
        if after < 5 {
            return Err(ProtocolError::TooFewFrames { found: after });
        }
        let mut it = frames.into_iter();
        let identities: Vec<Frame> = it.by_ref().take(delim).collect();
        it.next(); // the delimiter
        let mut next = || it.next().expect("counted above");
        let signature = next();
        let header = next();
        let parent_header = next();
        let metadata = next();
        let content = next();
        let buffers: Vec<Frame> = it.collect();
        check_size("signature", &signature, 1024)?;
        Ok(RawMessage {
            identities,
            signature,
            header,
            parent_header,
            metadata,
            content,
            buffers,
        })
    }

    /// Checks every frame against `limits`: the first one too large is
    /// the error.
    pub fn check_sizes(&self, limits: &Limits) -> Result<()> {
        for (name, f) in [
            ("header", &self.header),
            ("parent_header", &self.parent_header),
            ("metadata", &self.metadata),
            ("content", &self.content),
        ] {
            check_size(name, f, limits.max_json_frame)?;
        }
        for (i, b) in self.buffers.iter().enumerate() {
            if b.len() > limits.max_buffer_frame {
                return Err(ProtocolError::Oversized {
                    frame: format!("buffer {i}"),
                    size: b.len(),
                    limit: limits.max_buffer_frame,
                });
            }
        }
        Ok(())
    }

    /// The frames to send, in wire order.
    pub fn into_frames(self) -> Vec<Frame> {
        let mut out = Vec::with_capacity(self.identities.len() + 6 + self.buffers.len());
        out.extend(self.identities);
        out.push(Frame::from(DELIMITER));
        out.push(self.signature);
        out.push(self.header);
        out.push(self.parent_header);
        out.push(self.metadata);
        out.push(self.content);
        out.extend(self.buffers);
        out
    }

    /// The four signed frames, in signing order.
    pub fn signed_parts(&self) -> [&[u8]; 4] {
        [
            &self.header,
            &self.parent_header,
            &self.metadata,
            &self.content,
        ]
    }

    /// A copy of this message with fresh frames (buffers are copied too).
    /// Used when one message goes to several peers.
    pub fn duplicate(&self) -> RawMessage {
        let copy = |f: &Frame| Frame::from(&f[..]);
        RawMessage {
            identities: self.identities.iter().map(copy).collect(),
            signature: copy(&self.signature),
            header: copy(&self.header),
            parent_header: copy(&self.parent_header),
            metadata: copy(&self.metadata),
            content: copy(&self.content),
            buffers: self.buffers.iter().map(copy).collect(),
        }
    }
}

fn check_size(name: &str, f: &Frame, limit: usize) -> Result<()> {
    if f.len() > limit {
        return Err(ProtocolError::Oversized {
            frame: name.to_string(),
            size: f.len(),
            limit,
        });
    }
    Ok(())
}

/// Receives every frame of one multipart message.
pub fn recv_frames(socket: &zmq::Socket, flags: i32) -> zmq::Result<Vec<Frame>> {
    let mut frames = Vec::with_capacity(8);
    loop {
        let f = socket.recv_msg(flags)?;
        let more = f.get_more();
        frames.push(f);
        if !more {
            return Ok(frames);
        }
    }
}

/// Sends frames as one multipart message, without copying them.
pub fn send_frames(socket: &zmq::Socket, frames: Vec<Frame>, flags: i32) -> zmq::Result<()> {
    let n = frames.len();
    for (i, f) in frames.into_iter().enumerate() {
        let more = if i + 1 < n { zmq::SNDMORE } else { 0 };
        socket.send(f, flags | more)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&str]) -> Vec<Frame> {
        parts.iter().map(|p| Frame::from(*p)).collect()
    }

    #[test]
    fn splits_identities_and_buffers() {
        let raw = RawMessage::from_frames(
            frames(&["a", "b", "<IDS|MSG>", "sig", "h", "p", "m", "c", "b1", "b2"]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(raw.identities.len(), 2);
        assert_eq!(&raw.signature[..], b"sig");
        assert_eq!(raw.buffers.len(), 2);
        let back = raw.into_frames();
        assert_eq!(back.len(), 10);
        assert_eq!(&back[2][..], DELIMITER);
    }

    #[test]
    fn rejects_missing_delimiter_and_short_messages() {
        let e = RawMessage::from_frames(frames(&["a", "b"]), &Limits::default()).unwrap_err();
        assert!(matches!(e, ProtocolError::NoDelimiter { frames: 2 }));
        let e = RawMessage::from_frames(frames(&["<IDS|MSG>", "s", "h"]), &Limits::default())
            .unwrap_err();
        assert!(matches!(e, ProtocolError::TooFewFrames { found: 2 }));
    }

    #[test]
    fn enforces_limits() {
        let limits = Limits {
            max_json_frame: 4,
            max_buffer_frame: 2,
            max_frames: 9,
        };
        let big =
            RawMessage::from_frames(frames(&["<IDS|MSG>", "", "hhhhh", "p", "m", "c"]), &limits);
        assert!(matches!(big, Err(ProtocolError::Oversized { .. })));
        let buf = RawMessage::from_frames(
            frames(&["<IDS|MSG>", "", "h", "p", "m", "c", "bbb"]),
            &limits,
        );
        assert!(buf.unwrap_err().to_string().contains("buffer 0"));
        let many = RawMessage::from_frames(frames(&["x"; 10]), &limits);
        assert!(matches!(many, Err(ProtocolError::TooManyFrames { .. })));
    }
}
