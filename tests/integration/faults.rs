//! Faults that must hold: dead engines, interrupts, limits, aborts, bad
//! input on the hub's sockets, shutdown.

use crate::support::{cluster, cluster_with, WAIT};
use std::time::{Duration, Instant};
use zpar::{ClientEvent, Error, Value};
use zpar_protocol::{Content, ExecuteRequest, Message, Session};

#[test]
fn killed_engine_fails_its_pending_requests_and_leaves() {
    let (mut cluster, client) = cluster(3);
    let events = client.events().unwrap();
    let busy = client.view(1).execute("loop {}").unwrap();
    let queued = client.view(1).execute("1").unwrap();
    cluster.kill_engine(1).unwrap();
    let t = Instant::now();
    for ar in [&busy, &queued] {
        match ar.get_timeout(WAIT) {
            Err(Error::EngineDied { engine: 1, .. }) => {}
            other => panic!("expected EngineDied for engine 1, got {other:?}"),
        }
    }
    // heartbeat 200 ms × 5 misses, plus scheduling slack
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(ClientEvent::EngineUnregistered { engine: 1, .. }) => break,
            Ok(_) => continue,
            Err(e) => panic!("no unregistration notification: {e}"),
        }
    }
    assert_eq!(client.ids(), vec![0, 2]);
    let r = client.all().execute("2 + 2").unwrap().get().unwrap();
    assert_eq!(r, vec![Value::Int(4), Value::Int(4)]);
    match client.view(1).execute("1") {
        Err(Error::UnknownEngine(1)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn interrupt_stops_an_infinite_loop_and_keeps_the_engine() {
    let (_c, client) = cluster(1);
    let view = client.view(0);
    view.execute("let kept = 5;").unwrap().get().unwrap();
    let running = view.execute("let i = 0; loop { i += 1; }").unwrap();
    // The engine takes the request, then we interrupt: poll until it is busy.
    let deadline = Instant::now() + WAIT;
    while client.queue_status().unwrap().engines[&0].queue == 0 && !running.ready() {
        assert!(Instant::now() < deadline);
    }
    client.interrupt(0u32).unwrap().get_timeout(WAIT).unwrap();
    match running.get_timeout(WAIT) {
        Err(Error::RemoteError { ename, .. }) => assert_eq!(ename, "Interrupted"),
        other => panic!("expected Interrupted, got {other:?}"),
    }
    assert_eq!(view.get("kept").unwrap(), vec![Value::Int(5)]);
}

#[test]
fn operation_limits_and_timeouts_stop_runaway_scripts() {
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
        Err(Error::Timeout { what, .. }) => {
            assert!(what.contains("timeout of 0.2 s"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        view.execute("1 + 1").unwrap().get().unwrap(),
        vec![Value::Int(2)]
    );
}

#[test]
fn abort_and_clear() {
    let (_c, client) = cluster(1);
    let view = client.view(0);
    view.execute("let x = 1;").unwrap().get().unwrap();
    let blocker = view
        .execute("let n = 0; while n < 200000000 { n += 1 }")
        .unwrap();
    let queued: Vec<_> = (0..3)
        .map(|i| view.execute(&format!("{i}")).unwrap())
        .collect();
    client
        .abort(
            0u32,
            Some(queued.iter().map(|a| a.msg_ids()[0].clone()).collect()),
        )
        .unwrap()
        .get()
        .unwrap();
    client.interrupt(0u32).unwrap().get().unwrap();
    let _ = blocker.get_timeout(WAIT);
    for q in &queued {
        match q.get_timeout(WAIT) {
            Err(Error::Aborted { engine: 0, .. }) => {}
            other => panic!("expected Aborted, got {other:?}"),
        }
    }
    client.clear(0u32).unwrap().get().unwrap();
    assert!(view.get("x").is_err(), "clear empties the namespace");
    assert_eq!(
        view.execute("3").unwrap().get().unwrap(),
        vec![Value::Int(3)]
    );
}

/// Raw frames at each of the hub's client-facing sockets: garbage, unsigned,
/// wrongly signed, replayed. The hub drops them and keeps serving.
#[test]
fn hub_survives_malformed_unsigned_and_replayed_messages() {
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
