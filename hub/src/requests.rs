//! Requests from clients and replies from engines: forwarding, fan-out,
//! load balancing with dependencies and retries, records, and what happens
//! to the work of an engine that dies.

use crate::hub::{parse_ids, Hub};
use crate::records::{Parts, TaskRecord};
use crate::registry::{Channel, Pending};
use serde_json::{Map, Value as Json};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};
use zpar_protocol::{Content, EngineNotification, Header, RawMessage, ShutdownRequest, TaskReply};

/// A load-balanced task the hub holds until it can run.
pub(crate) struct QueuedTask {
    pub raw: RawMessage,
    pub header: Header,
    pub client: Vec<u8>,
    pub identities: Vec<Vec<u8>>,
    /// Run only after these succeeded.
    pub after: Vec<String>,
    /// Run where these ran.
    pub follow: Vec<String>,
    /// Engines it may run on (None: any).
    pub allowed: Option<Vec<u32>>,
    /// Re-runs left if its engine dies.
    pub retries: u32,
}

/// Whether a task's dependencies let it run now.
enum Readiness {
    Ready(Option<Vec<u32>>),
    Wait,
    Impossible(String, &'static str),
}

/// A message's frames as a record keeps them; its buffers only if `small`.
fn parts_of(raw: &RawMessage, small: bool) -> Parts {
    Parts {
        header: text_of(&raw.header),
        metadata: text_of(&raw.metadata),
        content: text_of(&raw.content),
        buffers: if small {
            raw.buffers.iter().map(|b| b.to_vec()).collect()
        } else {
            Vec::new()
        },
        buffers_dropped: !small,
    }
}

pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn json_of(bytes: &[u8]) -> Json {
    serde_json::from_slice(bytes).unwrap_or(Json::Null)
}

/// A JSON frame's text (verified frames are UTF-8 JSON; anything else is
/// kept lossily rather than failing the record).
fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Mux => "mux",
        Channel::Task => "task",
        Channel::Control => "control",
    }
}

impl Hub {
    /// The request as a record (buffers copied only if small enough).
    fn record_of(
        &self,
        raw: &RawMessage,
        header: &Header,
        client: &[u8],
        channel: Channel,
        engine: Option<u32>,
    ) -> TaskRecord {
        let small = raw.buffers.iter().map(|b| b.len()).sum::<usize>()
            <= self
                .config
                .max_buffer(matches!(self.config.db, crate::hub::Db::Sqlite(_)));
        TaskRecord {
            msg_id: header.msg_id.clone(),
            engine,
            client: String::from_utf8_lossy(client).into_owned(),
            msg_type: header.msg_type.clone(),
            channel: channel_name(channel).into(),
            submitted: now_secs(),
            started: None,
            completed: None,
            received: None,
            status: "pending".into(),
            request: parts_of(raw, small),
            result: None,
            stdout: String::new(),
            stderr: String::new(),
            ename: None,
            evalue: None,
        }
    }

    pub(crate) fn record(&mut self, rec: TaskRecord) {
        if let Err(e) = self.records.insert(rec) {
            warn!(error = %e, "task record not written");
        }
    }

