//! The communicator's frames: `[kind, seq, k, json, buffers…]` ⇄ decoded
//! messages, on plain frame vectors (tested without sockets).
//!
//! Kinds: `part` (piece `k` of a value, up from a child or down from the
//! root), `fail` (json `{"error": …}`), their ring twins `ring` and
//! `ringfail` (from the previous engine on the ring), and the connect
//! handshake's
//! `ready` (up), `probe` and `go` (down). A message is decoded once here;
//! the [`Collective`](super::collective::Collective) stashes it as decoded.

use super::collective::{Body, Msg};
use serde_json::{json, Value as Json};

/// A piece's contents: its JSON (a value's encoding, or a chunk's shape)
/// and the raw buffers it refers to.
#[derive(Debug)]
pub struct Payload {
    /// The JSON frame.
    pub json: Json,
    /// The buffers after it (numeric arrays travel as raw bytes).
    pub buffers: Vec<zmq::Message>,
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.json == other.json
            && self.buffers.len() == other.buffers.len()
            && self
                .buffers
                .iter()
                .zip(&other.buffers)
                .all(|(a, b)| a[..] == b[..])
    }
}

/// Any message on the communicator's sockets.
#[derive(Debug, PartialEq)]
pub enum Wire {
    /// A collective's message.
    Collective(Msg<Payload>),
    /// A ring allreduce's message (see [`super::ring`]).
    Ring(Msg<Payload>),
    /// Handshake: this child and its subtree are subscribed.
    Ready,
    /// Handshake: the root's probe.
    Probe,
    /// Handshake: everyone is subscribed.
    Go,
}

/// The frames of a message.
pub fn to_frames(w: Wire) -> Vec<zmq::Message> {
    let (kind, seq, k, json, buffers) = match w {
        Wire::Collective(Msg {
            seq,
            body: Body::Part { k, part },
        }) => ("part", seq, k, part.json, part.buffers),
        Wire::Collective(Msg {
            seq,
            body: Body::Fail { error },
        }) => ("fail", seq, 0, json!({ "error": error }), vec![]),
        Wire::Ring(Msg {
            seq,
            body: Body::Part { k, part },
        }) => ("ring", seq, k, part.json, part.buffers),
        Wire::Ring(Msg {
            seq,
            body: Body::Fail { error },
        }) => ("ringfail", seq, 0, json!({ "error": error }), vec![]),
        Wire::Ready => ("ready", 0, 0, Json::Null, vec![]),
        Wire::Probe => ("probe", 0, 0, Json::Null, vec![]),
        Wire::Go => ("go", 0, 0, Json::Null, vec![]),
    };
    let mut out = Vec::with_capacity(4 + buffers.len());
    out.push(zmq::Message::from(kind));
    out.push(zmq::Message::from(seq.to_string().as_str()));
    out.push(zmq::Message::from(k.to_string().as_str()));
    out.push(zmq::Message::from(
        serde_json::to_vec(&json).expect("json serializes"),
    ));
    out.extend(buffers);
    out
}

/// Decodes frames; the error says what was wrong, for one log line.
pub fn from_frames(frames: Vec<zmq::Message>) -> Result<Wire, String> {
    let mut it = frames.into_iter();
    let mut text = |what: &str| -> Result<String, String> {
        let f = it.next().ok_or_else(|| format!("no {what} frame"))?;
        f.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the {what} frame is not text"))
    };
    let kind = text("kind")?;
    let seq: u64 = text("seq")?
        .parse()
        .map_err(|_| "the seq frame is not a number".to_string())?;
    let k: usize = text("piece")?
        .parse()
        .map_err(|_| "the piece frame is not a number".to_string())?;
    let json_frame = it.next().ok_or("no json frame")?;
    let json: Json =
        serde_json::from_slice(&json_frame).map_err(|e| format!("the json frame: {e}"))?;
    let buffers: Vec<zmq::Message> = it.collect();
    let part = |json, buffers| Msg {
        seq,
        body: Body::Part {
            k,
            part: Payload { json, buffers },
        },
    };
    let fail = |json: Json| Msg {
        seq,
        body: Body::Fail {
            error: json["error"]
                .as_str()
                .unwrap_or("a peer failed")
                .to_string(),
        },
    };
    Ok(match kind.as_str() {
        "part" => Wire::Collective(part(json, buffers)),
        "fail" => Wire::Collective(fail(json)),
        "ring" => Wire::Ring(part(json, buffers)),
        "ringfail" => Wire::Ring(fail(json)),
        "ready" => Wire::Ready,
        "probe" => Wire::Probe,
        "go" => Wire::Go,
        other => return Err(format!("unknown kind {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(w: Wire) -> Wire {
        // Through bytes, as a socket would carry them.
        let bytes: Vec<Vec<u8>> = to_frames(w).iter().map(|f| f.to_vec()).collect();
        from_frames(bytes.into_iter().map(zmq::Message::from).collect()).unwrap()
    }

    #[test]
    fn every_kind_round_trips() {
        let part = Wire::Collective(Msg {
            seq: 7,
            body: Body::Part {
                k: 3,
                part: Payload {
                    json: json!({"value": "x"}),
                    buffers: vec![zmq::Message::from(&[1u8, 2, 3][..])],
                },
            },
        });
        let fail = Wire::Collective(Msg {
            seq: 9,
            body: Body::Fail {
                error: "engine 4 did not".into(),
            },
        });
        let ring = Wire::Ring(Msg {
            seq: 4,
            body: Body::Part {
                k: 1,
                part: Payload {
                    json: json!({"len": 2}),
                    buffers: vec![zmq::Message::from(&[9u8][..])],
                },
            },
        });
        let ring_fail = Wire::Ring(Msg {
            seq: 5,
            body: Body::Fail {
                error: "engine 2 did not".into(),
            },
        });
        for w in [
            part,
            fail,
            ring,
            ring_fail,
            Wire::Ready,
            Wire::Probe,
            Wire::Go,
        ] {
            let shown = format!("{w:?}");
            assert_eq!(format!("{:?}", round_trip(w)), shown);
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let f =
            |parts: &[&[u8]]| from_frames(parts.iter().map(|p| zmq::Message::from(*p)).collect());
        assert!(f(&[]).unwrap_err().contains("kind"));
        assert!(f(&[b"part", b"x", b"0", b"{}"])
            .unwrap_err()
            .contains("seq"));
        assert!(f(&[b"part", b"1", b"-1", b"{}"])
            .unwrap_err()
            .contains("piece"));
        assert!(f(&[b"part", b"1", b"0", b"{"])
            .unwrap_err()
            .contains("json"));
        assert!(f(&[b"part", b"1", b"0"]).unwrap_err().contains("json"));
        assert!(f(&[b"zap", b"1", b"0", b"{}"]).unwrap_err().contains("zap"));
        assert!(f(&[&[0xff], b"1", b"0", b"{}"])
            .unwrap_err()
            .contains("text"));
        // A fail without its text still fails.
        assert_eq!(
            f(&[b"fail", b"2", b"0", b"{}"]).unwrap(),
            Wire::Collective(Msg {
                seq: 2,
                body: Body::Fail {
                    error: "a peer failed".into()
                }
            })
        );
    }
}
