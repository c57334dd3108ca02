//! Load-balanced tasks and task records: retries, timeouts, dependencies,
//! results fetched by other clients, a hub killed and restarted on SQLite.

use crate::support::{self, cluster, cluster_with, zpar_bin, WAIT};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use zpar::{Client, Error, Value};

/// A task that takes a little while, so several are in flight at once.
const SLOW_DOUBLE: &str = "|x| { let n = 0; while n < 20000 { n += 1; } x * 2 }";

#[test]
fn killed_engine_with_retries_loses_nothing() {
    let _watchdog = support::watchdog();
    let (mut c, client) = cluster(4);
    let lb = client.load_balanced().retries(3);
    let n = 400;
    let ar = lb
        .map(SLOW_DOUBLE, (0..n).map(Value::Int).collect(), 1)
        .unwrap();
    support::wait_until("some tasks are done", || ar.progress().0 >= 20);
    c.kill_engine(2).unwrap();
    let got = ar.get_timeout(WAIT).unwrap();
    assert_eq!(got, (0..n).map(|i| Value::Int(2 * i)).collect::<Vec<_>>());
    assert!(ar
        .replies()
        .iter()
        .all(|r| r.engine != Some(2) || r.outcome.is_ok()));
}

#[test]
fn killed_engine_without_retries_reports_each_lost_task() {
    let _watchdog = support::watchdog();
    let (mut c, client) = cluster(4);
    let lb = client.load_balanced();
    let n = 400;
    let ar = lb
        .map(SLOW_DOUBLE, (0..n).map(Value::Int).collect(), 1)
        .unwrap();
    support::wait_until("some tasks are done", || ar.progress().0 >= 20);
    c.kill_engine(1).unwrap();
    assert!(ar.wait(Some(WAIT)));
    let replies = ar.replies();
    assert_eq!(replies.len(), n as usize);
    let mut lost = 0;
    for (i, r) in replies.iter().enumerate() {
        match &r.outcome {
            Ok(v) => assert_eq!(
                *v,
                Value::Array(vec![Value::Int(2 * i as i64)]),
                "map replies are chunks"
            ),
            Err(Error::EngineDied { engine: 1, .. }) => lost += 1,
            Err(e) => panic!("task {i}: {e}"),
        }
    }
    assert!(lost > 0, "the dead engine had tasks queued");
    assert!(matches!(
        ar.get_timeout(WAIT),
        Err(Error::EngineDied { .. } | Error::Multiple(_))
    ));
}

