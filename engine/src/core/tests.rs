//! Socket-free tests of the engine core: each drives an [`EngineCore`]
//! with requests signed by a real client [`Session`] and decoded by the
//! engine's real decoder, takes every action it returns (replies encoded
//! and decoded through the real codec), and ends by proving nothing else
//! came out. The core's invariants are checked after every event, and so
//! is the loop's rule: nothing that needs the namespace while a request
//! runs.

use super::*;
use crate::inbound::decode_request;
use std::collections::VecDeque;
use std::time::Duration;
use zpar_protocol::{
    AbortRequest, ApplyRequest, ClearRequest, ExecuteRequest, InterruptRequest, PullRequest,
    Session, ShutdownRequest, StreamChunk,
};

const KEY: &[u8] = b"engine-core-test-key";

/// A core with a client around it, all in memory.
struct EngineHarness {
    core: EngineCore,
    client: Session,
    /// The engine's session: decodes requests (with its replay guard) and
    /// encodes replies.
    engine: Session,
    start: Instant,
    now: Instant,
    out: VecDeque<Action>,
}

impl Drop for EngineHarness {
    fn drop(&mut self) {
        if !std::thread::panicking() && !self.out.is_empty() {
            panic!(
                "the test left {} actions unchecked: {:?}",
                self.out.len(),
                self.out.iter().map(describe).collect::<Vec<_>>()
            );
        }
    }
}

fn describe(a: &Action) -> String {
    match a {
        Action::Reply { reply, .. } => {
            format!("Reply({}, {})", reply.to.source, reply.content.msg_type())
        }
        Action::Publish { content, .. } => format!("Publish({})", content.msg_type()),
        Action::ReceiveStream { chunks, .. } => format!("ReceiveStream({chunks})"),
        Action::Run(job) => format!("Run({})", job.request.header.msg_type),
        Action::Answer { request, .. } => format!("Answer({})", request.header.msg_type),
        Action::Drain { sources, drain } => format!("Drain({sources:?}, {drain:?})"),
        Action::Clear => "Clear".into(),
        Action::BindKernel { .. } => "BindKernel".into(),
        Action::UnbindKernel => "UnbindKernel".into(),
    }
}

impl EngineHarness {
    fn new(role: Role) -> EngineHarness {
        let now = Instant::now();
        EngineHarness {
            core: EngineCore::new(
                role,
                3,
                "uuid-3".into(),
                None,
                vec!["dot(i64, i64) -> i64".into()],
            ),
            client: Session::new(KEY, "hmac-sha256", "client").unwrap(),
            engine: Session::new(KEY, "hmac-sha256", "engine").unwrap(),
            start: now,
            now,
            out: VecDeque::new(),
        }
    }

    fn cluster() -> EngineHarness {
        EngineHarness::new(Role::Cluster)
    }

    fn handle(&mut self, event: Event) {
        self.now += Duration::from_millis(1);
        let ran = matches!(event, Event::Ran(_));
        let was_running = self.core.is_running();
        let actions = self.core.handle(event, self.now);
        self.core.check_invariants();
        if was_running && !ran {
            for a in &actions {
                assert!(
                    !a.needs_namespace(),
                    "asked for the namespace while a request runs: {}",
                    describe(a)
                );
            }
        }
        self.out.extend(actions);
    }

    /// A signed request from the client, through the engine's decoder; its
    /// msg id.
    fn arrive_with(
        &mut self,
        source: Source,
        content: Content,
        metadata: RequestMetadata,
    ) -> String {
        let mut msg = Message::new(&self.client, content);
        msg.identities = vec![b"hub".to_vec(), b"client-1".to_vec()];
        msg.metadata = metadata.to_map();
        let id = msg.header.msg_id.clone();
        let frames = self.client.encode(&msg).into_frames();
        let inbound = decode_request(&mut self.engine, frames);
        self.handle(Event::Arrived { source, inbound });
        id
    }

    fn arrive(&mut self, source: Source, content: Content) -> String {
        self.arrive_with(source, content, RequestMetadata::default())
    }

    fn take(&mut self) -> Action {
        self.out.pop_front().expect("expected another action")
    }

    /// The next action, a reply: the socket it goes to and the message as
    /// the client decodes it.
    fn take_reply(&mut self) -> (Source, Message) {
        let a = self.take();
        let Action::Reply { reply, buffers } = a else {
            panic!("expected a reply, got {}", describe(&a));
        };
        let Reply {
            to,
            content,
            metadata,
        } = &*reply;
        let mut raw = self.engine.encode_parts(
            &to.identities,
            &self.engine.header(content.msg_type()),
            Some(&to.header),
            metadata,
            content,
        );
        raw.buffers = buffers;
        let frames = raw.into_frames();
        (
            to.source,
            self.client
                .decode_frames(frames)
                .expect("the reply decodes"),
        )
    }

