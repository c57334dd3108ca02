//! Socket-free tests of the hub core: each drives a [`HubCore`] with events
//! built by real client and engine [`Session`]s, takes every action it
//! returns (decoding each message through the real codec), and ends by
//! proving nothing else came out. The core's invariants are checked after
//! every event.

use super::*;
use crate::records::Records;
use serde_json::json;
use std::collections::VecDeque;
use zpar_protocol::{
    AbortRequest, ApplyRequest, ConnectionRequest, DbRequest, ExecuteRequest, HistoryRequest,
    Limits, PurgeRequest, QueueRequest, RecallReply, RegistrationRequest, RequestMetadata,
    ResubmitRequest, ResultRequest, UnregistrationRequest,
};

const KEY: &[u8] = b"test-key";
const CLIENT: &[u8] = b"client-1";

/// A core with a client and engines around it, all in memory.
struct HubHarness {
    core: HubCore,
    client: Session,
    /// One session per engine uuid, as each engine has its own.
    engines: std::collections::HashMap<Vec<u8>, Session>,
    now: f64,
    out: VecDeque<Action>,
}

impl Drop for HubHarness {
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
        Action::ToEngine { channel, uuid, .. } => {
            format!("ToEngine({channel}, {})", String::from_utf8_lossy(uuid))
        }
        Action::ToClient { channel, .. } => format!("ToClient({channel})"),
        Action::ToQuery { .. } => "ToQuery".into(),
        Action::Notify { .. } => "Notify".into(),
        Action::CommitRecords => "CommitRecords".into(),
        Action::Watch { .. } => "Watch".into(),
        Action::Forget { .. } => "Forget".into(),
        Action::Stop => "Stop".into(),
    }
}

fn uuid_of(id: u32) -> String {
    format!("engine-{id}")
}

impl HubHarness {
    fn new() -> HubHarness {
        HubHarness::with(Scheme::LeastLoad, Records::memory(1000, 1 << 16))
    }

    fn with(scheme: Scheme, records: Records) -> HubHarness {
        HubHarness::with_limits(scheme, records, Limits::default())
    }

    fn with_limits(scheme: Scheme, records: Records, limits: Limits) -> HubHarness {
        let mut session = Session::new(KEY, "hmac-sha256", "hub").unwrap();
        session.limits = limits;
        let config = CoreConfig {
            scheme,
            instance: "inst".into(),
            ..CoreConfig::default()
        };
        let mut core = HubCore::new(session, config, records);
        core.seed_scheduler(7);
        HubHarness {
            core,
            client: Session::new(KEY, "hmac-sha256", "client").unwrap(),
            engines: Default::default(),
            now: 1000.0,
            out: VecDeque::new(),
        }
    }

    fn handle(&mut self, event: Event) {
        self.now += 0.001;
        let actions = self.core.handle(event, self.now);
        self.core.check_invariants();
        self.out.extend(actions);
    }

    fn tick(&mut self) {
        self.handle(Event::Tick);
    }

    /// The next action, whatever it is.
    fn take(&mut self) -> Action {
        self.out.pop_front().expect("expected another action")
    }

    fn expect_commit(&mut self) {
        let a = self.take();
        assert!(
            matches!(a, Action::CommitRecords),
            "expected CommitRecords, got {}",
            describe(&a)
        );
    }

    fn assert_no_more(&mut self) {
        let left: Vec<String> = self.out.drain(..).map(|a| describe(&a)).collect();
        assert!(left.is_empty(), "unexpected actions: {left:?}");
    }

    /// Sends a query as `identity` and returns the hub's answer (after the
    /// tick that releases it); other actions stay queued before it.
    fn query_as(&mut self, identity: &[u8], content: Content) -> Message {
        let mut msg = Message::new(&self.client, content);
        msg.identities = vec![identity.to_vec()];
        let frames = self.client.encode(&msg).into_frames();
        self.handle(Event::Query { frames });
        self.tick();
        let pos = self
            .out
            .iter()
            .position(|a| matches!(a, Action::ToQuery { .. }))
            .expect("a query reply");
        let Some(Action::ToQuery { frames }) = self.out.remove(pos) else {
            unreachable!()
        };
        let reply = self.client.decode_frames(frames).expect("a valid reply");
        assert_eq!(reply.identities, vec![identity.to_vec()]);
        assert_eq!(reply.parent_header.as_ref(), Some(&msg.header));
        reply
    }

    fn query(&mut self, content: Content) -> Message {
        self.query_as(CLIENT, content)
    }

    /// Registers an engine, taking the actions registration makes.
    fn register_as(&mut self, uuid: &str, requested: Option<u32>) -> u32 {
        let reply = self.query_as(
            uuid.as_bytes(),
            Content::RegistrationRequest(RegistrationRequest {
                uuid: uuid.into(),
                id: requested,
                host: Some(format!("host-of-{uuid}")),
                relay: None,
                heartbeat: Some("heartbeat-test".into()),
            }),
        );
        let Content::RegistrationReply(r) = reply.content else {
            panic!("not a registration reply: {:?}", reply.content)
        };
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.hub_instance, "inst");
        assert!(matches!(self.take(), Action::Watch { uuid: u } if u == uuid.as_bytes()));
        let n = self.take_notification();
        assert!(
            matches!(n.content, Content::RegistrationNotification(ref e) if e.id == r.id && e.uuid == uuid)
        );
        r.id
    }

    /// Registers engines 0..n (uuids `engine-0`, ...).
    fn engines(&mut self, n: u32) -> Vec<u32> {
        let ids: Vec<u32> = (0..n)
            .map(|i| {
                let id = self.register_as(&uuid_of(i), None);
                self.expect_commit_if_any();
                id
            })
            .collect();
        self.assert_no_more();
        ids
    }

    fn expect_commit_if_any(&mut self) {
        if matches!(self.out.front(), Some(Action::CommitRecords)) {
            self.out.pop_front();
        }
    }

    fn take_notification(&mut self) -> Message {
        match self.take() {
            Action::Notify { frames } => self.client.decode_frames(frames).unwrap(),
            other => panic!("expected Notify, got {}", describe(&other)),
        }
    }

    /// Sends a client request; returns it as sent.
    fn request(&mut self, channel: Channel, content: Content, meta: RequestMetadata) -> Message {
        self.request_with(channel, content, meta.to_map())
    }

    fn request_with(
        &mut self,
        channel: Channel,
        content: Content,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Message {
        let mut msg = Message::new(&self.client, content);
        msg.identities = vec![CLIENT.to_vec()];
        msg.metadata = metadata;
        let frames = self.client.encode(&msg).into_frames();
        self.handle(Event::ClientRequest { channel, frames });
        msg
    }

    fn execute(&mut self, targets: &[u32]) -> Message {
        let meta = RequestMetadata {
            targets: Some(targets.to_vec()),
            ..Default::default()
        };
        self.request(Channel::Mux, execute("1 + 1"), meta)
    }

    fn task(&mut self, meta: RequestMetadata) -> Message {
        self.request(Channel::Task, apply(), meta)
    }

    /// The next action must be a send to an engine; returns (channel, engine
    /// id, the request as the engine decodes it).
    fn take_to_engine(&mut self) -> (Channel, u32, Message) {
        match self.take() {
            Action::ToEngine {
                channel,
                uuid,
                frames,
            } => {
                let id = self
                    .core
                    .registry()
                    .id_of(&uuid)
                    .expect("sent to a registered engine");
                let msg = self
                    .engine_session(&uuid)
                    .decode_frames(frames)
                    .expect("a valid request");
                (channel, id, msg)
            }
            other => panic!("expected ToEngine, got {}", describe(&other)),
        }
    }

    /// The engine `uuid` answers `request` on `channel`.
    fn answer_as(&mut self, uuid: &str, channel: Channel, request: &Message, reply: TaskReply) {
        let engine_id = self.core.registry().id_of(uuid.as_bytes());
        let session = self.engine_session(uuid.as_bytes());
        let mut msg = request.reply(session, Content::reply_to(&request.header.msg_type, reply));
        msg.metadata = ReplyMetadata {
            engine: engine_id,
            status: Some(Status::Ok),
            started: Some("2026-11-29T05:00:00.000000Z".into()),
            completed: Some("2026-11-29T05:00:01.000000Z".into()),
            stdout: "printed\n".into(),
            ..Default::default()
        }
        .to_map();
        let mut frames = vec![zmq::Message::from(uuid.as_bytes())];
        frames.extend(
            self.engine_session(uuid.as_bytes())
                .encode(&msg)
                .into_frames(),
        );
        self.handle(Event::EngineReply { channel, frames });
    }

    fn engine_session(&mut self, uuid: &[u8]) -> &mut Session {
        self.engines
            .entry(uuid.to_vec())
            .or_insert_with(|| Session::new(KEY, "hmac-sha256", "engine").unwrap())
    }

    fn answer(&mut self, engine: u32, channel: Channel, request: &Message) {
        self.answer_as(&uuid_of(engine), channel, request, TaskReply::ok());
    }

    /// The next action must be a reply to the client; returns it decoded.
    fn take_reply(&mut self) -> (Channel, Message) {
        match self.take() {
            Action::ToClient { channel, frames } => {
                let msg = self.client.decode_frames(frames).expect("a valid reply");
                assert_eq!(msg.identities, vec![CLIENT.to_vec()]);
                (channel, msg)
            }
            other => panic!("expected ToClient, got {}", describe(&other)),
        }
    }

    /// Ticks, then takes the commit (if records were written) and one
    /// reply.
    fn flush_reply(&mut self) -> (Channel, Message) {
        self.tick();
        self.expect_commit_if_any();
        self.take_reply()
    }

    /// Ticks, then takes the commit (if records were written) and `n`
    /// replies.
    fn flush_replies(&mut self, n: usize) -> Vec<Message> {
        self.tick();
        self.expect_commit_if_any();
        (0..n).map(|_| self.take_reply().1).collect()
    }

    fn lose(&mut self, engine: u32, reason: LossReason) {
        self.handle(Event::EngineLost {
            uuid: uuid_of(engine).into_bytes(),
            reason,
        });
    }

    /// Takes the Forget and the unregistration notice of a lost engine.
    fn take_loss(&mut self, engine: u32) {
        assert!(
            matches!(self.take(), Action::Forget { uuid } if uuid == uuid_of(engine).as_bytes())
        );
        let n = self.take_notification();
        assert!(
            matches!(n.content, Content::UnregistrationNotification(ref e) if e.id == engine),
            "{:?}",
            n.content
        );
    }

    /// A task the core failed: no longer queued, and recorded as an error.
    fn assert_failed_for_good(&self, msg_id: &str) {
        assert_eq!(self.core.waiting(), 0);
        assert_eq!(
            self.record_status(msg_id, None),
            RecordStatus::Done(Status::Error)
        );
    }

    fn record_status(&self, msg_id: &str, engine: Option<u32>) -> RecordStatus {
        let recs = self.core.records.get(msg_id).unwrap();
        recs.iter()
            .find(|r| r.engine == engine)
            .unwrap_or_else(|| panic!("no record of {msg_id} on {engine:?}"))
            .status
    }

    fn pending_on(&self, engine: u32) -> usize {
        self.core.registry().get(engine).unwrap().pending().len()
    }
}

fn execute(code: &str) -> Content {
    Content::ExecuteRequest(ExecuteRequest {
        code: code.into(),
        ..Default::default()
    })
}

fn apply() -> Content {
    Content::ApplyRequest(ApplyRequest {
        f: "|x| x".into(),
        args: vec![json!(1)],
    })
}

fn error_of(msg: &Message) -> (String, String) {
    let r = msg.content.task_reply().expect("a task reply");
    assert_eq!(r.status, Status::Error);
    (
        r.ename.clone().unwrap_or_default(),
        r.evalue.clone().unwrap_or_default(),
    )
}

fn targets(ids: &[u32]) -> RequestMetadata {
    RequestMetadata {
        targets: Some(ids.to_vec()),
        ..Default::default()
    }
}

fn after(ids: &[&Message]) -> RequestMetadata {
    RequestMetadata {
        after: ids.iter().map(|m| m.header.msg_id.clone()).collect(),
        ..Default::default()
    }
}

fn follow(ids: &[&Message]) -> RequestMetadata {
    RequestMetadata {
        follow: ids.iter().map(|m| m.header.msg_id.clone()).collect(),
        ..Default::default()
    }
}

fn retries(n: u32) -> RequestMetadata {
    RequestMetadata {
        retries: n,
        ..Default::default()
    }
}

// ----- direct requests and fan-out -----