#[test]
fn task_timeouts_fail_with_timeout_and_the_engine_lives() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(1);
    let lb = client.load_balanced().timeout(Duration::from_millis(200));
    match lb.apply("|| loop {}", vec![]).unwrap().get_timeout(WAIT) {
        Err(Error::TaskTimeout { message, .. }) => {
            assert!(message.contains("timeout of 0.2"), "{message}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(lb.apply_sync("|| 7", vec![]).unwrap(), Value::Int(7));
}

#[test]
fn after_and_follow_dependencies() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(3);
    let lb = client.load_balanced();
    let first = lb
        .apply("|| { let n = 0; while n < 300000 { n += 1; } 1 }", vec![])
        .unwrap();
    let second = lb
        .clone()
        .after(first.msg_ids())
        .apply("|| 2", vec![])
        .unwrap();
    assert_eq!(second.get_timeout(WAIT).unwrap(), vec![Value::Int(2)]);
    assert!(
        first.ready(),
        "`after` ran only once its dependency finished"
    );
    let first_done = first.timings()[0].1.completed.clone().unwrap();
    let second_start = second.timings()[0].1.started.clone().unwrap();
    assert!(second_start >= first_done, "{second_start} < {first_done}");
    let on = first.replies()[0].engine;
    for _ in 0..5 {
        let f = lb
            .clone()
            .follow(first.msg_ids())
            .apply("|| 3", vec![])
            .unwrap();
        f.get_timeout(WAIT).unwrap();
        assert_eq!(
            f.replies()[0].engine,
            on,
            "`follow` runs where its dependency ran"
        );
    }
    // impossible: unknown, and failed, dependencies
    match lb
        .clone()
        .after(&["no-such-task".into()])
        .apply("|| 1", vec![])
        .unwrap()
        .get_timeout(WAIT)
    {
        Err(Error::Hub { ename, .. }) | Err(Error::RemoteError { ename, .. }) => {
            assert_eq!(ename, "ImpossibleDependency")
        }
        other => panic!("{other:?}"),
    }
    let bad = lb.apply("|| undefined_name", vec![]).unwrap();
    let _ = bad.get_timeout(WAIT);
    match lb
        .clone()
        .after(bad.msg_ids())
        .apply("|| 1", vec![])
        .unwrap()
        .get_timeout(WAIT)
    {
        Err(Error::Hub { ename, message }) => {
            assert_eq!(ename, "DependencyFailed");
            assert!(message.contains(&bad.msg_ids()[0]), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn imap_batches_and_schemes() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster_with(2, &["--scheme", "lru"], &[]);
    let lb = client.load_balanced();
    let ordered: Vec<Value> = lb
        .imap("|x| x + 1", (0..50).map(Value::Int), true, 4)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ordered, (1..51).map(Value::Int).collect::<Vec<_>>());
    let mut any: Vec<i64> = lb
        .imap("|x| x * 3", (0..50).map(Value::Int), false, 8)
        .map(|v| v.unwrap().as_i64().unwrap())
        .collect();
    any.sort();
    assert_eq!(any, (0..50).map(|i| i * 3).collect::<Vec<_>>());
    let calls: Vec<Vec<Value>> = (0..100)
        .map(|i| vec![Value::Int(i), Value::Int(1000)])
        .collect();
    let sums = lb
        .apply_batch("|a, b| a + b", calls, 16)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(
        sums,
        (0..100).map(|i| Value::Int(i + 1000)).collect::<Vec<_>>()
    );
}

/// `imap` reads an endless iterator lazily: items are taken only as
/// results come back (never more than `max_outstanding` ahead), and the
/// hub never holds more than that many of them; `cancel` aborts the tasks
/// in flight, stops the running ones, and the engines serve on.
#[test]
fn imap_over_an_endless_iterator_keeps_at_most_max_outstanding_in_flight_and_cancels() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(2);
    let lb = client.load_balanced();
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&taken);
    let items = (0..).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        Value::Int(i)
    });
    let (max, want) = (100, 3_000);
    let mut squares = lb.imap("|x| x * x", items, true, max);
    let mut most_in_hub = 0;
    for (i, v) in squares.by_ref().take(want).enumerate() {
        assert_eq!(v.unwrap(), Value::Int((i * i) as i64));
        let pulled = taken.load(Ordering::SeqCst);
        assert!(
            pulled <= i + 1 + max,
            "{pulled} items taken after {i} results"
        );
        if i % 500 == 0 {
            let q = client.queue_status().unwrap();
            let in_hub = q.unassigned + q.engines.values().map(|e| e.queue).sum::<u64>();
            most_in_hub = most_in_hub.max(in_hub);
        }
    }
    assert!(
        most_in_hub <= max as u64,
        "the hub held {most_in_hub} tasks"
    );
    squares.cancel().unwrap();
    assert_eq!(squares.outstanding(), 0);
    assert!(squares.next().is_none(), "a cancelled map ends");

    // Tasks that never end (submitted as the map is made): cancel stops
    // them where they run.
    let mut stuck = lb.imap("|x| { loop {} }", (0..).map(Value::Int), false, 8);
    assert_eq!(stuck.outstanding(), 8);
    support::wait_until("both engines run a stuck task", || {
        client
            .queue_status()
            .unwrap()
            .engines
            .values()
            .all(|e| e.queue > 0)
    });
    stuck.cancel().unwrap();
    assert!(stuck.next().is_none());
    assert_eq!(
        client
            .all()
            .execute("7")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap(),
        vec![Value::Int(7), Value::Int(7)],
        "the engines serve after the cancel"
    );
}

