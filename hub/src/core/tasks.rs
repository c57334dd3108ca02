//! The load-balanced queue: when a waiting task may run (its `after` and
//! `follow` dependencies), where (the scheduler), and what becomes of an
//! engine's work when the engine is lost (retries elsewhere, or
//! `EngineDied` answered once).

use super::queued::QueuedTask;
use super::registry::Pending;
use super::{Action, HubCore, LossReason};
use crate::records::TaskRecord;
use tracing::{debug, info, warn};
use zpar_protocol::{
    Channel, Content, EngineNotification, ErrorClass, Message, MessageType, RawMessage,
    RecordStatus, ReplyMetadata, Status, TaskReply,
};

/// Whether a task's dependencies let it run now.
#[derive(Debug)]
enum Readiness {
    /// It may run, on these engines (None: any).
    Ready(Option<Vec<u32>>),
    /// A dependency is still pending.
    Wait,
    /// It can never run.
    Impossible(ErrorClass, String),
}

impl HubCore {
    /// The finished records of a dependency, or why the task must wait or
    /// cannot run. `kind` is `after` or `follow`, for messages.
    fn dependency(&self, task: &str, id: &str, kind: &str) -> Result<Vec<TaskRecord>, Readiness> {
        if id == task {
            return Err(Readiness::Impossible(
                ErrorClass::ImpossibleDependency,
                format!("`{kind}` names the task itself ({id}), which can never finish first"),
            ));
        }
        let recs = self.records.get(id).map_err(|e| {
            Readiness::Impossible(
                ErrorClass::ImpossibleDependency,
                format!("cannot read records: {e}"),
            )
        })?;
        if recs.is_empty() {
            return Err(Readiness::Impossible(
                ErrorClass::ImpossibleDependency,
                format!("`{kind}` names {id}, which the hub has no record of"),
            ));
        }
        if let Some(r) = recs.iter().find(|r| !r.finished() && self.lost(r)) {
            return Err(Readiness::Impossible(
                ErrorClass::ImpossibleDependency,
                format!(
                    "`{kind}` names {id}, whose record on engine {:?} is pending but which \
                     that engine does not owe any more: it can never finish",
                    r.engine
                ),
            ));
        }
        if recs.iter().any(|r| !r.finished()) {
            return Err(Readiness::Wait);
        }
        Ok(recs)
    }

    /// Whether a pending record belongs to a request nobody will answer:
    /// assigned to an engine that does not owe it. (An unassigned pending
    /// record is a task in the queue.)
    fn lost(&self, r: &TaskRecord) -> bool {
        r.engine.is_some_and(|e| {
            self.registry
                .get(e)
                .is_none_or(|entry| !entry.pending().contains_key(&r.msg_id))
        })
    }

