//! Control — the hub's (interrupt, abort, clear, shutdown, bind_kernel) and
//! a kernel's (interrupt, shutdown) — the kernel's shell queries, and the
//! messages read at once by a drain.

use super::{Action, Drain, EngineCore, ReplyTo, Role, Source};
use crate::inbound::Inbound;
use crate::stop::{Interrupter, StopReason};
use std::time::Instant;
use tracing::{info, warn};
use zpar_protocol::{Content, ErrorClass, Message, Status, TaskReply, Value};

impl EngineCore {
    pub(super) fn on_interrupt(&mut self, source: Source, msg: &Message) -> Vec<Action> {
        let by = match source {
            Source::Control => Some(Interrupter::Client),
            Source::KernelControl => Some(Interrupter::KernelClient),
            // On shell (Jupyter allows it) it comes between cells.
            _ => None,
        };
        if let (Some(r), Some(by)) = (&mut self.running, by) {
            r.stop = Some(StopReason::Interrupted(by));
        }
        vec![self.reply(source, msg, Content::InterruptReply(TaskReply::ok()))]
    }

    /// The hub's shutdown stops the engine. A kernel's stops a standalone
    /// kernel; a bound one stops serving as a kernel and stays in its
    /// cluster (a front end leaving must not take a cluster's engine).
    pub(super) fn on_shutdown(&mut self, source: Source, msg: &Message) -> Vec<Action> {
        let Content::ShutdownRequest(r) = &msg.content else {
            return Vec::new();
        };
        if source == Source::Control {
            info!(engine = self.engine_id, "shutdown requested");
            self.stop_running(StopReason::EngineShutdown);
            return vec![self.reply(source, msg, Content::ShutdownReply(TaskReply::ok()))];
        }
        let reply = TaskReply {
            restart: Some(r.restart),
            ..TaskReply::ok()
        };
        let mut actions = vec![self.reply(source, msg, Content::ShutdownReply(reply))];
        match self.role {
            Role::Standalone => {
                info!("the kernel's client asked it to shut down");
                self.stop_running(StopReason::KernelShutdown);
            }
            Role::Cluster => {
                info!(engine = self.engine_id, "the kernel's client asked it to shut down: the engine stops serving as a kernel and stays in its cluster");
                actions.push(Action::UnbindKernel);
            }
        }
        actions
    }

    fn stop_running(&mut self, reason: StopReason) {
        self.shutdown = true;
        if let Some(r) = &mut self.running {
            r.stop = Some(reason);
        }
    }

    /// Aborts the listed requests when they arrive, or everything waiting
    /// on mux and task now; with `running`, stops the running request too
    /// if it is one of them (it is answered `aborted` when it stops).
    pub(super) fn on_abort(&mut self, msg: &Message) -> Vec<Action> {
        let Content::AbortRequest(r) = &msg.content else {
            return Vec::new();
        };
        if let (true, Some(run)) = (r.running, &mut self.running) {
            let listed = r
                .msg_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&run.to.header.msg_id));
            // A kernel's cell is not the hub's to abort, nor is a stop
            // already under way replaced.
            if listed && !run.to.source.is_kernel() && run.stop.is_none() {
                run.stop = Some(StopReason::Aborted);
            }
        }
        let mut actions = Vec::new();
        match &r.msg_ids {
            Some(ids) => self.remember_aborted(ids),
            None => actions.push(Action::Drain {
                sources: vec![Source::Mux, Source::Task],
                drain: Drain::AbortAll,
            }),
        }
        actions.push(self.reply(Source::Control, msg, Content::AbortReply(TaskReply::ok())));
        actions
    }

    /// Clears now, or after the running request.
    pub(super) fn on_clear(&mut self, msg: &Message) -> Vec<Action> {
        let to = ReplyTo::of(Source::Control, msg);
        if self.running.is_some() {
            self.deferred_clears.push(to);
            return Vec::new();
        }
        self.clear(to)
    }

    pub(super) fn clear(&self, to: ReplyTo) -> Vec<Action> {
        vec![
            Action::Clear,
            Action::reply(
                to,
                Content::ClearReply(TaskReply::ok()),
                self.metadata_for(&Content::ClearReply(TaskReply::ok())),
                Vec::new(),
            ),
        ]
    }

    pub(super) fn on_kernel_bound(
        &mut self,
        to: ReplyTo,
        binding: Result<Value, String>,
    ) -> Vec<Action> {
        let mut reply = match binding {
            Ok(binding) => TaskReply::with_result(binding.encode_into(&mut Vec::new())),
            Err(why) => {
                warn!(engine = self.engine_id, error = %why, "cannot serve as a kernel");
                TaskReply::error(ErrorClass::KernelBindFailed.as_str(), why)
            }
        };
        reply.engine_id = Some(self.engine_id);
        let content = Content::BindKernelReply(reply);
        let metadata = self.metadata_for(&content);
        vec![Action::reply(to, content, metadata, Vec::new())]
    }

    /// A shell request that runs no code, answered from the namespace
    /// between `busy` and `idle`.
    pub(super) fn on_kernel_query(&mut self, msg: Message) -> Vec<Action> {
        let to = ReplyTo::of(Source::KernelShell, &msg);
        let header = msg.header.clone();
        vec![
            self.status(&header, "busy"),
            Action::Answer {
                to,
                metadata: self.basic_metadata(),
                request: Box::new(msg),
            },
            self.status(&header, "idle"),
        ]
    }

    pub(super) fn on_drained(
        &mut self,
        source: Source,
        inbound: Inbound,
        drain: Drain,
        now: Instant,
    ) -> Vec<Action> {
        let msg = match inbound {
            Inbound::Request(msg) => msg,
            other => return self.on_arrived(source, other, now),
        };
        match (drain, &msg.content) {
            // The hub's question is answered, never aborted.
            (_, Content::RecallRequest(_)) => self.on_request(source, msg, now),
            // A chunk of a stream being aborted with its head.
            (Drain::AbortAll, Content::StreamChunk(_)) => Vec::new(),
            (Drain::AbortAll, _) => {
                if msg.metadata.contains_key("stream_frames") {
                    self.remember_refused(&msg.header.msg_id);
                }
                vec![self.reply_aborted(source, &msg)]
            }
            (Drain::AbortCells, Content::ExecuteRequest(_)) => {
                let reply = TaskReply {
                    status: Status::Aborted,
                    execution_count: Some(self.execution_count),
                    ..TaskReply::default()
                };
                vec![
                    self.status(&msg.header, "busy"),
                    self.reply(source, &msg, Content::ExecuteReply(reply)),
                    self.status(&msg.header, "idle"),
                ]
            }
            (Drain::AbortCells, _) => self.on_request(source, msg, now),
        }
    }
}
