//! The run family — execute, apply, push and pull: answered `aborted` if a
//! client aborted it, its chunk stream received first if it announced one,
//! then started (`busy`, an execute's input, the run in the namespace) and
//! finished (its value or error on iopub, the reply, `idle`).

use super::{status_content, Action, Drain, EngineCore, Job, ReplyTo, RunOutcome, Running, Source};
use crate::namespace::ScriptError;
use crate::stop::StopReason;
use serde_json::Value as Json;
use std::time::{Duration, Instant};
use tracing::warn;
use zpar_protocol::stream::StreamError;
use zpar_protocol::{
    iso8601_now, Content, ErrorClass, ErrorContent, ExecuteInput, ExecuteResult, Message,
    MessageType, ReplyMetadata, RequestMetadata, Status, TaskReply,
};

/// Why an ipyparallel `apply_request` (pickled Python in its buffers) gets
/// an `Unsupported` error.
const PICKLED_PYTHON: &str = "zpar engines run Rhai and cannot load pickled Python: \
    ipyparallel's apply, push, pull and map send Python functions and objects as pickles. \
    Send Rhai code as a string instead, with execute() or %px";

impl EngineCore {
    /// A chunk of a stream refused, aborted or already over.
    pub(super) fn on_stray_chunk(&self, msg: &Message, index: u32) {
        let parent = msg.parent_header.as_ref().map(|p| p.msg_id.as_str());
        if !parent.is_some_and(|p| self.refused_streams.iter().any(|r| r == p)) {
            warn!(msg_id = ?parent, index, "dropped a chunk of no stream being received");
        }
    }

    /// Execute, apply, push or pull: run it, after its stream if it
    /// announced one; answer it aborted if a client aborted it.
    pub(super) fn on_run(&mut self, source: Source, msg: Message, now: Instant) -> Vec<Action> {
        if self.aborted.remove(&msg.header.msg_id) {
            return vec![self.reply_aborted(source, &msg)];
        }
        let limits = RequestMetadata::from_map(&msg.metadata).unwrap_or_default();
        let job = Job {
            source,
            request: msg,
            limits,
        };
        match job.limits.stream_frames {
            Some(chunks) if !source.is_kernel() => vec![Action::ReceiveStream {
                job: Box::new(job),
                chunks,
            }],
            _ => self.start(job, now),
        }
    }

    pub(super) fn on_stream_received(
        &mut self,
        job: Box<Job>,
        buffers: Result<Vec<zmq::Message>, Box<StreamError>>,
        now: Instant,
    ) -> Vec<Action> {
        match buffers {
            Ok(buffers) => {
                let mut job = *job;
                job.request.buffers = buffers;
                self.start(job, now)
            }
            Err(why) => {
                warn!(engine = self.engine_id, msg_id = %job.request.header.msg_id, %why, "refused a chunk stream");
                self.remember_refused(&job.request.header.msg_id);
                match *why {
                    // Chunks that stopped coming were lost on the way (a
                    // sender or a relaying engine died, a link was cut):
                    // nothing was wrong with the request.
                    StreamError::Truncated { .. } | StreamError::RelayStalled { .. } => {
                        let what = &job.request.header.msg_type;
                        let mut reply = TaskReply::error(
                            ErrorClass::Lost.as_str(),
                            format!(
                                "engine {} did not get the whole value of this {what}: {why}",
                                self.engine_id
                            ),
                        );
                        reply.engine_id = Some(self.engine_id);
                        let content = Content::reply_to(what, reply);
                        vec![self.reply(job.source, &job.request, content)]
                    }
                    _ => vec![self.reply_bad(job.source, &job.request, &why.to_string())],
                }
            }
        }
    }