    /// Where a task may run, judged by its dependencies' records.
    fn readiness(&self, task: &QueuedTask) -> Readiness {
        for id in &task.after {
            let recs = match self.dependency(&task.header.msg_id, id, "after") {
                Ok(r) => r,
                Err(why) => return why,
            };
            if let Some(bad) = recs
                .iter()
                .find(|r| r.status != RecordStatus::Done(Status::Ok))
            {
                return Readiness::Impossible(
                    ErrorClass::DependencyFailed,
                    format!("dependency {id} did not succeed (it ended {})", bad.status),
                );
            }
        }
        let mut allowed = task.allowed.clone();
        for id in &task.follow {
            let recs = match self.dependency(&task.header.msg_id, id, "follow") {
                Ok(r) => r,
                Err(why) => return why,
            };
            let engines: Vec<u32> = recs.iter().filter_map(|r| r.engine).collect();
            allowed = Some(match allowed {
                None => engines,
                Some(a) => a.into_iter().filter(|e| engines.contains(e)).collect(),
            });
        }
        let Some(candidates) = allowed else {
            return Readiness::Ready(None);
        };
        let live: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|e| self.registry.get(*e).is_some())
            .collect();
        if live.is_empty() {
            return Readiness::Impossible(
                if task.follow.is_empty() {
                    ErrorClass::NoEngines
                } else {
                    ErrorClass::ImpossibleDependency
                },
                if task.follow.is_empty() {
                    format!("none of the engines {candidates:?} is registered")
                } else {
                    format!(
                        "no live engine ran all of {:?} (candidates {candidates:?})",
                        task.follow
                    )
                },
            );
        }
        Readiness::Ready(Some(live))
    }

    /// Assigns every waiting task that can run now; fails impossible ones.
    pub(crate) fn schedule_waiting(&mut self, now: f64, out: &mut Vec<Action>) {
        let mut i = 0;
        while i < self.waiting.len() {
            match self.readiness(&self.waiting[i]) {
                Readiness::Wait => i += 1,
                Readiness::Impossible(class, why) => {
                    if let Some(t) = self.waiting.remove(i) {
                        self.fail_task(t, class, why, now);
                    }
                }
                Readiness::Ready(allowed) => {
                    // No engine (yet): keep it a while; engines may come.
                    let Some(engine) = self.scheduler.pick(&mut self.registry, allowed.as_deref())
                    else {
                        let limit = self.config.no_engine_limit.as_secs_f64();
                        let since = *self.waiting[i].no_engine_since.get_or_insert(now);
                        if now - since < limit {
                            i += 1;
                            continue;
                        }
                        if let Some(t) = self.waiting.remove(i) {
                            let why = format!(
                                "no engine was registered to run this task for {limit:.0} s \
                                 (none has started, or the last one died); start engines \
                                 (`zpar engine` or `zpar cluster`) and submit it again, or \
                                 give the hub a longer no-engine limit"
                            );
                            warn!(msg_id = %t.header.msg_id, "{why}");
                            self.fail_task(t, ErrorClass::NoEngines, why, now);
                        }
                        continue;
                    };
                    if let Some(t) = self.waiting.remove(i) {
                        self.assign(t, engine, now, out);
                    }
                }
            }
        }
    }

    /// Fails the tasks that waited too long with no engine to run them
    /// (on each tick; see [`super::CoreConfig::no_engine_limit`]).
    pub(crate) fn expire_engineless_tasks(&mut self, now: f64, out: &mut Vec<Action>) {
        let limit = self.config.no_engine_limit.as_secs_f64();
        let due = self
            .waiting
            .iter()
            .any(|t| t.no_engine_since.is_some_and(|since| now - since >= limit));
        if due {
            self.schedule_waiting(now, out);
        }
    }

    /// Answers a task that can never run.
    fn fail_task(&mut self, t: QueuedTask, class: ErrorClass, why: String, now: f64) {
        self.fail_record(&t.header.msg_id, None, &class, &why, now);
        self.reject(Channel::Task, t.identities, &t.header, None, class, why);
    }

    /// Sends a task to `engine`, keeping a copy if it may run again.
    fn assign(&mut self, t: QueuedTask, engine: u32, now: f64, out: &mut Vec<Action>) {
        let Some(uuid) = self.registry.get(engine).map(|e| e.uuid.clone()) else {
            return;
        };
        self.update_record(&t.header.msg_id, None, |r| r.engine = Some(engine));
        let mut t = t;
        if t.attempt > 0 {
            t.raw = self.signed_for_attempt(t.raw, t.attempt);
        }
        let retry = (t.retries > 0).then(|| Box::new(t.for_retry()));
        let pending = Pending {
            retry,
            ..Pending::new(t.client().to_vec(), t.header.clone(), Channel::Task, now)
        };
        self.registry
            .add_pending(engine, t.header.msg_id.clone(), pending);
        out.push(Action::ToEngine {
            channel: Channel::Task,
            uuid,
            frames: t.raw.into_frames(),
        });
    }

    /// A retried task as it goes out again: metadata `attempt` set to
    /// `attempt`, signed anew by the hub. The first attempt's frames carry
    /// the client's signature, and an engine that already saw them (it was
    /// lost, registered again and gets the task back) would drop them as a
    /// replay; the new metadata frame gives a new signature, while the
    /// msg id, and so the client's match of the reply, stays.
    fn signed_for_attempt(&self, mut raw: RawMessage, attempt: u32) -> RawMessage {
        let mut metadata = match raw.metadata() {
            Ok(m) => m,
            Err(e) => {
                // It was read when the task came, so this cannot happen.
                warn!(error = %zpar_protocol::error::Chain(&e), "a retried task's metadata is unreadable; sent as it came");
                return raw;
            }
        };
        metadata.insert("attempt".into(), serde_json::Value::from(attempt));
        match serde_json::to_vec(&metadata) {
            Ok(json) => raw.metadata = json.into(),
            Err(e) => warn!(error = %e, "retry metadata not encoded"),
        }
        raw.signature = self.session.sign(raw.signed_parts()).into_bytes().into();
        raw
    }

    /// Answers `ok` a shutdown request pending on engine `id`, which left
    /// in good order before its own reply was read.
    fn shut_down_as_asked(&mut self, id: u32, uuid: &[u8], msg_id: &str, p: Pending, now: f64) {
        self.update_record(msg_id, Some(id), |r| {
            r.status = RecordStatus::Done(Status::Ok);
            r.received = Some(now);
        });
        if p.client.is_empty() {
            return;
        }
        let reply = TaskReply {
            engine_id: Some(id),
            ..TaskReply::ok()
        };
        let metadata = ReplyMetadata {
            status: Some(Status::Ok),
            ..ReplyMetadata::naming(id, &String::from_utf8_lossy(uuid))
        };
        let msg = Message {
            identities: vec![p.client],
            header: self.session.header(MessageType::ShutdownReply.name()),
            parent_header: Some(p.header),
            metadata: metadata.to_map(),
            content: Content::ShutdownReply(reply),
            buffers: vec![],
        };
        self.send_to_client(p.channel, msg);
    }

    /// An engine left or died: retry or fail what it owed, tell the clients.
    pub(crate) fn engine_lost(
        &mut self,
        id: u32,
        reason: LossReason,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let Some(entry) = self.registry.unregister(id) else {
            return;
        };
        out.push(Action::Forget {
            uuid: entry.uuid.clone(),
        });
        self.close_streams_to(&entry.uuid);
        if reason.is_failure() {
            warn!(
                engine = id,
                pending = entry.pending().len(),
                reason = reason.describe(),
                "engine lost"
            );
        } else {
            info!(engine = id, "engine unregistered");
        }
        let uuid = entry.uuid.clone();
        // Oldest first, so retried tasks keep their order in the queue.
        let mut owed: Vec<(String, Pending)> = entry.into_pending().into_iter().collect();
        owed.sort_by(|a, b| a.1.received.total_cmp(&b.1.received));
        for (msg_id, p) in owed {
            if let Some(mut task) = p.retry {
                task.retries -= 1;
                task.attempt += 1;
                info!(engine = id, %msg_id, retries_left = task.retries, attempt = task.attempt,
                    "running a task of a lost engine again");
                self.update_record(&msg_id, Some(id), |r| r.engine = None);
                self.waiting.push_back(*task);
                continue;
            }
            // An engine told to shut down may leave (unregister) before its
            // reply, sent on another socket, is read: it did what was asked.
            if reason == LossReason::Unregistered
                && p.header.message_type() == Some(MessageType::ShutdownRequest)
            {
                self.shut_down_as_asked(id, &uuid, &msg_id, p, now);
                continue;
            }
            let why = format!("engine {id} died before answering ({})", reason.describe());
            self.fail_record(&msg_id, Some(id), &ErrorClass::EngineDied, &why, now);
            if p.client.is_empty() {
                continue; // the hub's own request
            }
            debug!(engine = id, %msg_id, "failing a request of a lost engine");
            self.reject(
                p.channel,
                vec![p.client],
                &p.header,
                Some(id),
                ErrorClass::EngineDied,
                why,
            );
        }
        self.notify(
            Content::UnregistrationNotification(EngineNotification {
                id,
                uuid: String::from_utf8_lossy(&uuid).into_owned(),
                reason: Some(reason.describe().to_string()),
            }),
            out,
        );
        self.schedule_waiting(now, out);
    }
}