    /// The next reply, checked to answer `msg_id` on `source` with
    /// `reply_type`; its task reply.
    fn expect_reply(&mut self, source: Source, msg_id: &str, reply_type: &str) -> TaskReply {
        let (to, msg) = self.take_reply();
        assert_eq!(to, source);
        assert_eq!(msg.parent_header.as_ref().unwrap().msg_id, msg_id);
        assert_eq!(msg.header.msg_type, reply_type);
        assert_eq!(
            msg.metadata["engine"], "uuid-3",
            "ipyparallel reads the uuid"
        );
        msg.content.task_reply().cloned().unwrap_or_default()
    }

    /// The next action, an iopub message: its parent's msg id and content.
    fn take_publish(&mut self) -> (Option<String>, Content) {
        let a = self.take();
        let Action::Publish { parent, content } = a else {
            panic!("expected an iopub message, got {}", describe(&a));
        };
        (parent.map(|p| p.msg_id), *content)
    }

    fn expect_status(&mut self, msg_id: &str, state: &str) {
        let (parent, content) = self.take_publish();
        assert_eq!(parent.as_deref(), Some(msg_id));
        assert!(
            matches!(&content, Content::Status(s) if s.execution_state == state),
            "expected {state}, got {content:?}"
        );
    }

    fn expect_run(&mut self) -> Job {
        match self.take() {
            Action::Run(job) => *job,
            other => panic!("expected a run, got {}", describe(&other)),
        }
    }

    /// Starts an execute of `code` from the hub: busy, input, run.
    fn start_execute(&mut self, metadata: RequestMetadata) -> String {
        let id = self.arrive_with(Source::Mux, execute("x"), metadata);
        self.expect_status(&id, "busy");
        assert!(matches!(self.take_publish().1, Content::ExecuteInput(_)));
        self.expect_run();
        id
    }

    fn finish(&mut self, value: Result<Option<Json>, ScriptError>, shown: Option<&str>) {
        self.handle(Event::Ran(RunOutcome {
            value,
            shown: shown.map(str::to_string),
            buffers: Vec::new(),
            stdout: "out\n".into(),
            stderr: String::new(),
        }));
    }

    fn progress(&self, ops: u64, after: Duration) -> Progress {
        self.core.progress(ops, || self.start + after)
    }

    fn assert_no_more(&mut self) {
        let left: Vec<String> = self.out.drain(..).map(|a| describe(&a)).collect();
        assert!(left.is_empty(), "unexpected actions: {left:?}");
    }
}

fn execute(code: &str) -> Content {
    Content::ExecuteRequest(ExecuteRequest {
        code: code.into(),
        store_history: true,
        ..Default::default()
    })
}

fn cell(code: &str, silent: bool, stop_on_error: bool) -> Content {
    Content::ExecuteRequest(ExecuteRequest {
        code: code.into(),
        silent,
        store_history: true,
        stop_on_error,
        ..Default::default()
    })
}

#[test]
fn an_execute_runs_between_busy_and_idle_and_counts() {
    let mut h = EngineHarness::cluster();
    let id = h.start_execute(RequestMetadata::default());
    h.assert_no_more();
    h.finish(Ok(Some(serde_json::json!(42))), Some("42"));
    let (parent, content) = h.take_publish();
    assert_eq!(parent.as_deref(), Some(id.as_str()));
    assert!(matches!(content, Content::ExecuteResult(r) if r.execution_count == 1));
    let (_, reply) = h.take_reply();
    assert_eq!(reply.metadata["stdout"], "out\n");
    assert_eq!(reply.metadata["status"], "ok");
    let r = reply.content.task_reply().unwrap();
    assert_eq!(r.result, Some(serde_json::json!(42)));
    assert_eq!(r.execution_count, Some(1));
    h.expect_status(&id, "idle");
    h.assert_no_more();
    // The hub's executes always count.
    h.start_execute(RequestMetadata::default());
    h.finish(Ok(None), None);
    let r = h.expect_reply(Source::Mux, &h.out_reply_parent(), "execute_reply");
    assert_eq!(r.execution_count, Some(2));
    h.take_publish();
    h.assert_no_more();
}

impl EngineHarness {
    /// The msg id the next reply answers (to check a reply without keeping
    /// the request's id).
    fn out_reply_parent(&self) -> String {
        match self.out.front() {
            Some(Action::Reply { reply, .. }) => reply.to.header.msg_id.clone(),
            other => panic!("expected a reply next, got {:?}", other.map(describe)),
        }
    }
}

#[test]
fn a_hubs_silent_execute_is_not_echoed_but_counts_and_returns_its_value() {
    let mut h = EngineHarness::cluster();
    let id = h.arrive(Source::Mux, cell("1 + 1", true, false));
    h.expect_status(&id, "busy");
    h.expect_run();
    h.finish(Ok(Some(serde_json::json!(2))), None);
    let r = h.expect_reply(Source::Mux, &id, "execute_reply");
    assert_eq!(r.execution_count, Some(1));
    assert_eq!(r.result, Some(serde_json::json!(2)));
    h.expect_status(&id, "idle");
    h.assert_no_more();
}

