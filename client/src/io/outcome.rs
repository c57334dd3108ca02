//! Replies read into values and typed errors.

use crate::error::Error;
use tracing::debug;
use zpar_protocol::error::Chain;
use zpar_protocol::{ErrorClass, Message, ReplyMetadata, Status, TaskReply, Value};

/// Turns a reply's content into a value or an error.
pub(crate) fn outcome_of(
    r: &TaskReply,
    engine: Option<u32>,
    msg_id: &str,
    buffers: &[zmq::Message],
) -> Result<Value, Error> {
    let msg_id = msg_id.to_string();
    let ename = r.ename.clone().unwrap_or_else(|| "Error".into());
    let message = r.evalue.clone().unwrap_or_default();
    let class = ErrorClass::parse(&ename);
    let from_hub = |ename: String, message: String| Error::Hub { ename, message };
    match (r.status, engine) {
        (Status::Ok, _) => match &r.result {
            None => Ok(Value::Unit),
            Some(json) => Value::decode(json, buffers).map_err(Error::from),
        },
        (Status::Aborted, Some(engine)) => Err(Error::Aborted { engine, msg_id }),
        (Status::Aborted, None) => Err(from_hub(ename, message)),
        (Status::Error, engine) => Err(match (class, engine) {
            (ErrorClass::NoEngines, _) => Error::NoEngines,
            (ErrorClass::EngineDied, Some(engine)) => Error::EngineDied { engine, msg_id },
            (ErrorClass::UnknownEngine, Some(engine)) => Error::UnknownEngine(engine),
            (ErrorClass::Timeout, Some(engine)) => Error::TaskTimeout {
                engine,
                msg_id,
                message,
            },
            (class, _) if class.is_refusal() => from_hub(ename, message),
            // What the hub failed itself, whichever engine it was for.
            (ErrorClass::Undelivered | ErrorClass::Lost | ErrorClass::HubRestarted, _) => {
                from_hub(ename, message)
            }
            // A failure the hub reported without any engine (a dependency
            // that failed, a record it could not read).
            (_, None) => from_hub(ename, message),
            (_, Some(engine)) => Error::RemoteError {
                engine,
                ename,
                message,
                line: r.line,
                column: r.column,
            },
        }),
    }
}

/// zpar's keys in a reply's metadata; a reply that breaks the contract is
/// read as if it had none, with a log line.
pub(super) fn reply_metadata(msg: &Message) -> ReplyMetadata {
    ReplyMetadata::from_map(&msg.metadata).unwrap_or_else(|e| {
        debug!(error = %Chain(&e), msg_type = %msg.header.msg_type, "reply metadata ignored");
        ReplyMetadata::default()
    })
}
