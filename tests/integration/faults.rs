//! Faults that must hold: dead engines, interrupts, limits, aborts, bad
//! input on the hub's sockets, shutdown.

use crate::support::{self, cluster, cluster_with, RUNNING_EVERY, WAIT};
use std::time::Instant;
use zpar::{ClientEvent, Error, Value};
use zpar_protocol::{Content, ExecuteRequest, Message, Session};

#[test]
fn killed_engine_fails_its_pending_requests_and_leaves() {
    let _watchdog = support::watchdog();
    let (mut cluster, client) = cluster(3);
    let events = client.events().unwrap();
    let busy = client.view(1).execute("loop {}").unwrap();
    let queued = client.view(1).execute("1").unwrap();
    cluster.kill_engine(1).unwrap();
    for ar in [&busy, &queued] {
        match ar.get_timeout(WAIT) {
            Err(Error::EngineDied { engine: 1, .. }) => {}
            other => panic!("expected EngineDied for engine 1, got {other:?}"),
        }
    }
    let deadline = Instant::now() + WAIT;
    loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(ClientEvent::EngineUnregistered { engine: 1, .. }) => break,
            Ok(_) => continue,
            Err(e) => panic!("no unregistration notification: {e}"),
        }
    }
    assert_eq!(client.ids(), vec![0, 2]);
    let r = client
        .all()
        .execute("2 + 2")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(r, vec![Value::Int(4), Value::Int(4)]);
    match client.view(1).execute("1") {
        Err(Error::UnknownEngine(1)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn interrupt_stops_an_infinite_loop_and_keeps_the_engine() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(1);
    let view = client.view(0);
    view.execute("let kept = 5;")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let running = view.execute(&support::running_loop()).unwrap();
    // The interrupt must find the loop running (it goes on control, and
    // could otherwise reach a loaded engine before the loop on mux).
    support::wait_until_printed(&running, 0, "running");
    client.interrupt(0u32).unwrap().get_timeout(WAIT).unwrap();
    match running.get_timeout(WAIT) {
        Err(Error::RemoteError { ename, .. }) => assert_eq!(ename, "Interrupted"),
        other => panic!("expected Interrupted, got {other:?}"),
    }
    assert_eq!(view.get("kept").unwrap(), vec![Value::Int(5)]);
}

#[test]
fn a_shutdown_runs_nothing_queued_behind_it() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(1);
    let view = client.view(0);
    let running = view.execute(&support::running_loop()).unwrap();
    let queued: Vec<_> = (0..3)
        .map(|i| view.execute(&format!("{i}")).unwrap())
        .collect();
    support::wait_until_printed(&running, 0, "running");
    client
        .shutdown(0u32, false)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    // The engine stops the loop and serves nothing after the shutdown:
    // what waited behind it fails (the engine left), it never runs.
    for (i, q) in queued.iter().enumerate() {
        if let Ok(v) = q.get_timeout(WAIT) {
            panic!("request {i}, queued behind the shutdown, ran: {v:?}");
        }
    }
}

