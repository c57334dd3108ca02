//! Shared test helpers: seeded random numbers and a supply of valid messages.

use std::collections::BTreeMap;
use zpar_protocol::{
    ApplyRequest, ConnectionReply, Content, ExecuteRequest, Message, PushRequest,
    RegistrationRequest, Session, Stream, TaskReply, Value,
};

/// The tests' random numbers: `fastrand` seeded with a fixed number
/// (`Rng::with_seed`), so every run and every machine sees the same inputs.
pub use fastrand::Rng;

/// What the tests draw beyond `fastrand`'s own methods.
pub trait RngExt {
    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u8) -> bool;
    /// `n` random bytes.
    fn bytes(&mut self, n: usize) -> Vec<u8>;
    /// Fewer than `max` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8>;
    /// One of `items` (not empty).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T;
}

impl RngExt for Rng {
    fn chance(&mut self, percent: u8) -> bool {
        self.u8(..100) < percent
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        self.fill(&mut out);
        out
    }

    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.usize(..max);
        self.bytes(n)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.usize(..items.len())]
    }
}

/// A random value tree of bounded depth, with blobs and numeric arrays (so
/// with buffers) among its leaves.
pub fn sample_value(rng: &mut Rng, depth: u32) -> Value {
    let leaf_kinds = 9;
    let kinds = if depth == 0 {
        leaf_kinds
    } else {
        leaf_kinds + 2
    };
    match rng.usize(..kinds) {
        0 => Value::Unit,
        1 => Value::Bool(rng.chance(50)),
        2 => Value::Int(rng.u64(..) as i64 >> rng.usize(..64)),
        3 => Value::Float(*rng.pick(&[0.5, -1e300, f64::NAN, f64::INFINITY, 3.0])),
        4 => Value::Str(rng.pick(&["", "héllo", "$zpar", "<IDS|MSG>"]).to_string()),
        5 => Value::Bytes(rng.some_bytes(24)),
        6 => Value::F64Array((0..rng.usize(..6)).map(|i| i as f64 * 0.25).collect()),
        7 => Value::I64Array((0..rng.usize(..6)).map(|i| i as i64 - 3).collect()),
        8 => {
            if rng.chance(50) {
                Value::Function("|a, b| a + b".into())
            } else {
                Value::Reference("com".into())
            }
        }
        9 => Value::Array(
            (0..rng.usize(..4))
                .map(|_| sample_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let keys = ["a", "b", "$zpar", "buffer", "len"];
            Value::Map(
                (0..rng.usize(..4))
                    .map(|_| (rng.pick(&keys).to_string(), sample_value(rng, depth - 1)))
                    .collect(),
            )
        }
    }
}

/// A valid message of one of several types, some carrying buffers, some
/// replies (with a parent header), some with routing identities.
pub fn sample_message(session: &Session, rng: &mut Rng) -> Message {
    let mut buffers = Vec::new();
    let content = match rng.usize(..8) {
        0 => Content::ExecuteRequest(ExecuteRequest {
            code: "let x = 40 + 2;\nprint(`x = ${x}`); x".into(),
            silent: rng.chance(50),
            ..Default::default()
        }),
        1 => {
            let args = [
                Value::F64Array((0..rng.usize(..16)).map(|i| i as f64 / 3.0).collect()),
                Value::Bytes(rng.some_bytes(40)),
                Value::I64Array(vec![i64::MIN, -1, 0, i64::MAX]),
                Value::Int(42),
                Value::Reference("com".into()),
            ];
            Content::ApplyRequest(ApplyRequest {
                f: "|xs, blob, ys, n, com| xs.len() + n".into(),
                args: args.iter().map(|v| v.encode_into(&mut buffers)).collect(),
            })
        }
        2 => {
            let namespace: BTreeMap<String, _> = ["a", "b", "c"]
                .iter()
                .map(|k| {
                    (
                        k.to_string(),
                        sample_value(rng, 2).encode_into(&mut buffers),
                    )
                })
                .collect();
            Content::PushRequest(PushRequest { namespace })
        }
        3 => Content::PullReply(TaskReply::with_result(
            sample_value(rng, 3).encode_into(&mut buffers),
        )),
        4 => Content::RegistrationRequest(RegistrationRequest {
            uuid: zpar_protocol::new_id(),
            id: Some(3),
            host: Some("10.0.0.3".into()),
            relay: None,
            heartbeat: None,
        }),
        5 => Content::Stream(Stream {
            name: "stdout".into(),
            text: "héllo\n".into(),
        }),
        6 => Content::Unknown {
            msg_type: "debug_event".into(),
            content: serde_json::json!({"data": [1, 2.5, null, {"k": "v"}]}),
        },
        _ => Content::ConnectionReply(ConnectionReply {
            status: Default::default(),
            engines: (0..3).map(|i| (i, zpar_protocol::new_id())).collect(),
            hosts: (0..3).map(|i| (i, format!("10.0.0.{i}"))).collect(),
            hub_instance: Some("k3x9q2m7".into()),
        }),
    };
    let mut msg = if rng.chance(30) {
        let request = Message::new(session, Content::ClearRequest(Default::default()));
        request.reply(session, content)
    } else {
        Message::new(session, content)
    };
    msg.identities = (0..rng.usize(..3))
        .map(|_| {
            let n = 1 + rng.usize(..8);
            rng.bytes(n)
        })
        .collect();
    msg.metadata
        .insert("engine".into(), serde_json::json!(rng.usize(..4)));
    msg.buffers = buffers;
    msg
}

/// A message as owned frames, in wire order.
pub fn wire_frames(session: &Session, msg: Message) -> Vec<Vec<u8>> {
    session
        .encode_owned(msg)
        .into_frames()
        .iter()
        .map(|f| f.to_vec())
        .collect()
}

/// Owned frames as zmq messages.
pub fn zmq_frames<P: AsRef<[u8]>>(parts: &[P]) -> Vec<zmq::Message> {
    parts
        .iter()
        .map(|p| zmq::Message::from(p.as_ref()))
        .collect()
}