#[test]
fn a_kernels_silent_cell_shows_nothing_and_does_not_count() {
    let mut h = EngineHarness::cluster();
    let id = h.arrive(Source::KernelShell, cell("1 + 1", true, true));
    h.expect_status(&id, "busy");
    h.expect_run();
    h.finish(Ok(Some(serde_json::json!(2))), Some("2"));
    let r = h.expect_reply(Source::KernelShell, &id, "execute_reply");
    assert_eq!(r.execution_count, Some(0));
    assert_eq!(r.result, None, "a kernel's reply carries no result");
    h.expect_status(&id, "idle");
    h.assert_no_more();
}

#[test]
fn a_failed_cell_with_stop_on_error_aborts_only_the_cells_waiting() {
    let mut h = EngineHarness::cluster();
    let id = h.arrive(Source::KernelShell, cell("boom", false, true));
    h.expect_status(&id, "busy");
    assert!(matches!(h.take_publish().1, Content::ExecuteInput(i) if i.execution_count == 1));
    h.expect_run();
    h.finish(Err(ScriptError::new("RuntimeError", "boom")), None);
    assert!(matches!(h.take_publish().1, Content::Error(e) if e.ename == "RuntimeError"));
    let r = h.expect_reply(Source::KernelShell, &id, "execute_reply");
    assert_eq!(r.status, Status::Error);
    h.expect_status(&id, "idle");
    assert!(matches!(
        h.take(),
        Action::Drain { sources, drain: Drain::AbortCells } if sources == [Source::KernelShell]
    ));
    h.assert_no_more();
    // What was waiting: a cell (aborted) and a kernel_info (served).
    let waiting = Message::new(&h.client, cell("next", false, true));
    let waiting_id = waiting.header.msg_id.clone();
    let inbound = decode_request(&mut h.engine, h.client.encode(&waiting).into_frames());
    h.handle(Event::Drained {
        source: Source::KernelShell,
        inbound,
        drain: Drain::AbortCells,
    });
    h.expect_status(&waiting_id, "busy");
    let r = h.expect_reply(Source::KernelShell, &waiting_id, "execute_reply");
    assert_eq!(r.status, Status::Aborted);
    h.expect_status(&waiting_id, "idle");
    let info = Message::new(
        &h.client,
        Content::KernelInfoRequest(zpar_protocol::kernel::KernelInfoRequest {}),
    );
    let inbound = decode_request(&mut h.engine, h.client.encode(&info).into_frames());
    h.handle(Event::Drained {
        source: Source::KernelShell,
        inbound,
        drain: Drain::AbortCells,
    });
    h.expect_status(&info.header.msg_id, "busy");
    assert!(
        matches!(h.take(), Action::Answer { request, .. } if request.header.msg_id == info.header.msg_id)
    );
    h.expect_status(&info.header.msg_id, "idle");
    h.assert_no_more();
}

#[test]
fn an_interrupt_on_control_stops_the_running_script_at_its_next_look() {
    let mut h = EngineHarness::cluster();
    h.start_execute(RequestMetadata::default());
    assert_eq!(h.progress(1, Duration::ZERO), Progress::Go);
    assert_eq!(
        h.progress(CONTROL_CHECK_OPS, Duration::ZERO),
        Progress::LookAtControl
    );
    let id = h.arrive(
        Source::Control,
        Content::InterruptRequest(InterruptRequest {}),
    );
    let r = h.expect_reply(Source::Control, &id, "interrupt_reply");
    assert_eq!(r.status, Status::Ok);
    h.assert_no_more();
    let stop = StopReason::Interrupted(Interrupter::Client);
    assert_eq!(h.core.stop_reason(), Some(stop.clone()));
    assert_eq!(
        h.progress(CONTROL_CHECK_OPS + 1, Duration::ZERO),
        Progress::Stop(stop)
    );
    h.finish(
        Err(ScriptError::new("Interrupted", "interrupted by the client")),
        None,
    );
    assert!(matches!(h.take_publish().1, Content::Error(e) if e.ename == "Interrupted"));
    let r = h.expect_reply(Source::Mux, &h.out_reply_parent(), "execute_reply");
    assert_eq!(r.ename.as_deref(), Some("Interrupted"));
    h.take_publish();
    h.assert_no_more();
    // Between requests an interrupt stops nothing.
    assert_eq!(h.core.stop_reason(), None);
    h.handle(Event::Interrupt(Interrupter::Signal));
    assert_eq!(h.progress(CONTROL_CHECK_OPS, Duration::ZERO), Progress::Go);
    h.assert_no_more();
}