    pub(crate) fn on_client_request(&mut self, channel: Channel, frames: Vec<zmq::Message>) {
        let raw = match RawMessage::from_frames(frames, &self.session.limits) {
            Ok(r) => r,
            Err(e) => return warn!(error = %e, ?channel, "dropped a malformed client message"),
        };
        if let Err(e) = self.session.verify(&raw) {
            return warn!(error = %e, ?channel, "dropped a client message");
        }
        let (header, metadata) = match (raw.header(), raw.metadata()) {
            (Ok(h), Ok(m)) => (h, m),
            (Err(e), _) | (_, Err(e)) => {
                return warn!(error = %e, ?channel, "dropped a client message")
            }
        };
        let identities: Vec<Vec<u8>> = raw.identities.iter().map(|f| f.to_vec()).collect();
        let Some(client) = identities.first().cloned() else {
            return warn!("dropped a client message without identity");
        };
        if channel == Channel::Control && header.msg_type == "shutdown_request" {
            let hub_too = serde_json::from_slice::<ShutdownRequest>(&raw.content)
                .map(|r| r.hub)
                .unwrap_or(false)
                || metadata.get("hub").and_then(Json::as_bool).unwrap_or(false);
            if hub_too {
                return self.shutdown_cluster(identities, header);
            }
        }
        if channel == Channel::Task {
            let ids = |k: &str| -> Vec<String> {
                metadata
                    .get(k)
                    .and_then(Json::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let task = QueuedTask {
                after: ids("after"),
                follow: ids("follow"),
                allowed: metadata.get("targets").and_then(parse_ids),
                retries: metadata.get("retries").and_then(Json::as_u64).unwrap_or(0) as u32,
                header: header.clone(),
                client: client.clone(),
                identities,
                raw,
            };
            let rec = self.record_of(&task.raw, &header, &client, channel, None);
            self.record(rec);
            self.waiting.push_back(task);
            return self.schedule_waiting();
        }
        let targets = match metadata.get("targets").and_then(parse_ids) {
            Some(t) if !t.is_empty() => t,
            _ => {
                return self.reject(
                    channel,
                    identities,
                    &header,
                    None,
                    "NoTargets",
                    "the request names no target engines (metadata \"targets\")".into(),
                )
            }
        };
        let mut live = Vec::with_capacity(targets.len());
        for id in targets {
            match self.registry.get(id) {
                Some(e) => live.push((id, e.uuid.clone())),
                None => self.reject(
                    channel,
                    identities.clone(),
                    &header,
                    Some(id),
                    "UnknownEngine",
                    format!("engine {id} is not registered (it died, left or never existed)"),
                ),
            }
        }
        let n = live.len();
        let mut raw = Some(raw);
        for (i, (id, uuid)) in live.into_iter().enumerate() {
            let rec = self.record_of(
                raw.as_ref().expect("still here"),
                &header,
                &client,
                channel,
                Some(id),
            );
            self.record(rec);
            let copy = if i + 1 == n {
                raw.take().expect("last use")
            } else {
                raw.as_ref().expect("still here").duplicate()
            };
            self.dispatch(id, &uuid, &client, &header, channel, copy.into_frames());
        }
    }

    /// Notes that `engine` owes `header`'s reply to `client`, and sends it
    /// the request.
    pub(crate) fn dispatch(
        &mut self,
        engine: u32,
        uuid: &[u8],
        client: &[u8],
        header: &Header,
        channel: Channel,
        frames: Vec<zmq::Message>,
    ) {
        self.registry.add_pending(
            engine,
            header.msg_id.clone(),
            Pending {
                client: client.to_vec(),
                header: header.clone(),
                channel,
                received: Instant::now(),
                retry: None,
            },
        );
        self.route(channel, uuid, frames);
    }

    /// The finished records of a dependency, or why the task must wait or
    /// cannot run. `kind` is `after` or `follow`, for messages.
    fn dependency(&self, id: &str, kind: &str) -> Result<Vec<TaskRecord>, Readiness> {
        let recs = self.records.get(id).map_err(|e| {
            Readiness::Impossible(format!("cannot read records: {e}"), "ImpossibleDependency")
        })?;
        if recs.is_empty() {
            return Err(Readiness::Impossible(
                format!("`{kind}` names {id}, which the hub has no record of"),
                "ImpossibleDependency",
            ));
        }
        if recs.iter().any(|r| r.status == "pending") {
            return Err(Readiness::Wait);
        }
        Ok(recs)
    }

    /// Where a task may run, judged by its dependencies' records.
    fn readiness(&self, task: &QueuedTask) -> Readiness {
        for id in &task.after {
            let recs = match self.dependency(id, "after") {
                Ok(r) => r,
                Err(why) => return why,
            };
            if let Some(bad) = recs.iter().find(|r| r.status != "ok") {
                return Readiness::Impossible(
                    format!("dependency {id} did not succeed (it ended {})", bad.status),
                    "DependencyFailed",
                );
            }
        }
        let mut allowed = task.allowed.clone();
        for id in &task.follow {
            let recs = match self.dependency(id, "follow") {
                Ok(r) => r,
                Err(why) => return why,
            };
            let engines: Vec<u32> = recs.iter().filter_map(|r| r.engine).collect();
            allowed = Some(match allowed {
                None => engines,
                Some(a) => a.into_iter().filter(|e| engines.contains(e)).collect(),
            });
        }
        if let Some(a) = &allowed {
            let live: Vec<u32> = a
                .iter()
                .copied()
                .filter(|e| self.registry.get(*e).is_some())
                .collect();
            if live.is_empty() && (!task.follow.is_empty() || task.allowed.is_some()) {
                let why = if task.follow.is_empty() {
                    format!("none of the engines {a:?} is registered")
                } else {
                    format!(
                        "no live engine ran all of {:?} (candidates {a:?})",
                        task.follow
                    )
                };
                return Readiness::Impossible(
                    why,
                    if task.follow.is_empty() {
                        "NoEngines"
                    } else {
                        "ImpossibleDependency"
                    },
                );
            }
            return Readiness::Ready(Some(live));
        }
        Readiness::Ready(None)
    }

    /// Assigns every waiting task that can run now; fails impossible ones.
    pub(crate) fn schedule_waiting(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() {
            match self.readiness(&self.waiting[i]) {
                Readiness::Wait => i += 1,
                Readiness::Impossible(why, ename) => {
                    let t = self.waiting.remove(i).expect("in range");
                    self.fail_task(&t, ename, why);
                }
                Readiness::Ready(allowed) => {
                    if self.registry.ids().is_empty() {
                        // No engine yet: keep it; engines may come.
                        i += 1;
                        continue;
                    }
                    let Some(engine) = self.scheduler.pick(&mut self.registry, allowed.as_deref())
                    else {
                        i += 1;
                        continue;
                    };
                    let t = self.waiting.remove(i).expect("in range");
                    self.assign(t, engine);
                }
            }
        }
    }

    fn fail_task(&mut self, t: &QueuedTask, ename: &str, why: String) {
        let _ = self.records.update(&t.header.msg_id, None, |r| {
            r.status = "error".into();
            r.ename = Some(ename.into());
            r.evalue = Some(why.clone());
            r.received = Some(now_secs());
        });
        self.reject(
            Channel::Task,
            t.identities.clone(),
            &t.header,
            None,
            ename,
            why,
        );
    }

    fn assign(&mut self, t: QueuedTask, engine: u32) {
        let Some(uuid) = self.registry.get(engine).map(|e| e.uuid.clone()) else {
            return;
        };
        let _ = self
            .records
            .update(&t.header.msg_id, None, |r| r.engine = Some(engine));
        let retry = if t.retries > 0 {
            Some(Box::new(QueuedTask {
                raw: t.raw.duplicate(),
                header: t.header.clone(),
                client: t.client.clone(),
                identities: t.identities.clone(),
                after: Vec::new(),
                follow: Vec::new(),
                allowed: t.allowed.clone(),
                retries: t.retries - 1,
            }))
        } else {
            None
        };
        self.registry.add_pending(
            engine,
            t.header.msg_id.clone(),
            Pending {
                client: t.client,
                header: t.header,
                channel: Channel::Task,
                received: Instant::now(),
                retry,
            },
        );
        self.route(Channel::Task, &uuid, t.raw.into_frames());
    }

    pub(crate) fn on_engine_reply(&mut self, channel: Channel, mut frames: Vec<zmq::Message>) {
        if frames.is_empty() {
            return;
        }
        let uuid = frames.remove(0);
        let Some(engine) = self.registry.id_of(&uuid) else {
            return debug!(?channel, "dropped a reply from an unregistered engine");
        };
        let raw = match RawMessage::from_frames(frames, &self.session.limits) {
            Ok(r) => r,
            Err(e) => return warn!(error = %e, engine, "dropped a malformed engine message"),
        };
        if let Err(e) = self.session.verify(&raw) {
            return warn!(error = %e, engine, "dropped an engine message");
        }
        let parent = match raw.parent_header() {
            Ok(Some(p)) => p,
            Ok(None) => return warn!(engine, "dropped an engine reply without parent"),
            Err(e) => return warn!(error = %e, engine, "dropped an engine message"),
        };
        let was_pending = self.registry.complete(engine, &parent.msg_id).is_some();
        if was_pending {
            self.record_reply(engine, &parent.msg_id, &raw);
        }
        if raw.identities.is_empty() {
            return; // an answer to the hub's own request
        }
        self.outbox.push((channel, raw.into_frames()));
        if channel == Channel::Task {
            self.schedule_waiting();
        }
    }

    fn record_reply(&mut self, engine: u32, msg_id: &str, raw: &RawMessage) {
        let metadata = json_of(&raw.metadata);
        let reply: TaskReply = serde_json::from_slice(&raw.content).unwrap_or_default();
        let small = raw.buffers.iter().map(|b| b.len()).sum::<usize>()
            <= self
                .config
                .max_buffer(matches!(self.config.db, crate::hub::Db::Sqlite(_)));
        let text = |k: &str| metadata.get(k).and_then(Json::as_str).map(str::to_string);
        let result = parts_of(raw, small);
        let status = serde_json::to_value(reply.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        let updated = self.records.update(msg_id, Some(engine), |r| {
            r.engine = Some(engine);
            r.status = status.unwrap_or_else(|| "ok".into());
            r.started = text("started");
            r.completed = text("completed");
            r.received = Some(now_secs());
            r.stdout = text("stdout").unwrap_or_default();
            r.stderr = text("stderr").unwrap_or_default();
            r.ename = reply.ename.clone();
            r.evalue = reply.evalue.clone();
            r.result = Some(result);
        });
        if let Err(e) = updated {
            warn!(error = %e, %msg_id, "task record not updated");
        }
    }

    /// An engine left or died: retry or fail what it owed, tell the clients.
    pub(crate) fn engine_gone(&mut self, id: u32, reason: &str) {
        let Some(entry) = self.registry.unregister(id) else {
            return;
        };
        let _ = self
            .sockets
            .hb_pipe
            .send_multipart([crate::heartbeat::FORGET, &entry.uuid[..]], 0);
        if reason == "unregistered" {
            info!(engine = id, "engine unregistered");
        } else {
            warn!(engine = id, pending = entry.pending.len(), %reason, "engine died");
        }
        for (msg_id, p) in entry.pending {
            if let Some(task) = p.retry {
                info!(engine = id, %msg_id, retries_left = task.retries, "re-running a task of a dead engine");
                let _ = self.records.update(&msg_id, Some(id), |r| r.engine = None);
                self.waiting.push_back(*task);
                continue;
            }
            let why = format!("engine {id} died before answering ({reason})");
            let _ = self.records.update(&msg_id, Some(id), |r| {
                r.status = "error".into();
                r.ename = Some("EngineDied".into());
                r.evalue = Some(why.clone());
                r.received = Some(now_secs());
            });
            if p.client.is_empty() {
                continue;
            }
            debug!(engine = id, %msg_id, "failing a request of a dead engine");
            self.reject(
                p.channel,
                vec![p.client],
                &p.header,
                Some(id),
                "EngineDied",
                why,
            );
        }
        self.notify(Content::UnregistrationNotification(EngineNotification {
            id,
            uuid: String::from_utf8_lossy(&entry.uuid).into_owned(),
            reason: Some(reason.to_string()),
        }));
        self.schedule_waiting();
    }
}

/// Metadata marking a hub-made error reply.
pub(crate) fn error_metadata(engine: Option<u32>) -> Map<String, Json> {
    let mut meta = Map::new();
    if let Some(id) = engine {
        meta.insert("engine".into(), serde_json::json!(id));
    }
    meta.insert("status".into(), serde_json::json!("error"));
    meta
}