#[test]
fn a_direct_request_goes_to_its_engine_and_the_reply_back() {
    let mut h = HubHarness::new();
    h.engines(2);
    let req = h.execute(&[1]);
    let (channel, engine, got) = h.take_to_engine();
    assert_eq!((channel, engine), (Channel::Mux, 1));
    assert_eq!(got.header, req.header);
    assert_eq!(got.identities, vec![CLIENT.to_vec()]);
    h.assert_no_more();
    assert_eq!(h.pending_on(1), 1);
    h.answer(1, Channel::Mux, &got);
    let (channel, reply) = h.flush_reply();
    assert_eq!(channel, Channel::Mux);
    assert_eq!(
        reply.parent_header.as_ref().unwrap().msg_id,
        req.header.msg_id
    );
    assert_eq!(h.pending_on(1), 0);
    h.assert_no_more();
}

#[test]
fn requests_and_replies_too_large_are_answered_at_once_naming_the_limit() {
    let limits = Limits {
        max_json_frame: 4096,
        ..Limits::default()
    };
    let mut h = HubHarness::with_limits(Scheme::LeastLoad, Records::memory(1000, 1 << 16), limits);
    h.engines(1);
    // A request too large: answered by the hub; no engine sees it.
    let code = "1;".repeat(4096);
    let req = h.request(Channel::Mux, execute(&code), targets(&[0]));
    let (_, reply) = h.flush_reply();
    assert_eq!(
        reply.parent_header.as_ref().unwrap().msg_id,
        req.header.msg_id
    );
    let (ename, evalue) = error_of(&reply);
    assert_eq!(ename, "TooLarge");
    assert!(evalue.contains("the content frame has"), "{evalue}");
    assert!(evalue.contains("the limit is 4096"), "{evalue}");
    h.assert_no_more();
    // A reply too large: its request fails once, recorded, and the
    // engine's queue is empty again.
    let req = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    let mut big = TaskReply::ok();
    big.result = Some(json!("x".repeat(8192)));
    h.answer_as(&uuid_of(0), Channel::Mux, &got, big);
    let (_, reply) = h.flush_reply();
    assert_eq!(
        reply.parent_header.as_ref().unwrap().msg_id,
        req.header.msg_id
    );
    let (ename, evalue) = error_of(&reply);
    assert_eq!(ename, "TooLarge");
    assert!(
        evalue.contains("engine 0's reply was too large"),
        "{evalue}"
    );
    assert!(evalue.contains("the limit is 4096"), "{evalue}");
    let rec = &h.core.records.get(&req.header.msg_id).unwrap()[0];
    assert_eq!(rec.status, RecordStatus::Done(Status::Error));
    assert_eq!(rec.ename.as_deref(), Some("TooLarge"));
    h.assert_no_more();
    let r = h.query(Content::QueueRequest(QueueRequest {
        targets: None,
        ..Default::default()
    }));
    let Content::QueueReply(q) = r.content else {
        panic!("{r:?}")
    };
    assert_eq!(q.engines[&0].queue, 0);
}

#[test]
fn a_query_whose_answer_is_too_large_is_answered_too_large() {
    let limits = Limits {
        max_json_frame: 4096,
        ..Limits::default()
    };
    let mut h = HubHarness::with_limits(Scheme::LeastLoad, Records::memory(1000, 1 << 16), limits);
    h.engines(1);
    for _ in 0..20 {
        let req = h.execute(&[0]);
        let (_, _, got) = h.take_to_engine();
        h.answer(0, Channel::Mux, &got);
        h.flush_reply();
        let _ = req;
    }
    let r = h.query(Content::DbRequest(DbRequest {
        query: json!({}),
        keys: None,
    }));
    let text = format!("{:?}", r.content);
    assert!(text.contains("TooLarge"), "{text}");
    assert!(text.contains("ask for less at once"), "{text}");
    // A narrower answer still comes.
    let r = h.query(Content::DbRequest(DbRequest {
        query: json!({}),
        keys: Some(vec!["msg_id".into()]),
    }));
    let Content::DbReply(reply) = r.content else {
        panic!("{r:?}")
    };
    assert_eq!(reply.records.len(), 20);
}

#[test]
fn a_reply_is_recorded_with_its_outcome_and_its_result_as_it_came() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    let mut reply = TaskReply::error("RuntimeError", "boom");
    reply.result = Some(json!([1, 2, 3]));
    h.answer_as(&uuid_of(0), Channel::Mux, &got, reply);
    h.flush_reply();
    let rec = &h.core.records.get(&req.header.msg_id).unwrap()[0];
    assert_eq!(rec.status, RecordStatus::Done(Status::Error));
    assert_eq!(rec.ename.as_deref(), Some("RuntimeError"));
    assert_eq!(rec.evalue.as_deref(), Some("boom"));
    let content = &rec.result.as_ref().unwrap().content;
    assert!(content.contains("[1,2,3]"), "{content}");
    // A reply whose content is no reply is recorded as a failure that
    // says so.
    let req = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    let session = h.engine_session(uuid_of(0).as_bytes());
    let msg = got.reply(
        session,
        Content::Unknown {
            msg_type: "execute_reply".into(),
            content: json!({"no": "status"}),
        },
    );
    let mut frames = vec![zmq::Message::from(uuid_of(0).as_bytes())];
    frames.extend(
        h.engine_session(uuid_of(0).as_bytes())
            .encode(&msg)
            .into_frames(),
    );
    h.handle(Event::EngineReply {
        channel: Channel::Mux,
        frames,
    });
    h.tick();
    h.expect_commit_if_any();
    // Passed on to its client as it came (who finds it unreadable).
    assert!(matches!(h.take(), Action::ToClient { .. }));
    let rec = &h.core.records.get(&req.header.msg_id).unwrap()[0];
    assert_eq!(rec.status, RecordStatus::Done(Status::Error));
    assert_eq!(rec.ename.as_deref(), Some("BadRequest"));
    assert!(
        rec.evalue.as_deref().unwrap().contains("not readable"),
        "{:?}",
        rec.evalue
    );
    h.assert_no_more();
}

#[test]
fn a_request_for_several_targets_is_fanned_out_once_per_engine() {
    let mut h = HubHarness::new();
    h.engines(4);
    let req = h.execute(&[0, 2, 3]);
    let sent: Vec<(Channel, u32, Message)> = (0..3).map(|_| h.take_to_engine()).collect();
    h.assert_no_more();
    assert_eq!(sent.iter().map(|s| s.1).collect::<Vec<_>>(), vec![0, 2, 3]);
    for (_, _, m) in &sent {
        assert_eq!(m.header.msg_id, req.header.msg_id);
        assert_eq!(m.content, execute("1 + 1"));
        // Each engine gets the request without the list of every target,
        // signed again by the hub (the harness verified the signature).
        assert!(req.metadata.contains_key("targets"));
        assert!(!m.metadata.contains_key("targets"), "{:?}", m.metadata);
    }
    let recs = h.core.records.get(&req.header.msg_id).unwrap();
    assert!(recs.iter().all(|r| !r.request.metadata.contains("targets")));
    let mut engines: Vec<Option<u32>> = recs.iter().map(|r| r.engine).collect();
    engines.sort();
    assert_eq!(engines, vec![Some(0), Some(2), Some(3)]);
    for (_, e, m) in &sent {
        h.answer(*e, Channel::Mux, m);
    }
    let replies = h.flush_replies(3);
    assert!(replies
        .iter()
        .all(|r| r.parent_header.as_ref().unwrap().msg_id == req.header.msg_id));
    h.assert_no_more();
}

#[test]
fn unknown_targets_get_an_error_each_and_the_rest_run() {
    let mut h = HubHarness::new();
    h.engines(2);
    h.execute(&[0, 7, 9]);
    let (_, engine, _) = h.take_to_engine();
    assert_eq!(engine, 0);
    h.assert_no_more();
    let replies = h.flush_replies(2);
    for (r, id) in replies.iter().zip([7, 9]) {
        let (ename, evalue) = error_of(r);
        assert_eq!(ename, "UnknownEngine");
        assert!(evalue.contains(&format!("engine {id}")), "{evalue}");
        assert_eq!(r.content.task_reply().unwrap().engine_id, Some(id));
        assert_eq!(r.header.msg_type, "execute_reply");
    }
    h.assert_no_more();
}

#[test]
fn a_direct_request_without_targets_is_refused() {
    let mut h = HubHarness::new();
    h.engines(1);
    h.execute(&[]);
    let (_, r) = h.flush_reply();
    assert_eq!(error_of(&r).0, "NoTargets");
    h.request(Channel::Mux, execute("1"), RequestMetadata::default());
    let (_, r) = h.flush_reply();
    assert_eq!(error_of(&r).0, "NoTargets");
    h.assert_no_more();
}

#[test]
fn metadata_of_the_wrong_shape_gets_a_bad_request_reply() {
    let mut h = HubHarness::new();
    h.engines(1);
    for (channel, meta) in [
        (Channel::Mux, json!({"targets": "all"})),
        (Channel::Task, json!({"retries": -1})),
        (Channel::Task, json!({"after": 5})),
        (Channel::Control, json!({"targets": [0.5]})),
    ] {
        let req = h.request_with(channel, execute("1"), meta.as_object().cloned().unwrap());
        let (ch, r) = h.flush_reply();
        assert_eq!(ch, channel);
        let (ename, evalue) = error_of(&r);
        assert_eq!(ename, "BadRequest");
        assert!(evalue.contains("request metadata"), "{evalue}");
        assert_eq!(r.parent_header.unwrap().msg_id, req.header.msg_id);
    }
    assert_eq!(h.pending_on(0), 0);
    assert_eq!(h.core.waiting(), 0);
    h.assert_no_more();
}

#[test]
fn unsigned_forged_and_replayed_requests_are_dropped() {
    let mut h = HubHarness::new();
    h.engines(1);
    let forger = Session::new(b"wrong-key", "hmac-sha256", "forger").unwrap();
    let mut msg = Message::new(&forger, execute("1"));
    msg.identities = vec![CLIENT.to_vec()];
    msg.metadata = targets(&[0]).to_map();
    let frames = forger.encode(&msg).into_frames();
    h.handle(Event::ClientRequest {
        channel: Channel::Mux,
        frames,
    });
    h.assert_no_more();

    let mut msg = Message::new(&h.client, execute("1"));
    msg.identities = vec![CLIENT.to_vec()];
    msg.metadata = targets(&[0]).to_map();
    let raw = h.client.encode(&msg);
    let again = raw.duplicate().into_frames();
    h.handle(Event::ClientRequest {
        channel: Channel::Mux,
        frames: raw.into_frames(),
    });
    h.take_to_engine();
    h.handle(Event::ClientRequest {
        channel: Channel::Mux,
        frames: again,
    });
    h.assert_no_more();
    assert_eq!(h.pending_on(0), 1, "the replay was not forwarded");

    h.handle(Event::ClientRequest {
        channel: Channel::Mux,
        frames: vec![zmq::Message::from(&b"garbage"[..])],
    });
    h.handle(Event::ClientRequest {
        channel: Channel::Task,
        frames: vec![],
    });
    h.tick();
    h.expect_commit();
    h.assert_no_more();
}

#[test]
fn replies_wait_for_the_commit_of_their_records() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    h.answer(0, Channel::Mux, &got);
    h.assert_no_more();
    // The record is already final in the store; the reply waits for the
    // commit, which comes first in the tick.
    assert_eq!(
        h.record_status(&req.header.msg_id, Some(0)),
        RecordStatus::Done(Status::Ok)
    );
    h.tick();
    h.expect_commit();
    let (_, reply) = h.take_reply();
    assert_eq!(
        reply.parent_header.as_ref().unwrap().msg_id,
        req.header.msg_id
    );
    h.assert_no_more();
    h.tick();
    h.assert_no_more();
}

#[test]
fn a_reply_is_recorded_with_its_timings_and_output() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    h.answer_as(
        &uuid_of(0),
        Channel::Mux,
        &got,
        TaskReply::error("RuntimeError", "boom"),
    );
    h.flush_reply();
    let rec = &h.core.records.get(&req.header.msg_id).unwrap()[0];
    assert_eq!(rec.status, RecordStatus::Done(Status::Error));
    assert_eq!(rec.ename.as_deref(), Some("RuntimeError"));
    assert_eq!(rec.evalue.as_deref(), Some("boom"));
    assert_eq!(rec.stdout, "printed\n");
    assert_eq!(rec.started.as_deref(), Some("2026-11-29T05:00:00.000000Z"));
    assert!(rec.received.is_some());
    assert_eq!(rec.channel, Channel::Mux);
    assert_eq!(rec.msg_type, "execute_request");
    h.assert_no_more();
}

