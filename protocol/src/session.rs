//! Signing and verifying messages: the [`Session`].
//!
//! The signature is the lowercase hex HMAC-SHA256 of the four JSON frames
//! (header, parent header, metadata, content), exactly as Jupyter signs them;
//! buffers are not signed. Verification runs in constant time and before any
//! JSON is parsed, and a bounded replay guard refuses a signature seen before.

use crate::content::Content;
use crate::error::{ProtocolError, Result};
use crate::frames::{Limits, RawMessage};
use crate::header::{new_id, Header};
use crate::message::Message;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value as Json};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

type HmacSha256 = Hmac<Sha256>;

/// The only signature scheme zpar accepts.
pub const SIGNATURE_SCHEME: &str = "hmac-sha256";

/// How many signatures the replay guard remembers by default.
pub const DEFAULT_REPLAY_WINDOW: usize = 1 << 16;

/// One peer's identity on the wire: key, session id, username, plus the
/// replay guard for what it receives.
///
/// ```
/// use zpar_protocol::{Content, Message, Session};
/// let mut alice = Session::new(b"secret", "hmac-sha256", "alice").unwrap();
/// let mut bob = Session::new(b"secret", "hmac-sha256", "bob").unwrap();
/// let msg = Message::new(&alice, Content::InterruptRequest(Default::default()));
/// let raw = alice.encode(&msg);
/// let back = bob.decode(raw).unwrap();
/// assert_eq!(back.header.msg_type, "interrupt_request");
/// ```
pub struct Session {
    mac: Option<HmacSha256>,
    /// This session's id, sent in every header.
    pub session_id: String,
    /// The username sent in every header.
    pub username: String,
    /// Size limits applied when decoding.
    pub limits: Limits,
    replay: ReplayGuard,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.session_id)
            .field("username", &self.username)
            .field("signing", &self.mac.is_some())
            .finish()
    }
}

