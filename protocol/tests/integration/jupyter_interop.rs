//! zpar speaks Jupyter's wire format: a conversation with Jupyter's reference
//! implementation, `jupyter_client.session.Session`, over real zmq sockets.
//!
//! The test binds a ROUTER on `tcp://127.0.0.1:*` and starts
//! `jupyter_peer.py`, whose DEALER connects to it. Then:
//!
//! (a) the peer sends a push_request with two buffers (an f64 array and a
//!     blob, signed with the shared key); zpar verifies and decodes it and
//!     checks header, content, metadata and both buffers byte for byte;
//! (b) zpar sends an apply_request whose f64 array (a chunk and a half, so two
//!     buffer frames) and blob travel as buffers through zpar's value codec,
//!     then a push_reply built from the peer's request; the peer verifies and
//!     decodes both with `Session.deserialize` and reports what it saw (header
//!     fields, content, metadata, parent, the floats it read) with the buffers
//!     it received echoed back, which zpar compares with what it sent;
//! (c) with signing on, each side rejects the other's message after one byte
//!     of a JSON frame changed (zpar: `BadSignature` for a header byte of the
//!     peer's; Jupyter: "Invalid Signature" for a content byte of zpar's), and
//!     each rejects an exact replay of a message it accepted.
//!
//! The same conversation runs with an empty key (no signing, both sides).
//! Every receive polls with a timeout, and the Python process is killed when
//! the peer guard drops, pass or fail.

use crate::pyenv;
use serde_json::{json, Value as Json};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zpar_protocol::header::parse_iso8601;
use zpar_protocol::{
    new_id, recv_frames, send_frames, ApplyRequest, Content, Message, ProtocolError, RawMessage,
    Session, ShutdownRequest, TaskReply, Value, SIGNATURE_SCHEME,
};

/// Longest wait for any one message from the peer (Python's start included).
const TIMEOUT: Duration = Duration::from_secs(30);
const PEER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/integration/jupyter_peer.py"
);
const PEER_IDENTITY: &[u8] = b"jupyter-peer";
const PEER_USERNAME: &str = "jupyter-peer-user";
/// The values jupyter_peer.py sends (XS and BLOB there).
const PEER_XS: [f64; 6] = [1.5, -2.25, 1e300, 0.1, -0.0, 5e-324];

fn peer_blob() -> Vec<u8> {
    (0..=255u8).chain(*b"<IDS|MSG>").collect()
}

#[test]
fn jupyter_client_and_zpar_interoperate_signed() {
    converse(b"zpar-interop-key-\x00\xff-0123456789abcdef");
}

#[test]
fn jupyter_client_and_zpar_interoperate_unsigned() {
    converse(b"");
}

/// The Python peer; killed on drop, its stderr shown if the test failed.
struct Peer {
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl Peer {
    fn spawn(python: &Path, endpoint: &str, key: &[u8], session_id: &str) -> Peer {
        let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut child = Command::new(python)
            .arg(PEER_SCRIPT)
            .args([endpoint, PEER_USERNAME, session_id])
            .env("ZPAR_PEER_KEY", key_hex)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {PEER_SCRIPT}: {e}", python.display()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Peer {
            child,
            stderr: Some(stderr),
        }
    }