    /// Starts a run: `busy`, an execute's input, then the run itself; a
    /// request that cannot run is answered at once, between its own
    /// `busy` and `idle`.
    fn start(&mut self, job: Job, now: Instant) -> Vec<Action> {
        let from_kernel = job.source.is_kernel();
        let header = job.request.header.clone();
        let busy = self.status(&header, "busy");
        let (silent, stop_on_error) = match &job.request.content {
            Content::ExecuteRequest(r) => (r.silent, from_kernel && r.stop_on_error),
            _ => (false, false),
        };
        // A request's own limit wins; 0 there means "no limit". Checked
        // when the request was decoded (`inbound`).
        let op_limit = match job.limits.max_operations {
            Some(0) => None,
            Some(n) => Some(n),
            None => self.default_op_limit,
        };
        let deadline = job
            .limits
            .timeout
            .filter(|t| *t > 0.0)
            .map(|t| (now + Duration::from_secs_f64(t), t));
        self.running = Some(Running {
            to: ReplyTo::of(job.source, &job.request),
            limits: job.limits.clone(),
            silent,
            stop_on_error,
            op_limit,
            deadline,
            started: iso8601_now(),
            stop: None,
        });
        let mut actions = vec![busy];
        let refusal = match &job.request.content {
            Content::ExecuteRequest(r) => {
                // A kernel's silent cell and one kept out of history do not
                // count; a hub's execute always does.
                if !from_kernel || (!r.silent && r.store_history) {
                    self.execution_count += 1;
                }
                // As Jupyter's kernels do, a silent execute is not echoed
                // (zpar's clients send every execute silent: one message
                // less a request).
                if !r.silent {
                    actions.push(Action::Publish {
                        parent: Some(header),
                        content: Box::new(Content::ExecuteInput(ExecuteInput {
                            code: r.code.clone(),
                            execution_count: self.execution_count,
                        })),
                    });
                }
                None
            }
            Content::ApplyRequest(_) | Content::PushRequest(_) | Content::PullRequest(_) => None,
            // ipyparallel's apply (and its push, pull and map, which are
            // applies) carries pickled Python in its buffers (`inbound`).
            Content::Unknown { .. }
                if job.request.header.message_type() == Some(MessageType::ApplyRequest) =>
            {
                Some(ScriptError::new(
                    ErrorClass::Unsupported.as_str(),
                    PICKLED_PYTHON,
                ))
            }
            other => Some(ScriptError::new(
                ErrorClass::UnknownMessageType.as_str(),
                format!("{} is not a request an engine serves", other.msg_type()),
            )),
        };
        match refusal {
            None => actions.push(Action::Run(Box::new(job))),
            Some(e) => actions.extend(self.on_ran(RunOutcome::failed(e))),
        }
        actions
    }

