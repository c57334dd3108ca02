//! The engine's logic as a state machine with no I/O, in the hub core's
//! shape.
//!
//! [`EngineCore::handle`] takes one [`Event`] — a message taken from one of
//! the engine's sockets and decoded, the end of a run, a stream received,
//! a kernel bound, SIGINT — and the current time, and returns the
//! [`Action`]s to perform, in order: replies, iopub messages, a request to
//! run in the namespace, a chunk stream to receive, the namespace to clear,
//! waiting messages to drain. The loop in `serve.rs` only receives frames,
//! decodes them (`inbound.rs`), calls `handle` and performs the actions;
//! nothing here touches a socket, a thread or the namespace.
//!
//! What the core decides:
//!
//! - **dispatch**: one `match` over the request and the [`Source`] it came
//!   from, one `on_*` per family: runs (execute, apply, push, pull), the
//!   hub's control (interrupt, abort, clear, shutdown, bind_kernel), the
//!   kernel's control and its shell queries;
//! - **which request runs, and how**: aborts by id or of everything
//!   waiting, chunk streams announced by a request and refused ones, the
//!   operation limit and timeout of the running request, the execution
//!   count (Jupyter's `silent` and `store_history` rules for a kernel's
//!   cells), `busy`/`idle` around every request;
//! - **why a running script stops** ([`StopReason`]): an interrupt, a
//!   shutdown, its limits — read from Rhai's progress callback through
//!   [`EngineCore::progress`];
//! - **replies built from their requests**: every reply names its request
//!   as parent and goes back to the socket it came from ([`ReplyTo`]);
//!   every validly signed request is answered, even one the engine does
//!   not serve.
//!
//! The dispatch and what every handler shares are here; the run family's
//! handlers are in `run.rs`, control's, the kernel's queries and drains in
//! `control.rs`, and the harness in `tests.rs`.
//!
//! One rule holds for the loop: while a request runs, the core asks for
//! nothing that needs the namespace (no [`Action::Run`], [`Action::Answer`],
//! [`Action::Clear`] or [`Action::ReceiveStream`]): control requests served
//! from the progress callback are answered at once, and a `clear` waits for
//! the run to end. The harness in `tests.rs` checks it after every event.

mod control;
mod recall;
mod run;
#[cfg(test)]
mod tests;

use crate::inbound::{bad_request_reply, Inbound};
use crate::kernel::shell::{kernel_info, unserved};
use crate::namespace::ScriptError;
use crate::stop::{Interrupter, StopReason};
use serde_json::{Map, Value as Json};
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::time::Instant;
use tracing::{debug, warn};
use zpar_protocol::error::Chain;
use zpar_protocol::kernel::CommClose;
use zpar_protocol::stream::StreamError;
use zpar_protocol::{
    Channel, Content, ErrorClass, Header, Message, ReplyMetadata, RequestMetadata, Status,
    StatusContent, TaskReply, Value,
};

/// How many script operations run between two looks at the control sockets.
pub const CONTROL_CHECK_OPS: u64 = 1024;

/// How many refused streams' ids are kept, to drop their chunks quietly.
const REFUSED_STREAMS: usize = 64;

/// The socket a message came from, and so where its reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// The hub's control channel.
    Control,
    /// The hub's mux channel (direct requests).
    Mux,
    /// The hub's task channel (load-balanced requests).
    Task,
    /// The kernel's shell socket.
    KernelShell,
    /// The kernel's control socket.
    KernelControl,
}

impl Source {
    /// The hub channel of a hub source.
    pub(crate) fn hub_channel(self) -> Option<Channel> {
        match self {
            Source::Control => Some(Channel::Control),
            Source::Mux => Some(Channel::Mux),
            Source::Task => Some(Channel::Task),
            Source::KernelShell | Source::KernelControl => None,
        }
    }

    /// Whether the message came from a Jupyter front end of the kernel.
    pub(crate) fn is_kernel(self) -> bool {
        matches!(self, Source::KernelShell | Source::KernelControl)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Control => "control",
            Source::Mux => "mux",
            Source::Task => "task",
            Source::KernelShell => "kernel shell",
            Source::KernelControl => "kernel control",
        })
    }
}

