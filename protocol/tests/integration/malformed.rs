//! Bad input gets a typed error that names what was wrong, never a panic.
//!
//! Hand-written cases here, one per kind of damage, each asserting the
//! `ProtocolError` variant and what its `Display` says; deterministic
//! mutation loops over thousands of valid messages and values in
//! [`mutations`].

mod mutations;

use crate::common::{wire_frames, zmq_frames};
use serde_json::{json, Value as Json};
use zpar_protocol::header::parse_iso8601;
use zpar_protocol::{
    ApplyRequest, Content, ExecuteRequest, Header, Limits, Message, ProtocolError, Session, Value,
    DELIMITER, SIGNATURE_SCHEME,
};

const KEY: &[u8] = b"malformed-key";

fn session() -> Session {
    Session::new(KEY, SIGNATURE_SCHEME, "tester").unwrap()
}

fn header_json(msg_type: &str) -> Vec<u8> {
    serde_json::to_vec(&Header::new(msg_type, "session-1", "tester")).unwrap()
}

/// A correctly signed message made of exactly these JSON frames, so that a
/// decode gets past the signature and fails (or not) on the JSON itself.
fn signed(header: &[u8], parent: &[u8], metadata: &[u8], content: &[u8]) -> Vec<zmq::Message> {
    session()
        .assemble(
            vec![zmq::Message::from("client")],
            header.to_vec(),
            parent.to_vec(),
            metadata.to_vec(),
            content.to_vec(),
            Vec::new(),
        )
        .into_frames()
}

fn decode(frames: Vec<zmq::Message>) -> ProtocolError {
    match session().decode_frames(frames) {
        Ok(msg) => panic!("decoded a malformed message: {msg:?}"),
        Err(e) => e,
    }
}

/// The error as shown on one line (its chain of causes) says each word.
fn assert_says(e: &ProtocolError, words: &[&str]) {
    let text = zpar_protocol::error::Chain(e).to_string();
    for w in words {
        assert!(text.contains(w), "{text:?} does not mention {w:?}");
    }
}

fn valid_frames(s: &Session) -> Vec<Vec<u8>> {
    let msg = Message::new(
        s,
        Content::ExecuteRequest(ExecuteRequest {
            code: "1 + 1".into(),
            ..Default::default()
        }),
    );
    wire_frames(s, msg)
}

#[test]
fn no_delimiter() {
    let e = decode(zmq_frames(&["client", "sig", "{}", "{}", "{}", "{}"]));
    assert!(
        matches!(e, ProtocolError::NoDelimiter { frames: 6 }),
        "{e:?}"
    );
    assert_says(&e, &["no <IDS|MSG> delimiter", "6 frames"]);

    let e = decode(Vec::new());
    assert!(
        matches!(e, ProtocolError::NoDelimiter { frames: 0 }),
        "{e:?}"
    );

    // Something that merely starts like the delimiter is not one.
    let e = decode(zmq_frames(&["<IDS|MSG>x", "", "{}", "{}", "{}", "{}"]));
    assert!(matches!(e, ProtocolError::NoDelimiter { .. }), "{e:?}");
}

#[test]
fn too_few_frames() {
    let e = decode(zmq_frames(&["id", "<IDS|MSG>", "sig", "{}", "{}", "{}"]));
    assert!(
        matches!(e, ProtocolError::TooFewFrames { found: 4 }),
        "{e:?}"
    );
    assert_says(&e, &["4 frames after the delimiter", "need at least 5"]);

    let e = decode(zmq_frames(&["<IDS|MSG>"]));
    assert!(
        matches!(e, ProtocolError::TooFewFrames { found: 0 }),
        "{e:?}"
    );
}

