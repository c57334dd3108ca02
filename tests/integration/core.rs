//! The working core: namespaces, apply, push/pull, scatter/gather, map,
//! registration and queue status, against real processes.

use crate::support::{self, cluster, WAIT};
use std::collections::BTreeMap;
use zpar::{Error, Reference, Value};

#[test]
fn namespace_persists_and_every_apply_form_works() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(2);
    let view = client.all();
    view.execute("let a = 40; fn add2(x) { x + 2 }")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let r = view.execute("add2(a)").unwrap().get_timeout(WAIT).unwrap();
    assert_eq!(r, vec![Value::Int(42), Value::Int(42)]);
    // closure, definition, name, reference, captured variable
    assert_eq!(
        view.apply_sync("|x, y| x * y", vec![Value::Int(6), Value::Int(7)])
            .unwrap()[0],
        Value::Int(42)
    );
    assert_eq!(
        view.apply_sync("fn sq(x) { x * x }", vec![Value::Int(9)])
            .unwrap()[1],
        Value::Int(81)
    );
    assert_eq!(
        view.apply_sync("add2", vec![Reference("a")]).unwrap()[0],
        Value::Int(42)
    );
    assert_eq!(
        view.apply_sync("|| a + 1", vec![]).unwrap()[0],
        Value::Int(41)
    );
    view.push("f", Value::Function("|s| s + \"!\"".into()))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(
        view.apply_sync("f", vec![Value::from("hi")]).unwrap()[0],
        Value::from("hi!")
    );
}

#[test]
fn push_pull_round_trip_every_kind() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(1);
    let view = client.all();
    let mut m = BTreeMap::new();
    m.insert("xs".to_string(), Value::F64Array(vec![1.5, -2.0]));
    m.insert("blob".to_string(), Value::Bytes(vec![0, 1, 255]));
    m.insert(
        "nested".to_string(),
        Value::Array(vec![Value::Int(1), Value::from("two"), Value::Unit]),
    );
    let v = Value::Map(m);
    view.push("v", v.clone())
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(view.get("v").unwrap(), vec![v]);
    let big = Value::F64Array((0..3_000_000).map(f64::from).collect());
    view.set("big", big.clone()).unwrap();
    assert_eq!(view.get("big").unwrap()[0], big);
    view.set("ints", Value::I64Array(vec![i64::MIN, 0, i64::MAX]))
        .unwrap();
    let both = view
        .pull_many(&["ints", "v"])
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert!(matches!(&both[0], Value::Array(a) if a.len() == 2));
    let n = view
        .execute("big.len + ints.len")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(n[0], Value::Int(3_000_003));
}

#[test]
fn scatter_gather_and_map_keep_order() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(3);
    let view = client.all();
    let data: Vec<Value> = (0..10).map(Value::Int).collect();
    view.scatter("part", Value::Array(data.clone()), false)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let sizes = view.execute("part.len").unwrap().get_timeout(WAIT).unwrap();
    assert_eq!(
        sizes,
        vec![Value::Int(4), Value::Int(3), Value::Int(3)],
        "ipyparallel's split"
    );
    assert_eq!(
        support::ready(&view.gather("part").unwrap())
            .get_gathered()
            .unwrap(),
        Value::Array(data)
    );
    // flatten: one item per engine becomes the item itself
    view.scatter("id", Value::Array((0..3).map(Value::Int).collect()), true)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(
        view.get("id").unwrap(),
        vec![Value::Int(0), Value::Int(1), Value::Int(2)]
    );
    // numeric arrays scatter natively
    let xs = Value::F64Array((0..1000).map(f64::from).collect());
    view.scatter("xs", xs.clone(), false)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(
        support::ready(&view.gather("xs").unwrap())
            .get_gathered()
            .unwrap(),
        xs
    );
    let squares = view
        .map_sync("|x| x * x", (0..20).map(Value::Int).collect())
        .unwrap();
    assert_eq!(
        squares,
        (0..20).map(|i| Value::Int(i * i)).collect::<Vec<_>>()
    );
}

#[test]
fn output_is_captured_per_engine_and_results_by_engine() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(2);
    let view = client.all();
    view.scatter("id", Value::Array(vec![Value::Int(0), Value::Int(1)]), true)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let ar = view
        .execute("print(`hello from ${id}`); debug(\"dbg\"); id * 10")
        .unwrap();
    let by_engine = support::ready(&ar).get_dict().unwrap();
    assert_eq!(by_engine[&0], Value::Int(0));
    assert_eq!(by_engine[&1], Value::Int(10));
    let out = ar.stdout();
    assert_eq!(out[&0], "hello from 0\n");
    assert_eq!(out[&1], "hello from 1\n");
    assert!(ar.stderr()[&0].contains("dbg"));
    let t = ar.timings();
    assert_eq!(t.len(), 2);
    assert!(t
        .iter()
        .all(|(_, t)| t.started.is_some() && t.completed.is_some()));
}