/// Where a reply goes: the socket and the routing identities of its
/// request, and the request's header as its parent.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTo {
    pub(crate) source: Source,
    pub(crate) identities: Vec<Vec<u8>>,
    pub(crate) header: Header,
}

impl ReplyTo {
    fn of(source: Source, request: &Message) -> ReplyTo {
        ReplyTo {
            source,
            identities: request.identities.clone(),
            header: request.header.clone(),
        }
    }
}

/// What the engine is: a cluster's engine (maybe bound as a kernel too), or
/// a standalone kernel with no hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Registered with a hub.
    Cluster,
    /// A Jupyter kernel with no hub: a shutdown ends it.
    Standalone,
}

/// A request to run in the namespace (execute, apply, push, pull).
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) source: Source,
    pub(crate) request: Message,
    pub(crate) limits: RequestMetadata,
}

/// What a run in the namespace came to.
#[derive(Debug)]
pub(crate) struct RunOutcome {
    /// The reply's `result` (None: no value), or the script's error.
    pub(crate) value: Result<Option<Json>, ScriptError>,
    /// An execute's value as text, for `execute_result`.
    pub(crate) shown: Option<String>,
    /// The value's buffers.
    pub(crate) buffers: Vec<zmq::Message>,
    /// What the script printed.
    pub(crate) stdout: String,
    /// What it wrote to stderr (`debug`).
    pub(crate) stderr: String,
}

impl RunOutcome {
    /// A request that failed before or without running.
    pub(crate) fn failed(error: ScriptError) -> RunOutcome {
        RunOutcome {
            value: Err(error),
            shown: None,
            buffers: Vec::new(),
            stdout: String::new(),
            stderr: String::new(),
        }
    }
}

/// Why messages waiting on a socket are read at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// An `abort_request` with no ids: everything waiting on mux and task
    /// is answered `aborted`.
    AbortAll,
    /// A kernel's cell failed with `stop_on_error`: the cells already
    /// waiting are answered `aborted`; other requests are served.
    AbortCells,
}

/// Something that happened, for the core to act on.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message taken from a socket and decoded.
    Arrived { source: Source, inbound: Inbound },
    /// A message that was waiting when [`Action::Drain`] was performed.
    Drained {
        source: Source,
        inbound: Inbound,
        drain: Drain,
    },
    /// The chunks a streamed request announced came in, or were refused
    /// (the reason).
    StreamReceived {
        job: Box<Job>,
        buffers: Result<Vec<zmq::Message>, Box<StreamError>>,
    },
    /// The running request finished.
    Ran(RunOutcome),
    /// The engine tried to serve as a kernel: the binding, or why not.
    KernelBound {
        to: ReplyTo,
        binding: Result<Value, String>,
    },
    /// A signal interrupts the running script (SIGINT to a standalone
    /// kernel).
    Interrupt(Interrupter),
}

/// A reply as the core makes it: where it goes and what it says. Shared
/// between the action that sends it and the recall memory, which may send
/// it again (under a new header), so keeping a reply costs no copy.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) to: ReplyTo,
    pub(crate) content: Content,
    pub(crate) metadata: Map<String, Json>,
}

impl Action {
    /// A reply to send.
    pub(crate) fn reply(
        to: ReplyTo,
        content: Content,
        metadata: Map<String, Json>,
        buffers: Vec<zmq::Message>,
    ) -> Action {
        Action::Reply {
            reply: Rc::new(Reply {
                to,
                content,
                metadata,
            }),
            buffers,
        }
    }
}

/// What the loop must do, in the order given.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send a reply on the socket its request came from.
    Reply {
        reply: Rc<Reply>,
        buffers: Vec<zmq::Message>,
    },
    /// Publish on iopub, with `parent` as the parent header.
    Publish {
        parent: Option<Header>,
        content: Box<Content>,
    },
    /// Receive the `chunks` stream chunks that follow the job's request,
    /// then report [`Event::StreamReceived`].
    ReceiveStream { job: Box<Job>, chunks: u32 },
    /// Run the job in the namespace, then report [`Event::Ran`].
    Run(Box<Job>),
    /// Answer a kernel's shell query from the namespace alone
    /// (`kernel/shell.rs` `answer`).
    Answer {
        to: ReplyTo,
        request: Box<Message>,
        metadata: Map<String, Json>,
    },
    /// Read every message waiting on these sockets and report each as
    /// [`Event::Drained`].
    Drain { sources: Vec<Source>, drain: Drain },
    /// Forget every variable and function: a fresh script engine.
    Clear,
    /// Start serving as a Jupyter kernel, then report
    /// [`Event::KernelBound`].
    BindKernel { to: ReplyTo },
    /// Stop serving as a kernel: close its sockets, remove its file.
    UnbindKernel,
}