#[test]
fn replies_from_unregistered_engines_or_with_bad_signatures_are_dropped() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    h.answer_as("stranger", Channel::Mux, &got, TaskReply::ok());
    let forger = Session::new(b"other", "hmac-sha256", "x").unwrap();
    let msg = got.reply(&forger, Content::ExecuteReply(TaskReply::ok()));
    let mut frames = vec![zmq::Message::from(uuid_of(0).as_bytes())];
    frames.extend(forger.encode(&msg).into_frames());
    h.handle(Event::EngineReply {
        channel: Channel::Mux,
        frames,
    });
    h.handle(Event::EngineReply {
        channel: Channel::Mux,
        frames: vec![],
    });
    h.tick();
    h.expect_commit();
    h.assert_no_more();
    assert_eq!(h.pending_on(0), 1, "still waiting for the real reply");
    assert_eq!(
        h.record_status(&req.header.msg_id, Some(0)),
        RecordStatus::Pending
    );
}

#[test]
fn control_requests_are_fanned_out_and_recorded_as_control() {
    let mut h = HubHarness::new();
    h.engines(2);
    let req = h.request(
        Channel::Control,
        Content::AbortRequest(AbortRequest::default()),
        targets(&[0, 1]),
    );
    for want in [0, 1] {
        let (channel, engine, _) = h.take_to_engine();
        assert_eq!((channel, engine), (Channel::Control, want));
    }
    h.assert_no_more();
    for r in h.core.records.get(&req.header.msg_id).unwrap() {
        assert_eq!(r.channel, Channel::Control);
        assert_eq!(r.msg_type, "abort_request");
    }
}

// ----- load balancing -----

#[test]
fn least_load_spreads_tasks_over_idle_engines() {
    let mut h = HubHarness::new();
    h.engines(3);
    let mut used = Vec::new();
    for _ in 0..3 {
        h.task(RequestMetadata::default());
        let (channel, engine, _) = h.take_to_engine();
        assert_eq!(channel, Channel::Task);
        used.push(engine);
    }
    used.sort();
    assert_eq!(used, vec![0, 1, 2]);
    h.tick();
    h.expect_commit();
    h.assert_no_more();
}

#[test]
fn least_load_prefers_the_engine_with_the_shortest_queue() {
    let mut h = HubHarness::new();
    h.engines(2);
    h.execute(&[0]);
    h.execute(&[0]);
    h.take_to_engine();
    h.take_to_engine();
    for _ in 0..2 {
        h.task(RequestMetadata::default());
        let (_, engine, _) = h.take_to_engine();
        assert_eq!(engine, 1, "engine 0 has two requests queued");
    }
    h.task(RequestMetadata::default());
    let (_, engine, _) = h.take_to_engine();
    assert_eq!(engine, 0, "a tie goes to the least recently used");
    h.assert_no_more();
}

#[test]
fn lru_cycles_through_the_engines() {
    let mut h = HubHarness::with(Scheme::Lru, Records::memory(1000, 1 << 16));
    h.engines(3);
    let picks: Vec<u32> = (0..6)
        .map(|_| {
            h.task(RequestMetadata::default());
            h.take_to_engine().1
        })
        .collect();
    assert_eq!(picks[..3], picks[3..]);
    let mut first = picks[..3].to_vec();
    first.sort();
    assert_eq!(first, vec![0, 1, 2]);
    h.assert_no_more();
}

#[test]
fn random_stays_within_the_allowed_engines() {
    let mut h = HubHarness::with(Scheme::Random, Records::memory(1000, 1 << 16));
    h.engines(4);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        h.task(targets(&[1, 3]));
        seen.insert(h.take_to_engine().1);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 3]);
    h.assert_no_more();
}

#[test]
fn a_task_restricted_to_dead_engines_fails_with_no_engines() {
    let mut h = HubHarness::new();
    h.engines(2);
    h.task(targets(&[5]));
    let (channel, r) = h.flush_reply();
    assert_eq!(channel, Channel::Task);
    let (ename, evalue) = error_of(&r);
    assert_eq!(ename, "NoEngines");
    assert!(evalue.contains("[5]"), "{evalue}");
    assert_eq!(h.core.waiting(), 0);
    h.assert_no_more();
}

#[test]
fn a_task_waits_for_an_engine_and_runs_when_one_registers() {
    let mut h = HubHarness::new();
    let req = h.task(RequestMetadata::default());
    h.tick();
    h.expect_commit();
    h.assert_no_more();
    assert_eq!(h.core.waiting(), 1);
    let id = h.register_as(&uuid_of(0), None);
    let (_, engine, got) = h.take_to_engine();
    assert_eq!(engine, id);
    assert_eq!(got.header.msg_id, req.header.msg_id);
    h.expect_commit_if_any();
    h.assert_no_more();
}

// ----- dependencies -----

#[test]
fn after_waits_for_its_dependency_to_succeed() {
    let mut h = HubHarness::new();
    h.engines(2);
    let first = h.task(RequestMetadata::default());
    let (_, e1, got1) = h.take_to_engine();
    let second = h.task(after(&[&first]));
    h.assert_no_more();
    assert_eq!(h.core.waiting(), 1);
    h.answer(e1, Channel::Task, &got1);
    let (_, _, got2) = h.take_to_engine();
    assert_eq!(got2.header.msg_id, second.header.msg_id);
    let (_, r) = h.flush_reply();
    assert_eq!(r.parent_header.unwrap().msg_id, first.header.msg_id);
    h.assert_no_more();
}

#[test]
fn after_a_failed_dependency_the_task_fails() {
    let mut h = HubHarness::new();
    h.engines(1);
    let first = h.task(RequestMetadata::default());
    let (_, e, got) = h.take_to_engine();
    let second = h.task(after(&[&first]));
    h.answer_as(
        &uuid_of(e),
        Channel::Task,
        &got,
        TaskReply::error("RuntimeError", "no"),
    );
    let replies = h.flush_replies(2);
    assert_eq!(
        replies[0].parent_header.as_ref().unwrap().msg_id,
        first.header.msg_id
    );
    let (ename, evalue) = error_of(&replies[1]);
    assert_eq!(ename, "DependencyFailed");
    assert!(evalue.contains("ended error"), "{evalue}");
    assert_eq!(
        h.record_status(&second.header.msg_id, None),
        RecordStatus::Done(Status::Error)
    );
    h.assert_no_more();
}

#[test]
fn a_dependency_the_hub_never_saw_is_impossible() {
    let mut h = HubHarness::new();
    h.engines(1);
    h.task(RequestMetadata {
        after: vec!["no-such-task".into()],
        ..Default::default()
    });
    let (_, r) = h.flush_reply();
    let (ename, evalue) = error_of(&r);
    assert_eq!(ename, "ImpossibleDependency");
    assert!(evalue.contains("no-such-task"), "{evalue}");
    h.assert_no_more();
}

#[test]
fn follow_runs_where_its_dependency_ran() {
    let mut h = HubHarness::new();
    h.engines(3);
    h.task(RequestMetadata::default());
    h.take_to_engine();
    let first = h.task(RequestMetadata::default());
    let (_, where_first, got) = h.take_to_engine();
    h.answer(where_first, Channel::Task, &got);
    for _ in 0..3 {
        h.task(follow(&[&first]));
        let (_, engine, _) = h.take_to_engine();
        assert_eq!(engine, where_first);
    }
    h.flush_reply();
    h.assert_no_more();
}

#[test]
fn follow_fails_when_its_engine_is_gone() {
    let mut h = HubHarness::new();
    h.engines(2);
    let first = h.task(RequestMetadata::default());
    let (_, e, got) = h.take_to_engine();
    h.answer(e, Channel::Task, &got);
    h.flush_reply();
    h.lose(e, LossReason::MissedHeartbeats);
    h.take_loss(e);
    h.task(follow(&[&first]));
    let (_, r) = h.flush_reply();
    let (ename, evalue) = error_of(&r);
    assert_eq!(ename, "ImpossibleDependency");
    assert!(evalue.contains("no live engine"), "{evalue}");
    h.assert_no_more();
}

#[test]
fn after_and_follow_together_wait_then_follow() {
    let mut h = HubHarness::new();
    h.engines(2);
    let a = h.task(RequestMetadata::default());
    let (_, ea, got_a) = h.take_to_engine();
    let b = h.task(RequestMetadata::default());
    let (_, eb, got_b) = h.take_to_engine();
    assert_ne!(ea, eb);
    h.task(RequestMetadata {
        after: vec![a.header.msg_id.clone()],
        follow: vec![b.header.msg_id.clone()],
        ..Default::default()
    });
    h.answer(eb, Channel::Task, &got_b);
    h.assert_no_more();
    h.answer(ea, Channel::Task, &got_a);
    let (_, engine, _) = h.take_to_engine();
    assert_eq!(engine, eb);
    h.flush_replies(2);
    h.assert_no_more();
}

// ----- engines lost -----

#[test]
fn a_lost_engine_fails_each_pending_request_once() {
    let mut h = HubHarness::new();
    h.engines(2);
    let reqs: Vec<Message> = (0..3).map(|_| h.execute(&[1])).collect();
    let task = h.task(targets(&[1]));
    for _ in 0..4 {
        h.take_to_engine();
    }
    h.lose(1, LossReason::MissedHeartbeats);
    let forget = h.take();
    assert!(matches!(forget, Action::Forget { .. }));
    let n = h.take_notification();
    let Content::UnregistrationNotification(e) = n.content else {
        panic!()
    };
    assert_eq!(e.id, 1);
    assert!(e.reason.unwrap().contains("missed heartbeats"));
    let replies = h.flush_replies(4);
    let mut answered: Vec<String> = replies
        .iter()
        .map(|r| {
            let (ename, evalue) = error_of(r);
            assert_eq!(ename, "EngineDied");
            assert!(evalue.contains("engine 1 died"), "{evalue}");
            r.parent_header.as_ref().unwrap().msg_id.clone()
        })
        .collect();
    answered.sort();
    let mut want: Vec<String> = reqs
        .iter()
        .chain([&task])
        .map(|r| r.header.msg_id.clone())
        .collect();
    want.sort();
    assert_eq!(answered, want, "each pending request answered exactly once");
    for r in &reqs {
        assert_eq!(
            h.record_status(&r.header.msg_id, Some(1)),
            RecordStatus::Done(Status::Error)
        );
    }
    h.lose(1, LossReason::MissedHeartbeats);
    h.tick();
    h.assert_no_more();
}

#[test]
fn a_task_with_retries_runs_again_on_another_engine() {
    let mut h = HubHarness::new();
    h.engines(2);
    let req = h.task(retries(1));
    let (_, first, _) = h.take_to_engine();
    h.lose(first, LossReason::MissedHeartbeats);
    h.take_loss(first);
    let (_, second, got) = h.take_to_engine();
    assert_ne!(first, second);
    assert_eq!(got.header.msg_id, req.header.msg_id);
    h.tick();
    h.expect_commit();
    h.assert_no_more();
    h.answer(second, Channel::Task, &got);
    let (_, r) = h.flush_reply();
    assert_eq!(r.content.task_reply().unwrap().status, Status::Ok);
    assert_eq!(
        h.record_status(&req.header.msg_id, Some(second)),
        RecordStatus::Done(Status::Ok)
    );
    h.assert_no_more();
}

#[test]
fn a_task_out_of_retries_fails_with_engine_died() {
    let mut h = HubHarness::new();
    h.engines(3);
    let req = h.task(retries(1));
    let (_, first, _) = h.take_to_engine();
    h.lose(first, LossReason::MissedHeartbeats);
    h.take_loss(first);
    let (_, second, _) = h.take_to_engine();
    h.lose(second, LossReason::MissedHeartbeats);
    h.take_loss(second);
    let (_, r) = h.flush_reply();
    assert_eq!(r.parent_header.as_ref().unwrap().msg_id, req.header.msg_id);
    assert_eq!(error_of(&r).0, "EngineDied");
    h.assert_no_more();
}

#[test]
fn a_late_reply_of_an_earlier_attempt_is_dropped() {
    let mut h = HubHarness::new();
    h.engines(2);
    h.task(retries(2));
    let (_, first, got_first) = h.take_to_engine();
    h.lose(first, LossReason::MissedHeartbeats);
    h.take_loss(first);
    let (_, second, got_second) = h.take_to_engine();
    h.tick();
    h.expect_commit();
    // The first engine was only slow: it comes back under its old id and
    // answers the first attempt.
    let back = h.register_as(&uuid_of(first), Some(first));
    assert_eq!(back, first);
    h.answer(first, Channel::Task, &got_first);
    h.tick();
    h.assert_no_more();
    h.answer(second, Channel::Task, &got_second);
    let (_, r) = h.flush_reply();
    assert_eq!(r.content.task_reply().unwrap().status, Status::Ok);
    h.assert_no_more();
}