/// An abort with `running` stops the running request when it is one of
/// those named (or none are named), and it is answered `aborted`; one
/// that names other requests, or none with `running` unset, lets it run.
#[test]
fn an_abort_with_running_stops_the_named_running_request_and_answers_it_aborted() {
    let abort = |ids: Option<Vec<String>>, running: bool| {
        Content::AbortRequest(zpar_protocol::AbortRequest {
            msg_ids: ids,
            running,
        })
    };
    let mut h = EngineHarness::cluster();
    let id = h.start_execute(RequestMetadata::default());
    for (ids, running) in [(Some(vec!["other".to_string()]), true), (None, false)] {
        let a = h.arrive(Source::Control, abort(ids, running));
        if !running {
            assert!(matches!(h.take(), Action::Drain { .. }));
        }
        h.expect_reply(Source::Control, &a, "abort_reply");
        assert_eq!(h.core.stop_reason(), None, "running {running}");
    }
    let a = h.arrive(Source::Control, abort(Some(vec![id.clone()]), true));
    h.expect_reply(Source::Control, &a, "abort_reply");
    assert_eq!(h.core.stop_reason(), Some(StopReason::Aborted));
    assert_eq!(
        h.progress(CONTROL_CHECK_OPS + 1, Duration::ZERO),
        Progress::Stop(StopReason::Aborted)
    );
    h.finish(
        Err(ScriptError::new("Interrupted", "aborted by a client")),
        None,
    );
    let r = h.expect_reply(Source::Mux, &id, "execute_reply");
    assert_eq!(r.status, Status::Aborted);
    h.expect_status(&id, "idle");
    h.assert_no_more();
    // Every running request, when none are named; one that finished
    // before it looked keeps its result.
    let id = h.start_execute(RequestMetadata::default());
    let a = h.arrive(Source::Control, abort(None, true));
    assert!(matches!(h.take(), Action::Drain { .. }));
    h.expect_reply(Source::Control, &a, "abort_reply");
    h.finish(Ok(Some(serde_json::json!(7))), None);
    let r = h.expect_reply(Source::Mux, &id, "execute_reply");
    assert_eq!(r.status, Status::Ok);
    h.expect_status(&id, "idle");
    h.assert_no_more();
}

#[test]
fn sigint_interrupts_a_running_cell() {
    let mut h = EngineHarness::new(Role::Standalone);
    let id = h.arrive(Source::KernelShell, cell("loop {}", false, false));
    h.expect_status(&id, "busy");
    h.take_publish();
    h.expect_run();
    h.handle(Event::Interrupt(Interrupter::Signal));
    assert_eq!(
        h.progress(7, Duration::ZERO),
        Progress::Stop(StopReason::Interrupted(Interrupter::Signal))
    );
    h.assert_no_more();
    h.finish(
        Err(ScriptError::new("Interrupted", "interrupted (SIGINT)")),
        None,
    );
    h.take_publish();
    h.expect_reply(Source::KernelShell, &id, "execute_reply");
    h.expect_status(&id, "idle");
    h.assert_no_more();
}

#[test]
fn a_requests_operation_limit_and_timeout_stop_it() {
    let mut h = EngineHarness::cluster();
    h.start_execute(RequestMetadata {
        max_operations: Some(10),
        timeout: Some(0.5),
        ..Default::default()
    });
    assert_eq!(h.progress(10, Duration::ZERO), Progress::Go);
    assert_eq!(
        h.progress(11, Duration::ZERO),
        Progress::Stop(StopReason::OperationLimit { limit: 10 })
    );
    h.finish(Err(ScriptError::new("OperationLimit", "x")), None);
    h.take_publish();
    h.take_reply();
    h.take_publish();
    // max_operations 0 is no limit; the timeout is read every 1024 ops.
    h.start_execute(RequestMetadata {
        max_operations: Some(0),
        timeout: Some(0.5),
        ..Default::default()
    });
    assert_eq!(h.progress(1 << 40, Duration::ZERO), Progress::LookAtControl);
    assert_eq!(
        h.progress(1 + (1 << 40), Duration::from_secs(5)),
        Progress::Go
    );
    assert_eq!(
        h.progress(CONTROL_CHECK_OPS * 3, Duration::from_secs(5)),
        Progress::Stop(StopReason::Timeout { seconds: 0.5 })
    );
    h.finish(Err(ScriptError::new("Timeout", "x")), None);
    h.take_publish();
    h.take_reply();
    h.take_publish();
    h.assert_no_more();
    // Nothing runs: nothing to stop.
    assert_eq!(h.progress(1 << 50, Duration::from_secs(50)), Progress::Go);
}

#[test]
fn an_engines_own_operation_limit_applies_unless_the_request_sets_one() {
    let mut h = EngineHarness::cluster();
    h.core.default_op_limit = Some(100);
    h.start_execute(RequestMetadata::default());
    assert_eq!(
        h.progress(101, Duration::ZERO),
        Progress::Stop(StopReason::OperationLimit { limit: 100 })
    );
    h.finish(Ok(None), None);
    h.take_reply();
    h.take_publish();
    h.start_execute(RequestMetadata {
        max_operations: Some(1000),
        ..Default::default()
    });
    assert_eq!(h.progress(101, Duration::ZERO), Progress::Go);
    h.finish(Ok(None), None);
    h.take_reply();
    h.take_publish();
    h.assert_no_more();
}

