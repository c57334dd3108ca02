//! The engine's sockets and per-request state, shared by the request loop
//! and the script engine's callbacks (`print`, progress): output streams,
//! replies, and control requests — the hub's and the kernel's — served even
//! while a script runs.

use crate::inbound::{bad_request_reply, decode_request, Inbound};
use crate::kernel::{shell, Kernel, KernelChannel, KernelError, KernelHome};
use serde_json::{Map, Value as Json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tracing::{debug, info, warn};
use zpar_protocol::stream;
use zpar_protocol::{
    recv_frames, send_frames, Channel, Content, ErrorClass, Header, Message, ReplyMetadata,
    Session, Status, StatusContent, Stream, TaskReply,
};

/// How many script operations run between two looks at the control socket.
pub const CONTROL_CHECK_OPS: u64 = 1024;

/// Where a request came from, and so where its reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// One of the hub's channels.
    Hub(Channel),
    /// The kernel's shell or control socket.
    Kernel(KernelChannel),
}

/// The engine's DEALERs to the hub's engine-facing ROUTERs.
pub(crate) struct HubSockets {
    pub(crate) control: zmq::Socket,
    pub(crate) mux: zmq::Socket,
    pub(crate) task: zmq::Socket,
}

impl HubSockets {
    pub(crate) fn socket(&self, channel: Channel) -> &zmq::Socket {
        match channel {
            Channel::Control => &self.control,
            Channel::Mux => &self.mux,
            Channel::Task => &self.task,
        }
    }
}

/// The sockets and per-request state the script callbacks also reach.
pub(crate) struct Io {
    pub(crate) session: Session,
    pub(crate) engine_id: u32,
    /// The engine's uuid, its identity on the hub's sockets; ipyparallel
    /// reads it as reply metadata `engine`.
    pub(crate) uuid: String,
    /// None for a standalone kernel.
    pub(crate) hub: Option<HubSockets>,
    /// Connected to the hub's iopub, and bound for the kernel's when there
    /// is one.
    pub(crate) iopub: zmq::Socket,
    /// The kernel's sockets, while the engine serves as a Jupyter kernel.
    pub(crate) kernel: Option<Kernel>,
    /// Where to listen when asked to serve as a kernel (cluster engines).
    pub(crate) kernel_home: Option<KernelHome>,
    /// Set by SIGINT in a standalone kernel: stop the running cell.
    pub(crate) interrupt: Option<&'static AtomicBool>,
    /// The request being run, as parent of its output.
    pub(crate) parent: Option<Header>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Why the running script must stop, once something asked.
    pub(crate) stop_reason: Option<String>,
    pub(crate) op_limit: Option<u64>,
    /// When the running request must stop, and its timeout in seconds.
    pub(crate) deadline: Option<(Instant, f64)>,
    pub(crate) shutdown: bool,
    pub(crate) aborted: HashSet<String>,
    /// Control requests that need the namespace (clear), served after the
    /// running request.
    pub(crate) deferred: Vec<Message>,
    /// Requests that arrived while a chunk stream was being received,
    /// served next, in order.
    pub(crate) stashed: std::collections::VecDeque<(Channel, Vec<zmq::Message>)>,
    /// Streams refused lately: their remaining chunks are dropped quietly.
    pub(crate) refused_streams: std::collections::VecDeque<String>,
}

impl Io {
    pub(crate) fn publish(&mut self, content: Content) {
        let mut msg = Message::new(&self.session, content);
        msg.parent_header = self.parent.clone();
        msg.metadata = self.basic_metadata();
        let mut raw = self.session.encode(&msg);
        raw.identities = vec![zmq::Message::from(
            zpar_protocol::contract::iopub_topic(
                msg.parent_header.as_ref().map(|p| p.session.as_str()),
                self.engine_id,
                &msg.header.msg_type,
            )
            .as_bytes(),
        )];
        let frames = raw.into_frames();
        if let Some(own) = self.kernel.as_ref().and_then(|k| k.own_iopub.as_ref()) {
            let copy = frames.iter().map(|f| zmq::Message::from(&f[..])).collect();
            if let Err(e) = send_frames(own, copy, zmq::DONTWAIT) {
                debug!(error = %e, "kernel iopub message dropped");
            }
        }
        if let Err(e) = send_frames(&self.iopub, frames, zmq::DONTWAIT) {
            debug!(error = %e, "iopub message dropped");
        }
    }