#[test]
fn retried_tasks_keep_their_order() {
    let mut h = HubHarness::new();
    h.engines(1);
    let reqs: Vec<Message> = (0..3).map(|_| h.task(retries(1))).collect();
    for _ in 0..3 {
        h.take_to_engine();
    }
    h.lose(0, LossReason::MissedHeartbeats);
    h.take_loss(0);
    h.tick();
    h.expect_commit();
    h.assert_no_more();
    assert_eq!(h.core.waiting(), 3, "no engine left: the tasks wait");
    h.register_as("engine-new", None);
    let order: Vec<String> = (0..3).map(|_| h.take_to_engine().2.header.msg_id).collect();
    let want: Vec<String> = reqs.iter().map(|r| r.header.msg_id.clone()).collect();
    assert_eq!(order, want);
    h.expect_commit_if_any();
    h.assert_no_more();
}

#[test]
fn an_engine_that_unregisters_is_lost_in_good_order() {
    let mut h = HubHarness::new();
    h.engines(2);
    let r = h.query_as(
        uuid_of(1).as_bytes(),
        Content::UnregistrationRequest(UnregistrationRequest { id: 1 }),
    );
    assert_eq!(r.content.task_reply().unwrap().status, Status::Ok);
    assert!(matches!(h.take(), Action::Forget { .. }));
    let n = h.take_notification();
    assert!(
        matches!(n.content, Content::UnregistrationNotification(ref e) if e.reason.as_deref() == Some("unregistered"))
    );
    h.expect_commit_if_any();
    h.assert_no_more();
    assert!(h.core.registry().get(1).is_none());
}

#[test]
fn an_engine_that_leaves_before_its_shutdown_reply_is_read_answers_ok() {
    let mut h = HubHarness::new();
    h.engines(2);
    let shutdown = h.request(
        Channel::Control,
        Content::ShutdownRequest(zpar_protocol::ShutdownRequest::default()),
        targets(&[1]),
    );
    h.take_to_engine();
    let running = h.execute(&[1]);
    h.take_to_engine();
    // Its unregistration beats its shutdown reply (another socket).
    h.handle(Event::EngineLost {
        uuid: uuid_of(1).into_bytes(),
        reason: LossReason::Unregistered,
    });
    h.take_loss(1);
    let replies = h.flush_replies(2);
    let of = |req: &Message| {
        replies
            .iter()
            .find(|r| r.parent_header.as_ref().unwrap().msg_id == req.header.msg_id)
            .expect("a reply")
    };
    let done = of(&shutdown);
    assert_eq!(done.header.msg_type, "shutdown_reply");
    assert_eq!(done.content.task_reply().unwrap().status, Status::Ok);
    assert_eq!(
        h.record_status(&shutdown.header.msg_id, Some(1)),
        RecordStatus::Done(Status::Ok)
    );
    // Anything else it owed did die with it.
    assert_eq!(error_of(of(&running)).0, "EngineDied");
    h.assert_no_more();
}

#[test]
fn only_an_engine_itself_may_unregister_it() {
    let mut h = HubHarness::new();
    h.engines(2);
    let r = h.query(Content::UnregistrationRequest(UnregistrationRequest {
        id: 1,
    }));
    assert_eq!(error_of(&r).0, "NotPermitted");
    h.expect_commit_if_any();
    h.assert_no_more();
    assert!(h.core.registry().get(1).is_some());
}

#[test]
fn losing_an_unknown_engine_does_nothing() {
    let mut h = HubHarness::new();
    h.engines(1);
    h.handle(Event::EngineLost {
        uuid: b"nobody".to_vec(),
        reason: LossReason::MissedHeartbeats,
    });
    h.assert_no_more();
}

#[test]
fn loss_reasons_say_whether_the_engine_failed() {
    assert!(LossReason::MissedHeartbeats.is_failure());
    assert!(!LossReason::Unregistered.is_failure());
    assert_eq!(LossReason::Unregistered.describe(), "unregistered");
}

// ----- registration -----

#[test]
fn registration_gives_ids_in_order_and_watches_each_engine() {
    let mut h = HubHarness::new();
    assert_eq!(h.engines(3), vec![0, 1, 2]);
    let table = h.query(Content::ConnectionRequest(ConnectionRequest {}));
    let Content::ConnectionReply(t) = table.content else {
        panic!()
    };
    assert_eq!(t.engines.len(), 3);
    assert_eq!(t.engines[&2], uuid_of(2));
    assert_eq!(t.hosts[&2], format!("host-of-{}", uuid_of(2)));
    h.expect_commit_if_any();
    h.assert_no_more();
}

#[test]
fn registering_again_keeps_the_id_and_makes_no_noise() {
    let mut h = HubHarness::new();
    h.engines(1);
    let r = h.query_as(
        uuid_of(0).as_bytes(),
        Content::RegistrationRequest(RegistrationRequest {
            uuid: uuid_of(0),
            id: None,
            host: None,
            relay: None,
            heartbeat: Some("heartbeat-test".into()),
        }),
    );
    let Content::RegistrationReply(r) = r.content else {
        panic!()
    };
    assert_eq!(r.id, 0);
    h.expect_commit_if_any();
    h.assert_no_more();
}

#[test]
fn every_engine_gets_the_communicator_keys_at_registration() {
    let keys = zpar_protocol::CurveKeys::generate().unwrap();
    let mut h = HubHarness::new();
    h.core.config.communicator_keys = Some(keys.clone());
    for n in 0..2 {
        let r = h.query_as(
            uuid_of(n).as_bytes(),
            Content::RegistrationRequest(RegistrationRequest {
                uuid: uuid_of(n),
                id: None,
                host: None,
                relay: None,
                heartbeat: Some("heartbeat-test".into()),
            }),
        );
        let Content::RegistrationReply(r) = r.content else {
            panic!()
        };
        assert_eq!(r.status, Status::Ok);
        let got = zpar_protocol::CurveKeys::from_fields(
            r.curve_publickey.as_deref(),
            r.curve_secretkey.as_deref(),
        );
        assert_eq!(got.unwrap(), Some(keys.clone()), "engine {n}");
        assert!(matches!(h.take(), Action::Watch { .. }));
        h.take_notification();
        h.expect_commit_if_any();
        h.assert_no_more();
    }
    // Without CURVE, a reply names no keys.
    let mut plain = HubHarness::new();
    let r = plain.query_as(
        uuid_of(0).as_bytes(),
        Content::RegistrationRequest(RegistrationRequest {
            uuid: uuid_of(0),
            id: None,
            host: None,
            relay: None,
            heartbeat: Some("heartbeat-test".into()),
        }),
    );
    let Content::RegistrationReply(r) = r.content else {
        panic!()
    };
    assert_eq!((r.curve_publickey, r.curve_secretkey), (None, None));
    assert!(matches!(plain.take(), Action::Watch { .. }));
    plain.take_notification();
    plain.expect_commit_if_any();
    plain.assert_no_more();
}

#[test]
fn a_registration_must_come_from_the_uuid_it_names() {
    let mut h = HubHarness::new();
    let r = h.query_as(
        b"someone-else",
        Content::RegistrationRequest(RegistrationRequest {
            uuid: "engine-0".into(),
            id: None,
            host: None,
            relay: None,
            heartbeat: Some("heartbeat-test".into()),
        }),
    );
    let Content::RegistrationReply(r) = r.content else {
        panic!()
    };
    assert_eq!(r.status, Status::Error);
    assert!(r.evalue.unwrap().contains("identity"));
    h.assert_no_more();
    assert!(h.core.registry().engines().next().is_none());
}

