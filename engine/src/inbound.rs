//! Decoding what arrives on the hub-facing channels (control, mux, task),
//! so that every validly signed request gets an answer.
//!
//! A request the hub forwarded stays pending there until the engine
//! replies. So the engine splits decoding in two: first the frames and the
//! signature (a message that fails these is not from a peer with the key,
//! or is a replay, and is dropped with one log line), then the JSON. A
//! signed request whose header, metadata or content does not have the
//! expected shape is not dropped: [`decode_request`] returns a stand-in
//! that carries its header and routing identities, and the caller answers
//! it with [`bad_request_reply`] — a reply of the matching type
//! (`execute_reply`, `apply_reply`, ...), status error, ename `BadRequest`,
//! and an evalue that says what was wrong.
//!
//! ```ignore
//! match decode_request(&mut session, frames) {
//!     Inbound::Request(msg) => serve(msg),
//!     Inbound::Bad { request, why } => reply(&request, bad_request_reply(&request, &why, id)),
//!     Inbound::Dropped(e) => warn!(error = %e, "dropped"),
//! }
//! ```

use serde_json::{Map, Value as Json};
use zpar_protocol::{
    Content, ErrorClass, Header, Message, MessageType, ProtocolError, RawMessage, RequestMetadata,
    Session, TaskReply,
};

/// What became of a received frame sequence.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A request the engine understands (its type may still be one it does
    /// not serve; the handler answers that).
    Request(Message),
    /// Validly signed, but not understood. `request` has the original
    /// header and identities and [`Content::Unknown`] content; `why` says
    /// what was wrong.
    Bad {
        /// A stand-in to reply to.
        request: Message,
        /// What was wrong, for the reply's evalue.
        why: String,
    },
    /// Not framed, not signed with the key, or replayed: no reply.
    Dropped(ProtocolError),
}

/// Splits, verifies and parses frames; see the module doc.
pub(crate) fn decode_request(session: &mut Session, frames: Vec<zmq::Message>) -> Inbound {
    let raw = match RawMessage::from_frames(frames, &session.limits) {
        Ok(r) => r,
        Err(e) => return Inbound::Dropped(e),
    };
    if let Err(e) = session.verify(&raw) {
        return Inbound::Dropped(e);
    }
    let identities: Vec<Vec<u8>> = raw.identities.iter().map(|f| f.to_vec()).collect();
    let header = match raw.header() {
        Ok(h) => h,
        Err(e) => match lenient_header(&raw.header) {
            Some(h) => return bad(identities, h, e.to_string()),
            // Without a msg_id there is nothing a reply could refer to.
            None => return Inbound::Dropped(e),
        },
    };
    let parsed = raw.parent_header().and_then(|parent| {
        let metadata = raw.metadata()?;
        RequestMetadata::from_map(&metadata)?;
        // Parsed once; only content that is no zpar request is looked at
        // again, for ipyparallel's apply (kept so the request loop answers
        // it clearly).
        let content = match Content::from_json(&header.msg_type, &raw.content) {
            Ok(content) => content,
            Err(_) if is_python_apply(&header.msg_type, &raw) => Content::Unknown {
                msg_type: header.msg_type.clone(),
                content: Json::Null,
            },
            Err(e) => return Err(e),
        };
        Ok((parent, metadata, content))
    });
    match parsed {
        Ok((parent_header, metadata, content)) => Inbound::Request(Message {
            identities,
            header,
            parent_header,
            metadata,
            content,
            buffers: raw.buffers,
        }),
        Err(e) => bad(identities, header, e.to_string()),
    }
}

/// An `apply_request` as ipyparallel sends it: no `f` in its content (the
/// function and its arguments are pickled into the buffers).
fn is_python_apply(msg_type: &str, raw: &RawMessage) -> bool {
    MessageType::parse(msg_type) == Some(MessageType::ApplyRequest)
        && serde_json::from_slice::<Map<String, Json>>(&raw.content)
            .is_ok_and(|c| !c.contains_key("f"))
}