    pub(crate) fn stream(&mut self, name: &str, text: &str) {
        let mut line = text.to_string();
        line.push('\n');
        if name == "stdout" {
            self.stdout.push_str(&line);
        } else {
            self.stderr.push_str(&line);
        }
        self.publish(Content::Stream(Stream {
            name: name.to_string(),
            text: line,
        }));
    }

    pub(crate) fn reply(
        &mut self,
        route: Route,
        request: &Message,
        content: Content,
        metadata: Map<String, Json>,
        buffers: Vec<zmq::Message>,
    ) {
        // Every reply's metadata has what ipyparallel reads: a reply made
        // outside a run (control, aborted, refused) gets its status and
        // time here.
        let mut metadata = metadata;
        if let Some(r) = content.task_reply() {
            metadata
                .entry("status")
                .or_insert_with(|| serde_json::json!(r.status));
        }
        metadata
            .entry("started")
            .or_insert_with(|| Json::String(zpar_protocol::iso8601_now()));
        let mut reply = request.reply(&self.session, content);
        reply.metadata = metadata;
        let sock = match (route, &self.hub, &self.kernel) {
            (Route::Hub(channel), Some(hub), _) => hub.socket(channel),
            (Route::Kernel(KernelChannel::Shell), _, Some(k)) => &k.shell,
            (Route::Kernel(KernelChannel::Control), _, Some(k)) => &k.control,
            _ => {
                // The kernel stopped (a shutdown_request) while its request ran.
                return debug!(?route, "reply dropped: its socket is closed");
            }
        };
        // A large result on a direct request goes as a chunk stream, chunks
        // first, so the hub passes each on while the next is sent
        // (`zpar_protocol::stream`).
        if matches!(route, Route::Hub(Channel::Mux)) && stream::worth_streaming(&buffers) {
            ReplyMetadata::mark_streamed(&mut reply.metadata, buffers.len() as u32);
            for chunk in
                stream::chunks_of(&self.session, &request.header, &reply.identities, buffers)
            {
                if let Err(e) = send_frames(sock, self.session.encode_owned(chunk).into_frames(), 0)
                {
                    warn!(error = %e, "result chunk not sent");
                }
            }
        } else {
            reply.buffers = buffers;
        }
        let raw = self.session.encode_owned(reply);
        if let Err(e) = send_frames(sock, raw.into_frames(), 0) {
            warn!(error = %e, "reply not sent");
        }
    }

    /// Answers a signed request the engine could not understand, so the
    /// hub does not keep it pending: an error reply of the matching type.
    pub(crate) fn reply_bad(&mut self, route: Route, request: &Message, why: &str) {
        warn!(
            engine = self.engine_id,
            msg_id = %request.header.msg_id,
            msg_type = %request.header.msg_type,
            %why,
            "answering a request the engine cannot understand"
        );
        let content = bad_request_reply(request, why, self.engine_id);
        let meta = self.basic_metadata();
        self.reply(route, request, content, meta, vec![]);
    }

    /// Reply metadata naming this engine, by id (zpar) and uuid
    /// (ipyparallel).
    pub(crate) fn basic_metadata(&self) -> Map<String, Json> {
        ReplyMetadata {
            engine: Some(self.engine_id),
            engine_uuid: Some(self.uuid.clone()),
            ..Default::default()
        }
        .to_map()
    }

    /// Publishes the engine's `busy` or `idle` (iopub `status`): Jupyter
    /// brackets every request with them, and ipyparallel's client waits
    /// for `idle` before it calls a request's output complete.
    pub(crate) fn publish_status(&mut self, state: &str) {
        self.publish(Content::Status(StatusContent {
            execution_state: state.to_string(),
        }));
    }