#[test]
fn a_restarted_hub_gives_engines_their_old_ids_and_never_reuses_others() {
    let dir = std::env::temp_dir().join(format!("zpar-core-{}", zpar_protocol::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tasks.db");
    let pending_id;
    {
        let mut h = HubHarness::with(Scheme::LeastLoad, Records::sqlite(&path, 1 << 20).unwrap());
        h.engines(3);
        let done = h.execute(&[2]);
        let (_, _, got) = h.take_to_engine();
        h.answer(2, Channel::Mux, &got);
        h.flush_reply();
        let pending = h.execute(&[1]);
        h.take_to_engine();
        h.tick();
        h.expect_commit();
        h.assert_no_more();
        pending_id = pending.header.msg_id;
        let _ = done;
        h.core.records_mut().flush().unwrap();
    }
    let mut h = HubHarness::with(Scheme::LeastLoad, Records::sqlite(&path, 1 << 20).unwrap());
    // Engine 1 comes back and asks for its old id; a new engine gets a
    // fresh id above every id in the records.
    assert_eq!(h.register_as(&uuid_of(1), Some(1)), 1);
    h.expect_commit_if_any();
    assert_eq!(h.register_as("engine-new", None), 3);
    h.expect_commit_if_any();
    h.assert_no_more();
    // SQLite keeps pending records in memory: a request pending at the
    // restart is unknown to the new hub, never reported as pending forever.
    assert!(h.core.records.get(&pending_id).unwrap().is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

// ----- queries -----

#[test]
fn queue_status_counts_each_engines_work_and_the_unassigned() {
    let mut h = HubHarness::new();
    h.engines(2);
    h.execute(&[0]);
    h.execute(&[0]);
    h.take_to_engine();
    h.take_to_engine();
    h.task(targets(&[1]));
    let (_, _, got) = h.take_to_engine();
    let first = got;
    h.task(after(&[&first]));
    h.answer(1, Channel::Task, &first);
    let (_, _, _) = h.take_to_engine();
    let blocked = h.task(RequestMetadata {
        after: vec![],
        follow: vec![],
        targets: None,
        ..Default::default()
    });
    let _ = blocked;
    h.take_to_engine();
    let r = h.query(Content::QueueRequest(QueueRequest {
        targets: None,
        verbose: true,
        ..Default::default()
    }));
    let Content::QueueReply(q) = r.content else {
        panic!()
    };
    let total: u64 = q.engines.values().map(|e| e.queue).sum();
    assert_eq!(total, 4);
    assert_eq!(q.engines[&0].msg_ids.len(), q.engines[&0].queue as usize);
    assert_eq!(q.unassigned, 0);
    let tasks: u64 = q.engines.values().map(|e| e.tasks).sum();
    assert_eq!(tasks, 2);
    assert_eq!(q.engines[&1].completed, 1);
    h.expect_commit_if_any();
    h.take_reply();
    h.assert_no_more();
}

#[test]
fn queue_status_gives_vitals_only_when_asked_with_each_engines_last_beat() {
    use crate::heartbeat::{beat_message, BeatReport};
    use zpar_protocol::vitals::{EngineVitals, HubVitals};
    let mut h = HubHarness::new();
    h.engines(2);
    let reported = EngineVitals {
        rss: Some(12 << 20),
        cpu: Some(0.5),
        beat_age: None,
    };
    // Engine 0 answers with vitals, engine 1 without; a stranger is ignored.
    let hub = HubVitals {
        rss: Some(300 << 20),
        cpu: Some(0.01),
    };
    let json = serde_json::to_vec(&reported).unwrap();
    let answered = vec![
        uuid_of(0).into_bytes(),
        json.clone(),
        uuid_of(1).into_bytes(),
        vec![],
        b"stranger".to_vec(),
        json,
    ];
    let beat = beat_message(&hub, answered);
    h.handle(Event::Beat(BeatReport::from_frames(&beat[1..])));
    h.assert_no_more();
    h.now += 2.0;
    let plain = h.query(Content::QueueRequest(QueueRequest::default()));
    let Content::QueueReply(plain) = plain.content else {
        panic!()
    };
    assert_eq!(plain.hub, None);
    assert!(plain.engines.values().all(|e| e.vitals.is_none()));
    let r = h.query(Content::QueueRequest(QueueRequest {
        vitals: true,
        ..Default::default()
    }));
    let Content::QueueReply(q) = r.content else {
        panic!()
    };
    assert_eq!(q.hub, Some(hub));
    let v0 = q.engines[&0].vitals.unwrap();
    assert_eq!((v0.rss, v0.cpu), (reported.rss, reported.cpu));
    let age = v0.beat_age.unwrap();
    assert!((2.0..2.1).contains(&age), "{age}");
    let v1 = q.engines[&1].vitals.unwrap();
    assert_eq!((v1.rss, v1.cpu), (None, None));
    assert!(v1.beat_age.is_some());
    h.assert_no_more();
}

#[test]
fn queue_status_counts_tasks_waiting_for_dependencies() {
    let mut h = HubHarness::new();
    h.engines(1);
    let first = h.task(RequestMetadata::default());
    h.take_to_engine();
    h.task(after(&[&first]));
    h.task(after(&[&first]));
    let r = h.query(Content::QueueRequest(QueueRequest {
        targets: Some(vec![0]),
        ..Default::default()
    }));
    let Content::QueueReply(q) = r.content else {
        panic!()
    };
    assert_eq!(q.unassigned, 2);
    assert_eq!(q.engines[&0].queue, 1);
    assert!(q.engines[&0].msg_ids.is_empty());
    h.expect_commit_if_any();
    h.assert_no_more();
}

#[test]
fn results_are_pending_completed_or_unknown() {
    let mut h = HubHarness::new();
    h.engines(1);
    let done = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    h.answer(0, Channel::Mux, &got);
    h.flush_reply();
    let running = h.execute(&[0]);
    h.take_to_engine();
    let ids = |ms: &[&Message]| ms.iter().map(|m| m.header.msg_id.clone()).collect();
    let r = h.query(Content::ResultRequest(ResultRequest {
        msg_ids: ids(&[&done, &running]),
    }));
    let Content::ResultReply(res) = r.content else {
        panic!()
    };
    assert_eq!(res.status, Status::Ok);
    assert_eq!(res.completed, vec![done.header.msg_id.clone()]);
    assert_eq!(res.pending, vec![running.header.msg_id.clone()]);
    let entry = &res.results[&done.header.msg_id][0];
    assert_eq!(entry["status"], "ok");
    assert_eq!(entry["engine"], 0);
    h.expect_commit_if_any();
    let r = h.query(Content::ResultRequest(ResultRequest {
        msg_ids: vec!["nope".into()],
    }));
    let Content::ResultReply(res) = r.content else {
        panic!()
    };
    assert_eq!(res.status, Status::Error);
    assert!(res.evalue.unwrap().contains("nope"));
    h.assert_no_more();
}

#[test]
fn the_result_of_a_request_the_hub_failed_reads_like_a_reply() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.execute(&[0]);
    h.take_to_engine();
    h.lose(0, LossReason::MissedHeartbeats);
    h.take_loss(0);
    h.flush_reply();
    let r = h.query(Content::ResultRequest(ResultRequest {
        msg_ids: vec![req.header.msg_id.clone()],
    }));
    let Content::ResultReply(res) = r.content else {
        panic!()
    };
    let entry = &res.results[&req.header.msg_id][0];
    assert_eq!(entry["status"], "error");
    assert_eq!(entry["content"]["ename"], "EngineDied");
    h.assert_no_more();
}

#[test]
fn history_and_db_queries_read_the_records() {
    let mut h = HubHarness::new();
    h.engines(2);
    let a = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    h.answer(0, Channel::Mux, &got);
    h.flush_reply();
    let b = h.execute(&[1]);
    h.take_to_engine();
    let r = h.query(Content::HistoryRequest(HistoryRequest {}));
    let Content::HistoryReply(hist) = r.content else {
        panic!()
    };
    assert_eq!(
        hist.history,
        vec![a.header.msg_id.clone(), b.header.msg_id.clone()]
    );
    h.expect_commit_if_any();
    let r = h.query(Content::DbRequest(DbRequest {
        query: json!({"status": "pending"}),
        keys: Some(vec!["msg_id".into(), "engine".into()]),
    }));
    let Content::DbReply(db) = r.content else {
        panic!()
    };
    assert_eq!(
        db.records,
        vec![json!({"msg_id": b.header.msg_id, "engine": 1})]
    );
    let r = h.query(Content::DbRequest(DbRequest {
        query: json!({"colour": "red"}),
        keys: None,
    }));
    let Content::DbReply(db) = r.content else {
        panic!()
    };
    assert_eq!(db.status, Status::Error);
    assert!(db.evalue.unwrap().contains("colour"));
    h.assert_no_more();
}

#[test]
fn purge_forgets_finished_records_and_keeps_pending_ones() {
    let mut h = HubHarness::new();
    h.engines(1);
    let done = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    h.answer(0, Channel::Mux, &got);
    h.flush_reply();
    let running = h.execute(&[0]);
    h.take_to_engine();
    let r = h.query(Content::PurgeRequest(PurgeRequest {
        msg_ids: vec![],
        all: true,
    }));
    assert_eq!(
        r.content.task_reply().unwrap().result,
        Some(json!(1)),
        "one finished record purged"
    );
    h.expect_commit();
    h.assert_no_more();
    assert!(h.core.records.get(&done.header.msg_id).unwrap().is_empty());
    assert_eq!(h.core.records.get(&running.header.msg_id).unwrap().len(), 1);
}

#[test]
fn resubmit_runs_a_direct_request_again_on_its_engines() {
    let mut h = HubHarness::new();
    h.engines(2);
    let old = h.execute(&[1]);
    let (_, _, got) = h.take_to_engine();
    h.answer(1, Channel::Mux, &got);
    h.flush_reply();
    let r = h.query(Content::ResubmitRequest(ResubmitRequest {
        msg_ids: vec![old.header.msg_id.clone()],
    }));
    let Content::ResubmitReply(rs) = r.content else {
        panic!()
    };
    assert_eq!(rs.status, Status::Ok);
    let new_id = rs.resubmitted[&old.header.msg_id].clone();
    assert_ne!(new_id, old.header.msg_id);
    assert_eq!(rs.engines[&new_id], vec![1]);
    let (channel, engine, again) = h.take_to_engine();
    assert_eq!((channel, engine), (Channel::Mux, 1));
    assert_eq!(again.header.msg_id, new_id);
    h.expect_commit();
    assert_eq!(again.content, old.content);
    assert_eq!(h.record_status(&new_id, Some(1)), RecordStatus::Pending);
    h.answer(1, Channel::Mux, &again);
    let (_, reply) = h.flush_reply();
    assert_eq!(reply.parent_header.unwrap().msg_id, new_id);
    h.assert_no_more();
}

#[test]
fn resubmit_queues_a_task_again_and_reports_what_it_cannot() {
    let mut h = HubHarness::new();
    h.engines(1);
    let old = h.task(RequestMetadata::default());
    let (_, e, got) = h.take_to_engine();
    h.answer(e, Channel::Task, &got);
    h.flush_reply();
    let r = h.query(Content::ResubmitRequest(ResubmitRequest {
        msg_ids: vec![old.header.msg_id.clone(), "unknown".into()],
    }));
    let Content::ResubmitReply(rs) = r.content else {
        panic!()
    };
    assert_eq!(rs.status, Status::Error);
    assert!(rs.evalue.unwrap().contains("unknown: no record"));
    let new_id = rs.resubmitted[&old.header.msg_id].clone();
    let (channel, _, again) = h.take_to_engine();
    assert_eq!(channel, Channel::Task);
    assert_eq!(again.header.msg_id, new_id);
    h.expect_commit();
    h.assert_no_more();
}

#[test]
fn an_unknown_query_gets_an_unknown_message_type_reply() {
    let mut h = HubHarness::new();
    let r = h.query(execute("1"));
    assert_eq!(r.header.msg_type, "execute_reply");
    assert_eq!(error_of(&r).0, "UnknownMessageType");
    h.assert_no_more();
}

#[test]
fn a_signed_query_with_broken_content_gets_a_bad_request_reply() {
    let mut h = HubHarness::new();
    let mut msg = Message::new(&h.client, Content::QueueRequest(QueueRequest::default()));
    msg.identities = vec![CLIENT.to_vec()];
    let hdr = serde_json::to_vec(&msg.header).unwrap();
    let raw = h.client.assemble(
        vec![zmq::Message::from(CLIENT)],
        hdr,
        b"{}".to_vec(),
        b"{}".to_vec(),
        br#"{"targets": "everything"}"#.to_vec(),
        vec![],
    );
    h.handle(Event::Query {
        frames: raw.into_frames(),
    });
    h.tick();
    let Action::ToQuery { frames } = h.take() else {
        panic!("expected a query reply")
    };
    // A queue_reply that says error: its content is an error reply's, which
    // a client reads as such without it being a queue table.
    let raw = zpar_protocol::RawMessage::from_frames(frames, &h.client.limits).unwrap();
    h.client.verify(&raw).unwrap();
    assert_eq!(raw.header().unwrap().msg_type, "queue_reply");
    assert_eq!(
        raw.parent_header().unwrap().unwrap().msg_id,
        msg.header.msg_id
    );
    let content: serde_json::Value = serde_json::from_slice(&raw.content).unwrap();
    assert_eq!(content["status"], "error");
    assert_eq!(content["ename"], "BadRequest");
    assert!(content["evalue"]
        .as_str()
        .unwrap()
        .contains("queue_request"));
    h.assert_no_more();
}

// ----- shutdown -----

#[test]
fn a_cluster_shutdown_stops_engines_answers_then_stops_the_hub() {
    let mut h = HubHarness::new();
    h.engines(2);
    let req = h.request(
        Channel::Control,
        Content::ShutdownRequest(zpar_protocol::ShutdownRequest {
            restart: false,
            hub: true,
        }),
        RequestMetadata::default(),
    );
    for want in [0, 1] {
        let (channel, engine, msg) = h.take_to_engine();
        assert_eq!((channel, engine), (Channel::Control, want));
        assert!(matches!(msg.content, Content::ShutdownRequest(_)));
    }
    let (channel, reply) = h.take_reply();
    assert_eq!(channel, Channel::Control);
    assert_eq!(
        reply.parent_header.as_ref().unwrap().msg_id,
        req.header.msg_id
    );
    assert!(matches!(h.take(), Action::Stop));
    h.assert_no_more();
}

#[test]
fn a_shutdown_of_one_engine_is_an_ordinary_control_request() {
    let mut h = HubHarness::new();
    h.engines(2);
    h.request(
        Channel::Control,
        Content::ShutdownRequest(Default::default()),
        targets(&[1]),
    );
    let (channel, engine, _) = h.take_to_engine();
    assert_eq!((channel, engine), (Channel::Control, 1));
    h.assert_no_more();
}

#[test]
fn stopping_the_hub_tells_every_engine() {
    let mut h = HubHarness::new();
    h.engines(3);
    h.handle(Event::Stop);
    for want in 0..3 {
        let (channel, engine, msg) = h.take_to_engine();
        assert_eq!((channel, engine), (Channel::Control, want));
        assert!(matches!(msg.content, Content::ShutdownRequest(_)));
    }
    h.assert_no_more();
}

// ----- ipyparallel's client: routing by identity, broadcast -----

/// Sends a request the way ipyparallel's client does: the engine's uuid as
/// a routing frame after the client's identity.
fn routed(h: &mut HubHarness, channel: Channel, content: Content, uuid: &str) -> Message {
    routed_with(h, channel, content, uuid, serde_json::Map::new())
}

fn routed_with(
    h: &mut HubHarness,
    channel: Channel,
    content: Content,
    uuid: &str,
    metadata: serde_json::Map<String, serde_json::Value>,
) -> Message {
    let mut msg = Message::new(&h.client, content);
    msg.identities = vec![CLIENT.to_vec(), uuid.as_bytes().to_vec()];
    msg.metadata = metadata;
    let frames = h.client.encode(&msg).into_frames();
    h.handle(Event::ClientRequest { channel, frames });
    msg
}

/// The next action must be a reply to a client that routed by `uuid`.
fn take_routed_reply(h: &mut HubHarness, uuid: &str) -> (Channel, Message) {
    match h.take() {
        Action::ToClient { channel, frames } => {
            let msg = h.client.decode_frames(frames).expect("a valid reply");
            assert_eq!(
                msg.identities,
                vec![CLIENT.to_vec(), uuid.as_bytes().to_vec()]
            );
            (channel, msg)
        }
        other => panic!("expected ToClient, got {}", describe(&other)),
    }
}

/// The reply content as it goes on the wire.
fn wire_json(msg: &Message) -> serde_json::Value {
    serde_json::from_slice(&msg.content.to_json()).unwrap()
}

#[test]
fn a_request_routed_by_an_engines_uuid_goes_to_that_engine_as_if_targeted() {
    let mut h = HubHarness::new();
    h.engines(3);
    let req = routed(&mut h, Channel::Mux, execute("40 + 2"), &uuid_of(2));
    let (channel, engine, got) = h.take_to_engine();
    assert_eq!((channel, engine), (Channel::Mux, 2));
    assert_eq!(got.header, req.header);
    // The routing frame stays, so the reply comes back behind it.
    assert_eq!(
        got.identities,
        vec![CLIENT.to_vec(), uuid_of(2).into_bytes()]
    );
    h.assert_no_more();
    assert_eq!(h.pending_on(2), 1);
    assert_eq!(
        h.record_status(&req.header.msg_id, Some(2)),
        RecordStatus::Pending
    );
    h.answer(2, Channel::Mux, &got);
    h.tick();
    h.expect_commit();
    let (channel, reply) = take_routed_reply(&mut h, &uuid_of(2));
    assert_eq!(channel, Channel::Mux);
    assert_eq!(
        reply.parent_header.as_ref().unwrap().msg_id,
        req.header.msg_id
    );
    assert_eq!(
        h.record_status(&req.header.msg_id, Some(2)),
        RecordStatus::Done(Status::Ok)
    );
    h.assert_no_more();
}

#[test]
fn control_requests_routed_by_uuid_reach_that_engine() {
    let mut h = HubHarness::new();
    h.engines(2);
    routed(
        &mut h,
        Channel::Control,
        Content::AbortRequest(AbortRequest {
            msg_ids: Some(vec!["m-1".into()]),
            running: false,
        }),
        &uuid_of(1),
    );
    let (channel, engine, msg) = h.take_to_engine();
    assert_eq!((channel, engine), (Channel::Control, 1));
    assert!(matches!(msg.content, Content::AbortRequest(_)));
    // ipyparallel's shutdown(targets) too: one engine, not the cluster.
    routed(
        &mut h,
        Channel::Control,
        Content::ShutdownRequest(Default::default()),
        &uuid_of(0),
    );
    let (channel, engine, msg) = h.take_to_engine();
    assert_eq!((channel, engine), (Channel::Control, 0));
    assert!(matches!(msg.content, Content::ShutdownRequest(_)));
    h.assert_no_more();
}

#[test]
fn a_request_routed_to_an_unknown_uuid_gets_unknown_engine() {
    let mut h = HubHarness::new();
    h.engines(1);
    routed(&mut h, Channel::Mux, execute("1"), "engine-gone");
    h.tick();
    let (_, reply) = take_routed_reply(&mut h, "engine-gone");
    let (ename, evalue) = error_of(&reply);
    assert_eq!(ename, "UnknownEngine");
    assert!(evalue.contains("engine-gone"), "{evalue}");
    assert_eq!(h.pending_on(0), 0);
    h.assert_no_more();
}

#[test]
fn routing_and_targets_that_disagree_are_a_bad_request() {
    let mut h = HubHarness::new();
    h.engines(2);
    routed_with(
        &mut h,
        Channel::Mux,
        execute("1"),
        &uuid_of(0),
        targets(&[1]).to_map(),
    );
    h.tick();
    let (_, reply) = take_routed_reply(&mut h, &uuid_of(0));
    let (ename, evalue) = error_of(&reply);
    assert_eq!(ename, "BadRequest");
    assert!(
        evalue.contains("engine 0") && evalue.contains("[1]"),
        "{evalue}"
    );
    // Agreeing is fine.
    routed_with(
        &mut h,
        Channel::Mux,
        execute("1"),
        &uuid_of(1),
        targets(&[1]).to_map(),
    );
    let (_, engine, _) = h.take_to_engine();
    assert_eq!(engine, 1);
    h.assert_no_more();
}

#[test]
fn a_routing_frame_on_the_task_channel_does_not_pick_the_engine() {
    let mut h = HubHarness::new();
    h.engines(2);
    // Load-balanced: the scheduler decides, whatever the frames say.
    let req = routed_with(
        &mut h,
        Channel::Task,
        apply(),
        &uuid_of(1),
        targets(&[0]).to_map(),
    );
    let (channel, engine, got) = h.take_to_engine();
    assert_eq!((channel, engine), (Channel::Task, 0));
    assert_eq!(got.header.msg_id, req.header.msg_id);
    h.assert_no_more();
}

#[test]
fn an_ipyparallel_broadcast_gets_one_clear_error_per_target() {
    let mut h = HubHarness::new();
    h.engines(2);
    let meta = json!({
        "targets": [[uuid_of(0), 0], [uuid_of(1), 1]],
        "is_broadcast": true,
        "is_coalescing": false,
    });
    let req = h.request_with(
        Channel::Mux,
        execute("1"),
        meta.as_object().unwrap().clone(),
    );
    h.tick();
    for id in [0, 1] {
        let (channel, reply) = h.take_reply();
        assert_eq!(channel, Channel::Mux);
        // What a non-coalescing BroadcastView waits for.
        assert_eq!(
            reply.parent_header.as_ref().unwrap().msg_id,
            format!("{}_{}", req.header.msg_id, uuid_of(id))
        );
        assert_eq!(reply.metadata["engine"], json!(uuid_of(id)));
        let (ename, evalue) = error_of(&reply);
        assert_eq!(ename, "Unsupported");
        assert!(evalue.contains("DirectView"), "{evalue}");
        let wire = wire_json(&reply);
        assert!(!wire["traceback"].as_array().unwrap().is_empty(), "{wire}");
    }
    assert_eq!(h.pending_on(0) + h.pending_on(1), 0);
    h.assert_no_more();
}

#[test]
fn a_coalescing_broadcast_gets_one_error_naming_every_target() {
    let mut h = HubHarness::new();
    h.engines(2);
    let meta = json!({
        "targets": [[uuid_of(0), 0], [uuid_of(1), 1]],
        "is_broadcast": true,
        "is_coalescing": true,
    });
    let req = h.request_with(Channel::Mux, apply(), meta.as_object().unwrap().clone());
    let (_, reply) = h.flush_reply();
    assert_eq!(reply.header.msg_type, "apply_reply");
    assert_eq!(reply.metadata["original_msg_id"], json!(req.header.msg_id));
    assert_eq!(reply.metadata["is_coalescing"], json!(true));
    assert_eq!(
        reply.metadata["broadcast_targets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(error_of(&reply).0, "Unsupported");
    h.assert_no_more();
}

#[test]
fn a_shutdown_on_the_query_channel_stops_the_cluster() {
    // ipyparallel's Client.shutdown(hub=True) ends with this.
    let mut h = HubHarness::new();
    h.engines(2);
    let mut msg = Message::new(
        &h.client,
        Content::ShutdownRequest(zpar_protocol::ShutdownRequest::default()),
    );
    msg.identities = vec![CLIENT.to_vec()];
    let frames = h.client.encode(&msg).into_frames();
    h.handle(Event::Query { frames });
    for want in [0, 1] {
        let (channel, engine, m) = h.take_to_engine();
        assert_eq!((channel, engine), (Channel::Control, want));
        assert!(matches!(m.content, Content::ShutdownRequest(_)));
    }
    let Action::ToQuery { frames } = h.take() else {
        panic!("expected the shutdown reply")
    };
    let reply = h.client.decode_frames(frames).unwrap();
    assert_eq!(reply.header.msg_type, "shutdown_reply");
    assert_eq!(reply.content.task_reply().unwrap().status, Status::Ok);
    assert!(matches!(h.take(), Action::Stop));
    h.assert_no_more();
}

#[test]
fn hub_made_errors_carry_ename_evalue_and_a_traceback_list() {
    // Jupyter's spec; ipyparallel's client raised KeyError: 'traceback'.
    let mut h = HubHarness::new();
    h.engines(1);
    h.execute(&[]);
    let (_, r) = h.flush_reply();
    let wire = wire_json(&r);
    assert_eq!(wire["status"], "error");
    assert_eq!(wire["ename"], "NoTargets");
    assert!(wire["evalue"].is_string(), "{wire}");
    assert!(wire["traceback"].is_array(), "{wire}");
    assert_eq!(r.metadata["status"], json!("error"));
    let db = h.query(Content::DbRequest(DbRequest {
        query: json!({"msg_id": {"$frob": 1}}),
        keys: None,
    }));
    let wire = wire_json(&db);
    assert_eq!(wire["status"], "error");
    assert!(
        wire["ename"].is_string() && wire["traceback"].is_array(),
        "{wire}"
    );
    h.assert_no_more();
}

#[test]
fn a_result_request_also_answers_in_ipyparallels_shape() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = routed(&mut h, Channel::Mux, execute("1"), &uuid_of(0));
    let (_, _, got) = h.take_to_engine();
    h.answer(0, Channel::Mux, &got);
    h.tick();
    h.expect_commit();
    take_routed_reply(&mut h, &uuid_of(0));
    let id = req.header.msg_id.clone();
    let reply = h.query(Content::ResultRequest(ResultRequest {
        msg_ids: vec![id.clone()],
    }));
    let Content::ResultReply(r) = &reply.content else {
        panic!("{:?}", reply.content)
    };
    assert_eq!(r.completed, vec![id.clone()]);
    let rec = &r.ipyparallel[&id];
    assert_eq!(rec["header"]["msg_id"], json!(id));
    assert_eq!(rec["result_header"]["msg_type"], json!("execute_reply"));
    assert_eq!(rec["result_content"]["status"], json!("ok"));
    assert_eq!(rec["io"]["stdout"], json!("printed\n"));
    assert!(rec.get("received").is_none());
    h.assert_no_more();
}

/// An engine of an older zpar names no heartbeat connection: the hub
/// cannot serve its heartbeat, so it refuses it, saying why, and watches
/// nothing.
#[test]
fn a_registration_naming_no_heartbeat_connection_is_refused_as_too_old() {
    let mut h = HubHarness::new();
    let reply = h.query_as(
        uuid_of(0).as_bytes(),
        Content::RegistrationRequest(RegistrationRequest {
            uuid: uuid_of(0),
            ..Default::default()
        }),
    );
    let Content::RegistrationReply(r) = reply.content else {
        panic!("not a registration reply")
    };
    assert_eq!(r.status, Status::Error);
    assert!(
        r.evalue
            .as_deref()
            .unwrap()
            .contains("older zpar than the hub"),
        "{:?}",
        r.evalue
    );
    h.assert_no_more();
    assert!(h.core.registry().is_empty());
}

/// Past the room the hub's limit on open files leaves, a new engine's
/// registration is refused, naming the limit; an engine already known
/// registers again.
#[test]
fn engines_past_the_room_of_the_open_file_limit_are_refused_naming_it() {
    let mut h = HubHarness::new();
    h.core.config.engine_room = Some(super::EngineRoom::for_files(195));
    assert_eq!(h.register_as(&uuid_of(0), None), 0);
    h.expect_commit_if_any();
    h.assert_no_more();
    let reply = h.query_as(
        uuid_of(1).as_bytes(),
        Content::RegistrationRequest(RegistrationRequest {
            uuid: uuid_of(1),
            // Another process: its heartbeat connection would be one more.
            heartbeat: Some("heartbeat-other".into()),
            ..Default::default()
        }),
    );
    let Content::RegistrationReply(r) = reply.content else {
        panic!("not a registration reply")
    };
    assert_eq!(r.status, Status::Error);
    let why = r.evalue.unwrap();
    assert!(
        why.contains("no room for another engine")
            && why.contains("(ulimit -n) is 195, which leaves room for 1 engines")
            && why.contains("and 1 are registered")
            && why.contains("ulimit -n 65536"),
        "{why}"
    );
    h.assert_no_more();
    // The known engine, registering again, is taken.
    let again = h.query_as(
        uuid_of(0).as_bytes(),
        Content::RegistrationRequest(RegistrationRequest {
            uuid: uuid_of(0),
            id: Some(0),
            heartbeat: Some("heartbeat-test".into()),
            ..Default::default()
        }),
    );
    assert!(
        matches!(again.content, Content::RegistrationReply(r) if r.status == Status::Ok && r.id == 0)
    );
}

// ----- chunk streams -----

/// A client's chunk `index` of `of` for the streamed request `head`.
fn client_chunk(h: &mut HubHarness, head: &Message, index: u32, of: u32) {
    let mut chunk = Message::new(
        &h.client,
        Content::StreamChunk(zpar_protocol::StreamChunk { index, of }),
    );
    chunk.identities = vec![CLIENT.to_vec()];
    chunk.parent_header = Some(head.header.clone());
    chunk.buffers = vec![zmq::Message::from(&[index as u8; 3][..])];
    let frames = h.client.encode_owned(chunk).into_frames();
    h.handle(Event::ClientRequest {
        channel: Channel::Mux,
        frames,
    });
}

fn streamed_push(h: &mut HubHarness, targets: &[u32], frames: u32) -> Message {
    let meta = RequestMetadata {
        targets: Some(targets.to_vec()),
        stream_frames: Some(frames),
        ..Default::default()
    };
    h.request(Channel::Mux, Content::PushRequest(Default::default()), meta)
}

#[test]
fn a_streamed_request_is_fanned_out_then_each_chunk_follows_to_every_target() {
    let mut h = HubHarness::new();
    h.engines(3);
    let head = streamed_push(&mut h, &[0, 2], 2);
    let sent: Vec<u32> = (0..2).map(|_| h.take_to_engine().1).collect();
    assert_eq!(sent, vec![0, 2]);
    h.assert_no_more();
    assert_eq!(h.core.open_streams(), 1);
    for index in 0..2 {
        client_chunk(&mut h, &head, index, 2);
        for engine in [0, 2] {
            let (channel, to, chunk) = h.take_to_engine();
            assert_eq!((channel, to), (Channel::Mux, engine));
            assert_eq!(
                chunk.content,
                Content::StreamChunk(zpar_protocol::StreamChunk { index, of: 2 })
            );
            assert_eq!(chunk.parent_header.unwrap().msg_id, head.header.msg_id);
            assert_eq!(&chunk.buffers[0][..], &[index as u8; 3]);
        }
        h.assert_no_more();
    }
    assert_eq!(
        h.core.open_streams(),
        0,
        "the route closes after its last chunk"
    );
    // A chunk more, of a stream that is over, goes nowhere.
    client_chunk(&mut h, &head, 2, 2);
    h.assert_no_more();
    // The record says its buffers were not kept.
    let recs = h.core.records.get(&head.header.msg_id).unwrap();
    assert!(recs.iter().all(|r| r.request.buffers_dropped));
    h.tick();
    h.expect_commit();
    h.assert_no_more();
}

/// A streamed request to several engines with relay addresses is relayed:
/// every engine gets the request with the chain, the chunks go to the
/// chain's first engine only (an idle one), each naming the rest of the
/// chain by relay address, host by host.
#[test]
fn a_streamed_request_to_engines_with_relays_goes_along_a_chain_host_by_host() {
    let mut h = HubHarness::new();
    for (i, host) in ["A", "B", "A", "B"].into_iter().enumerate() {
        h.query_as(
            uuid_of(i as u32).as_bytes(),
            Content::RegistrationRequest(RegistrationRequest {
                uuid: uuid_of(i as u32),
                id: None,
                host: Some(host.into()),
                relay: Some(format!("tcp://{host}:{}", 7000 + i)),
                heartbeat: Some("heartbeat-test".into()),
            }),
        );
        h.take();
        h.take_notification();
        h.expect_commit_if_any();
    }
    // Engine 0 is busy: the chain starts at engine 1, the first idle one.
    h.request(
        Channel::Mux,
        execute("loop {}"),
        RequestMetadata {
            targets: Some(vec![0]),
            ..Default::default()
        },
    );
    h.take_to_engine();
    let head = streamed_push(&mut h, &[0, 1, 2, 3], 2);
    for want in [0, 1, 2, 3] {
        let (_, to, request) = h.take_to_engine();
        assert_eq!(to, want);
        let meta = RequestMetadata::from_map(&request.metadata).unwrap();
        assert_eq!(meta.relay, Some(vec![1, 3, 0, 2]));
        assert_eq!(meta.targets, None);
    }
    for index in 0..2 {
        client_chunk(&mut h, &head, index, 2);
        let (_, to, chunk) = h.take_to_engine();
        assert_eq!(
            to, 1,
            "only the chain's first engine gets chunks from the hub"
        );
        assert_eq!(
            chunk.metadata[zpar_protocol::stream::RELAY_TO],
            serde_json::json!(["tcp://B:7003", "tcp://A:7000", "tcp://A:7002"])
        );
        h.assert_no_more();
    }
    assert_eq!(h.core.open_streams(), 0);
    // An engine without a relay address: every engine gets every chunk.
    h.tick();
    h.expect_commit_if_any();
    h.assert_no_more();
    assert_eq!(h.register_as(&uuid_of(4), None), 4);
    h.expect_commit_if_any();
    let head = streamed_push(&mut h, &[1, 4], 1);
    h.take_to_engine();
    h.take_to_engine();
    client_chunk(&mut h, &head, 0, 1);
    assert_eq!(h.take_to_engine().1, 1);
    assert_eq!(h.take_to_engine().1, 4);
    h.assert_no_more();
}

#[test]
fn chunks_of_no_open_stream_are_dropped_and_a_lost_engine_closes_its_routes() {
    let mut h = HubHarness::new();
    h.engines(2);
    // A chunk whose request the hub never saw.
    let stranger = Message::new(&h.client, Content::PushRequest(Default::default()));
    client_chunk(&mut h, &stranger, 0, 1);
    h.assert_no_more();
    let head = streamed_push(&mut h, &[0, 1], 3);
    h.take_to_engine();
    h.take_to_engine();
    client_chunk(&mut h, &head, 0, 3);
    assert_eq!(h.take_to_engine().1, 0);
    assert_eq!(h.take_to_engine().1, 1);
    h.lose(0, LossReason::MissedHeartbeats);
    h.take_loss(0);
    let (_, died) = h.flush_reply();
    assert_eq!(error_of(&died).0, "EngineDied");
    client_chunk(&mut h, &head, 1, 3);
    assert_eq!(
        h.take_to_engine().1,
        1,
        "only the live engine gets the rest"
    );
    h.assert_no_more();
    h.lose(1, LossReason::MissedHeartbeats);
    h.take_loss(1);
    h.flush_reply();
    assert_eq!(h.core.open_streams(), 0);
    client_chunk(&mut h, &head, 2, 3);
    h.assert_no_more();
}

#[test]
fn an_engines_result_chunks_go_to_the_client_at_once_and_only_while_pending() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    let uuid = uuid_of(0);
    let engine_chunk = |h: &mut HubHarness, index: u32| {
        let mut chunk = got.reply(
            h.engine_session(uuid.as_bytes()),
            Content::StreamChunk(zpar_protocol::StreamChunk { index, of: 2 }),
        );
        chunk.buffers = vec![zmq::Message::from(&b"abc"[..])];
        let mut frames = vec![zmq::Message::from(uuid.as_bytes())];
        frames.extend(
            h.engine_session(uuid.as_bytes())
                .encode(&chunk)
                .into_frames(),
        );
        h.handle(Event::EngineReply {
            channel: Channel::Mux,
            frames,
        });
    };
    engine_chunk(&mut h, 0);
    // Not held for the tick: straight to the client.
    let (_, chunk) = h.take_reply();
    assert!(matches!(chunk.content, Content::StreamChunk(_)));
    h.assert_no_more();
    engine_chunk(&mut h, 1);
    h.take_reply();
    h.answer(0, Channel::Mux, &got);
    let (_, reply) = h.flush_reply();
    assert_eq!(
        reply.parent_header.as_ref().unwrap().msg_id,
        req.header.msg_id
    );
    // After the reply the request is no longer pending: a late chunk is dropped.
    engine_chunk(&mut h, 1);
    h.assert_no_more();
}

// ----- nothing lost, nothing unanswered (issue 33) -----

#[test]
fn a_target_named_twice_runs_once_and_is_answered_once() {
    let mut h = HubHarness::new();
    h.engines(2);
    let req = h.execute(&[0, 0, 1, 0]);
    let sent: Vec<(Channel, u32, Message)> = (0..2).map(|_| h.take_to_engine()).collect();
    h.assert_no_more();
    assert_eq!(sent.iter().map(|s| s.1).collect::<Vec<_>>(), vec![0, 1]);
    let mut engines: Vec<Option<u32>> = h
        .core
        .records
        .get(&req.header.msg_id)
        .unwrap()
        .iter()
        .map(|r| r.engine)
        .collect();
    engines.sort();
    assert_eq!(engines, vec![Some(0), Some(1)], "one record per engine");
    for (_, e, m) in &sent {
        h.answer(*e, Channel::Mux, m);
    }
    h.flush_replies(2);
    assert_eq!(h.pending_on(0) + h.pending_on(1), 0);
    h.assert_no_more();
}

#[test]
fn a_retry_sent_back_to_the_same_engine_is_signed_anew_and_runs() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.task(retries(1));
    let (_, first, got_first) = h.take_to_engine();
    assert!(!got_first.metadata.contains_key("attempt"));
    // The only engine misses heartbeats, then registers again with the
    // replay guard that saw the first attempt (the harness keeps one
    // session per engine uuid, and decodes every send through it).
    h.lose(first, LossReason::MissedHeartbeats);
    h.take_loss(first);
    h.tick();
    h.expect_commit();
    let back = h.register_as(&uuid_of(first), Some(first));
    let (_, engine, got) = h.take_to_engine();
    assert_eq!(engine, back);
    assert_eq!(
        got.header.msg_id, req.header.msg_id,
        "the client's match stays"
    );
    assert_eq!(got.metadata.get("attempt"), Some(&json!(1)));
    assert_eq!(
        RequestMetadata::from_map(&got.metadata).unwrap().retries,
        1,
        "the client's keys are kept"
    );
    h.expect_commit_if_any();
    h.answer(engine, Channel::Task, &got);
    let (_, r) = h.flush_reply();
    assert_eq!(r.parent_header.unwrap().msg_id, req.header.msg_id);
    assert_eq!(r.content.task_reply().unwrap().status, Status::Ok);
    h.assert_no_more();
}

#[test]
fn a_ready_task_with_no_engine_fails_after_the_no_engine_limit() {
    let mut h = HubHarness::new();
    let req = h.task(RequestMetadata::default());
    h.tick();
    h.expect_commit();
    h.now += DEFAULT_NO_ENGINE_LIMIT.as_secs_f64() - 1.0;
    h.tick();
    h.assert_no_more();
    assert_eq!(h.core.waiting(), 1, "still within the limit");
    h.now += 2.0;
    let (channel, r) = h.flush_reply();
    assert_eq!(channel, Channel::Task);
    assert_eq!(r.parent_header.as_ref().unwrap().msg_id, req.header.msg_id);
    let (ename, evalue) = error_of(&r);
    assert_eq!(ename, "NoEngines");
    assert!(
        evalue.contains("60 s") && evalue.contains("start engines"),
        "{evalue}"
    );
    h.assert_failed_for_good(&req.header.msg_id);
    h.assert_no_more();
}

#[test]
fn a_retry_after_the_last_engine_died_fails_after_the_no_engine_limit() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.task(retries(1));
    h.take_to_engine();
    h.lose(0, LossReason::MissedHeartbeats);
    h.take_loss(0);
    h.tick();
    h.expect_commit();
    assert_eq!(h.core.waiting(), 1);
    h.now += DEFAULT_NO_ENGINE_LIMIT.as_secs_f64() + 1.0;
    let (_, r) = h.flush_reply();
    assert_eq!(r.parent_header.as_ref().unwrap().msg_id, req.header.msg_id);
    assert_eq!(error_of(&r).0, "NoEngines");
    h.assert_no_more();
}

#[test]
fn tasks_waiting_for_busy_engines_or_dependencies_have_no_deadline() {
    let mut h = HubHarness::new();
    h.engines(1);
    let first = h.task(RequestMetadata::default());
    let (_, e, got) = h.take_to_engine();
    h.task(after(&[&first]));
    h.tick();
    h.expect_commit();
    h.now += 10.0 * DEFAULT_NO_ENGINE_LIMIT.as_secs_f64();
    h.tick();
    // The hub asks what became of the running task; still working.
    let (ask, _) = h.take_recall(e, Channel::Task);
    h.answer_recall(e, Channel::Task, &ask, RecallReply::default());
    h.assert_no_more();
    assert_eq!(h.core.waiting(), 1);
    h.answer(e, Channel::Task, &got);
    h.take_to_engine();
    h.flush_reply();
    h.assert_no_more();
}

/// A task whose `after` or `follow` (per `kind`) names its own msg id.
fn task_naming_itself(h: &mut HubHarness, kind: &str) -> Message {
    let mut msg = Message::new(&h.client, apply());
    msg.identities = vec![CLIENT.to_vec()];
    let own = vec![msg.header.msg_id.clone()];
    msg.metadata = match kind {
        "after" => RequestMetadata {
            after: own,
            ..Default::default()
        },
        _ => RequestMetadata {
            follow: own,
            ..Default::default()
        },
    }
    .to_map();
    let frames = h.client.encode(&msg).into_frames();
    h.handle(Event::ClientRequest {
        channel: Channel::Task,
        frames,
    });
    msg
}

#[test]
fn a_task_whose_after_or_follow_names_itself_is_refused_at_once() {
    let mut h = HubHarness::new();
    h.engines(1);
    for kind in ["after", "follow"] {
        let req = task_naming_itself(&mut h, kind);
        let (_, r) = h.flush_reply();
        assert_eq!(r.parent_header.as_ref().unwrap().msg_id, req.header.msg_id);
        let (ename, evalue) = error_of(&r);
        assert_eq!(ename, "ImpossibleDependency");
        assert!(
            evalue.contains(kind) && evalue.contains("itself"),
            "{evalue}"
        );
        h.assert_failed_for_good(&req.header.msg_id);
    }
    h.assert_no_more();
}

#[test]
fn a_dependency_on_a_request_no_engine_owes_fails_clearly() {
    let mut h = HubHarness::new();
    h.engines(1);
    // A record left pending on engine 0 although engine 0 does not owe
    // it: what the paths of issue 33 used to leave behind.
    let lost = Message::new(&h.client, execute("1"));
    let raw = h.client.encode(&lost);
    let mut rec = h
        .core
        .record_of(&raw, &lost.header, CLIENT, Channel::Mux, Some(0), h.now);
    rec.msg_id = lost.header.msg_id.clone();
    h.core.insert_record(rec);
    h.task(after(&[&lost]));
    let (_, r) = h.flush_reply();
    let (ename, evalue) = error_of(&r);
    assert_eq!(ename, "ImpossibleDependency");
    assert!(
        evalue.contains(&lost.header.msg_id) && evalue.contains("can never finish"),
        "{evalue}"
    );
    h.assert_no_more();
}

#[test]
fn a_stream_route_closes_after_its_last_chunk_not_after_it_opened() {
    let mut h = HubHarness::new();
    // No questions about the silent push here (see the recall tests).
    h.core.config.recall_after = Duration::from_secs(1 << 20);
    h.engines(1);
    let head = streamed_push(&mut h, &[0], 3);
    h.take_to_engine();
    h.tick();
    h.expect_commit();
    // Each chunk comes 100 s after the one before: 200 s after the route
    // opened, the stream is still going.
    for index in 0..2 {
        h.now += 100.0;
        h.tick();
        client_chunk(&mut h, &head, index, 3);
        let (_, to, chunk) = h.take_to_engine();
        assert_eq!(to, 0);
        assert_eq!(
            chunk.content,
            Content::StreamChunk(zpar_protocol::StreamChunk { index, of: 3 })
        );
        h.assert_no_more();
    }
    // Silent for longer than a route lives: closed.
    h.now += super::streams::ROUTE_LIFE + 1.0;
    h.tick();
    assert_eq!(h.core.open_streams(), 0);
    client_chunk(&mut h, &head, 2, 3);
    h.assert_no_more();
}

#[test]
fn a_request_the_loop_cannot_deliver_fails_with_undelivered_once() {
    let mut h = HubHarness::new();
    h.engines(2);
    let req = h.execute(&[1]);
    let Action::ToEngine {
        channel,
        uuid,
        frames,
    } = h.take()
    else {
        panic!("expected ToEngine")
    };
    let copy: Frames = frames.iter().map(|f| zmq::Message::from(&f[..])).collect();
    h.handle(Event::Undeliverable {
        channel,
        uuid: uuid.clone(),
        frames,
        waited: 30.0,
    });
    let (reply_channel, r) = h.flush_reply();
    assert_eq!(reply_channel, Channel::Mux);
    assert_eq!(r.parent_header.as_ref().unwrap().msg_id, req.header.msg_id);
    let (ename, evalue) = error_of(&r);
    assert_eq!(ename, "Undelivered");
    assert!(
        evalue.contains("engine 1") && evalue.contains("30 s") && evalue.contains("mux"),
        "{evalue}"
    );
    assert_eq!(h.pending_on(1), 0);
    assert_eq!(
        h.record_status(&req.header.msg_id, Some(1)),
        RecordStatus::Done(Status::Error)
    );
    // The same message again (or a later chunk of it): answered already.
    h.handle(Event::Undeliverable {
        channel,
        uuid,
        frames: copy,
        waited: 30.0,
    });
    h.tick();
    h.assert_no_more();
}

#[test]
fn a_result_in_shared_memory_is_recorded_as_not_kept() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.execute(&[0]);
    let (_, e, got) = h.take_to_engine();
    let marker = json!({"$zpar": "f64", "shm": "zpar-test-segment", "len": 4_000_000});
    h.answer_as(
        &uuid_of(e),
        Channel::Mux,
        &got,
        TaskReply::with_result(marker),
    );
    let (_, r) = h.flush_reply();
    assert_eq!(r.content.task_reply().unwrap().status, Status::Ok);
    let recs = h.core.records.get(&req.header.msg_id).unwrap();
    assert!(
        recs[0].result.as_ref().unwrap().in_shared_memory,
        "the record says its value is not kept"
    );
    let reply = h.query(Content::ResultRequest(ResultRequest {
        msg_ids: vec![req.header.msg_id.clone()],
    }));
    let Content::ResultReply(rr) = reply.content else {
        panic!("not a result reply")
    };
    let entry = &rr.results[&req.header.msg_id][0];
    assert_eq!(entry["in_shared_memory"], json!(true), "{entry}");
    h.expect_commit_if_any();
    h.assert_no_more();
}

