//! Shared test helpers: a deterministic PRNG and a supply of valid messages.

use std::collections::BTreeMap;
use zpar_protocol::{
    ApplyRequest, ConnectionReply, Content, ExecuteRequest, Message, PushRequest,
    RegistrationRequest, Session, Stream, TaskReply, Value,
};

/// xorshift64: tiny, deterministic, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    /// A generator; the same seed gives the same sequence on every machine.
    pub fn new(seed: u64) -> Rng {
        assert_ne!(seed, 0, "xorshift needs a non-zero seed");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// Fewer than `max` random bytes.
    pub fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
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
    match rng.below(kinds) {
        0 => Value::Unit,
        1 => Value::Bool(rng.chance(50)),
        2 => Value::Int(rng.next_u64() as i64 >> rng.below(64)),
        3 => Value::Float(*rng.pick(&[0.5, -1e300, f64::NAN, f64::INFINITY, 3.0])),
        4 => Value::Str(rng.pick(&["", "héllo", "$zpar", "<IDS|MSG>"]).to_string()),
        5 => Value::Bytes(rng.some_bytes(24)),
        6 => Value::F64Array((0..rng.below(6)).map(|i| i as f64 * 0.25).collect()),
        7 => Value::I64Array((0..rng.below(6)).map(|i| i as i64 - 3).collect()),
        8 => {
            if rng.chance(50) {
                Value::Function("|a, b| a + b".into())
            } else {
                Value::Reference("com".into())
            }
        }
        9 => Value::Array(
            (0..rng.below(4))
                .map(|_| sample_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let keys = ["a", "b", "$zpar", "buffer", "len"];
            Value::Map(
                (0..rng.below(4))
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
    let content = match rng.below(8) {
        0 => Content::ExecuteRequest(ExecuteRequest {
            code: "let x = 40 + 2;\nprint(`x = ${x}`); x".into(),
            silent: rng.chance(50),
            ..Default::default()
        }),
        1 => {
            let args = [
                Value::F64Array((0..rng.below(16)).map(|i| i as f64 / 3.0).collect()),
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
        }),
        5 => Content::Stream(Stream {
            name: "stdout".into(),
            text: "héllo\n".into(),
        }),
        6 => Content::Unknown {
            msg_type: "comm_msg".into(),
            content: serde_json::json!({"data": [1, 2.5, null, {"k": "v"}]}),
        },
        _ => Content::ConnectionReply(ConnectionReply {
            status: Default::default(),
            engines: (0..3).map(|i| (i, zpar_protocol::new_id())).collect(),
        }),
    };
    let mut msg = if rng.chance(30) {
        let request = Message::new(session, Content::ClearRequest(Default::default()));
        request.reply(session, content)
    } else {
        Message::new(session, content)
    };
    msg.identities = (0..rng.below(3))
        .map(|_| {
            let n = 1 + rng.below(8);
            rng.bytes(n)
        })
        .collect();
    msg.metadata
        .insert("engine".into(), serde_json::json!(rng.below(4)));
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