    /// Reads and serves everything waiting on the hub's control channel.
    /// Returns true if the running script must stop.
    pub(crate) fn serve_control(&mut self, running: bool) -> bool {
        const ROUTE: Route = Route::Hub(Channel::Control);
        while let Some(hub) = &self.hub {
            let frames = match recv_frames(&hub.control, zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    warn!(error = %e, "control socket failed");
                    break;
                }
            };
            let msg = match decode_request(&mut self.session, frames) {
                Inbound::Request(m) => m,
                Inbound::Bad { request, why } => {
                    self.reply_bad(ROUTE, &request, &why);
                    continue;
                }
                Inbound::Dropped(e) => {
                    warn!(error = %e, "dropped a bad control message");
                    continue;
                }
            };
            let meta = self.basic_metadata();
            match &msg.content {
                Content::InterruptRequest(_) => {
                    if running {
                        self.stop_reason = Some("Interrupted|interrupted by the client".into());
                    }
                    self.reply(
                        ROUTE,
                        &msg,
                        Content::InterruptReply(TaskReply::ok()),
                        meta,
                        vec![],
                    );
                }
                Content::AbortRequest(r) => {
                    match &r.msg_ids {
                        Some(ids) => self.aborted.extend(ids.iter().cloned()),
                        None => self.abort_queued(),
                    }
                    self.reply(
                        ROUTE,
                        &msg,
                        Content::AbortReply(TaskReply::ok()),
                        meta,
                        vec![],
                    );
                }
                Content::ShutdownRequest(_) => {
                    info!(engine = self.engine_id, "shutdown requested");
                    self.shutdown = true;
                    self.stop_reason = Some("Interrupted|the engine is shutting down".into());
                    self.reply(
                        ROUTE,
                        &msg,
                        Content::ShutdownReply(TaskReply::ok()),
                        meta,
                        vec![],
                    );
                }
                Content::ClearRequest(_) => self.deferred.push(msg),
                Content::BindKernelRequest(_) => {
                    let mut reply = match self.bind_kernel() {
                        Ok(binding) => {
                            let mut buffers = Vec::new();
                            TaskReply::with_result(binding.encode_into(&mut buffers))
                        }
                        Err(e) => {
                            warn!(engine = self.engine_id, error = %e, "cannot serve as a kernel");
                            TaskReply::error("KernelBindFailed", crate::error_line(&e))
                        }
                    };
                    reply.engine_id = Some(self.engine_id);
                    self.reply(ROUTE, &msg, Content::BindKernelReply(reply), meta, vec![]);
                }
                other => {
                    let reply_type = Content::reply_type_for(other.msg_type());
                    let err = TaskReply::error(
                        ErrorClass::UnknownMessageType.as_str(),
                        format!(
                            "{} is not a control request an engine serves",
                            other.msg_type()
                        ),
                    );
                    self.reply(
                        ROUTE,
                        &msg,
                        Content::task_reply_of(&reply_type, err),
                        meta,
                        vec![],
                    );
                }
            }
        }
        self.stop_reason.is_some()
    }

    /// Reads and serves everything waiting on the kernel's control socket
    /// (interrupt, shutdown, kernel_info). Returns true if the running
    /// script must stop.
    pub(crate) fn serve_kernel_control(&mut self, running: bool) -> bool {
        const ROUTE: Route = Route::Kernel(KernelChannel::Control);
        while let Some(kernel) = &self.kernel {
            let frames = match recv_frames(&kernel.control, zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    warn!(error = %e, "kernel control socket failed");
                    break;
                }
            };
            let msg = match decode_request(&mut self.session, frames) {
                Inbound::Request(m) => m,
                Inbound::Bad { request, why } => {
                    self.reply_bad(ROUTE, &request, &why);
                    continue;
                }
                Inbound::Dropped(e) => {
                    warn!(error = %e, "dropped a kernel control message");
                    continue;
                }
            };
            self.serve_kernel_control_request(ROUTE, msg, running);
        }
        self.stop_reason.is_some()
    }

    /// Serves one kernel control request (interrupt, shutdown and
    /// kernel_info; Jupyter also lets the first two come on shell).
    pub(crate) fn serve_kernel_control_request(
        &mut self,
        route: Route,
        msg: Message,
        running: bool,
    ) {
        let meta = self.basic_metadata();
        match &msg.content {
            Content::InterruptRequest(_) => {
                if running {
                    self.stop_reason =
                        Some("Interrupted|interrupted by the kernel's client".into());
                }
                self.reply(
                    route,
                    &msg,
                    Content::InterruptReply(TaskReply::ok()),
                    meta,
                    vec![],
                );
            }
            Content::ShutdownRequest(r) => {
                let reply = TaskReply {
                    restart: Some(r.restart),
                    ..TaskReply::ok()
                };
                self.reply(route, &msg, Content::ShutdownReply(reply), meta, vec![]);
                if self.kernel.as_ref().is_some_and(|k| k.standalone) {
                    info!("the kernel's client asked it to shut down");
                    self.shutdown = true;
                    self.stop_reason = Some("Interrupted|the kernel is shutting down".into());
                } else {
                    info!(engine = self.engine_id, "the kernel's client asked it to shut down: the engine stops serving as a kernel and stays in its cluster");
                    self.unbind_kernel();
                }
            }
            Content::KernelInfoRequest(_) => {
                let info = shell::kernel_info(self.hub.is_some().then_some(self.engine_id));
                self.reply(route, &msg, Content::KernelInfoReply(info), meta, vec![]);
            }
            _ => {
                let content = shell::unserved(&msg, "control");
                self.reply(route, &msg, content, meta, vec![]);
            }
        }
    }

    /// Starts serving as a Jupyter kernel (if not already): the binding a
    /// `bind_kernel_reply` carries.
    pub(crate) fn bind_kernel(&mut self) -> Result<zpar_protocol::Value, KernelError> {
        if let Some(k) = &self.kernel {
            return Ok(k.binding(self.engine_id));
        }
        let Some(home) = &self.kernel_home else {
            return Err(KernelError::NoHome);
        };
        let kernel = Kernel::bind(&home.ctx, &self.iopub, home.plan(self.engine_id))?;
        let binding = kernel.binding(self.engine_id);
        self.kernel = Some(kernel);
        Ok(binding)
    }

    /// Stops serving as a kernel: closes its sockets, removes its file.
    pub(crate) fn unbind_kernel(&mut self) {
        if let Some(k) = self.kernel.take() {
            k.unbind_iopub(&self.iopub);
        }
    }

    /// Answers every request already waiting on mux and task as aborted.
    pub(crate) fn abort_queued(&mut self) {
        for channel in [Channel::Mux, Channel::Task] {
            loop {
                let Some(hub) = &self.hub else { return };
                let Ok(frames) = recv_frames(hub.socket(channel), zmq::DONTWAIT) else {
                    break;
                };
                let route = Route::Hub(channel);
                match decode_request(&mut self.session, frames) {
                    Inbound::Request(m) => self.reply_aborted(route, &m),
                    Inbound::Bad { request, why } => self.reply_bad(route, &request, &why),
                    Inbound::Dropped(e) => warn!(error = %e, "dropped a bad queued message"),
                }
            }
        }
    }

    pub(crate) fn reply_aborted(&mut self, route: Route, msg: &Message) {
        let reply_type = Content::reply_type_for(&msg.header.msg_type);
        let r = TaskReply {
            status: Status::Aborted,
            engine_id: Some(self.engine_id),
            ..TaskReply::default()
        };
        let meta = self.basic_metadata();
        self.reply(
            route,
            msg,
            Content::task_reply_of(&reply_type, r),
            meta,
            vec![],
        );
    }

    /// Called by the script engine's progress callback.
    pub(crate) fn check_progress(&mut self, ops: u64) -> Option<String> {
        if let Some(limit) = self.op_limit {
            if ops > limit {
                return Some(format!(
                    "OperationLimit|the request exceeded its limit of {limit} operations"
                ));
            }
        }
        if ops.is_multiple_of(CONTROL_CHECK_OPS) {
            if let Some((d, secs)) = self.deadline {
                if Instant::now() >= d {
                    return Some(format!(
                        "Timeout|the request ran past its timeout of {secs} s"
                    ));
                }
            }
            let ready = |s: &zmq::Socket| matches!(s.poll(zmq::POLLIN, 0), Ok(n) if n > 0);
            if self.hub.as_ref().is_some_and(|h| ready(&h.control)) {
                self.serve_control(true);
            }
            if self.kernel.as_ref().is_some_and(|k| ready(&k.control)) {
                self.serve_kernel_control(true);
            }
            if self
                .interrupt
                .is_some_and(|f| f.swap(false, Ordering::Relaxed))
            {
                self.stop_reason = Some("Interrupted|interrupted (SIGINT)".into());
            }
        }
        self.stop_reason.clone()
    }
}