// ----- requests lost on a dropped connection (recall) -----

impl HubHarness {
    /// Lets `seconds` pass, then ticks.
    fn tick_after(&mut self, seconds: f64) {
        self.now += seconds;
        self.tick();
    }

    /// The next action must be a recall question to `engine` on `channel`;
    /// returns it, with the ids it names.
    fn take_recall(&mut self, engine: u32, channel: Channel) -> (Message, Vec<String>) {
        let (c, e, ask) = self.take_to_engine();
        assert_eq!((c, e), (channel, engine));
        let Content::RecallRequest(r) = &ask.content else {
            panic!("expected a recall request, got {}", ask.header.msg_type);
        };
        let ids = r.msg_ids.clone();
        (ask, ids)
    }

    /// `engine` answers the question `ask` with `answer`.
    fn answer_recall(&mut self, engine: u32, channel: Channel, ask: &Message, answer: RecallReply) {
        let uuid = uuid_of(engine);
        let session = self.engine_session(uuid.as_bytes());
        let msg = ask.reply(session, Content::RecallReply(answer));
        let mut frames = vec![zmq::Message::from(uuid.as_bytes())];
        frames.extend(session.encode(&msg).into_frames());
        self.handle(Event::EngineReply { channel, frames });
    }
}

#[test]
fn a_request_silent_past_the_bound_is_recalled_and_its_held_reply_completes_it() {
    let mut h = HubHarness::new();
    h.engines(1);
    let req = h.execute(&[0]);
    let (_, _, got) = h.take_to_engine();
    h.tick();
    h.expect_commit();
    h.tick_after(DEFAULT_RECALL_AFTER.as_secs_f64() - 1.0);
    h.assert_no_more();
    h.tick_after(1.0);
    let (ask, ids) = h.take_recall(0, Channel::Mux);
    assert_eq!(ids, vec![req.header.msg_id.clone()]);
    h.assert_no_more();
    // The engine sends the reply it held again, then its answer.
    h.answer(0, Channel::Mux, &got);
    h.answer_recall(0, Channel::Mux, &ask, RecallReply::default());
    let (_, r) = h.flush_reply();
    assert_eq!(r.parent_header.unwrap().msg_id, req.header.msg_id);
    assert_eq!(r.content.task_reply().unwrap().status, Status::Ok);
    assert_eq!(h.pending_on(0), 0);
    h.tick_after(DEFAULT_RECALL_AFTER.as_secs_f64() * 4.0);
    h.assert_no_more();
}