/// `wait` returns at the first exception while other work still runs, at
/// the first completion, or when all are complete.
#[test]
fn wait_returns_at_the_first_exception_or_completion_or_all() {
    use zpar::{wait, ReturnWhen};
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(2);
    let endless = client.view(0).execute("loop {}").unwrap();
    let failing = client.view(1).execute("throw \"boom\"").unwrap();
    let w = wait(
        &[&endless, &failing],
        ReturnWhen::FirstException,
        Some(WAIT),
    );
    assert_eq!((w.done, w.pending), (vec![1], vec![0]));
    let w = wait(
        &[&endless, &failing],
        ReturnWhen::FirstCompleted,
        Some(WAIT),
    );
    assert_eq!((w.done, w.pending), (vec![1], vec![0]));
    // All: only a bounded wait returns while one never ends.
    let w = wait(
        &[&endless, &failing],
        ReturnWhen::AllCompleted,
        Some(Duration::from_millis(200)),
    );
    assert_eq!(w.pending, vec![0]);
    client
        .abort_running(0u32, None)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let w = wait(&[&endless, &failing], ReturnWhen::AllCompleted, Some(WAIT));
    assert_eq!((w.done, w.pending), (vec![0, 1], vec![]));
    assert!(matches!(
        endless.get(),
        Err(Error::Aborted { engine: 0, .. })
    ));
    // Successes only: FirstException waits for all.
    let ok: Vec<_> = (0..3)
        .map(|i| client.view(i % 2).execute(&format!("{i}")).unwrap())
        .collect();
    let refs: Vec<_> = ok.iter().collect();
    let w = wait(&refs, ReturnWhen::FirstException, Some(WAIT));
    assert_eq!((w.done, w.pending), (vec![0, 1, 2], vec![]));
}

#[test]
fn another_client_fetches_results_and_queries_records() {
    let _watchdog = support::watchdog();
    let (c, client) = cluster(2);
    let lb = client.load_balanced();
    let ar = lb
        .apply("|x| { print(\"working\"); x * 10 }", vec![Value::Int(4)])
        .unwrap();
    assert_eq!(support::ready(&ar).get_one().unwrap(), Value::Int(40));
    let direct = client.all().execute("21 * 2").unwrap();
    direct.get_timeout(WAIT).unwrap();
    let id = ar.msg_ids()[0].clone();
    drop(client);

    let other = Client::from_file(&c.profile().client_file()).unwrap();
    let fetched = other.get_result(&id).unwrap();
    assert_eq!(fetched.get_timeout(WAIT).unwrap(), vec![Value::Int(40)]);
    assert_eq!(fetched.stdout().values().next().unwrap(), "working\n");
    let both = other.get_result(&direct.msg_ids()[0]).unwrap();
    let both = support::ready(&both).get_dict().unwrap();
    assert_eq!(both.len(), 2, "a broadcast is recorded per engine");
    let status = other.result_status(std::slice::from_ref(&id)).unwrap();
    assert_eq!(status.completed, vec![id.clone()]);
    assert!(other.history().unwrap().contains(&id));
    let recs = other
        .db_query(
            serde_json::json!({"msg_id": id, "status": "ok"}),
            Some(&["msg_id", "engine", "status"]),
        )
        .unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].as_object().unwrap().len(), 3);
    let since = other
        .db_query(
            serde_json::json!({"submitted": {"$gt": 0}, "channel": "mux"}),
            None,
        )
        .unwrap();
    assert_eq!(since.len(), 2);
    assert!(other
        .db_query(serde_json::json!({"colour": "red"}), None)
        .unwrap_err()
        .to_string()
        .contains("colour"));
    // resubmit runs it again under a new id
    let again = other.resubmit(std::slice::from_ref(&id)).unwrap();
    assert_eq!(again.get_timeout(WAIT).unwrap(), vec![Value::Int(40)]);
    assert_ne!(again.msg_ids()[0], id);
    // purge forgets it
    assert!(
        other
            .purge_results(Some(std::slice::from_ref(&id)))
            .unwrap()
            >= 1
    );
    assert!(other.get_result(&id).is_err());
    assert!(other.purge_results(None).unwrap() >= 2);
}