    /// The run ended: its value or error on iopub, its reply, `idle`; the
    /// clears that waited; and after a failed cell with `stop_on_error`,
    /// the cells waiting are aborted.
    pub(super) fn on_ran(&mut self, outcome: RunOutcome) -> Vec<Action> {
        let Some(run) = self.running.take() else {
            warn!(engine = self.engine_id, "a run ended, but none was running");
            return Vec::new();
        };
        let from_kernel = run.to.source.is_kernel();
        let parent = Some(run.to.header.clone());
        let is_execute = run.to.header.message_type() == Some(MessageType::ExecuteRequest);
        let mut actions = Vec::new();
        let mut buffers = outcome.buffers;
        let max_buffers = zpar_protocol::Limits::default().max_buffers();
        let value = match outcome.value {
            // A reply of more buffers than a message holds would be dropped
            // by the hub: it fails here, saying what to do instead.
            Ok(_) if buffers.len() > max_buffers => Err(ScriptError::new(
                "NotTransferable",
                format!(
                    "the result has {} buffers, more than the {max_buffers} one message can carry: \
                     return fewer, larger values (one array rather than a list of arrays), \
                     or pull the values in parts",
                    buffers.len()
                ),
            )),
            value => value,
        };
        // Stopped by an abort: answered `aborted`, as a request aborted
        // before it ran is (a run that finished first keeps its result).
        if value.is_err() && matches!(run.stop, Some(StopReason::Aborted)) {
            let r = TaskReply {
                status: Status::Aborted,
                engine_id: Some(self.engine_id),
                ..TaskReply::default()
            };
            let content = Content::reply_to(&run.to.header.msg_type, r);
            let metadata = self.metadata_for(&content);
            actions.push(Action::reply(run.to, content, metadata, Vec::new()));
            actions.push(Action::Publish {
                parent,
                content: Box::new(status_content("idle")),
            });
            for to in std::mem::take(&mut self.deferred_clears) {
                actions.extend(self.clear(to));
            }
            return actions;
        }
        let failed = value.is_err();
        let mut reply = match value {
            Ok(result) => {
                if let Some(shown) = outcome.shown.filter(|_| is_execute && !run.silent) {
                    let mut data = std::collections::BTreeMap::new();
                    data.insert("text/plain".to_string(), Json::String(shown));
                    actions.push(Action::Publish {
                        parent: parent.clone(),
                        content: Box::new(Content::ExecuteResult(ExecuteResult {
                            execution_count: self.execution_count,
                            data,
                            metadata: Default::default(),
                        })),
                    });
                }
                TaskReply {
                    result: result.filter(|_| !from_kernel),
                    ..TaskReply::default()
                }
            }
            Err(e) => {
                buffers.clear();
                let e = explain_missing(e, self.engine_id, &self.natives);
                let mut r = TaskReply::error_with_traceback(&e.ename, e.message.clone());
                if let (Some(l), Some(c)) = (e.line, e.column) {
                    r.traceback.push(format!("  at line {l}, column {c}"));
                }
                r.line = e.line;
                r.column = e.column;
                // ipyparallel's shape; with it, its client waits for our
                // `idle`, which follows the reply.
                r.engine_info = Some(serde_json::json!({
                    "engine_uuid": self.uuid,
                    "engine_id": self.engine_id,
                    "method": run.to.header.msg_type.trim_end_matches("_request"),
                }));
                if is_execute {
                    actions.push(Action::Publish {
                        parent: parent.clone(),
                        content: Box::new(Content::Error(ErrorContent {
                            ename: e.ename.clone(),
                            evalue: e.message.clone(),
                            traceback: r.traceback.clone(),
                        })),
                    });
                }
                r
            }
        };
        reply.engine_id = Some(self.engine_id);
        reply.execution_count = Some(self.execution_count);
        let metadata = ReplyMetadata {
            engine: Some(self.engine_id),
            engine_uuid: Some(self.uuid.clone()),
            status: Some(reply.status),
            started: Some(run.started),
            completed: Some(iso8601_now()),
            follow: run.limits.follow,
            after: run.limits.after,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            stream_frames: None,
        }
        .to_map();
        if from_kernel {
            buffers.clear();
        }
        let content = Content::reply_to(&run.to.header.msg_type, reply);
        actions.push(Action::reply(run.to, content, metadata, buffers));
        actions.push(Action::Publish {
            parent,
            content: Box::new(status_content("idle")),
        });
        for to in std::mem::take(&mut self.deferred_clears) {
            actions.extend(self.clear(to));
        }
        if failed && run.stop_on_error {
            actions.push(Action::Drain {
                sources: vec![Source::KernelShell],
                drain: Drain::AbortCells,
            });
        }
        actions
    }
}

/// A call of a function the engine lacks, explained: which function, what
/// natives this engine has, and how engines get a program's own natives.
/// Other errors pass unchanged.
fn explain_missing(mut e: ScriptError, engine_id: u32, natives: &[String]) -> ScriptError {
    let Some(call) = e.missing_function.as_deref() else {
        return e;
    };
    let name = call.split([' ', '(']).next().unwrap_or(call).to_string();
    if call.contains("(array") && crate::arrays::NUMERIC_METHODS.contains(&name.as_str()) {
        // A numeric toolkit method on a plain array.
        e.message = format!(
            "engine {engine_id} has no function {call}: plain arrays of numbers take sum, mean, \
             min, max, argmin, argmax, dot and norm; for `{name}` make it a numeric array first: \
             f64_array(x) or i64_array(x)"
        );
        return e;
    }
    let have = if natives.is_empty() {
        "it is a plain engine with no natives of its own".to_string()
    } else {
        format!("its own natives are {}", natives.join(", "))
    };
    e.message = format!(
        "engine {engine_id} has no function {call}: `{name}` is neither defined in its namespace nor a native function of its program ({have}); \
         start engines from a program that registers it (zpar::serve_engines_with, LocalCluster::builder().engine_program(PATH), zpar cluster start --engine-program PATH)"
    );
    e
}
