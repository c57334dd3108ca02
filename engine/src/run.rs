//! Running one request in the namespace: execute, apply, push or pull, and
//! its value encoded for the reply.
//!
//! The core ([`crate::core`]) decides that a request runs and builds its
//! reply; this module only does the run: it calls the [`Namespace`] and
//! encodes what comes back into the reply's `result` and buffers. A large
//! result for a client on this host goes into shared segments
//! ([`SharedOut`]), which the caller keeps until the client has read them.

use crate::convert::{encode_dynamic, to_value};
use crate::core::Job;
use crate::namespace::{Namespace, ScriptError};
use serde_json::Value as Json;
use zpar_protocol::bulk::Segment;
use zpar_protocol::value::SharedOut;
use zpar_protocol::{Content, ErrorClass, Value};

/// A run's value, before the reply is built.
pub(crate) struct Ran {
    /// The reply's `result`, or the script's error.
    pub(crate) value: Result<Option<Json>, ScriptError>,
    /// An execute's value as text, for `execute_result`.
    pub(crate) shown: Option<String>,
    /// The value's buffers.
    pub(crate) buffers: Vec<zmq::Message>,
    /// Shared segments holding the value (a client on this host reads
    /// them); empty when the run failed.
    pub(crate) segments: Vec<Segment>,
}

/// Runs `job` in `namespace`.
pub(crate) fn run(namespace: &mut Namespace, job: &Job) -> Ran {
    let msg = &job.request;
    let mut buffers = Vec::new();
    let mut shown = None;
    // A client on this host takes a large result from shared memory.
    let mut shared = job
        .limits
        .shared_host
        .as_deref()
        .filter(|h| *h == zpar_protocol::bulk::host_id() && zpar_protocol::bulk::available())
        .map(|_| SharedOut::new(zpar_protocol::bulk::SHARED_MIN_BYTES));
    let value: Result<Option<Json>, ScriptError> = match &msg.content {
        Content::ExecuteRequest(r) => namespace.execute(&r.code).map(|d| {
            if d.is_unit() {
                return None;
            }
            let text = d.to_string();
            shown = Some(text.clone());
            // A value that cannot travel is shown, not sent.
            Some(match to_value(&d) {
                Ok(v) => v.encode_into(&mut buffers),
                Err(_) => Value::Str(text).encode_into(&mut buffers),
            })
        }),
        Content::ApplyRequest(r) => decode_values(&r.args, &msg.buffers)
            .and_then(|args| namespace.apply(&r.f, args))
            .and_then(|d| {
                encode_dynamic(&d, &mut buffers, shared.as_mut()).map_err(|e| {
                    ScriptError::new("NotTransferable", format!("the result of apply: {e}"))
                })
            })
            .map(Some),
        Content::PushRequest(r) => r
            .namespace
            .iter()
            .try_for_each(|(name, json)| {
                let v = Value::decode(json, &msg.buffers)
                    .map_err(|e| ScriptError::new("BadArgument", format!("{name}: {e}")))?;
                namespace.push(name, v)
            })
            .map(|_| None),
        Content::PullRequest(r) => {
            let mut encoded = Vec::with_capacity(r.names.len());
            let mut failed = None;
            for n in &r.names {
                let got = namespace.lookup(n).and_then(|d| {
                    encode_dynamic(&d, &mut buffers, shared.as_mut())
                        .map_err(|e| ScriptError::new("NotTransferable", format!("{n}: {e}")))
                });
                match got {
                    Ok(j) => encoded.push(j),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None if r.single && encoded.len() == 1 => Ok(encoded.pop()),
                None => Ok(Some(Json::Array(encoded))),
            }
        }
        // The core runs nothing else; answered as it would be.
        other => Err(ScriptError::new(
            ErrorClass::UnknownMessageType.as_str(),
            format!("{} is not a request an engine serves", other.msg_type()),
        )),
    };
    // An error sends no value: its segments go now.
    let segments = match &value {
        Ok(_) => shared.map(|s| s.segments).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    Ran {
        value,
        shown,
        buffers,
        segments,
    }
}

fn decode_values(args: &[Json], buffers: &[zmq::Message]) -> Result<Vec<Value>, ScriptError> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            Value::decode(a, buffers)
                .map_err(|e| ScriptError::new("BadArgument", format!("argument {i}: {e}")))
        })
        .collect()
}
