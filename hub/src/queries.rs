//! The registration/query channel: engines registering and leaving, clients
//! connecting, asking for queues, results, history and records, purging and
//! resubmitting.

use crate::hub::Hub;
use crate::records::{Filter, TaskRecord};
use crate::registry::Channel;
use crate::requests::QueuedTask;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use tracing::{info, warn};
use zpar_protocol::{
    ConnectionReply, Content, DbReply, EngineNotification, EngineQueue, Header, HistoryReply,
    Message, QueueReply, RegistrationReply, ResubmitReply, ResultReply, Status, TaskReply,
};

impl Hub {
    pub(crate) fn on_query(&mut self, frames: Vec<zmq::Message>) {
        let msg = match self.session.decode_frames(frames) {
            Ok(m) => m,
            Err(e) => return warn!(error = %e, "dropped a bad query"),
        };
        let mut buffers = Vec::new();
        let reply_content = match &msg.content {
            Content::RegistrationRequest(r) => {
                let uuid = msg.identities.first().cloned().unwrap_or_default();
                if uuid.is_empty() || uuid != r.uuid.as_bytes() {
                    Content::RegistrationReply(RegistrationReply {
                        status: Status::Error,
                        evalue: Some(
                            "the registration uuid must be the engine's socket identity".into(),
                        ),
                        ..Default::default()
                    })
                } else {
                    let (id, fresh) = self.registry.register(&uuid, r.id);
                    if fresh {
                        let _ = self
                            .sockets
                            .hb_pipe
                            .send_multipart([crate::heartbeat::WATCH, &uuid[..]], 0);
                        info!(engine = id, uuid = %r.uuid, "engine registered");
                        self.notify(Content::RegistrationNotification(EngineNotification {
                            id,
                            uuid: r.uuid.clone(),
                            reason: None,
                        }));
                    }
                    Content::RegistrationReply(RegistrationReply {
                        status: Status::Ok,
                        id,
                        hb_period_ms: self.config.hb_period.as_millis() as u64,
                        hub_instance: self.instance.clone(),
                        evalue: None,
                    })
                }
            }
            Content::UnregistrationRequest(r) => {
                let sender = msg.identities.first().map(|u| self.registry.id_of(u));
                if sender == Some(Some(r.id)) {
                    self.engine_gone(r.id, "unregistered");
                    Content::UnregistrationReply(TaskReply::ok())
                } else {
                    Content::UnregistrationReply(TaskReply::error(
                        "NotPermitted",
                        format!("only engine {} itself may unregister it", r.id),
                    ))
                }
            }
            Content::ConnectionRequest(_) => Content::ConnectionReply(ConnectionReply {
                status: Status::Ok,
                engines: self.registry.table(),
            }),
            Content::QueueRequest(r) => {
                let engines = self
                    .registry
                    .engines()
                    .filter(|e| r.targets.as_ref().is_none_or(|t| t.contains(&e.id)))
                    .map(|e| {
                        (
                            e.id,
                            EngineQueue {
                                queue: e.pending.len() as u64,
                                completed: e.completed,
                                tasks: e.tasks(),
                                msg_ids: if r.verbose {
                                    e.pending.keys().cloned().collect()
                                } else {
                                    vec![]
                                },
                            },
                        )
                    })
                    .collect();
                Content::QueueReply(QueueReply {
                    status: Status::Ok,
                    engines,
                    unassigned: (self.waiting.len() + self.unroutable.len()) as u64,
                })
            }
            Content::ResultRequest(r) => {
                Content::ResultReply(self.results(&r.msg_ids, &mut buffers))
            }
            Content::HistoryRequest(_) => match self.records.history() {
                Ok(history) => Content::HistoryReply(HistoryReply {
                    status: Status::Ok,
                    history,
                }),
                Err(e) => Content::HistoryReply(HistoryReply {
                    status: Status::Error,
                    history: vec![format!("cannot read records: {e}")],
                }),
            },
            Content::DbRequest(r) => {
                let result = Filter::parse(&r.query)
                    .and_then(|f| self.records.query(&f).map_err(|e| e.to_string()));
                match result {
                    Ok(recs) => Content::DbReply(DbReply {
                        status: Status::Ok,
                        records: recs
                            .iter()
                            .map(|rec| rec.to_json(r.keys.as_deref()))
                            .collect(),
                        evalue: None,
                    }),
                    Err(e) => Content::DbReply(DbReply {
                        status: Status::Error,
                        records: vec![],
                        evalue: Some(e),
                    }),
                }
            }
            Content::PurgeRequest(r) => match self.records.purge(&r.msg_ids, r.all) {
                Ok(n) => Content::PurgeReply(TaskReply::with_result(json!(n))),
                Err(e) => Content::PurgeReply(TaskReply::error("DatabaseError", e.to_string())),
            },
            Content::ResubmitRequest(r) => {
                let client = msg.identities.first().cloned().unwrap_or_default();
                Content::ResubmitReply(self.resubmit(&r.msg_ids, client, &msg.header))
            }
            other => {
                let t = other.msg_type().to_string();
                let reply_type = format!("{}_reply", t.trim_end_matches("_request"));
                Content::task_reply_of(
                    &reply_type,
                    TaskReply::error(
                        "UnknownMessageType",
                        format!("the hub does not serve {t} on this channel"),
                    ),
                )
            }
        };
        let mut reply = msg.reply(&self.session, reply_content);
        reply.buffers = buffers;
        self.send(&self.sockets.query, reply);
        self.flush_records();
    }