#[test]
fn what_never_reached_its_engine_fails_with_lost_and_a_task_with_retries_runs_again() {
    let mut h = HubHarness::new();
    h.engines(1);
    let direct = h.execute(&[0]);
    h.take_to_engine();
    let task = h.task(retries(1));
    let (_, _, first) = h.take_to_engine();
    assert_eq!(first.header.msg_id, task.header.msg_id);
    let once = h.task(RequestMetadata::default());
    h.take_to_engine();
    h.tick();
    h.expect_commit();
    h.tick_after(DEFAULT_RECALL_AFTER.as_secs_f64());
    let (ask_mux, ids) = h.take_recall(0, Channel::Mux);
    assert_eq!(ids, vec![direct.header.msg_id.clone()]);
    let (ask_task, ids) = h.take_recall(0, Channel::Task);
    assert_eq!(
        ids,
        vec![task.header.msg_id.clone(), once.header.msg_id.clone()]
    );
    h.assert_no_more();
    h.answer_recall(
        0,
        Channel::Mux,
        &ask_mux,
        RecallReply {
            unknown: ids_of(&[&direct]),
            ..Default::default()
        },
    );
    h.answer_recall(
        0,
        Channel::Task,
        &ask_task,
        RecallReply {
            unknown: ids_of(&[&task, &once]),
            ..Default::default()
        },
    );
    // The task with retries goes out again, signed anew, its retry unspent.
    let (channel, _, again) = h.take_to_engine();
    assert_eq!(channel, Channel::Task);
    assert_eq!(again.header.msg_id, task.header.msg_id);
    assert_eq!(again.metadata["attempt"], json!(1));
    let replies = h.flush_replies(2);
    for (r, req) in replies.iter().zip([&direct, &once]) {
        assert_eq!(r.parent_header.as_ref().unwrap().msg_id, req.header.msg_id);
        let (ename, evalue) = error_of(r);
        assert_eq!(ename, "Lost");
        assert!(evalue.contains("never reached engine 0"), "{evalue}");
        assert!(evalue.contains("did not run: submit it again"), "{evalue}");
    }
    assert_eq!(
        h.record_status(&direct.header.msg_id, Some(0)),
        RecordStatus::Done(Status::Error)
    );
    h.assert_no_more();
    h.answer(0, Channel::Task, &again);
    let (_, r) = h.flush_reply();
    assert_eq!(r.content.task_reply().unwrap().status, Status::Ok);
    h.assert_no_more();
}