impl Action {
    /// Whether performing the action needs the namespace (so it may not be
    /// asked for while a request runs).
    #[cfg(test)]
    pub(crate) fn needs_namespace(&self) -> bool {
        matches!(
            self,
            Action::Run(_) | Action::Answer { .. } | Action::Clear | Action::ReceiveStream { .. }
        )
    }
}

/// What the progress callback is to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Progress {
    /// Go on.
    Go,
    /// Serve what waits on the control sockets, then ask
    /// [`EngineCore::stop_reason`].
    LookAtControl,
    /// Stop the script.
    Stop(StopReason),
}

/// How many aborted msg ids an engine remembers for requests still to
/// arrive; the oldest are forgotten first.
const ABORTED_KEPT: usize = 65_536;

/// The request being run.
#[derive(Debug)]
struct Running {
    to: ReplyTo,
    limits: RequestMetadata,
    /// An execute that is `silent` (no `execute_result`).
    silent: bool,
    /// A kernel's cell that aborts the waiting cells if it fails.
    stop_on_error: bool,
    op_limit: Option<u64>,
    /// When the request must stop, and its timeout in seconds.
    deadline: Option<(Instant, f64)>,
    started: String,
    stop: Option<StopReason>,
}

/// The engine's decisions; see the module doc.
pub(crate) struct EngineCore {
    role: Role,
    engine_id: u32,
    uuid: String,
    /// The program's own natives, to explain a call of a missing one.
    natives: Vec<String>,
    default_op_limit: Option<u64>,
    execution_count: u64,
    running: Option<Running>,
    /// Msg ids a client aborted before they arrived, and the order they
    /// were aborted in: at most [`ABORTED_KEPT`] (a cancelled map aborts
    /// its tasks on every engine, and most run elsewhere).
    aborted: HashSet<String>,
    aborted_order: VecDeque<String>,
    /// Streams refused or aborted lately: their chunks are dropped quietly.
    refused_streams: VecDeque<String>,
    /// `clear_request`s that came while a request ran.
    deferred_clears: Vec<ReplyTo>,
    shutdown: bool,
    /// The hub's requests and the latest replies, for a `recall_request`.
    recall: recall::Recall,
}

impl EngineCore {
    /// A core for an engine of `role` with this id and uuid.
    pub(crate) fn new(
        role: Role,
        engine_id: u32,
        uuid: String,
        default_op_limit: Option<u64>,
        natives: Vec<String>,
    ) -> EngineCore {
        EngineCore {
            role,
            engine_id,
            uuid,
            natives,
            default_op_limit,
            execution_count: 0,
            running: None,
            aborted: HashSet::new(),
            aborted_order: VecDeque::new(),
            refused_streams: VecDeque::new(),
            deferred_clears: Vec::new(),
            shutdown: false,
            recall: recall::Recall::default(),
        }
    }

    /// A restarted hub gave this engine another id.
    pub(crate) fn set_engine_id(&mut self, id: u32) {
        self.engine_id = id;
    }