    /// Finished records by msg id, their result buffers appended to
    /// `buffers` (each record says where its own start).
    fn results(&self, msg_ids: &[String], buffers: &mut Vec<zmq::Message>) -> ResultReply {
        let mut out = ResultReply {
            status: Status::Ok,
            ..Default::default()
        };
        let mut unknown = Vec::new();
        for id in msg_ids {
            let recs = match self.records.get(id) {
                Ok(r) => r,
                Err(e) => {
                    out.status = Status::Error;
                    out.evalue = Some(format!("cannot read records: {e}"));
                    return out;
                }
            };
            if recs.is_empty() {
                unknown.push(id.clone());
            } else if recs.iter().any(|r| !r.finished()) {
                out.pending.push(id.clone());
            } else {
                out.completed.push(id.clone());
                let entries: Vec<Json> = recs.iter().map(|r| result_entry(r, buffers)).collect();
                out.results.insert(id.clone(), Json::Array(entries));
            }
        }
        if !unknown.is_empty() {
            out.status = Status::Error;
            out.evalue = Some(format!(
                "no record of {} (never submitted, purged, or dropped from the bounded memory store)",
                unknown.join(", ")
            ));
        }
        out
    }

    /// Sends recorded requests again under new msg ids, on behalf of the
    /// asking client.
    fn resubmit(&mut self, msg_ids: &[String], client: Vec<u8>, asker: &Header) -> ResubmitReply {
        let mut out = ResubmitReply {
            status: Status::Ok,
            ..Default::default()
        };
        let mut problems = Vec::new();
        for old in msg_ids {
            let recs: Vec<TaskRecord> = self.records.get(old).unwrap_or_default();
            let Some(first) = recs.first() else {
                problems.push(format!("{old}: no record"));
                continue;
            };
            if first.request.buffers_dropped {
                problems.push(format!("{old}: its buffers were too large to record"));
                continue;
            }
            let Ok(mut header) = serde_json::from_str::<Header>(&first.request.header) else {
                problems.push(format!("{old}: the recorded header is unreadable"));
                continue;
            };
            let new_id = zpar_protocol::new_id();
            header.msg_id = new_id.clone();
            header.date = zpar_protocol::iso8601_now();
            header.session = asker.session.clone();
            let hdr = serde_json::to_vec(&header).expect("json");
            let meta = first.request.metadata.as_bytes().to_vec();
            let content = first.request.content.as_bytes().to_vec();
            let build = |s: &zpar_protocol::Session| {
                s.assemble(
                    vec![zmq::Message::from(&client[..])],
                    hdr.clone(),
                    b"{}".to_vec(),
                    meta.clone(),
                    content.clone(),
                    first
                        .request
                        .buffers
                        .iter()
                        .map(|b| zmq::Message::from(&b[..]))
                        .collect(),
                )
            };
            let channel = match first.channel.as_str() {
                "task" => Channel::Task,
                "control" => Channel::Control,
                _ => Channel::Mux,
            };
            if channel == Channel::Task {
                let raw = build(&self.session);
                let rec = self.record_of_resubmit(first, &header, &client);
                self.record(rec);
                self.waiting.push_back(QueuedTask {
                    raw,
                    header: header.clone(),
                    client: client.clone(),
                    identities: vec![client.clone()],
                    after: Vec::new(),
                    follow: Vec::new(),
                    allowed: None,
                    retries: 0,
                });
            } else {
                let engines: Vec<u32> = recs.iter().filter_map(|r| r.engine).collect();
                let live: Vec<(u32, Vec<u8>)> = engines
                    .iter()
                    .filter_map(|e| self.registry.get(*e).map(|x| (*e, x.uuid.clone())))
                    .collect();
                if live.len() != engines.len() {
                    problems.push(format!(
                        "{old}: its engines {engines:?} are not all registered any more"
                    ));
                    continue;
                }
                out.engines
                    .insert(new_id.clone(), live.iter().map(|(e, _)| *e).collect());
                for (e, uuid) in live {
                    let mut rec = self.record_of_resubmit(first, &header, &client);
                    rec.engine = Some(e);
                    self.record(rec);
                    let frames = build(&self.session).into_frames();
                    self.dispatch(e, &uuid, &client, &header, channel, frames);
                }
            }
            out.resubmitted.insert(old.clone(), new_id);
        }
        if !problems.is_empty() {
            out.status = Status::Error;
            out.evalue = Some(problems.join("; "));
        }
        self.schedule_waiting();
        out
    }