#[test]
fn errors_are_typed_and_leave_the_namespace_intact() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(2);
    let view = client.view(0);
    view.execute("let keep = 7;")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    match view
        .execute("let x = 1;\nlet y = ;")
        .unwrap()
        .get_timeout(WAIT)
    {
        Err(Error::RemoteError {
            engine: 0,
            ename,
            line: Some(2),
            ..
        }) => assert_eq!(ename, "SyntaxError"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match view
        .execute("let z = 1;\n  nope(z)")
        .unwrap()
        .get_timeout(WAIT)
    {
        Err(Error::RemoteError {
            ename,
            message,
            line,
            column,
            ..
        }) => {
            assert_eq!(ename, "UnknownName");
            assert!(message.contains("nope"), "{message}");
            assert_eq!((line, column), (Some(2), Some(3)));
        }
        other => panic!("expected an unknown-name error, got {other:?}"),
    }
    match view.pull("missing").unwrap().get_timeout(WAIT) {
        Err(Error::RemoteError { message, .. }) => {
            assert!(message.contains("\"missing\""), "{message}")
        }
        other => panic!("{other:?}"),
    }
    view.execute("let f = |x| x;")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    match view.pull("f").unwrap().get_timeout(WAIT) {
        Err(Error::RemoteError { ename, message, .. }) => {
            assert_eq!(ename, "NotTransferable");
            assert!(message.contains("Fn"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match view
        .apply("|x| x + 1", vec![Value::from("a"), Value::Int(1)])
        .unwrap()
        .get_timeout(WAIT)
    {
        Err(Error::RemoteError { .. }) => {}
        other => panic!("a bad argument count must fail: {other:?}"),
    }
    assert_eq!(view.get("keep").unwrap(), vec![Value::Int(7)]);
    // Two engines failing give one error listing each.
    let both = client
        .all()
        .execute("undefined_thing")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap_err();
    match both {
        Error::Multiple(v) => assert_eq!(v.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_targets_and_empty_clusters_are_clear_errors() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(1);
    match client.view(7).execute("1") {
        Err(Error::UnknownEngine(7)) => {}
        other => panic!("{other:?}"),
    }
    let e = client.view(vec![0, 9]).execute("1").err().unwrap();
    assert!(e.to_string().contains("engine 9"), "{e}");
}

#[test]
fn registration_ids_and_queue_status() {
    let _watchdog = support::watchdog();
    let (mut cluster, client) = cluster(2);
    assert_eq!(client.ids(), vec![0, 1]);
    cluster.add_engines(1).unwrap();
    assert_eq!(client.wait_for_engines(3, WAIT).unwrap(), vec![0, 1, 2]);
    for _ in 0..3 {
        client
            .all()
            .execute("1")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
    }
    let q = client.queue_status().unwrap();
    assert_eq!(q.engines.len(), 3);
    assert!(
        q.engines.values().all(|e| e.queue == 0 && e.completed >= 3),
        "{q:?}"
    );
}

#[test]
fn queue_status_with_vitals_shows_each_engines_memory_cpu_and_last_heartbeat() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(2);
    // Plain queue status keeps ipyparallel's shape: no vitals.
    let plain = client.queue_status().unwrap();
    assert!(plain.hub.is_none(), "{plain:?}");
    assert!(
        plain.engines.values().all(|e| e.vitals.is_none()),
        "{plain:?}"
    );
    // Engine 0 spins; engine 1 idles. Engines report every few beats, so
    // a spin this long covers a whole report's interval.
    let spin = client
        .view(0)
        .execute("let t = timestamp(); while t.elapsed < 25.0 {} 0")
        .unwrap();
    let mut last = None;
    support::wait_until(
        "engine 0 reports a busy CPU and engine 1 an idle one",
        || {
            let q = client.queue_status_with_vitals().unwrap();
            let cpu = |id| q.engines.get(&id).and_then(|e| e.vitals?.cpu);
            let seen =
                matches!((cpu(0), cpu(1)), (Some(busy), Some(idle)) if busy >= 0.2 && idle < busy);
            last = Some(q);
            seen
        },
    );
    let q = last.unwrap();
    for (id, e) in &q.engines {
        let v = e.vitals.expect("vitals asked for");
        assert!(v.rss.unwrap_or(0) > 1 << 20, "engine {id}: {v:?}");
        let age = v.beat_age.expect("a heartbeat was heard");
        assert!((0.0..10.0).contains(&age), "engine {id}: {v:?}");
    }
    let hub = q.hub.expect("the hub's vitals");
    assert!(hub.rss.unwrap_or(0) > 1 << 20, "{hub:?}");
    assert!(hub.cpu.is_some(), "{hub:?}");
    client.interrupt(0).unwrap();
    let _ = spin.get_timeout(WAIT);
}

/// Tasks that waited for an engine go to the first one as the hub
/// registers it, on the engine's link ahead of its registration answer:
/// the engine keeps them and runs them all.
#[test]
fn tasks_submitted_before_any_engine_run_on_the_first_to_register() {
    let _watchdog = support::watchdog();
    let (mut cluster, client) = cluster(0);
    let lb = client.load_balanced();
    let waiting: Vec<_> = (0..20)
        .map(|i| lb.apply("|x| x * 3", vec![Value::Int(i)]).unwrap())
        .collect();
    cluster.add_engines(1).unwrap();
    for (i, r) in waiting.iter().enumerate() {
        assert_eq!(r.get_timeout(WAIT).unwrap(), vec![Value::Int(3 * i as i64)]);
    }
}

#[test]
fn load_balanced_tasks_run_somewhere() {
    let _watchdog = support::watchdog();
    let (_c, client) = cluster(2);
    let lb = client.load_balanced();
    let results: Vec<_> = (0..50)
        .map(|i| lb.apply("|x| x * 2", vec![Value::Int(i)]).unwrap())
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            support::ready(r).get_one().unwrap(),
            Value::Int(2 * i as i64)
        );
    }
    let mapped = lb
        .map_sync("|x| x + 1", (0..100).map(Value::Int).collect(), 7)
        .unwrap();
    assert_eq!(mapped, (1..101).map(Value::Int).collect::<Vec<_>>());
}