impl Session {
    /// A session with a fresh id. An empty `key` turns signing off, as in
    /// Jupyter; any scheme but `hmac-sha256` is refused.
    pub fn new(key: &[u8], scheme: &str, username: &str) -> Result<Session> {
        if scheme != SIGNATURE_SCHEME {
            return Err(ProtocolError::UnsupportedScheme(scheme.to_string()));
        }
        let mac = if key.is_empty() {
            None
        } else {
            Some(HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"))
        };
        Ok(Session {
            mac,
            session_id: new_id(),
            username: username.to_string(),
            limits: Limits::default(),
            replay: ReplayGuard::new(DEFAULT_REPLAY_WINDOW),
        })
    }

    /// Whether messages are signed.
    pub fn signs(&self) -> bool {
        self.mac.is_some()
    }

    /// A header for a new message from this session.
    pub fn header(&self, msg_type: &str) -> Header {
        Header::new(msg_type, &self.session_id, &self.username)
    }

    /// The hex signature of the four JSON frames (empty when not signing).
    pub fn sign(&self, parts: [&[u8]; 4]) -> String {
        match &self.mac {
            None => String::new(),
            Some(mac) => {
                let mut mac = mac.clone();
                for p in parts {
                    mac.update(p);
                }
                to_hex(&mac.finalize().into_bytes())
            }
        }
    }

    /// Checks a raw message's signature in constant time, then records it in
    /// the replay guard. Call this before parsing any JSON.
    pub fn verify(&mut self, raw: &RawMessage) -> Result<()> {
        let Some(signature) = self.checked_signature(raw)? else {
            return Ok(());
        };
        if !self.replay.insert(signature.as_slice()) {
            return Err(ProtocolError::Replay {
                signature: String::from_utf8_lossy(&raw.signature).into_owned(),
            });
        }
        Ok(())
    }

    /// Checks a signature without touching the replay guard.
    pub fn check_signature(&self, raw: &RawMessage) -> Result<()> {
        self.checked_signature(raw).map(|_| ())
    }

    /// Checks a signature; the signature's bytes (None: messages are not
    /// signed in this session).
    fn checked_signature(&self, raw: &RawMessage) -> Result<Option<SignatureBytes>> {
        let Some(mac) = &self.mac else {
            return Ok(None);
        };
        if raw.signature.is_empty() {
            return Err(ProtocolError::MissingSignature);
        }
        let expected =
            SignatureBytes::from_hex(&raw.signature).ok_or(ProtocolError::BadSignature)?;
        let mut mac = mac.clone();
        for p in raw.signed_parts() {
            mac.update(p);
        }
        mac.verify_slice(expected.as_slice())
            .map_err(|_| ProtocolError::BadSignature)?;
        Ok(Some(expected))
    }

    /// Serializes and signs a typed message.
    pub fn encode(&self, msg: &Message) -> RawMessage {
        self.encode_parts(
            &msg.identities,
            &msg.header,
            msg.parent_header.as_ref(),
            &msg.metadata,
            &msg.content,
        )
    }

    /// Serializes and signs a message from borrowed parts, for a sender
    /// that keeps them (to send again under a new header, say). No
    /// buffers: set them on the result.
    ///
    /// ```
    /// use zpar_protocol::{Content, Session, TaskReply};
    /// let s = Session::new(b"key", "hmac-sha256", "engine").unwrap();
    /// let content = Content::reply_to("apply_request", TaskReply::ok());
    /// let raw = s.encode_parts(&[], &s.header(content.msg_type()), None, &Default::default(), &content);
    /// assert!(s.check_signature(&raw).is_ok());
    /// ```
    pub fn encode_parts(
        &self,
        identities: &[Vec<u8>],
        header: &Header,
        parent_header: Option<&Header>,
        metadata: &Map<String, Json>,
        content: &Content,
    ) -> RawMessage {
        let header = serde_json::to_vec(header).expect("headers serialize");
        let parent = match parent_header {
            Some(p) => serde_json::to_vec(p).expect("headers serialize"),
            None => b"{}".to_vec(),
        };
        let metadata = serde_json::to_vec(metadata).expect("maps serialize");
        let content = content.to_json();
        self.assemble(
            identities
                .iter()
                .map(|i| zmq::Message::from(&i[..]))
                .collect(),
            header,
            parent,
            metadata,
            content,
            Vec::new(),
        )
    }

    /// Serializes and signs a typed message, moving its buffers along.
    pub fn encode_owned(&self, mut msg: Message) -> RawMessage {
        let buffers = std::mem::take(&mut msg.buffers);
        let mut raw = self.encode(&msg);
        raw.buffers = buffers;
        raw
    }

    /// Builds a raw message from already-serialized JSON frames and signs it.
    pub fn assemble(
        &self,
        identities: Vec<zmq::Message>,
        header: Vec<u8>,
        parent_header: Vec<u8>,
        metadata: Vec<u8>,
        content: Vec<u8>,
        buffers: Vec<zmq::Message>,
    ) -> RawMessage {
        let signature = self.sign([&header, &parent_header, &metadata, &content]);
        RawMessage {
            identities,
            signature: zmq::Message::from(signature.as_bytes()),
            header: header.into(),
            parent_header: parent_header.into(),
            metadata: metadata.into(),
            content: content.into(),
            buffers,
        }
    }

    /// Verifies and parses a raw message into a typed one.
    pub fn decode(&mut self, raw: RawMessage) -> Result<Message> {
        self.verify(&raw)?;
        Message::parse(raw)
    }

    /// Splits frames, verifies and parses them, with this session's limits.
    pub fn decode_frames(&mut self, frames: Vec<zmq::Message>) -> Result<Message> {
        let raw = RawMessage::from_frames(frames, &self.limits)?;
        self.decode(raw)
    }
}

/// A bounded set of recently seen signatures; the oldest is forgotten first.
///
/// It keeps the first [`REPLAY_KEY`] bytes of each signature (the HMAC
/// itself, decoded: uniformly random bytes, so 128 of them tell any two
/// apart), in a table hashed by those bytes as they are. Only signatures
/// already verified go in, so nobody without the key can choose them: no
/// copy, no string and no keyed hash a message.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    seen: HashSet<[u8; REPLAY_KEY], BuildHasherDefault<SignatureHasher>>,
    order: VecDeque<[u8; REPLAY_KEY]>,
    capacity: usize,
}

/// Bytes of a signature the replay guard keeps.
const REPLAY_KEY: usize = 16;