#[test]
fn a_request_aborted_by_id_is_answered_aborted_when_it_arrives() {
    let mut h = EngineHarness::cluster();
    let early = Message::new(&h.client, execute("late"));
    let abort = h.arrive(
        Source::Control,
        Content::AbortRequest(AbortRequest {
            msg_ids: Some(vec![early.header.msg_id.clone()]),
            running: false,
        }),
    );
    h.expect_reply(Source::Control, &abort, "abort_reply");
    let inbound = decode_request(&mut h.engine, h.client.encode(&early).into_frames());
    h.handle(Event::Arrived {
        source: Source::Task,
        inbound,
    });
    let r = h.expect_reply(Source::Task, &early.header.msg_id, "execute_reply");
    assert_eq!(r.status, Status::Aborted);
    h.assert_no_more();
}

#[test]
fn an_abort_of_everything_drains_mux_and_task_and_drops_aborted_streams_quietly() {
    let mut h = EngineHarness::cluster();
    let abort = h.arrive(
        Source::Control,
        Content::AbortRequest(AbortRequest::default()),
    );
    assert!(matches!(
        h.take(),
        Action::Drain { sources, drain: Drain::AbortAll } if sources == [Source::Mux, Source::Task]
    ));
    h.expect_reply(Source::Control, &abort, "abort_reply");
    // A streamed push waiting, then one of its chunks.
    let mut head = Message::new(&h.client, Content::PullRequest(PullRequest::default()));
    head.metadata = RequestMetadata {
        stream_frames: Some(2),
        ..Default::default()
    }
    .to_map();
    let inbound = decode_request(&mut h.engine, h.client.encode(&head).into_frames());
    h.handle(Event::Drained {
        source: Source::Mux,
        inbound,
        drain: Drain::AbortAll,
    });
    let r = h.expect_reply(Source::Mux, &head.header.msg_id, "pull_reply");
    assert_eq!(r.status, Status::Aborted);
    let mut chunk = Message::new(
        &h.client,
        Content::StreamChunk(StreamChunk { index: 0, of: 2 }),
    );
    chunk.parent_header = Some(head.header.clone());
    let inbound = decode_request(&mut h.engine, h.client.encode(&chunk).into_frames());
    h.handle(Event::Arrived {
        source: Source::Mux,
        inbound,
    });
    h.assert_no_more();
}

#[test]
fn a_clear_waits_for_the_running_request() {
    let mut h = EngineHarness::cluster();
    let run = h.start_execute(RequestMetadata::default());
    let clear = h.arrive(Source::Control, Content::ClearRequest(ClearRequest {}));
    h.assert_no_more();
    h.finish(Ok(None), None);
    h.expect_reply(Source::Mux, &run, "execute_reply");
    h.expect_status(&run, "idle");
    assert!(matches!(h.take(), Action::Clear));
    h.expect_reply(Source::Control, &clear, "clear_reply");
    h.assert_no_more();
    // With nothing running it clears at once.
    let clear = h.arrive(Source::Control, Content::ClearRequest(ClearRequest {}));
    assert!(matches!(h.take(), Action::Clear));
    h.expect_reply(Source::Control, &clear, "clear_reply");
    h.assert_no_more();
}

#[test]
fn the_hubs_shutdown_stops_the_running_script_and_the_engine() {
    let mut h = EngineHarness::cluster();
    h.start_execute(RequestMetadata::default());
    let id = h.arrive(
        Source::Control,
        Content::ShutdownRequest(ShutdownRequest::default()),
    );
    h.expect_reply(Source::Control, &id, "shutdown_reply");
    assert!(h.core.shutting_down());
    assert_eq!(h.core.stop_reason(), Some(StopReason::EngineShutdown));
    h.finish(
        Err(ScriptError::new(
            "Interrupted",
            "the engine is shutting down",
        )),
        None,
    );
    h.take_publish();
    h.take_reply();
    h.take_publish();
    h.assert_no_more();
}

#[test]
fn a_kernels_shutdown_unbinds_a_bound_kernel_and_ends_a_standalone_one() {
    let mut h = EngineHarness::cluster();
    let id = h.arrive(
        Source::KernelControl,
        Content::ShutdownRequest(ShutdownRequest {
            restart: true,
            hub: false,
        }),
    );
    let r = h.expect_reply(Source::KernelControl, &id, "shutdown_reply");
    assert_eq!(r.restart, Some(true));
    assert!(matches!(h.take(), Action::UnbindKernel));
    assert!(!h.core.shutting_down(), "the engine stays in its cluster");
    h.assert_no_more();
    let mut h = EngineHarness::new(Role::Standalone);
    let id = h.arrive(
        Source::KernelShell,
        Content::ShutdownRequest(ShutdownRequest::default()),
    );
    h.expect_reply(Source::KernelShell, &id, "shutdown_reply");
    assert!(h.core.shutting_down());
    h.assert_no_more();
}