#[test]
fn bad_utf8_names_the_frame() {
    let bad = b"{\"a\": \"\xff\xfe\"}";
    let h = header_json("execute_request");
    let c = br#"{"code": "1"}"#;
    let cases: [(&str, [&[u8]; 4]); 4] = [
        ("header", [bad, b"{}", b"{}", c]),
        ("parent_header", [&h, bad, b"{}", c]),
        ("metadata", [&h, b"{}", bad, c]),
        ("content", [&h, b"{}", b"{}", bad]),
    ];
    for (frame, [header, parent, metadata, content]) in cases {
        let e = decode(signed(header, parent, metadata, content));
        match &e {
            ProtocolError::Utf8 { frame: f, .. } => assert_eq!(*f, frame),
            other => panic!("{frame}: expected Utf8, got {other:?}"),
        }
        assert_says(&e, &[&format!("the {frame} frame is not valid UTF-8")]);
    }
}

#[test]
fn bad_json_names_the_frame() {
    let h = header_json("execute_request");
    let e = decode(signed(br#"{"msg_id": "#, b"{}", b"{}", b"{}"));
    assert!(matches!(&e, ProtocolError::Json { frame, .. } if frame == "header"));
    assert_says(&e, &["the header frame is not valid", "EOF"]);

    let e = decode(signed(&h, b"{}", b"{}", b"print(1)"));
    assert!(
        matches!(&e, ProtocolError::Json { frame, .. } if frame == "content of execute_request")
    );
    assert_says(&e, &["content of execute_request", "expected value"]);

    let e = decode(signed(&h, b"{}", b"[1, 2]", br#"{"code": "1"}"#));
    assert!(matches!(&e, ProtocolError::Json { frame, .. } if frame == "metadata"));
    assert_says(&e, &["the metadata frame is not valid", "expected a map"]);

    let e = decode(signed(&h, br#"{"msg_id": 1"#, b"{}", br#"{"code": "1"}"#));
    assert!(matches!(&e, ProtocolError::Json { frame, .. } if frame == "parent_header"));

    // An empty JSON frame is not `{}`.
    let e = decode(signed(b"", b"{}", b"{}", b"{}"));
    assert!(matches!(&e, ProtocolError::Json { frame, .. } if frame == "header"));
}

#[test]
fn header_missing_a_field() {
    for field in [
        "msg_id", "msg_type", "session", "username", "date", "version",
    ] {
        let mut header: Json = serde_json::from_slice(&header_json("execute_request")).unwrap();
        header.as_object_mut().unwrap().remove(field);
        let header = serde_json::to_vec(&header).unwrap();
        let e = decode(signed(&header, b"{}", b"{}", br#"{"code": "1"}"#));
        assert!(matches!(&e, ProtocolError::Json { frame, .. } if frame == "header"));
        assert_says(&e, &["header", &format!("missing field `{field}`")]);
    }
}

#[test]
fn wrong_type() {
    let h = header_json("execute_request");
    let e = decode(signed(&h, b"{}", b"{}", br#"{"code": 5}"#));
    assert!(
        matches!(&e, ProtocolError::Json { frame, .. } if frame == "content of execute_request"),
        "{e:?}"
    );
    assert_says(
        &e,
        &[
            "content of execute_request",
            "invalid type: integer `5`, expected a string",
        ],
    );

    let mut header: Json = serde_json::from_slice(&h).unwrap();
    header["msg_id"] = json!(7);
    let e = decode(signed(
        &serde_json::to_vec(&header).unwrap(),
        b"{}",
        b"{}",
        b"{}",
    ));
    assert!(matches!(&e, ProtocolError::Json { frame, .. } if frame == "header"));
    assert_says(&e, &["invalid type: integer `7`"]);

    // The content must be an object of the right shape for its msg_type.
    let h = header_json("apply_request");
    let e = decode(signed(&h, b"{}", b"{}", br#"{"f": "g", "args": {}}"#));
    assert!(matches!(&e, ProtocolError::Json { frame, .. } if frame == "content of apply_request"));
    assert_says(&e, &["invalid type: map, expected a sequence"]);
}

#[test]
fn bad_signature() {
    let s = session();
    let good = valid_frames(&s);
    let sig_at = good.iter().position(|f| f == DELIMITER).unwrap() + 1;

    // One byte of the content changed.
    let mut altered = good.clone();
    let content = altered.len() - 1;
    altered[content][2] ^= 1;
    let e = decode(zmq_frames(&altered));
    assert!(matches!(e, ProtocolError::BadSignature), "{e:?}");
    assert_says(&e, &["invalid signature", "altered"]);

    // Signed with another key.
    let other = Session::new(b"another key", SIGNATURE_SCHEME, "x").unwrap();
    let e = decode(zmq_frames(&valid_frames(&other)));
    assert!(matches!(e, ProtocolError::BadSignature), "{e:?}");
    assert_says(&e, &["wrong key"]);

    // Not hex, odd length, truncated.
    for sig in [&b"zz"[..], b"abc", &good[sig_at][..63], &good[sig_at][..62]] {
        let mut frames = good.clone();
        frames[sig_at] = sig.to_vec();
        let e = decode(zmq_frames(&frames));
        assert!(matches!(e, ProtocolError::BadSignature), "{e:?}");
    }

    // The signature is checked before any JSON is parsed: garbage JSON with a
    // wrong signature is a signature error, not a JSON error.
    let mut frames = signed(b"not json", b"{}", b"{}", b"{}");
    frames[2] = zmq::Message::from(&[b'0'; 64][..]);
    let e = decode(frames);
    assert!(matches!(e, ProtocolError::BadSignature), "{e:?}");
}

#[test]
fn missing_signature() {
    let unsigned = Session::new(b"", SIGNATURE_SCHEME, "x").unwrap();
    let frames = valid_frames(&unsigned);
    assert!(
        frames.contains(&Vec::new()),
        "an unsigned message has an empty signature"
    );
    let e = decode(zmq_frames(&frames));
    assert!(matches!(e, ProtocolError::MissingSignature), "{e:?}");
    assert_says(&e, &["unsigned message", "signature frame is empty"]);
}

#[test]
fn replay() {
    let s = session();
    let frames = valid_frames(&s);
    let signature = String::from_utf8(frames[1].clone()).unwrap();
    let mut receiver = session();
    receiver.decode_frames(zmq_frames(&frames)).unwrap();
    let e = receiver.decode_frames(zmq_frames(&frames)).unwrap_err();
    match &e {
        ProtocolError::Replay { signature: s } => assert_eq!(*s, signature),
        other => panic!("expected Replay, got {other:?}"),
    }
    assert_says(&e, &["replayed message", &signature]);
}

/// Regression: the replay guard remembered signatures as the bytes that came,
/// while verification also accepted upper-case hex, so re-sending a message
/// with its signature upper-cased (2^64 spellings of one HMAC) got past the
/// guard. Jupyter accepts only the lower-case hex digest; so does zpar now.
#[test]
fn replay_with_uppercased_signature_is_rejected() {
    let s = session();
    let frames = valid_frames(&s);
    let mut receiver = session();
    receiver.decode_frames(zmq_frames(&frames)).unwrap();
    let mut shouted = frames.clone();
    shouted[1] = frames[1].to_ascii_uppercase();
    assert_ne!(shouted[1], frames[1]);
    let e = receiver.decode_frames(zmq_frames(&shouted)).unwrap_err();
    assert!(
        matches!(
            e,
            ProtocolError::BadSignature | ProtocolError::Replay { .. }
        ),
        "{e:?}"
    );
    // And not only as a replay: upper-case hex is not a valid signature.
    let e = session().decode_frames(zmq_frames(&shouted)).unwrap_err();
    assert!(matches!(e, ProtocolError::BadSignature), "{e:?}");
}

#[test]
fn oversized_frames_with_configured_limits() {
    let mut receiver = session();
    receiver.limits = Limits {
        max_json_frame: 256,
        max_buffer_frame: 1024,
        max_frames: 16,
    };
    let h = header_json("execute_request");
    let code = "x".repeat(300);
    let content = serde_json::to_vec(&json!({ "code": code })).unwrap();
    let e = receiver
        .decode_frames(signed(&h, b"{}", b"{}", &content))
        .unwrap_err();
    match &e {
        ProtocolError::Oversized { frame, size, limit } => {
            assert_eq!(
                (frame.as_str(), *size, *limit),
                ("content", content.len(), 256)
            )
        }
        other => panic!("expected Oversized, got {other:?}"),
    }
    assert_says(
        &e,
        &[
            "oversized frame",
            &format!("the content frame has {} bytes", content.len()),
            "the limit is 256",
        ],
    );

    // A buffer over its limit, named by index.
    let mut frames = signed(&h, b"{}", b"{}", br#"{"code": "1"}"#);
    frames.push(zmq::Message::from(&[0u8; 8][..]));
    frames.push(zmq::Message::from(&[0u8; 1025][..]));
    let e = receiver.decode_frames(frames).unwrap_err();
    assert!(matches!(&e, ProtocolError::Oversized { frame, .. } if frame == "buffer 1"));
    assert_says(&e, &["buffer 1", "1025 bytes", "limit is 1024"]);

    // Too many frames.
    let mut frames = signed(&h, b"{}", b"{}", br#"{"code": "1"}"#);
    frames.extend((0..10).map(|_| zmq::Message::new()));
    let e = receiver.decode_frames(frames).unwrap_err();
    assert!(
        matches!(
            e,
            ProtocolError::TooManyFrames {
                found: 17,
                limit: 16
            }
        ),
        "{e:?}"
    );
    assert_says(&e, &["too many frames: 17", "limit is 16"]);

    // A signature far longer than any HMAC.
    let mut frames = signed(&h, b"{}", b"{}", b"{}");
    frames[2] = zmq::Message::from(&[b'a'; 2000][..]);
    let e = receiver.decode_frames(frames).unwrap_err();
    assert!(matches!(&e, ProtocolError::Oversized { frame, .. } if frame == "signature"));

    // Sizes are checked before the signature: an oversized unsigned message is
    // reported as oversized.
    let mut frames = zmq_frames(&["<IDS|MSG>", "", "{}", "{}", "{}"]);
    frames.push(zmq::Message::from(&content[..]));
    let e = receiver.decode_frames(frames).unwrap_err();
    assert!(matches!(e, ProtocolError::Oversized { .. }), "{e:?}");
}

#[test]
fn unknown_message_type_keeps_its_content() {
    // Jupyter's debugger, which zpar does not serve.
    let h = header_json("debug_request");
    let msg = session()
        .decode_frames(signed(
            &h,
            b"{}",
            b"{}",
            br#"{"seq": 1, "command": "initialize"}"#,
        ))
        .unwrap();
    match msg.content {
        Content::Unknown { msg_type, content } => {
            assert_eq!(msg_type, "debug_request");
            assert_eq!(content, json!({"seq": 1, "command": "initialize"}));
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[test]
fn value_naming_missing_buffers_is_a_value_error() {
    let s = session();
    let mut buffers = Vec::new();
    let arg = Value::F64Array(vec![1.0, 2.0]).encode_into(&mut buffers);
    // The JSON names buffer 0, but the message goes without its buffers.
    let msg = Message::new(
        &s,
        Content::ApplyRequest(ApplyRequest {
            f: "|xs| xs".into(),
            args: vec![arg],
        }),
    );
    let frames = wire_frames(&s, msg);
    let msg = session().decode_frames(zmq_frames(&frames)).unwrap();
    let Content::ApplyRequest(apply) = &msg.content else {
        panic!("{:?}", msg.content)
    };
    let e = Value::decode(&apply.args[0], &msg.buffers).unwrap_err();
    assert!(matches!(e, ProtocolError::Value(_)), "{e:?}");
    assert_says(
        &e,
        &[
            "bad value encoding",
            "names buffers 0..1 but the message has 0",
        ],
    );
}

/// Regression: `parse_iso8601` sliced a six-byte UTC offset by byte index, so
/// a peer's date like `...T10:00:00+0é00` (a multi-byte character inside the
/// offset) panicked instead of returning None.
#[test]
fn date_with_multibyte_offset_is_rejected_not_a_panic() {
    assert_eq!(parse_iso8601("2026-11-26T10:00:00+0é00"), None);
    assert_eq!(parse_iso8601("2026-11-26T10:00:00+é:00"), None);
    assert_eq!(parse_iso8601("2026-11-26T10:00:00+00:é"), None);
}