impl ReplayGuard {
    /// A guard that remembers up to `capacity` signatures.
    pub(crate) fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            seen: HashSet::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records a verified signature (its decoded bytes, whose first
    /// [`REPLAY_KEY`] it keeps); false if it was already there.
    pub(crate) fn insert(&mut self, signature: &[u8]) -> bool {
        let mut key = [0u8; REPLAY_KEY];
        let n = signature.len().min(REPLAY_KEY);
        key[..n].copy_from_slice(&signature[..n]);
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(key);
        self.order.push_back(key);
        true
    }
}

/// Hashes a replay key by its own (random) bytes.
#[derive(Default)]
struct SignatureHasher(u64);

impl Hasher for SignatureHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(7) ^ u64::from_le_bytes(word);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A decoded signature, on the stack (room for 64 bytes; HMAC-SHA256's
/// are 32).
struct SignatureBytes {
    bytes: [u8; 64],
    len: usize,
}

impl SignatureBytes {
    /// Lower-case hex only, as Jupyter writes and accepts it (None
    /// otherwise): were upper case accepted too, one signature would have
    /// many spellings, and a replay could slip past the replay guard.
    fn from_hex(hex: &[u8]) -> Option<SignatureBytes> {
        if !hex.len().is_multiple_of(2) || hex.len() > 128 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut s = SignatureBytes {
            bytes: [0; 64],
            len: hex.len() / 2,
        };
        for (b, pair) in s.bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *b = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(s)
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Content;

    fn pair() -> (Session, Session) {
        (
            Session::new(b"key", SIGNATURE_SCHEME, "a").unwrap(),
            Session::new(b"key", SIGNATURE_SCHEME, "b").unwrap(),
        )
    }

    #[test]
    fn known_hmac_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = Session::new(b"Jefe", SIGNATURE_SCHEME, "u").unwrap();
        let sig = s.sign([b"what do ya ", b"want ", b"for ", b"nothing?"]);
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn refuses_other_schemes() {
        let e = Session::new(b"k", "hmac-md5", "u").unwrap_err();
        assert!(e.to_string().contains("hmac-md5"));
    }

    #[test]
    fn rejects_tampering_missing_signature_and_replay() {
        let (a, mut b) = pair();
        let msg = Message::new(&a, Content::ClearRequest(Default::default()));
        let raw = a.encode(&msg);
        let copy = raw.duplicate();
        b.decode(raw).unwrap();
        assert!(matches!(b.decode(copy), Err(ProtocolError::Replay { .. })));

        let mut bad = a.encode(&Message::new(&a, Content::ClearRequest(Default::default())));
        let mut content = bad.content.to_vec();
        content[0] = b' ';
        bad.content = content.into();
        assert!(matches!(b.decode(bad), Err(ProtocolError::BadSignature)));

        let mut unsigned = a.encode(&Message::new(&a, Content::ClearRequest(Default::default())));
        unsigned.signature = zmq::Message::new();
        assert!(matches!(
            b.decode(unsigned),
            Err(ProtocolError::MissingSignature)
        ));

        let mut garbage = a.encode(&Message::new(&a, Content::ClearRequest(Default::default())));
        garbage.signature = zmq::Message::from("zz");
        assert!(matches!(
            b.decode(garbage),
            Err(ProtocolError::BadSignature)
        ));
    }

    #[test]
    fn empty_key_means_no_signing() {
        let a = Session::new(b"", SIGNATURE_SCHEME, "a").unwrap();
        let mut b = Session::new(b"", SIGNATURE_SCHEME, "b").unwrap();
        let raw = a.encode(&Message::new(&a, Content::ClearRequest(Default::default())));
        assert!(raw.signature.is_empty());
        b.decode(raw).unwrap();
    }

    #[test]
    fn replay_guard_is_bounded() {
        let mut g = ReplayGuard::new(2);
        assert!(g.insert(b"a"));
        assert!(g.insert(b"b"));
        assert!(!g.insert(b"a"));
        assert!(g.insert(b"c"));
        assert!(g.insert(b"a"), "the oldest signature is forgotten");
        assert_eq!(g.seen.len(), 2);
    }
}
