//! The registration/query channel: engines registering and leaving, clients
//! connecting, asking for queues, results, history and records, purging and
//! resubmitting.

use super::queued::QueuedTask;
use super::{Action, Frames, HubCore, LossReason};
use crate::records::{Filter, TaskRecord};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use tracing::{info, warn};
use zpar_protocol::error::Chain;
use zpar_protocol::vitals::EngineVitals;
use zpar_protocol::{
    Channel, ConnectionReply, Content, DbReply, EngineNotification, EngineQueue, ErrorClass,
    Header, HistoryReply, Message, MessageType, QueueReply, RawMessage, RecordStatus,
    RegistrationReply, RegistrationRequest, ResubmitReply, ResultReply, Status, TaskReply,
};

impl HubCore {
    pub(super) fn on_query(&mut self, frames: Frames, now: f64, out: &mut Vec<Action>) {
        let raw = match RawMessage::from_frames(frames, &self.session.limits) {
            Ok(r) => r,
            Err(e) => return warn!(error = %Chain(&e), "dropped a malformed query"),
        };
        if let Err(e) = self.session.verify(&raw) {
            return warn!(error = %Chain(&e), "dropped a query");
        }
        let header = match raw.header() {
            Ok(h) => h,
            Err(e) => return warn!(error = %Chain(&e), "dropped a query"),
        };
        let identities: Vec<Vec<u8>> = raw.identities.iter().map(|f| f.to_vec()).collect();
        let msg = match Message::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                // Signed, but its content is not what its type says.
                warn!(error = %Chain(&e), msg_type = %header.msg_type, "refused a malformed query");
                return self.refuse_query(identities, header, Chain(&e).to_string());
            }
        };
        let asker = msg.identities.first().cloned().unwrap_or_default();
        let mut buffers = Vec::new();
        let mut stop = false;
        let reply_content = match &msg.content {
            Content::RegistrationRequest(r) => self.register(&asker, r, now, out),
            Content::UnregistrationRequest(r) => {
                if self.registry.id_of(&asker) == Some(r.id) {
                    self.engine_lost(r.id, LossReason::Unregistered, now, out);
                    Content::UnregistrationReply(TaskReply::ok())
                } else {
                    Content::UnregistrationReply(TaskReply::error(
                        ErrorClass::NotPermitted.as_str(),
                        format!("only engine {} itself may unregister it", r.id),
                    ))
                }
            }
            Content::ConnectionRequest(_) => Content::ConnectionReply(ConnectionReply {
                status: Status::Ok,
                engines: self.registry.table(),
                hosts: self.registry.hosts(),
                hub_instance: Some(self.config.instance.clone()),
            }),
            Content::QueueRequest(r) => {
                let engines: BTreeMap<u32, EngineQueue> = self
                    .registry
                    .engines()
                    .filter(|e| r.targets.as_ref().is_none_or(|t| t.contains(&e.id)))
                    .map(|e| {
                        (
                            e.id,
                            EngineQueue {
                                queue: e.pending().len() as u64,
                                completed: e.completed,
                                tasks: e.tasks(),
                                msg_ids: if r.verbose {
                                    e.pending().keys().cloned().collect()
                                } else {
                                    vec![]
                                },
                                vitals: r.vitals.then(|| EngineVitals {
                                    beat_age: e.last_beat.map(|t| (now - t).max(0.0)),
                                    ..e.vitals
                                }),
                            },
                        )
                    })
                    .collect();
                let ipyparallel = engines
                    .iter()
                    .map(|(id, q)| (id.to_string(), json!(q)))
                    .collect();
                Content::QueueReply(QueueReply {
                    status: Status::Ok,
                    engines,
                    unassigned: self.waiting.len() as u64,
                    hub: r.vitals.then_some(self.hub_vitals),
                    ipyparallel,
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
                        ..Default::default()
                    }),
                    Err(e) => Content::DbReply(DbReply {
                        status: Status::Error,
                        evalue: Some(e),
                        ..Default::default()
                    }),
                }
            }
            Content::PurgeRequest(r) => {
                self.uncommitted = true;
                match self.records.purge(&r.msg_ids, r.all) {
                    Ok(n) => Content::PurgeReply(TaskReply::with_result(json!(n))),
                    Err(e) => Content::PurgeReply(TaskReply::error(
                        ErrorClass::DatabaseError.as_str(),
                        e.to_string(),
                    )),
                }
            }
            Content::ResubmitRequest(r) => {
                Content::ResubmitReply(self.resubmit(&r.msg_ids, asker, &msg.header, now, out))
            }
            // ipyparallel's `Client.shutdown(hub=True)` stops the hub here,
            // after it stopped the engines on control.
            Content::ShutdownRequest(_) => {
                info!("shutdown requested by a client on the query channel");
                stop = true;
                Content::ShutdownReply(TaskReply::ok())
            }
            other => {
                let t = other.msg_type().to_string();
                Content::reply_to(
                    &t,
                    TaskReply::error(
                        ErrorClass::UnknownMessageType.as_str(),
                        format!("the hub does not serve {t} on this channel"),
                    ),
                )
            }
        };
        let mut reply = msg.reply(&self.session, reply_content);
        reply.buffers = buffers;
        let mut raw = self.session.encode_owned(reply);
        let limit = self.session.limits.max_json_frame;
        if raw.content.len() > limit {
            // The client would drop it and wait for its timeout: it gets
            // this error instead.
            let why = format!(
                "the hub's answer to this {} is {} bytes of JSON, more than the {limit} one \
                 message frame may hold: ask for less at once (fewer msg ids, a narrower query, \
                 or only some keys)",
                msg.header.msg_type,
                raw.content.len()
            );
            warn!("{why}");
            let refusal = msg.reply(
                &self.session,
                query_error(&msg.header.msg_type, ErrorClass::TooLarge, why),
            );
            raw = self.session.encode_owned(refusal);
        }
        self.held.push(Action::ToQuery {
            frames: raw.into_frames(),
        });
        if stop {
            self.stop_engines(out);
            self.on_tick(out);
            out.push(Action::Stop);
        }
    }

    /// Registers an engine; its identity must be the uuid it names.
    fn register(
        &mut self,
        uuid: &[u8],
        r: &RegistrationRequest,
        now: f64,
        out: &mut Vec<Action>,
    ) -> Content {
        if uuid.is_empty() || uuid != r.uuid.as_bytes() {
            return Content::RegistrationReply(RegistrationReply {
                status: Status::Error,
                evalue: Some("the registration uuid must be the engine's socket identity".into()),
                ..Default::default()
            });
        }
        if r.heartbeat.is_none() {
            return Content::RegistrationReply(RegistrationReply {
                status: Status::Error,
                evalue: Some(
                    "the registration names no heartbeat connection: this engine is of an older \
                     zpar than the hub, whose heartbeat the hub cannot serve; run the same zpar \
                     version on every host"
                        .into(),
                ),
                ..Default::default()
            });
        }
        if let Some(room) = self.config.engine_room {
            let registered = self.registry.len();
            let needed = self.registry.connections_with(r.heartbeat.as_deref());
            if self.registry.id_of(uuid).is_none() && needed > room.connections {
                self.room_refusals.0 += 1;
                if now - self.room_refusals.1 >= 10.0 {
                    warn!(refused = self.room_refusals.0, registered, files = room.files,
                        "refused engines: the limit on open files leaves no room for them (ulimit -n)");
                    self.room_refusals = (0, now);
                }
                return Content::RegistrationReply(RegistrationReply {
                    status: Status::Error,
                    evalue: Some(format!(
                        "the hub has no room for another engine: its limit on open files \
                         (ulimit -n) is {}, which leaves room for {} engines each in a process \
                         of its own, or {} packed 40 to a heartbeat connection ({} connections: \
                         one per engine, and the heartbeat connections of its processes), and \
                         {registered} are registered, holding {}; start the hub with a higher \
                         limit (`ulimit -n 65536` before `zpar hub`, up to the hard limit \
                         `ulimit -Hn`), or run fewer engines",
                        room.files,
                        room.engines(1),
                        room.engines(40),
                        room.connections,
                        self.registry.connections(),
                    )),
                    ..Default::default()
                });
            }
        }
        let (id, fresh) = self.registry.register(uuid, r.id);
        if let Some(e) = self.registry.get_mut(id) {
            e.host = r.host.clone();
            e.relay = r.relay.clone();
        }
        self.registry.set_heartbeat(id, r.heartbeat.clone());
        if fresh {
            out.push(Action::Watch {
                uuid: uuid.to_vec(),
            });
            info!(engine = id, uuid = %r.uuid, host = r.host.as_deref().unwrap_or("?"), "engine registered");
            self.notify(
                Content::RegistrationNotification(EngineNotification {
                    id,
                    uuid: r.uuid.clone(),
                    reason: None,
                }),
                out,
            );
            // Tasks that waited for an engine may run now.
            self.schedule_waiting(now, out);
        }
        let keys = self.config.communicator_keys.as_ref();
        Content::RegistrationReply(RegistrationReply {
            status: Status::Ok,
            id,
            hb_period_ms: self.config.hb_period.as_millis() as u64,
            hub_instance: self.config.instance.clone(),
            evalue: None,
            curve_publickey: keys.map(|k| k.public().to_string()),
            curve_secretkey: keys.map(|k| k.secret().to_string()),
        })
    }

    /// Answers a signed query whose content does not fit its type.
    fn refuse_query(&mut self, identities: Vec<Vec<u8>>, request: Header, why: String) {
        let reply_type = Content::reply_type_for(&request.msg_type);
        let content = query_error(&request.msg_type, ErrorClass::BadRequest, why);
        let msg = Message {
            identities,
            header: self.session.header(&reply_type),
            parent_header: Some(request),
            metadata: zpar_protocol::ReplyMetadata {
                status: Some(Status::Error),
                ..Default::default()
            }
            .to_map(),
            content,
            buffers: vec![],
        };
        let frames = self.session.encode_owned(msg).into_frames();
        self.held.push(Action::ToQuery { frames });
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
                if let [one] = &recs[..] {
                    if let Some(entry) = ipyparallel_entry(one) {
                        out.ipyparallel.insert(id.clone(), entry);
                    }
                }
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
    fn resubmit(
        &mut self,
        msg_ids: &[String],
        client: Vec<u8>,
        asker: &Header,
        now: f64,
        actions: &mut Vec<Action>,
    ) -> ResubmitReply {
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
            if first.request.in_shared_memory {
                problems.push(format!(
                    "{old}: its values went to the engines in shared memory, which the hub \
                     does not keep; submit it again from the client"
                ));
                continue;
            }
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
            header.date = zpar_protocol::header::iso8601(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(now.max(0.0)),
            );
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
            let channel = first.channel;
            if channel == Channel::Task {
                let raw = build(&self.session);
                let rec = self.record_of_resubmit(first, &header, &client, now);
                self.insert_record(rec);
                self.waiting.push_back(QueuedTask {
                    raw,
                    header: header.clone(),
                    identities: vec![client.clone()],
                    after: Vec::new(),
                    follow: Vec::new(),
                    allowed: None,
                    retries: 0,
                    attempt: 0,
                    no_engine_since: None,
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
                    let mut rec = self.record_of_resubmit(first, &header, &client, now);
                    rec.engine = Some(e);
                    self.insert_record(rec);
                    let pending =
                        super::registry::Pending::new(client.clone(), header.clone(), channel, now);
                    self.registry.add_pending(e, header.msg_id.clone(), pending);
                    actions.push(Action::ToEngine {
                        channel,
                        uuid,
                        frames: build(&self.session).into_frames(),
                    });
                }
            }
            out.resubmitted.insert(old.clone(), new_id);
        }
        if !problems.is_empty() {
            out.status = Status::Error;
            out.evalue = Some(problems.join("; "));
        }
        self.schedule_waiting(now, actions);
        out
    }

    fn record_of_resubmit(
        &self,
        old: &TaskRecord,
        header: &Header,
        client: &[u8],
        now: f64,
    ) -> TaskRecord {
        let mut rec = old.clone();
        rec.msg_id = header.msg_id.clone();
        rec.engine = None;
        rec.client = String::from_utf8_lossy(client).into_owned();
        rec.submitted = now;
        rec.status = RecordStatus::Pending;
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
}

/// An error answer to a query of type `request_type`, in the shape its
/// reply has: a `db_reply` and a `result_reply` say it in their own
/// `status` and `evalue` (their other fields empty), any other reply as a
/// task reply of class `class`.
fn query_error(request_type: &str, class: ErrorClass, why: String) -> Content {
    match MessageType::parse(request_type) {
        Some(MessageType::DbRequest) => Content::DbReply(DbReply {
            status: Status::Error,
            evalue: Some(format!("{class}: {why}")),
            ..Default::default()
        }),
        Some(MessageType::ResultRequest) => Content::ResultReply(ResultReply {
            status: Status::Error,
            evalue: Some(format!("{class}: {why}")),
            ..Default::default()
        }),
        _ => Content::reply_to(request_type, TaskReply::error(class.as_str(), why)),
    }
}

/// A finished record as ipyparallel's `get_result` reads it from a result
/// reply; None without an engine's reply. Its times stay out: ipyparallel
/// parses them as ISO 8601 text, and records keep Unix seconds.
fn ipyparallel_entry(r: &TaskRecord) -> Option<Json> {
    let result = r.result.as_ref()?;
    let parse = |t: &str| serde_json::from_str::<Json>(t).unwrap_or(Json::Null);
    Some(json!({
        "header": parse(&r.request.header),
        "result_header": parse(&result.header),
        "result_content": parse(&result.content),
        "result_metadata": parse(&result.metadata),
        "io": {"stdout": r.stdout, "stderr": r.stderr},
    }))
}

/// One finished record for a result reply: its reply content and metadata,
/// and where its buffers start among the reply's buffers.
fn result_entry(r: &TaskRecord, buffers: &mut Vec<zmq::Message>) -> Json {
    let in_shared_memory = r.result.as_ref().is_some_and(|p| p.in_shared_memory);
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
    m.insert("status", json!(r.status.as_str()));
    m.insert("content", content);
    m.insert("metadata", metadata);
    m.insert("buffer_start", json!(count.0));
    m.insert("buffer_count", json!(count.1));
    m.insert("buffers_dropped", json!(dropped));
    if in_shared_memory {
        m.insert("in_shared_memory", json!(true));
    }
    json!(m)
}
