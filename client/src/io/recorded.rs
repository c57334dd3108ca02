//! Results filled from the replies the hub recorded: for a watched result
//! (the I/O loop) and for a result asked for by msg id
//! ([`Client::get_result`](crate::Client::get_result)).

use super::outcome::outcome_of;
use crate::error::Error;
use crate::result::{EngineReply, ResultState, Slot};
use serde_json::Value as Json;

/// The engine a recorded reply names, if any.
pub(crate) fn entry_engine(e: &Json) -> Option<u32> {
    e.get("engine").and_then(Json::as_u64).map(|n| n as u32)
}

/// Fills a watched result (one slot, engine unknown when it was asked for)
/// once the hub has its replies: one slot per engine that answered, then
/// the replies.
pub(crate) fn fill_watched(
    state: &ResultState,
    msg_id: &str,
    entries: &[Json],
    buffers: &[zmq::Message],
) {
    {
        let mut parts = state.parts.lock().expect("result lock");
        parts.slots = entries
            .iter()
            .map(|e| Slot {
                msg_id: msg_id.to_string(),
                engine: entry_engine(e),
                reply: None,
                streamed: String::new(),
                shared: None,
            })
            .collect();
    }
    fill_recorded(state, msg_id, entries, buffers);
}

/// Fills a result from recorded replies (content, metadata, and a slice of
/// the reply's buffers each).
pub(crate) fn fill_recorded(
    state: &ResultState,
    msg_id: &str,
    entries: &[Json],
    buffers: &[zmq::Message],
) {
    for e in entries {
        let engine = entry_engine(e);
        let start = e.get("buffer_start").and_then(Json::as_u64).unwrap_or(0) as usize;
        let count = e.get("buffer_count").and_then(Json::as_u64).unwrap_or(0) as usize;
        let own = buffers
            .get(start..start.saturating_add(count))
            .unwrap_or(&[]);
        let reply: zpar_protocol::TaskReply =
            serde_json::from_value(e.get("content").cloned().unwrap_or(Json::Null))
                .unwrap_or_default();
        let in_shared_memory = e.get("in_shared_memory").and_then(Json::as_bool) == Some(true);
        let mut outcome = if in_shared_memory {
            // Never opened from a record: the segment belongs to the
            // submitter's reply, and reading it here would remove it.
            Err(Error::Hub {
                ename: "ResultNotKept".into(),
                message: format!(
                    "the result of {msg_id} went from its engine to the client that submitted \
                     it through shared memory (/dev/shm), which is removed once read; the hub \
                     never held its bytes, so its record does not keep the value. Keep the \
                     value on the engine (assign it to a variable) and pull it, or submit with \
                     shared memory off (Client::set_shared_memory(false)) to have results \
                     recorded"
                ),
            })
        } else {
            outcome_of(&reply, engine, msg_id, own)
        };
        if e.get("buffers_dropped").and_then(Json::as_bool) == Some(true) && outcome.is_ok() {
            outcome = Err(Error::Hub {
                ename: "ResultTooLarge".into(),
                message: format!(
                    "the result of {msg_id} was too large for the hub to record (raise `zpar hub --db-max-buffer`)"
                ),
            });
        }
        let meta = e
            .get("metadata")
            .and_then(Json::as_object)
            .and_then(|m| zpar_protocol::ReplyMetadata::from_map(m).ok())
            .unwrap_or_default();
        state.fill(
            EngineReply::new(engine, msg_id, outcome, &reply, meta),
            engine.is_some(),
        );
    }
}