/// Regression for `get_result` on a request still running: it used to
/// start a polling thread per pending result; now the client's I/O thread
/// asks the hub again on its timer until the result is recorded.
#[test]
fn another_client_waits_for_a_result_still_running() {
    let _watchdog = support::watchdog();
    let (c, client) = cluster(1);
    let running = client.view(0).execute(&support::running_loop()).unwrap();
    let id = running.msg_ids()[0].clone();
    // The interrupt below must find the loop running: on a loaded machine
    // it could otherwise reach the engine (on control) before the loop (on
    // mux), interrupt nothing, and leave the loop running for good.
    support::wait_until_printed(&running, 0, "running");
    let other = Client::from_file(&c.profile().client_file()).unwrap();
    let pending: Vec<_> = ["first", "second"]
        .iter()
        .map(|_| other.get_result(&id).unwrap())
        .collect();
    assert!(
        pending.iter().all(|r| !r.ready()),
        "the loop runs until interrupted"
    );
    client.interrupt(0u32).unwrap().get_timeout(WAIT).unwrap();
    for fetched in &pending {
        match fetched.get_timeout(WAIT) {
            Err(Error::RemoteError { ename, .. }) => assert_eq!(ename, "Interrupted"),
            got => panic!("expected the recorded Interrupted error, got {got:?}"),
        }
        assert_eq!(fetched.replies()[0].engine, Some(0));
    }
}

#[test]
fn memory_store_is_bounded() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster_with(1, &["--db-limit", "5"], &[]);
    let view = client.all();
    let ids: Vec<String> = (0..20)
        .map(|i| {
            let ar = view.execute(&format!("{i}")).unwrap();
            ar.get_timeout(WAIT).unwrap();
            ar.msg_ids()[0].clone()
        })
        .collect();
    let history = client.history().unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(
        history,
        ids[15..].to_vec(),
        "the oldest finished records went first"
    );
    match client.get_result(&ids[0]) {
        Err(Error::Hub { message, .. }) => assert!(message.contains("no record"), "{message}"),
        other => panic!("{:?}", other.map(|a| a.msg_ids().to_vec())),
    }
}