#[test]
fn a_lost_reply_the_engine_no_longer_holds_fails_saying_the_request_ran() {
    let mut h = HubHarness::new();
    h.engines(1);
    let old = h.execute(&[0]);
    h.take_to_engine();
    let ran = h.execute(&[0]);
    h.take_to_engine();
    // Two more requests went to the engine after these, answered.
    for _ in 0..2 {
        h.execute(&[0]);
        let (_, _, got) = h.take_to_engine();
        h.answer(0, Channel::Mux, &got);
    }
    h.flush_replies(2);
    h.tick_after(DEFAULT_RECALL_AFTER.as_secs_f64());
    let (ask, ids) = h.take_recall(0, Channel::Mux);
    assert_eq!(ids, ids_of(&[&old, &ran]));
    // The engine remembers only its last 3 requests: `old` (4th from the
    // end) may have arrived and been forgotten.
    h.answer_recall(
        0,
        Channel::Mux,
        &ask,
        RecallReply {
            unknown: ids_of(&[&old]),
            remembered: Some(3),
            answered_not_kept: ids_of(&[&ran]),
            ..Default::default()
        },
    );
    let replies = h.flush_replies(2);
    let (_, unknown) = error_of(&replies[0]);
    assert!(unknown.contains("whether it ran is unknown"), "{unknown}");
    let (_, not_kept) = error_of(&replies[1]);
    assert!(
        not_kept.contains("the request ran; its result is gone"),
        "{not_kept}"
    );
    assert_eq!(h.pending_on(0), 0);
    h.assert_no_more();
}

#[test]
fn questions_wait_twice_as_long_each_time_the_engine_answers_nothing() {
    let mut h = HubHarness::new();
    h.engines(1);
    h.execute(&[0]);
    h.take_to_engine();
    h.tick();
    h.expect_commit();
    let after = DEFAULT_RECALL_AFTER.as_secs_f64();
    h.tick_after(after);
    h.take_recall(0, Channel::Mux);
    h.tick_after(after * 2.0 - 1.0);
    h.assert_no_more();
    h.tick_after(1.0);
    let (ask, _) = h.take_recall(0, Channel::Mux);
    h.tick_after(after * 4.0 - 1.0);
    h.assert_no_more();
    // An answer (the engine was busy: the request still runs) resets the
    // wait.
    h.answer_recall(0, Channel::Mux, &ask, RecallReply::default());
    h.tick_after(after);
    h.take_recall(0, Channel::Mux);
    h.assert_no_more();
    assert_eq!(h.pending_on(0), 1);
}

fn ids_of(requests: &[&Message]) -> Vec<String> {
    requests.iter().map(|m| m.header.msg_id.clone()).collect()
}