#[test]
fn operation_limits_and_timeouts_stop_runaway_scripts() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster_with(1, &[], &["--max-operations", "100000"]);
    let view = client.view(0);
    match view.execute("loop {}").unwrap().get_timeout(WAIT) {
        Err(Error::RemoteError { ename, message, .. }) => {
            assert_eq!(ename, "OperationLimit");
            assert!(message.contains("100000 operations"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let mut meta = serde_json::Map::new();
    meta.insert("max_operations".into(), serde_json::json!(0));
    meta.insert("timeout".into(), serde_json::json!(0.2));
    match view
        .execute_with("loop {}", meta)
        .unwrap()
        .get_timeout(WAIT)
    {
        Err(Error::TaskTimeout { message, .. }) => {
            assert!(message.contains("timeout of 0.2 s"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        view.execute("1 + 1").unwrap().get_timeout(WAIT).unwrap(),
        vec![Value::Int(2)]
    );
}

#[test]
fn abort_and_clear() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(1);
    let view = client.view(0);
    view.execute("let x = 1;")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let blocker = view
        .execute(&format!(
            "{RUNNING_EVERY} let n = 0; while n < 200000000 {{ running(n); n += 1 }}"
        ))
        .unwrap();
    // The interrupt below must find the blocker running: on a loaded
    // machine the abort and the interrupt (on control) could otherwise
    // reach the engine before the blocker (on mux), interrupt nothing, and
    // leave the queued requests behind 200 million iterations.
    support::wait_until_printed(&blocker, 0, "running");
    let queued: Vec<_> = (0..3)
        .map(|i| view.execute(&format!("{i}")).unwrap())
        .collect();
    client
        .abort(
            0u32,
            Some(queued.iter().map(|a| a.msg_ids()[0].clone()).collect()),
        )
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    client.interrupt(0u32).unwrap().get_timeout(WAIT).unwrap();
    let _ = blocker.get_timeout(WAIT);
    for q in &queued {
        match q.get_timeout(WAIT) {
            Err(Error::Aborted { engine: 0, .. }) => {}
            other => panic!("expected Aborted, got {other:?}"),
        }
    }
    client.clear(0u32).unwrap().get_timeout(WAIT).unwrap();
    assert!(view.get("x").is_err(), "clear empties the namespace");
    assert_eq!(
        view.execute("3").unwrap().get_timeout(WAIT).unwrap(),
        vec![Value::Int(3)]
    );
}

/// `abort_running` stops a running `loop {}` and answers it `Aborted`, as
/// it does the work queued behind it; an abort that names other requests
/// lets it run; the engine serves the next request.
#[test]
fn an_abort_of_running_work_answers_it_aborted_and_the_engine_serves_on() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(1);
    let view = client.view(0);
    let blocker = view
        .execute(&format!(
            "{RUNNING_EVERY} let n = 0; loop {{ running(n); n += 1 }}"
        ))
        .unwrap();
    support::wait_until_printed(&blocker, 0, "running");
    let queued = view.execute("1").unwrap();
    // Naming another request stops nothing that runs: the loop goes on
    // printing after that abort was answered.
    client
        .abort_running(0u32, Some(vec!["not-this-one".into()]))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let printed = |ar: &zpar::AsyncResult| {
        ar.stdout()
            .get(&0)
            .map_or(0, |out| out.matches("running").count())
    };
    let before = printed(&blocker);
    support::wait_until(
        "the loop runs on after an abort naming another request",
        || printed(&blocker) > before + 1,
    );
    assert!(!blocker.ready());
    client
        .abort_running(0u32, None)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    for (what, r) in [
        ("the running loop", &blocker),
        ("the queued request", &queued),
    ] {
        match r.get_timeout(WAIT) {
            Err(Error::Aborted { engine: 0, .. }) => {}
            other => panic!("{what}: expected Aborted, got {other:?}"),
        }
    }
    assert_eq!(
        view.execute("2").unwrap().get_timeout(WAIT).unwrap(),
        vec![Value::Int(2)]
    );
}

/// Raw frames at each of the hub's client-facing sockets: garbage, unsigned,
/// wrongly signed, replayed. The hub drops them and keeps serving.
#[test]
fn hub_survives_malformed_unsigned_and_replayed_messages() {
    let _watchdog = support::watchdog();
    let (cluster, client) = cluster(1);
    let conn = client.connection().clone();
    let ctx = zmq::Context::new();
    let good = Session::new(conn.key.as_bytes(), "hmac-sha256", "attacker").unwrap();
    let wrong = Session::new(b"not-the-key", "hmac-sha256", "attacker").unwrap();
    for port in [conn.registration, conn.mux, conn.task, conn.control] {
        let s = ctx.socket(zmq::DEALER).unwrap();
        s.set_linger(0).unwrap();
        s.connect(&conn.url(port)).unwrap();
        let junk: Vec<Vec<u8>> = vec![b"garbage".to_vec()];
        s.send_multipart(junk, 0).unwrap();
        s.send_multipart(vec![b"<IDS|MSG>".to_vec(), b"sig".to_vec()], 0)
            .unwrap();
        s.send_multipart(
            vec![
                b"<IDS|MSG>".to_vec(),
                vec![],
                b"{".to_vec(),
                b"{}".to_vec(),
                b"{}".to_vec(),
                vec![0xff],
            ],
            0,
        )
        .unwrap();
        let mut msg = Message::new(
            &good,
            Content::ExecuteRequest(ExecuteRequest {
                code: "1".into(),
                ..Default::default()
            }),
        );
        msg.metadata
            .insert("targets".into(), serde_json::json!([0]));
        let mut unsigned = good.encode(&msg);
        unsigned.signature = zmq::Message::new();
        zpar_protocol::send_frames(&s, unsigned.into_frames(), 0).unwrap();
        zpar_protocol::send_frames(&s, wrong.encode(&msg).into_frames(), 0).unwrap();
        // A validly signed message, then the very same frames again.
        let raw = good.encode(&msg);
        let again = raw.duplicate();
        zpar_protocol::send_frames(&s, raw.into_frames(), 0).unwrap();
        zpar_protocol::send_frames(&s, again.into_frames(), 0).unwrap();
    }
    // Still serving, engine still alive.
    for _ in 0..3 {
        assert_eq!(
            client
                .all()
                .execute("6 * 7")
                .unwrap()
                .get_timeout(WAIT)
                .unwrap(),
            vec![Value::Int(42)]
        );
    }
    assert!(zpar::cluster::process_alive(cluster.pids().hub));
    assert_eq!(client.queue_status().unwrap().engines.len(), 1);
}

#[test]
fn shutdown_stops_the_cluster_and_removes_connection_files() {
    let _watchdog = support::watchdog();
    let (mut cluster, client) = cluster(2);
    let file = cluster.profile().client_file();
    assert!(file.exists());
    client
        .shutdown(zpar::Targets::All, true)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    cluster
        .wait_for_exit(WAIT)
        .expect("every process exits after a hub shutdown");
    assert!(!file.exists(), "the hub removes its connection files");
    assert!(!cluster.profile().engine_file().exists());
}

/// Validly signed requests whose content has the wrong shape (or whose type
/// nobody serves), on every client-facing channel: each gets an error reply
/// routed back to its sender, and nothing stays pending at the hub.
#[test]
fn signed_requests_of_the_wrong_shape_are_answered_not_left_pending() {
    let _watchdog = support::watchdog();
    let (_cluster, client) = cluster(1);
    let conn = client.connection().clone();
    let ctx = zmq::Context::new();
    let mut good = Session::new(conn.key.as_bytes(), "hmac-sha256", "prankster").unwrap();
    let targets = serde_json::json!({"targets": [0]});
    let broken = [
        ("execute_request", serde_json::json!({"code": 5}), &targets),
        ("execute_request", serde_json::json!("print(1)"), &targets),
        (
            "apply_request",
            serde_json::json!({"f": 1, "args": "x"}),
            &targets,
        ),
        (
            "push_request",
            serde_json::json!({"namespace": [1]}),
            &targets,
        ),
        ("pull_request", serde_json::json!({"names": 7}), &targets),
        ("frobnicate_request", serde_json::json!({}), &targets),
        // Content right, metadata of the wrong shape: the hub answers.
        (
            "execute_request",
            serde_json::json!({"code": "1"}),
            &serde_json::json!({"targets": "zero", "retries": -1}),
        ),
    ];
    for port in [conn.mux, conn.task, conn.control] {
        let s = ctx.socket(zmq::DEALER).unwrap();
        s.set_linger(0).unwrap();
        s.connect(&conn.url(port)).unwrap();
        let mut sent = Vec::new();
        for (msg_type, content, metadata) in &broken {
            let header = good.header(msg_type);
            sent.push(header.msg_id.clone());
            let raw = good.assemble(
                vec![],
                serde_json::to_vec(&header).unwrap(),
                b"{}".to_vec(),
                serde_json::to_vec(metadata).unwrap(),
                serde_json::to_vec(content).unwrap(),
                vec![],
            );
            zpar_protocol::send_frames(&s, raw.into_frames(), 0).unwrap();
        }
        // One error reply per request, each naming it as its parent.
        let deadline = Instant::now() + WAIT;
        while !sent.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                s.poll(zmq::POLLIN, left.as_millis().max(1) as i64).unwrap() > 0,
                "no reply on port {port} to {sent:?}"
            );
            let reply = good
                .decode_frames(zpar_protocol::recv_frames(&s, 0).unwrap())
                .unwrap();
            assert!(reply.header.msg_type.ends_with("_reply"), "{reply:?}");
            if let Some(r) = reply.content.task_reply() {
                assert_eq!(r.status, zpar_protocol::Status::Error, "{reply:?}");
            }
            let parent = reply.parent_header.expect("a parent").msg_id;
            sent.retain(|id| *id != parent);
        }
    }
    support::wait_until("no request is pending at the hub", || {
        let q = client.queue_status().unwrap();
        q.unassigned == 0 && q.engines.values().all(|e| e.queue == 0)
    });
    assert_eq!(
        client
            .all()
            .execute("6 * 7")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap(),
        vec![Value::Int(42)]
    );
}