    fn record_of_resubmit(&self, old: &TaskRecord, header: &Header, client: &[u8]) -> TaskRecord {
        let mut rec = old.clone();
        rec.msg_id = header.msg_id.clone();
        rec.engine = None;
        rec.client = String::from_utf8_lossy(client).into_owned();
        rec.submitted = crate::requests::now_secs();
        rec.status = "pending".into();
        rec.started = None;
        rec.completed = None;
        rec.received = None;
        rec.result = None;
        rec.stdout.clear();
        rec.stderr.clear();
        rec.ename = None;
        rec.evalue = None;
        rec.request.header = serde_json::to_string(header).expect("json");
        rec
    }

    /// Sends a hub-made message.
    pub(crate) fn send(&self, socket: &zmq::Socket, msg: Message) {
        let raw = self.session.encode_owned(msg);
        if let Err(e) = zpar_protocol::send_frames(socket, raw.into_frames(), zmq::DONTWAIT) {
            warn!(error = %e, "hub message not sent");
        }
    }
}

/// One finished record for a result reply: its reply content and metadata,
/// and where its buffers start among the reply's buffers.
fn result_entry(r: &TaskRecord, buffers: &mut Vec<zmq::Message>) -> Json {
    let (content, metadata, count, dropped) = match &r.result {
        Some(p) => {
            let start = buffers.len();
            buffers.extend(p.buffers.iter().map(|b| zmq::Message::from(&b[..])));
            let parse = |t: &str| serde_json::from_str::<Json>(t).unwrap_or(Json::Null);
            (
                parse(&p.content),
                parse(&p.metadata),
                (start, p.buffers.len()),
                p.buffers_dropped,
            )
        }
        None => {
            // Finished without an engine reply (the engine died, or the hub
            // refused it): describe the failure as a reply would.
            let reply = TaskReply {
                status: Status::Error,
                ename: r.ename.clone(),
                evalue: r.evalue.clone(),
                engine_id: r.engine,
                ..Default::default()
            };
            (
                serde_json::to_value(reply).expect("json"),
                json!({}),
                (buffers.len(), 0),
                false,
            )
        }
    };
    let mut m = BTreeMap::new();
    m.insert("engine", json!(r.engine));
    m.insert("status", json!(r.status));
    m.insert("content", content);
    m.insert("metadata", metadata);
    m.insert("buffer_start", json!(count.0));
    m.insert("buffer_count", json!(count.1));
    m.insert("buffers_dropped", json!(dropped));
    json!(m)
}