fn bad(identities: Vec<Vec<u8>>, header: Header, why: String) -> Inbound {
    let request = Message {
        identities,
        content: Content::Unknown {
            msg_type: header.msg_type.clone(),
            content: Json::Null,
        },
        header,
        parent_header: None,
        metadata: Map::new(),
        buffers: Vec::new(),
    };
    Inbound::Bad { request, why }
}

/// A header that does not parse as one, read field by field: enough to
/// answer if it has a string `msg_id`.
fn lenient_header(bytes: &[u8]) -> Option<Header> {
    let v: Json = serde_json::from_slice(bytes).ok()?;
    let field = |name: &str| v.get(name).and_then(Json::as_str).map(str::to_string);
    Some(Header {
        msg_id: field("msg_id")?,
        msg_type: field("msg_type").unwrap_or_default(),
        session: field("session").unwrap_or_default(),
        username: field("username").unwrap_or_default(),
        date: field("date").unwrap_or_default(),
        version: field("version").unwrap_or_default(),
    })
}

/// The content answering a request the engine could not understand.
pub(crate) fn bad_request_reply(request: &Message, why: &str, engine_id: u32) -> Content {
    let what = if request.header.msg_type.is_empty() {
        "request"
    } else {
        &request.header.msg_type
    };
    let mut reply = TaskReply::error(
        ErrorClass::BadRequest.as_str(),
        format!("engine {engine_id} could not understand this {what}: {why}"),
    );
    reply.engine_id = Some(engine_id);
    Content::reply_to(&request.header.msg_type, reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zpar_protocol::{ExecuteRequest, Status};

    fn sessions() -> (Session, Session) {
        let client = Session::new(b"key", "hmac-sha256", "client").unwrap();
        let engine = Session::new(b"key", "hmac-sha256", "engine").unwrap();
        (client, engine)
    }

    /// A signed request of `msg_type` with `content` as given, routed
    /// through two identities.
    fn signed(s: &Session, header: Json, content: Json) -> Vec<zmq::Message> {
        let raw = s.assemble(
            vec![zmq::Message::from("hub"), zmq::Message::from("client-1")],
            header.to_string().into_bytes(),
            b"{}".to_vec(),
            b"{}".to_vec(),
            content.to_string().into_bytes(),
            vec![],
        );
        raw.into_frames()
    }

    fn header(s: &Session, msg_type: &str) -> Json {
        serde_json::to_value(s.header(msg_type)).unwrap()
    }

    fn expect_bad(inbound: Inbound) -> (Message, String) {
        match inbound {
            Inbound::Bad { request, why } => (request, why),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request_decodes() {
        let (client, mut engine) = sessions();
        let req = Message::new(
            &client,
            Content::ExecuteRequest(ExecuteRequest {
                code: "1".into(),
                ..Default::default()
            }),
        );
        let got = decode_request(&mut engine, client.encode(&req).into_frames());
        assert!(matches!(got, Inbound::Request(m) if m.header == req.header));
    }

    #[test]
    fn an_ipyparallel_apply_is_kept_for_the_request_loop_to_refuse() {
        // ipyparallel sends `{}` with the pickled function in the buffers.
        let (client, mut engine) = sessions();
        let h = header(&client, "apply_request");
        let got = decode_request(
            &mut engine,
            signed(&client, h.clone(), serde_json::json!({})),
        );
        match got {
            Inbound::Request(m) => {
                assert_eq!(m.header.msg_id, h["msg_id"]);
                assert!(
                    matches!(&m.content, Content::Unknown { msg_type, .. } if msg_type == "apply_request")
                );
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn signed_requests_of_the_wrong_shape_get_an_error_reply_of_the_right_type() {
        let (client, mut engine) = sessions();
        for (msg_type, content, reply_type) in [
            (
                "execute_request",
                serde_json::json!({"code": 5}),
                "execute_reply",
            ),
            (
                "apply_request",
                serde_json::json!({"f": 1, "args": "x"}),
                "apply_reply",
            ),
            (
                "push_request",
                serde_json::json!({"namespace": []}),
                "push_reply",
            ),
            ("pull_request", serde_json::json!("names"), "pull_reply"),
            (
                "abort_request",
                serde_json::json!({"msg_ids": 3}),
                "abort_reply",
            ),
        ] {
            let h = header(&client, msg_type);
            let (request, why) = expect_bad(decode_request(
                &mut engine,
                signed(&client, h.clone(), content),
            ));
            assert!(why.contains("content"), "{msg_type}: {why}");
            assert_eq!(request.identities, [b"hub".to_vec(), b"client-1".to_vec()]);
            let content = bad_request_reply(&request, &why, 4);
            assert_eq!(content.msg_type(), reply_type);
            let r = content.task_reply().expect("a task reply");
            assert_eq!(r.status, Status::Error);
            assert_eq!(r.ename.as_deref(), Some("BadRequest"));
            assert!(r.evalue.as_deref().unwrap().contains(msg_type));
            assert_eq!(r.engine_id, Some(4));
            // The reply names the request as its parent and keeps the route.
            let reply = request.reply(&engine, content);
            assert_eq!(reply.parent_header.unwrap().msg_id, h["msg_id"]);
            assert_eq!(reply.identities, request.identities);
        }
    }

    #[test]
    fn bad_metadata_or_a_broken_header_with_an_id_is_answered() {
        let (client, mut engine) = sessions();
        let raw = client.assemble(
            vec![],
            header(&client, "execute_request").to_string().into_bytes(),
            b"{}".to_vec(),
            b"[1, 2]".to_vec(),
            br#"{"code": "1"}"#.to_vec(),
            vec![],
        );
        let (_, why) = expect_bad(decode_request(&mut engine, raw.into_frames()));
        assert!(why.contains("metadata"), "{why}");
        let h = serde_json::json!({"msg_id": "m-1", "msg_type": "apply_request", "date": 7});
        let (request, why) = expect_bad(decode_request(
            &mut engine,
            signed(&client, h, serde_json::json!({})),
        ));
        assert!(why.contains("header"), "{why}");
        assert_eq!(request.header.msg_id, "m-1");
        assert_eq!(
            bad_request_reply(&request, &why, 0).msg_type(),
            "apply_reply"
        );
    }

    #[test]
    fn an_unknown_type_is_a_request_the_handler_answers() {
        let (client, mut engine) = sessions();
        let h = header(&client, "frobnicate_request");
        match decode_request(&mut engine, signed(&client, h, serde_json::json!({"x": 1}))) {
            Inbound::Request(m) => {
                assert!(matches!(m.content, Content::Unknown { .. }));
                assert_eq!(
                    Content::reply_type_for(m.content.msg_type()),
                    "frobnicate_reply"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsigned_replayed_or_anonymous_messages_are_dropped() {
        let (client, mut engine) = sessions();
        let stranger = Session::new(b"other key", "hmac-sha256", "x").unwrap();
        let h = header(&stranger, "execute_request");
        let got = decode_request(
            &mut engine,
            signed(&stranger, h, serde_json::json!({"code": 5})),
        );
        assert!(
            matches!(got, Inbound::Dropped(ProtocolError::BadSignature)),
            "{got:?}"
        );
        let h = header(&client, "execute_request");
        let frames = || signed(&client, h.clone(), serde_json::json!({"code": 5}));
        assert!(matches!(
            decode_request(&mut engine, frames()),
            Inbound::Bad { .. }
        ));
        let replay = decode_request(&mut engine, frames());
        assert!(
            matches!(replay, Inbound::Dropped(ProtocolError::Replay { .. })),
            "{replay:?}"
        );
        let no_id = serde_json::json!({"msg_type": "execute_request"});
        let got = decode_request(&mut engine, signed(&client, no_id, serde_json::json!({})));
        assert!(
            matches!(got, Inbound::Dropped(ProtocolError::Json { .. })),
            "{got:?}"
        );
        let junk = vec![zmq::Message::from("no delimiter")];
        assert!(matches!(
            decode_request(&mut engine, junk),
            Inbound::Dropped(_)
        ));
    }
}