#[test]
fn a_streamed_request_runs_after_its_chunks_and_a_refused_one_is_answered() {
    let mut h = EngineHarness::cluster();
    let meta = RequestMetadata {
        stream_frames: Some(3),
        ..Default::default()
    };
    let id = h.arrive_with(Source::Mux, execute("x"), meta.clone());
    let job = match h.take() {
        Action::ReceiveStream { job, chunks: 3 } => job,
        other => panic!("expected a stream, got {}", describe(&other)),
    };
    h.handle(Event::StreamReceived {
        job,
        buffers: Ok(vec![zmq::Message::from("a")]),
    });
    h.expect_status(&id, "busy");
    h.take_publish();
    let job = h.expect_run();
    assert_eq!(job.request.buffers.len(), 1);
    h.finish(Ok(None), None);
    h.take_reply();
    h.take_publish();
    // Refused: answered BadRequest, and its chunks are dropped quietly.
    let id = h.arrive_with(Source::Mux, execute("y"), meta);
    let Action::ReceiveStream { job, .. } = h.take() else {
        panic!("expected a stream")
    };
    h.handle(Event::StreamReceived {
        job,
        buffers: Err(Box::new(StreamError::OutOfOrder {
            msg_id: id.clone(),
            expected: 0,
            got: 1,
        })),
    });
    let r = h.expect_reply(Source::Mux, &id, "execute_reply");
    assert_eq!(r.ename.as_deref(), Some("BadRequest"));
    assert!(r.evalue.unwrap().contains("chunk 1 came where chunk 0"));
    h.assert_no_more();
    assert!(h.core.refused_streams.iter().any(|s| *s == id));
}

#[test]
fn requests_the_engine_does_not_serve_are_answered_with_a_clear_error() {
    let mut h = EngineHarness::cluster();
    // A control request on control it does not serve.
    let id = h.arrive(Source::Control, execute("1"));
    let r = h.expect_reply(Source::Control, &id, "execute_reply");
    assert_eq!(r.ename.as_deref(), Some("UnknownMessageType"));
    assert!(r.evalue.unwrap().contains("not a control request"));
    // ipyparallel's pickled apply on mux: busy, Unsupported, idle.
    let mut apply = Message::new(&h.client, Content::ApplyRequest(ApplyRequest::default()));
    apply.content = Content::Unknown {
        msg_type: "apply_request".into(),
        content: Json::Null,
    };
    let inbound = Inbound::Request(apply);
    let Inbound::Request(ref m) = inbound else {
        unreachable!()
    };
    let apply_id = m.header.msg_id.clone();
    h.handle(Event::Arrived {
        source: Source::Mux,
        inbound,
    });
    h.expect_status(&apply_id, "busy");
    let r = h.expect_reply(Source::Mux, &apply_id, "apply_reply");
    assert_eq!(r.ename.as_deref(), Some("Unsupported"));
    assert!(
        r.engine_info.is_some(),
        "ipyparallel waits for idle with it"
    );
    h.expect_status(&apply_id, "idle");
    // An interrupt on mux is not a request mux serves.
    let id = h.arrive(Source::Mux, Content::InterruptRequest(InterruptRequest {}));
    h.expect_status(&id, "busy");
    let r = h.expect_reply(Source::Mux, &id, "interrupt_reply");
    assert_eq!(r.ename.as_deref(), Some("UnknownMessageType"));
    h.expect_status(&id, "idle");
    // On the kernel's control socket: Jupyter's words.
    let id = h.arrive(Source::KernelControl, execute("1"));
    let r = h.expect_reply(Source::KernelControl, &id, "execute_reply");
    assert!(r
        .evalue
        .unwrap()
        .contains("does not serve execute_request on control"));
    h.assert_no_more();
}

#[test]
fn a_signed_request_of_the_wrong_shape_gets_a_bad_request_reply() {
    let mut h = EngineHarness::cluster();
    let raw = h.client.assemble(
        vec![zmq::Message::from("hub")],
        serde_json::to_vec(&h.client.header("execute_request")).unwrap(),
        b"{}".to_vec(),
        b"{}".to_vec(),
        br#"{"code": 5}"#.to_vec(),
        vec![],
    );
    let inbound = decode_request(&mut h.engine, raw.into_frames());
    h.handle(Event::Arrived {
        source: Source::Task,
        inbound,
    });
    let (to, reply) = h.take_reply();
    assert_eq!(to, Source::Task);
    assert_eq!(reply.header.msg_type, "execute_reply");
    let r = reply.content.task_reply().unwrap();
    assert_eq!(r.ename.as_deref(), Some("BadRequest"));
    // A replay of a request is dropped without a word.
    let msg = Message::new(&h.client, execute("1"));
    let frames = || h.client.encode(&msg).into_frames();
    let first = decode_request(&mut h.engine, frames());
    let again = decode_request(&mut h.engine, frames());
    assert!(matches!(first, Inbound::Request(_)));
    h.handle(Event::Arrived {
        source: Source::Mux,
        inbound: again,
    });
    h.assert_no_more();
}