    /// Stops the peer (if it still runs) and returns what it wrote to stderr.
    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }

    /// The next message from the peer, within [`TIMEOUT`]; fails at once if
    /// the peer exits first.
    fn recv(&mut self, router: &zmq::Socket, what: &str) -> Vec<zmq::Message> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if router.poll(zmq::POLLIN, 100).expect("poll") > 0 {
                return recv_frames(router, 0).expect("recv");
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // It may have sent just before it exited.
                if router.poll(zmq::POLLIN, 1000).expect("poll") > 0 {
                    return recv_frames(router, 0).expect("recv");
                }
                panic!(
                    "the Python peer exited ({status}) before sending {what}; its stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {what} from the Python peer within {TIMEOUT:?}; its stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// The next `peer_report`, decoded by zpar: its content and buffers.
    fn report(
        &mut self,
        router: &zmq::Socket,
        zpar: &mut Session,
        expected_step: &str,
        what: &str,
    ) -> (Json, Vec<Vec<u8>>) {
        let frames = self.recv(router, what);
        let msg = zpar
            .decode_frames(frames)
            .unwrap_or_else(|e| panic!("zpar rejected the peer's report on {what}: {e}"));
        let Content::Unknown { msg_type, content } = msg.content else {
            panic!("expected a peer_report about {what}, got {:?}", msg.content)
        };
        assert_eq!(msg_type, "peer_report");
        assert_eq!(
            content["step"], expected_step,
            "the peer's report on {what}: {content:#}"
        );
        (content, msg.buffers.iter().map(|b| b.to_vec()).collect())
    }

    /// Waits (polling, bounded) for the peer to exit; asserts it succeeded.
    fn finish(&mut self) {
        let status = pyenv::exit_within(&mut self.child, TIMEOUT, "the Python peer");
        let stderr = self.stderr();
        match status {
            Some(status) => assert!(
                status.success(),
                "the Python peer failed ({status}):\n{stderr}"
            ),
            None => panic!(
                "the Python peer did not exit within {TIMEOUT:?} of shutdown_request \
                 (killed it):\n{stderr}"
            ),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let stderr = self.stderr();
        if thread::panicking() && !stderr.is_empty() {
            eprintln!("--- the Python peer's stderr ---\n{stderr}");
        }
    }
}

fn send(router: &zmq::Socket, zpar: &Session, mut msg: Message) {
    msg.identities = vec![PEER_IDENTITY.to_vec()];
    send_frames(router, zpar.encode_owned(msg).into_frames(), 0).expect("send to the peer");
}

fn send_raw(router: &zmq::Socket, raw: RawMessage) {
    send_frames(router, raw.into_frames(), 0).expect("send to the peer");
}

/// Changes the one byte at the first occurrence of `from` in a frame.
fn change_one_byte(frame: &zmq::Message, from: &[u8], to: u8) -> zmq::Message {
    let mut bytes = frame.to_vec();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in the frame", String::from_utf8_lossy(from)));
    assert_ne!(bytes[at], to);
    bytes[at] = to;
    zmq::Message::from(bytes)
}

fn f64_le(xs: &[f64]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn seconds(date: &str) -> f64 {
    parse_iso8601(date).unwrap_or_else(|| panic!("zpar cannot parse the date {date:?}"))
}

fn converse(key: &[u8]) {
    let Some(python) = pyenv::python() else {
        return;
    };
    let signing = !key.is_empty();
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).unwrap();
    router.set_linger(0).unwrap();
    router.set_router_mandatory(true).unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = router.get_last_endpoint().unwrap().unwrap();
    let mut zpar = Session::new(key, SIGNATURE_SCHEME, "zpar-test").unwrap();
    let peer_session = new_id();
    let mut peer = Peer::spawn(&python, &endpoint, key, &peer_session);

    // (a) Jupyter -> zpar: verify and decode the push_request with buffers.
    let frames = peer.recv(&router, "the push_request with two buffers");
    let raw = RawMessage::from_frames(frames, &zpar.limits).unwrap();
    let a_signature = String::from_utf8_lossy(&raw.signature).into_owned();
    assert_eq!(a_signature.len(), if signing { 64 } else { 0 });
    let a = zpar
        .decode(raw)
        .unwrap_or_else(|e| panic!("zpar rejected jupyter_client's push_request: {e}"));
    assert_eq!(a.identities, vec![PEER_IDENTITY.to_vec()]);
    assert_eq!(a.header.msg_type, "push_request");
    assert_eq!(a.header.session, peer_session);
    assert_eq!(a.header.username, PEER_USERNAME);
    assert!(a.parent_header.is_none());
    assert_eq!(a.metadata["peer"], "jupyter_client");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (seconds(&a.header.date) - now).abs() < 300.0,
        "{}",
        a.header.date
    );
    let Content::PushRequest(push) = &a.content else {
        panic!("expected a push_request, got {:?}", a.content)
    };
    assert_eq!(a.buffers.len(), 2);
    assert_eq!(
        &a.buffers[0][..],
        &f64_le(&PEER_XS)[..],
        "buffer 0, byte-exact"
    );
    assert_eq!(&a.buffers[1][..], &peer_blob()[..], "buffer 1, byte-exact");
    match Value::decode(&push.namespace["xs"], &a.buffers).unwrap() {
        Value::F64Array(xs) => assert_eq!(
            xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            PEER_XS.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        ),
        other => panic!("xs decoded as {other:?}"),
    }
    assert_eq!(
        Value::decode(&push.namespace["blob"], &a.buffers).unwrap(),
        Value::Bytes(peer_blob())
    );
    assert_eq!(
        Value::decode(&push.namespace["label"], &a.buffers).unwrap(),
        Value::Str("from jupyter_client".into())
    );

    // (c) ... and reject the tampered copy and the replay.
    if signing {
        let e = zpar
            .decode_frames(peer.recv(&router, "the push_request with a changed header byte"))
            .unwrap_err();
        assert!(matches!(e, ProtocolError::BadSignature), "{e:?}");
        let e = zpar
            .decode_frames(peer.recv(&router, "the replayed push_request"))
            .unwrap_err();
        match e {
            ProtocolError::Replay { signature } => assert_eq!(signature, a_signature),
            other => panic!("expected Replay, got {other:?}"),
        }
    }
    let (sent, _) = peer.report(&router, &mut zpar, "sent", "what it sent");
    assert_eq!(sent["msg_id"], a.header.msg_id.as_str());
    assert_eq!(sent["date"], a.header.date.as_str());
    assert_eq!(sent["protocol_version"], a.header.version.as_str());
    eprintln!(
        "jupyter_client {} (protocol {}), pyzmq {}: zpar verified and decoded its push_request",
        sent["jupyter_client_version"].as_str().unwrap_or("?"),
        sent["protocol_version"].as_str().unwrap_or("?"),
        sent["pyzmq_version"].as_str().unwrap_or("?")
    );

    // (b) zpar -> Jupyter: an apply_request whose arrays travel as buffers.
    // One chunk and a half: two buffer frames, whatever the chunk size.
    let n = zpar_protocol::value::CHUNK_BYTES / 8 * 3 / 2;
    let xs: Vec<f64> = (0..n).map(|i| i as f64 * 0.5 - 1234.25).collect();
    let blob: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let mut buffers = Vec::new();
    let args = [
        Value::F64Array(xs.clone()),
        Value::Bytes(blob),
        Value::Int(7),
        Value::Str("héllo".into()),
        Value::Reference("com".into()),
    ]
    .iter()
    .map(|v| v.encode_into(&mut buffers))
    .collect();
    assert_eq!(buffers.len(), 3, "the f64 array spans two buffer frames");
    let sent_buffers: Vec<Vec<u8>> = buffers.iter().map(|b| b.to_vec()).collect();
    let mut b = Message::new(
        &zpar,
        Content::ApplyRequest(ApplyRequest {
            f: "|xs, blob, n, s, com| xs.len() + n".into(),
            args,
        }),
    );
    b.identities = vec![PEER_IDENTITY.to_vec()];
    b.metadata.insert("engine".into(), json!(3));
    b.metadata.insert("targets".into(), json!([3]));
    b.buffers = buffers;
    let b_header = b.header.clone();
    let b_metadata = Json::Object(b.metadata.clone());
    let b_content: Json = serde_json::from_slice(&b.content.to_json()).unwrap();
    let b_raw = zpar.encode_owned(b);
    let b_replay = b_raw.duplicate();
    send_raw(&router, b_raw);

    let (seen, echoed) = peer.report(&router, &mut zpar, "accepted", "zpar's apply_request");
    assert_eq!(seen["msg_type"], "apply_request");
    assert_eq!(seen["msg_id"], b_header.msg_id.as_str());
    assert_eq!(seen["session"], zpar.session_id.as_str());
    assert_eq!(seen["username"], "zpar-test");
    assert_eq!(seen["version"], b_header.version.as_str());
    assert_eq!(seen["date_is_aware_datetime"], true, "{seen:#}");
    assert_eq!(
        seconds(seen["date"].as_str().unwrap()),
        seconds(&b_header.date),
        "Jupyter read zpar's date {} as {}",
        b_header.date,
        seen["date"]
    );
    assert_eq!(seen["parent_msg_id"], Json::Null);
    assert_eq!(seen["idents"], json!([]));
    assert_eq!(seen["metadata"], b_metadata);
    assert_eq!(seen["content"], b_content);
    assert_eq!(seen["n_buffers"], 3);
    assert_eq!(seen["xs_len"], xs.len());
    assert_eq!(seen["xs_head"], json!(xs[..4]));
    assert_eq!(echoed.len(), 4);
    for (i, sent) in sent_buffers.iter().enumerate() {
        assert!(echoed[i] == *sent, "buffer {i} came back different");
    }
    assert!(
        echoed[3] == f64_le(&xs),
        "the floats Python read differ from the ones zpar sent"
    );
    eprintln!(
        "jupyter_client verified and decoded zpar's apply_request: {} buffers, {} f64s",
        seen["n_buffers"], seen["xs_len"]
    );

    // (c) Jupyter rejects a zpar message with one content byte changed, and a
    // replay of one it accepted.
    if signing {
        let mut small = Vec::new();
        let arg = Value::F64Array(vec![1.0, 2.0]).encode_into(&mut small);
        let mut msg = Message::new(
            &zpar,
            Content::ApplyRequest(ApplyRequest {
                f: "|xs| xs.len() + 1".into(),
                args: vec![arg],
            }),
        );
        msg.identities = vec![PEER_IDENTITY.to_vec()];
        msg.buffers = small;
        let mut raw = zpar.encode_owned(msg);
        raw.content = change_one_byte(&raw.content, b"+ 1", b'-');
        send_raw(&router, raw);
        let (rejected, _) = peer.report(&router, &mut zpar, "rejected", "the tampered message");
        let error = rejected["error"].as_str().unwrap();
        assert!(error.contains("Invalid Signature"), "{error}");

        send_raw(&router, b_replay);
        let (rejected, _) = peer.report(&router, &mut zpar, "rejected", "the replay");
        let error = rejected["error"].as_str().unwrap();
        assert!(error.contains("Duplicate Signature"), "{error}");
        eprintln!("jupyter_client rejected zpar's tampered message and its replay");
    }

    // A reply built from the peer's request goes back to it, parent attached.
    let reply = a.reply(&zpar, Content::PushReply(TaskReply::ok()));
    assert_eq!(reply.identities, a.identities);
    send_frames(&router, zpar.encode_owned(reply).into_frames(), 0).unwrap();
    let (seen, _) = peer.report(&router, &mut zpar, "accepted", "zpar's push_reply");
    assert_eq!(seen["msg_type"], "push_reply");
    assert_eq!(seen["parent_msg_id"], a.header.msg_id.as_str());
    assert_eq!(seen["parent_date_is_datetime"], true);
    assert_eq!(seen["content"], json!({"status": "ok"}));

    send(
        &router,
        &zpar,
        Message::new(&zpar, Content::ShutdownRequest(ShutdownRequest::default())),
    );
    peer.finish();
}