    /// Whether the engine is to stop serving.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown
    }

    /// Remembers msg ids aborted before they arrive (the oldest forgotten
    /// past [`ABORTED_KEPT`]).
    fn remember_aborted(&mut self, ids: &[String]) {
        for id in ids {
            if self.aborted.insert(id.clone()) {
                self.aborted_order.push_back(id.clone());
            }
        }
        while self.aborted_order.len() > ABORTED_KEPT {
            if let Some(old) = self.aborted_order.pop_front() {
                self.aborted.remove(&old);
            }
        }
    }

    /// Whether a request is running.
    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Why the running script must stop, once something asked.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.running.as_ref().and_then(|r| r.stop.clone())
    }

    /// Acts on one event; the actions to perform, in order.
    pub(crate) fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        if let Event::Arrived { source, inbound }
        | Event::Drained {
            source, inbound, ..
        } = &event
        {
            if let Inbound::Request(msg) = inbound {
                if !matches!(
                    msg.content,
                    Content::RecallRequest(_) | Content::StreamChunk(_)
                ) {
                    self.recall.arrived(*source, &msg.header.msg_id);
                }
            }
        }
        let actions = self.dispatch(event, now);
        self.recall.note_replies(&actions);
        actions
    }

    fn dispatch(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Arrived { source, inbound } => self.on_arrived(source, inbound, now),
            Event::Drained {
                source,
                inbound,
                drain,
            } => self.on_drained(source, inbound, drain, now),
            Event::StreamReceived { job, buffers } => self.on_stream_received(job, buffers, now),
            Event::Ran(outcome) => self.on_ran(outcome),
            Event::KernelBound { to, binding } => self.on_kernel_bound(to, binding),
            Event::Interrupt(by) => {
                if let Some(r) = &mut self.running {
                    r.stop = Some(StopReason::Interrupted(by));
                }
                Vec::new()
            }
        }
    }

    /// Rhai's progress callback asks, with the operations run so far: go
    /// on, look at the control sockets, or stop. `clock` is asked only
    /// every [`CONTROL_CHECK_OPS`] operations (the loop's callback asks
    /// every 64th operation, `serve.rs`).
    pub(crate) fn progress(&self, ops: u64, clock: impl FnOnce() -> Instant) -> Progress {
        let Some(r) = &self.running else {
            return Progress::Go;
        };
        if let Some(limit) = r.op_limit.filter(|limit| ops > *limit) {
            return Progress::Stop(StopReason::OperationLimit { limit });
        }
        if ops.is_multiple_of(CONTROL_CHECK_OPS) {
            if let Some((deadline, seconds)) = r.deadline {
                if clock() >= deadline {
                    return Progress::Stop(StopReason::Timeout { seconds });
                }
            }
            return Progress::LookAtControl;
        }
        match &r.stop {
            Some(reason) => Progress::Stop(reason.clone()),
            None => Progress::Go,
        }
    }

    fn on_arrived(&mut self, source: Source, inbound: Inbound, now: Instant) -> Vec<Action> {
        match inbound {
            Inbound::Request(msg) => self.on_request(source, msg, now),
            Inbound::Bad { request, why } => vec![self.reply_bad(source, &request, &why)],
            Inbound::Dropped(e) => {
                warn!(engine = self.engine_id, %source, error = %Chain(&e), "dropped a bad message");
                Vec::new()
            }
        }
    }

    /// The one dispatch: each request, by where it came from, to its family.
    fn on_request(&mut self, source: Source, msg: Message, now: Instant) -> Vec<Action> {
        use Source::{Control, KernelControl, KernelShell, Mux, Task};
        match (&msg.content, source) {
            (Content::StreamChunk(c), Mux | Task) => {
                self.on_stray_chunk(&msg, c.index);
                Vec::new()
            }
            (Content::RecallRequest(ask), Mux | Task | Control) => {
                let (mut actions, answer) = self.recall.answer(source, ask);
                actions.push(self.reply(source, &msg, Content::RecallReply(answer)));
                actions
            }
            (Content::ExecuteRequest(_), KernelShell) | (_, Mux | Task) => {
                self.on_run(source, msg, now)
            }
            (Content::InterruptRequest(_), _) => self.on_interrupt(source, &msg),
            (Content::ShutdownRequest(_), _) => self.on_shutdown(source, &msg),
            (Content::AbortRequest(_), Control) => self.on_abort(&msg),
            (Content::ClearRequest(_), Control) => self.on_clear(&msg),
            (Content::BindKernelRequest(_), Control) => vec![Action::BindKernel {
                to: ReplyTo::of(source, &msg),
            }],
            (Content::KernelInfoRequest(_), KernelControl) => {
                let info = kernel_info(self.cluster_id());
                vec![self.reply(source, &msg, Content::KernelInfoReply(info))]
            }
            (Content::CommOpen(open), KernelShell) => {
                // The kernel has no comm targets, so it closes a front
                // end's comm at once, as Jupyter's kernels do.
                vec![Action::Publish {
                    parent: Some(msg.header.clone()),
                    content: Box::new(Content::CommClose(CommClose {
                        comm_id: open.comm_id.clone(),
                        data: Map::new(),
                    })),
                }]
            }
            (Content::CommMsg(_) | Content::CommClose(_), KernelShell) => {
                debug!(msg_type = %msg.header.msg_type, "no comm is open; ignored");
                Vec::new()
            }
            (_, KernelShell) => self.on_kernel_query(msg),
            (_, KernelControl) => {
                let content = unserved(&msg, "control");
                vec![self.reply(source, &msg, content)]
            }
            (other, Control) => {
                let content = Content::reply_to(
                    other.msg_type(),
                    TaskReply::error(
                        ErrorClass::UnknownMessageType.as_str(),
                        format!(
                            "{} is not a control request an engine serves",
                            other.msg_type()
                        ),
                    ),
                );
                vec![self.reply(source, &msg, content)]
            }
        }
    }

    fn remember_refused(&mut self, msg_id: &str) {
        if self.refused_streams.len() >= REFUSED_STREAMS {
            self.refused_streams.pop_front();
        }
        self.refused_streams.push_back(msg_id.to_string());
    }

    /// The engine id a kernel reports: a cluster engine's, or none.
    fn cluster_id(&self) -> Option<u32> {
        (self.role == Role::Cluster).then_some(self.engine_id)
    }

    /// Reply metadata naming this engine, by id (zpar) and uuid
    /// (ipyparallel).
    fn basic_metadata(&self) -> Map<String, Json> {
        ReplyMetadata::naming(self.engine_id, &self.uuid).to_map()
    }

    /// Metadata for a reply made outside a run: the engine, and the status
    /// ipyparallel reads (the loop adds the time it went out).
    fn metadata_for(&self, content: &Content) -> Map<String, Json> {
        let mut metadata = self.basic_metadata();
        if let Some(r) = content.task_reply() {
            metadata.insert("status".into(), serde_json::json!(r.status));
        }
        metadata
    }

    fn reply(&self, source: Source, request: &Message, content: Content) -> Action {
        let metadata = self.metadata_for(&content);
        Action::reply(ReplyTo::of(source, request), content, metadata, Vec::new())
    }

    /// Answers a signed request the engine could not understand, so the hub
    /// does not keep it pending: an error reply of the matching type.
    fn reply_bad(&self, source: Source, request: &Message, why: &str) -> Action {
        warn!(
            engine = self.engine_id,
            msg_id = %request.header.msg_id,
            msg_type = %request.header.msg_type,
            %why,
            "answering a request the engine cannot understand"
        );
        let content = bad_request_reply(request, why, self.engine_id);
        self.reply(source, request, content)
    }

    fn reply_aborted(&self, source: Source, request: &Message) -> Action {
        let r = TaskReply {
            status: Status::Aborted,
            engine_id: Some(self.engine_id),
            ..TaskReply::default()
        };
        self.reply(
            source,
            request,
            Content::reply_to(&request.header.msg_type, r),
        )
    }

    /// `busy` or `idle` on iopub: Jupyter brackets every request with
    /// them, and ipyparallel's client waits for `idle` before it calls a
    /// request's output complete.
    fn status(&self, parent: &Header, state: &str) -> Action {
        Action::Publish {
            parent: Some(parent.clone()),
            content: Box::new(status_content(state)),
        }
    }

    /// Checks what must always hold; the harness calls it after every
    /// event.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        assert!(self.refused_streams.len() <= REFUSED_STREAMS);
        assert!(
            self.deferred_clears.is_empty() || self.running.is_some(),
            "a clear waits with nothing running"
        );
        if let Some(r) = &self.running {
            assert!(
                !r.to
                    .source
                    .hub_channel()
                    .is_some_and(|c| c == Channel::Control)
                    && r.to.source != Source::KernelControl,
                "a control request runs in the namespace"
            );
            if let Some(StopReason::EngineShutdown | StopReason::KernelShutdown) = r.stop {
                assert!(self.shutdown, "a shutdown stop without a shutdown");
            }
        }
    }
}

fn status_content(state: &str) -> Content {
    Content::Status(StatusContent {
        execution_state: state.to_string(),
    })
}