#[test]
fn hub_killed_and_restarted_on_sqlite_keeps_results_and_engines() {
    let _watchdog = support::watchdog();
    let db_dir = std::env::temp_dir().join(format!("zpar-db-{}", zpar_protocol::new_id()));
    std::fs::create_dir_all(&db_dir).unwrap();
    let db = format!("sqlite:{}", db_dir.join("tasks.db").display());
    let (mut c, client) = cluster_with(2, &["--db", &db], &[]);
    let lb = client.load_balanced();
    let ar = lb.apply("|x| x + 1", vec![Value::Int(99)]).unwrap();
    assert_eq!(support::ready(&ar).get_one().unwrap(), Value::Int(100));
    let id = ar.msg_ids()[0].clone();
    let ids_before = client.ids();
    c.kill_hub().unwrap();

    let dir = c.profile().dir.clone();
    let hub = support::Reaper::of(
        Command::new(zpar_bin())
            .args([
                "hub",
                "--reuse",
                "--hb-period-ms",
                "200",
                "--hb-misses",
                "5",
                "--db",
                &db,
                "--profile-dir",
            ])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A new client on the same ports; the engines come back by themselves.
    let fresh = Client::from_file(&c.profile().client_file()).unwrap();
    let ids_after = fresh.wait_for_engines(2, WAIT).unwrap();
    assert_eq!(ids_after, ids_before, "engines keep their ids");
    assert_eq!(
        fresh.get_result(&id).unwrap().get_timeout(WAIT).unwrap(),
        vec![Value::Int(100)]
    );
    assert_eq!(
        fresh
            .all()
            .execute("1 + 1")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap(),
        vec![Value::Int(2); 2]
    );
    // The old client reconnects too.
    client.refresh_engines(WAIT).unwrap();
    assert_eq!(
        client.get_result(&id).unwrap().get_timeout(WAIT).unwrap(),
        vec![Value::Int(100)]
    );
    fresh
        .shutdown(zpar::Targets::All, true)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    drop(hub);
    let _ = std::fs::remove_dir_all(db_dir);
}

/// Sixteen clients submit at once: every task runs exactly once, each
/// client gets exactly its own results, and none is starved (each finishes;
/// the spread of their rates is printed, not asserted: timing belongs in
/// benchmarks).
#[test]
fn sixteen_clients_at_once_each_get_exactly_their_own_results() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(2);
    let file = client.connection().clone();
    const CLIENTS: i64 = 16;
    const TASKS: i64 = 500;
    let rates: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let file = file.clone();
                s.spawn(move || {
                    let me = zpar::Client::from_connection(file).unwrap();
                    let lb = me.load_balanced();
                    let started = std::time::Instant::now();
                    let results: Vec<_> = (0..TASKS)
                        .map(|i| {
                            lb.apply("|k, i| k * 1000000 + i", vec![Value::Int(k), Value::Int(i)])
                                .unwrap()
                        })
                        .collect();
                    for (i, r) in results.iter().enumerate() {
                        assert_eq!(
                            r.get_timeout(WAIT).unwrap(),
                            vec![Value::Int(k * 1_000_000 + i as i64)],
                            "client {k} got someone else's result"
                        );
                    }
                    TASKS as f64 / started.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let q = client.queue_status().unwrap();
    let completed: u64 = q.engines.values().map(|e| e.completed).sum();
    assert_eq!(
        completed,
        (CLIENTS * TASKS) as u64,
        "every task ran exactly once"
    );
    let (lo, hi) = rates
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    eprintln!("16 clients: {lo:.0} to {hi:.0} tasks/s each");
}

/// Labels: every request of a labelled view, direct or load-balanced, keeps
/// its label in the hub's records, in memory and in SQLite, and `$glob`
/// finds them.
#[test]
fn labelled_requests_are_found_by_glob_in_memory_and_sqlite_records() {
    let _watchdog = support::watchdog();
    let dir = std::env::temp_dir().join(format!("zpar-labels-{}", zpar_protocol::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join("tasks.db").display());
    for hub_args in [vec![], vec!["--db", db.as_str()]] {
        let (_cluster, client) = cluster_with(2, &hub_args, &[]);
        client
            .all()
            .label("fit-1")
            .execute("1")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        client
            .load_balanced()
            .label("fit-2")
            .apply("|x| x + 1", vec![Value::Int(1)])
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        client
            .all()
            .label("other")
            .execute("2")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        client
            .all()
            .execute("3")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        let fits = client
            .db_query(
                json!({"label": {"$glob": "fit-*"}}),
                Some(&["label", "msg_type"]),
            )
            .unwrap();
        let mut labels: Vec<&str> = fits.iter().filter_map(|r| r["label"].as_str()).collect();
        labels.sort();
        assert_eq!(
            labels,
            ["fit-1", "fit-1", "fit-2"],
            "{hub_args:?}: {fits:?}"
        );
        let other = client.db_query(json!({"label": "other"}), None).unwrap();
        assert_eq!(other.len(), 2, "{hub_args:?}");
        let bad = client
            .db_query(json!({"label": {"$glob": 7}}), None)
            .unwrap_err();
        assert!(bad.to_string().contains("$glob takes a pattern"), "{bad}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
