//! The body of the `decode` fuzz target: bytes in, frames out, through every
//! layer of zpar-protocol's decoder, asserting that nothing panics and that
//! whatever is accepted survives a round trip.
//!
//! This file is also compiled into zpar-protocol's integration tests
//! (`protocol/tests/integration/fuzz_decode.rs` includes it by path), so the
//! fuzz target's logic runs in every `cargo test` without a fuzzer.
//!
//! Input format: frames separated by the byte [`SEPARATOR`] (0x1E, ASCII
//! "record separator", which never occurs in valid JSON), for example
//! `<IDS|MSG>␞signature␞{header}␞{}␞{}␞{content}␞buffer`.
//!
//! Each input is decoded three ways, so that the JSON parsers are reached even
//! though a fuzzer cannot forge an HMAC:
//! - as received, by a session keyed with [`KEY`] (almost always stops at the
//!   signature check, which is itself worth fuzzing);
//! - re-signed with [`KEY`] first, so the JSON behind a valid signature is
//!   parsed;
//! - as received, by a session with an empty key (signing off, as in Jupyter).

use zpar_protocol::header::parse_iso8601;
use zpar_protocol::{Limits, Message, ProtocolError, RawMessage, Session, Value, SIGNATURE_SCHEME};

/// The byte that separates frames in a fuzz input.
pub const SEPARATOR: u8 = 0x1e;

/// The signing key of the keyed sessions.
pub const KEY: &[u8] = b"fuzz";

/// Runs one fuzz input: splits it into frames at [`SEPARATOR`] and decodes
/// them (see the module docs).
pub fn decode(data: &[u8]) {
    let parts: Vec<&[u8]> = data.split(|&b| b == SEPARATOR).collect();
    decode_parts(&parts);
}

/// What each of the three decodes of one frame sequence did.
#[derive(Debug)]
pub struct Outcomes {
    /// The frames as received, by a session keyed with [`KEY`].
    pub keyed: Result<(), ProtocolError>,
    /// The frames with their four JSON frames re-signed with [`KEY`]; `None`
    /// when they do not even split into a raw message.
    pub resigned: Option<Result<(), ProtocolError>>,
    /// The frames as received, by a session with an empty key.
    pub open: Result<(), ProtocolError>,
}

/// Decodes one frame sequence the three ways; panics only if the decoder
/// misbehaves (a panic inside it, or an accepted message that does not
/// round-trip).
pub fn decode_parts<P: AsRef<[u8]>>(parts: &[P]) -> Outcomes {
    let frames = || -> Vec<zmq::Message> {
        parts
            .iter()
            .map(|p| zmq::Message::from(p.as_ref()))
            .collect()
    };

    // The raw layer alone, with tight limits, as a hub's router would.
    let tight = Limits {
        max_json_frame: 512,
        max_buffer_frame: 512,
        max_frames: 12,
    };
    if let Err(e) = RawMessage::from_frames(frames(), &tight) {
        assert!(!e.to_string().is_empty());
    }

    let keyed = check(KEY, session(KEY).decode_frames(frames()));
    let resigned = RawMessage::from_frames(frames(), &Limits::default())
        .ok()
        .map(|raw| {
            let mut receiver = session(KEY);
            let signed = receiver.assemble(
                raw.identities,
                raw.header.to_vec(),
                raw.parent_header.to_vec(),
                raw.metadata.to_vec(),
                raw.content.to_vec(),
                raw.buffers,
            );
            check(KEY, receiver.decode(signed))
        });
    let open = check(b"", session(b"").decode_frames(frames()));
    Outcomes {
        keyed,
        resigned,
        open,
    }
}

/// Asserts that a value re-encodes and decodes to itself (NaNs compared by
/// their printed form) and that it can be displayed.
pub fn value_round_trips(value: &Value) {
    let (json, buffers) = value.encode();
    let back = Value::decode(&json, &buffers).expect("an encoded value decodes");
    assert_eq!(format!("{back:?}"), format!("{value:?}"), "via {json}");
    let _ = value.to_string();
}

fn session(key: &[u8]) -> Session {
    Session::new(key, SIGNATURE_SCHEME, "fuzz").expect("hmac-sha256 is supported")
}

/// Checks what a decode returned: an error must display; an accepted message
/// must have decodable values, parseable-or-rejected dates, and must survive
/// encode + decode unchanged.
fn check(key: &[u8], result: Result<Message, ProtocolError>) -> Result<(), ProtocolError> {
    let msg = match result {
        Ok(msg) => msg,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return Err(e);
        }
    };
    let _ = parse_iso8601(&msg.header.date);
    if let Some(parent) = &msg.parent_header {
        let _ = parse_iso8601(&parent.date);
    }

    let content: serde_json::Value =
        serde_json::from_slice(&msg.content.to_json()).expect("accepted content is JSON");
    if let Ok(value) = Value::decode(&content, &msg.buffers) {
        value_round_trips(&value);
    }

    let mut peer = session(key);
    let raw = peer.encode(&msg);
    let again = peer
        .decode(raw)
        .expect("an accepted message re-encodes and decodes");
    assert_eq!(again.identities, msg.identities);
    assert_eq!(again.header, msg.header);
    assert_eq!(again.parent_header, msg.parent_header);
    assert_eq!(again.metadata, msg.metadata);
    assert_eq!(again.content, msg.content);
    Ok(())
}
