//! What the hub recorded: results of any request by msg id (this client's
//! or another's), history, record queries, purging and resubmitting.

use crate::client::{Client, CONNECT_TIMEOUT};
use crate::error::{Error, Result};
use crate::io::{entry_engine, fill_recorded, Command};
use crate::result::{AsyncResult, ResultState, Shape};
use serde_json::Value as Json;
use std::sync::mpsc;
use zpar_protocol::{Content, Message};

/// Results the hub recorded, as [`Client::result_status`] reports them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultStatus {
    /// Msg ids still running or queued.
    pub pending: Vec<String>,
    /// Msg ids finished.
    pub completed: Vec<String>,
}

impl Client {
    fn expect<T>(
        &self,
        reply: Message,
        what: &str,
        pick: impl FnOnce(Content) -> Option<T>,
    ) -> Result<T> {
        let t = reply.header.msg_type.clone();
        pick(reply.content).ok_or_else(|| Error::Hub {
            ename: "UnexpectedReply".into(),
            message: format!("{t} to a {what}"),
        })
    }

    fn result_reply(
        &self,
        msg_ids: &[String],
    ) -> Result<(zpar_protocol::ResultReply, Vec<zmq::Message>)> {
        let mut reply = self.query(
            Content::ResultRequest(zpar_protocol::ResultRequest {
                msg_ids: msg_ids.to_vec(),
            }),
            CONNECT_TIMEOUT,
        )?;
        let buffers = std::mem::take(&mut reply.buffers);
        let r = self.expect(reply, "result request", |c| match c {
            Content::ResultReply(r) => Some(r),
            _ => None,
        })?;
        if r.status != zpar_protocol::Status::Ok {
            return Err(Error::Hub {
                ename: "ResultError".into(),
                message: r.evalue.unwrap_or_default(),
            });
        }
        Ok((r, buffers))
    }

    /// Which of these requests the hub has seen finish.
    pub fn result_status(&self, msg_ids: &[String]) -> Result<ResultStatus> {
        let (r, _) = self.result_reply(msg_ids)?;
        Ok(ResultStatus {
            pending: r.pending,
            completed: r.completed,
        })
    }

    /// The result of any earlier request by msg id — this client's or
    /// another's, before a hub restart too when the hub keeps SQLite
    /// records. A request still running is waited for by polling the hub.
    pub fn get_result(&self, msg_id: &str) -> Result<AsyncResult> {
        let ids = [msg_id.to_string()];
        let (r, buffers) = self.result_reply(&ids)?;
        if let Some(entries) = r.results.get(msg_id).and_then(Json::as_array) {
            let state = ResultState::new(
                entries
                    .iter()
                    .map(|e| (msg_id.to_string(), entry_engine(e)))
                    .collect(),
            );
            fill_recorded(&state, msg_id, entries, &buffers);
            return Ok(AsyncResult::new(state, Shape::PerReply));
        }
        // Still pending: the I/O thread asks the hub again until it is done
        // (the hub has no push for other clients' results).
        let state = ResultState::new(vec![(msg_id.to_string(), None)]);
        self.command(Command::Watch {
            msg_id: msg_id.to_string(),
            state: state.clone(),
        })?;
        Ok(AsyncResult::new(state, Shape::PerReply))
    }

    /// Every msg id the hub has recorded, oldest first.
    pub fn history(&self) -> Result<Vec<String>> {
        let reply = self.query(
            Content::HistoryRequest(zpar_protocol::HistoryRequest {}),
            CONNECT_TIMEOUT,
        )?;
        self.expect(reply, "history request", |c| match c {
            Content::HistoryReply(r) => Some(r.history),
            _ => None,
        })
    }

    /// Task records matching `query` — `{field: value}` for equality or
    /// `{field: {"$lt": v, "$gte": w, "$ne": x, "$in": [..]}}` — with all
    /// fields, or just `keys`. Times (`submitted`, `started`, `completed`,
    /// `received`) come as ISO 8601 text; in a query they may also be given
    /// as Unix seconds.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let c = zpar_client::Client::connect()?;
    /// let failed = c.db_query(serde_json::json!({"status": "error", "engine": {"$in": [0, 1]}}),
    ///                         Some(&["msg_id", "ename", "evalue"]))?;
    /// # Ok(()) }
    /// ```
    pub fn db_query(&self, query: Json, keys: Option<&[&str]>) -> Result<Vec<Json>> {
        let reply = self.query(
            Content::DbRequest(zpar_protocol::DbRequest {
                query,
                keys: keys.map(|k| k.iter().map(|s| s.to_string()).collect()),
            }),
            CONNECT_TIMEOUT,
        )?;
        let r = self.expect(reply, "db request", |c| match c {
            Content::DbReply(r) => Some(r),
            _ => None,
        })?;
        if r.status != zpar_protocol::Status::Ok {
            return Err(Error::Hub {
                ename: "BadQuery".into(),
                message: r.evalue.unwrap_or_default(),
            });
        }
        Ok(r.records)
    }

    /// Forgets finished records at the hub: these msg ids, or all (`None`).
    /// Returns how many records went.
    pub fn purge_results(&self, msg_ids: Option<&[String]>) -> Result<u64> {
        let reply = self.query(
            Content::PurgeRequest(zpar_protocol::PurgeRequest {
                msg_ids: msg_ids.map(<[String]>::to_vec).unwrap_or_default(),
                all: msg_ids.is_none(),
            }),
            CONNECT_TIMEOUT,
        )?;
        let r = self.expect(reply, "purge request", |c| c.task_reply().cloned())?;
        crate::io::outcome_of(&r, None, "purge", &[])?
            .as_i64()
            .map(|n| n as u64)
            .ok_or_else(|| Error::Value("purge reply without a count".into()))
    }

    /// Runs recorded requests again (new msg ids); the result covers them
    /// all, in order.
    pub fn resubmit(&self, msg_ids: &[String]) -> Result<AsyncResult> {
        let reply = self.query(
            Content::ResubmitRequest(zpar_protocol::ResubmitRequest {
                msg_ids: msg_ids.to_vec(),
            }),
            CONNECT_TIMEOUT,
        )?;
        let r = self.expect(reply, "resubmit request", |c| match c {
            Content::ResubmitReply(r) => Some(r),
            _ => None,
        })?;
        if r.status != zpar_protocol::Status::Ok && r.resubmitted.is_empty() {
            return Err(Error::Hub {
                ename: "ResubmitError".into(),
                message: r.evalue.unwrap_or_default(),
            });
        }
        let mut slots = Vec::new();
        let mut track = Vec::new();
        for old in msg_ids {
            let Some(new) = r.resubmitted.get(old) else {
                continue;
            };
            let engines = r.engines.get(new).cloned().unwrap_or_default();
            if engines.is_empty() {
                slots.push((new.clone(), None));
                track.push((new.clone(), 1));
            } else {
                track.push((new.clone(), engines.len()));
                slots.extend(engines.into_iter().map(|e| (new.clone(), Some(e))));
            }
        }
        let state = ResultState::new(slots);
        self.command(Command::Send {
            messages: vec![],
            track,
            state: state.clone(),
        })?;
        Ok(AsyncResult::new(state, Shape::PerReply))
    }

    /// Forgets, in this client, requests whose results were dropped before
    /// their replies came. Returns how many.
    pub fn purge_local(&self) -> Result<usize> {
        let (tx, rx) = mpsc::channel();
        self.command(Command::PurgeLocal(tx))?;
        rx.recv_timeout(CONNECT_TIMEOUT).map_err(|_| Error::Closed)
    }
}