#[test]
fn a_missing_function_is_explained_with_the_engines_natives() {
    let mut h = EngineHarness::cluster();
    let id = h.start_execute(RequestMetadata::default());
    h.finish(
        Err(ScriptError {
            missing_function: Some("simulate (i64)".into()),
            ..ScriptError::new("UnknownName", "Function not found: simulate (i64)")
        }),
        None,
    );
    assert!(matches!(h.take_publish().1, Content::Error(_)));
    let r = h.expect_reply(Source::Mux, &id, "execute_reply");
    let text = r.evalue.unwrap();
    assert!(
        text.contains("engine 3 has no function simulate (i64)"),
        "{text}"
    );
    assert!(text.contains("dot(i64, i64) -> i64"), "{text}");
    h.expect_status(&id, "idle");
    h.assert_no_more();
}

#[test]
fn binding_a_kernel_is_answered_with_the_binding_or_kernel_bind_failed() {
    let mut h = EngineHarness::cluster();
    let id = h.arrive(
        Source::Control,
        Content::BindKernelRequest(Default::default()),
    );
    let Action::BindKernel { to } = h.take() else {
        panic!("expected a bind")
    };
    h.handle(Event::KernelBound {
        to: to.clone(),
        binding: Err("cannot listen for the kernel's shell channel".into()),
    });
    let r = h.expect_reply(Source::Control, &id, "bind_kernel_reply");
    assert_eq!(
        r.ename.as_deref(),
        Some(ErrorClass::KernelBindFailed.as_str())
    );
    h.handle(Event::KernelBound {
        to,
        binding: Ok(Value::Str("bound".into())),
    });
    let r = h.expect_reply(Source::Control, &id, "bind_kernel_reply");
    assert_eq!(r.status, Status::Ok);
    assert_eq!(r.result, Some(serde_json::json!("bound")));
    h.assert_no_more();
}

#[test]
fn a_front_ends_comm_is_closed_at_once_and_its_messages_ignored() {
    let mut h = EngineHarness::cluster();
    let id = h.arrive(
        Source::KernelShell,
        Content::CommOpen(zpar_protocol::kernel::CommOpen {
            comm_id: "c1".into(),
            ..Default::default()
        }),
    );
    let (parent, content) = h.take_publish();
    assert_eq!(parent.as_deref(), Some(id.as_str()));
    assert!(matches!(content, Content::CommClose(c) if c.comm_id == "c1"));
    h.arrive(
        Source::KernelShell,
        Content::CommMsg(zpar_protocol::kernel::CommMsg {
            comm_id: "c1".into(),
            ..Default::default()
        }),
    );
    h.assert_no_more();
}

#[test]
fn a_stray_chunk_is_dropped() {
    let mut h = EngineHarness::cluster();
    h.arrive(
        Source::Mux,
        Content::StreamChunk(StreamChunk { index: 4, of: 9 }),
    );
    h.assert_no_more();
}

#[test]
fn a_result_of_more_buffers_than_a_message_holds_fails_with_what_to_do() {
    let mut h = EngineHarness::cluster();
    let id = h.start_execute(RequestMetadata::default());
    let too_many = zpar_protocol::Limits::default().max_buffers() + 1;
    h.handle(Event::Ran(RunOutcome {
        value: Ok(Some(serde_json::json!([]))),
        shown: None,
        buffers: (0..too_many).map(|_| zmq::Message::new()).collect(),
        stdout: String::new(),
        stderr: String::new(),
    }));
    assert!(matches!(h.take_publish().1, Content::Error(_)));
    let (_, reply) = h.take_reply();
    assert!(reply.buffers.is_empty(), "no buffer of the value goes out");
    let r = reply.content.task_reply().unwrap();
    assert_eq!(r.ename.as_deref(), Some("NotTransferable"));
    assert!(
        r.evalue
            .as_deref()
            .unwrap()
            .contains("fewer, larger values"),
        "{r:?}"
    );
    h.expect_status(&id, "idle");
    h.assert_no_more();
}

/// Asks, on `source`, what became of `ids`; the question's msg id.
fn recall(h: &mut EngineHarness, source: Source, ids: &[&str]) -> String {
    let ask = Content::RecallRequest(zpar_protocol::RecallRequest {
        msg_ids: ids.iter().map(|s| s.to_string()).collect(),
    });
    h.arrive(source, ask)
}

fn expect_recall_reply(
    h: &mut EngineHarness,
    source: Source,
    ask: &str,
) -> zpar_protocol::RecallReply {
    let (to, msg) = h.take_reply();
    assert_eq!(to, source);
    assert_eq!(msg.parent_header.unwrap().msg_id, ask);
    match msg.content {
        Content::RecallReply(r) => r,
        other => panic!("expected a recall reply, got {other:?}"),
    }
}

#[test]
fn a_recall_sends_held_replies_again_and_names_what_never_arrived() {
    let mut h = EngineHarness::cluster();
    let ran = h.start_execute(RequestMetadata::default());
    h.finish(Ok(Some(serde_json::json!(42))), Some("42"));
    h.take_publish();
    let (_, first) = h.take_reply();
    h.expect_status(&ran, "idle");
    // A task still running: the hub is told nothing of it.
    let running = h.arrive(Source::Task, execute("long"));
    h.expect_status(&running, "busy");
    h.take_publish();
    h.expect_run();
    let ask = recall(&mut h, Source::Mux, &[&ran, "never-came", &running]);
    let (to, again) = h.take_reply();
    assert_eq!(to, Source::Mux);
    assert_eq!(again.parent_header.as_ref().unwrap().msg_id, ran);
    assert_eq!(again.content, first.content, "the same reply again");
    assert_eq!(again.metadata["stdout"], "out\n");
    let answer = expect_recall_reply(&mut h, Source::Mux, &ask);
    assert_eq!(answer.unknown, vec!["never-came".to_string()]);
    assert!(answer.answered_not_kept.is_empty());
    assert_eq!(answer.remembered, None, "nothing forgotten yet");
    h.assert_no_more();
}

#[test]
fn a_recall_names_answered_requests_whose_replies_are_not_held() {
    let mut h = EngineHarness::cluster();
    let big = h.start_execute(RequestMetadata::default());
    h.handle(Event::Ran(RunOutcome {
        value: Ok(Some(serde_json::json!(1))),
        shown: None,
        buffers: vec![zmq::Message::from(
            &vec![0u8; recall::KEPT_BUFFER_BYTES][..],
        )],
        stdout: String::new(),
        stderr: String::new(),
    }));
    h.take_reply();
    h.expect_status(&big, "idle");
    // More replies than are held: the oldest goes.
    let mut small = Vec::new();
    for _ in 0..=recall::KEPT {
        let id = h.start_execute(RequestMetadata::default());
        h.finish(Ok(None), None);
        h.take_reply();
        h.expect_status(&id, "idle");
        small.push(id);
    }
    let ask = recall(
        &mut h,
        Source::Mux,
        &[&big, &small[0], &small[recall::KEPT]],
    );
    let (_, again) = h.take_reply();
    assert_eq!(again.parent_header.unwrap().msg_id, small[recall::KEPT]);
    let answer = expect_recall_reply(&mut h, Source::Mux, &ask);
    assert_eq!(answer.answered_not_kept, vec![big, small[0].clone()]);
    assert!(answer.unknown.is_empty());
    h.assert_no_more();
}

#[test]
fn an_abort_of_everything_answers_a_waiting_recall_instead_of_aborting_it() {
    let mut h = EngineHarness::cluster();
    let _running = h.start_execute(RequestMetadata::default());
    let abort = h.arrive(
        Source::Control,
        Content::AbortRequest(AbortRequest::default()),
    );
    assert!(matches!(
        h.take(),
        Action::Drain {
            drain: Drain::AbortAll,
            ..
        }
    ));
    h.expect_reply(Source::Control, &abort, "abort_reply");
    let mut ask = Message::new(
        &h.client,
        Content::RecallRequest(zpar_protocol::RecallRequest {
            msg_ids: vec!["lost".into()],
        }),
    );
    ask.identities = vec![];
    let ask_id = ask.header.msg_id.clone();
    let frames = h.client.encode(&ask).into_frames();
    let inbound = decode_request(&mut h.engine, frames);
    h.handle(Event::Drained {
        source: Source::Mux,
        inbound,
        drain: Drain::AbortAll,
    });
    let answer = expect_recall_reply(&mut h, Source::Mux, &ask_id);
    assert_eq!(answer.unknown, vec!["lost".to_string()]);
    h.assert_no_more();
}

#[test]
fn a_push_runs_like_any_request_and_replies_name_the_id_a_new_registration_gave() {
    let mut h = EngineHarness::cluster();
    let mut namespace = std::collections::BTreeMap::new();
    namespace.insert("a".to_string(), serde_json::json!(1));
    let id = h.arrive(
        Source::Mux,
        Content::PushRequest(zpar_protocol::PushRequest { namespace }),
    );
    h.expect_status(&id, "busy");
    let job = h.expect_run();
    assert!(matches!(job.request.content, Content::PushRequest(_)));
    h.finish(Ok(None), None);
    let r = h.expect_reply(Source::Mux, &id, "push_reply");
    assert_eq!(r.engine_id, Some(3));
    h.expect_status(&id, "idle");
    h.assert_no_more();
    // A restarted hub registers the engine again, under another id: every
    // reply after that names it.
    h.core.set_engine_id(7);
    let id = h.arrive(
        Source::Task,
        Content::PullRequest(PullRequest {
            names: vec!["a".into()],
            single: true,
        }),
    );
    h.expect_status(&id, "busy");
    h.expect_run();
    h.finish(Ok(Some(serde_json::json!(1))), None);
    let (to, reply) = h.take_reply();
    assert_eq!(to, Source::Task);
    assert_eq!(reply.header.msg_type, "pull_reply");
    assert_eq!(reply.metadata["engine_id"], 7);
    let r = reply.content.task_reply().unwrap();
    assert_eq!(
        (r.engine_id, r.result.clone()),
        (Some(7), Some(serde_json::json!(1)))
    );
    h.expect_status(&id, "idle");
    h.assert_no_more();
}
