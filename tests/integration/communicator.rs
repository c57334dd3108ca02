//! The tree communicator and the seed workflow, for several cluster sizes.

use crate::support::{self, cluster, WAIT};
use zpar::{bintree::fanout_tree, subtree, Error, Value, COMMUNICATOR_FANOUT};
use zpar_engine::communicator::{CHUNK_ELEMS, LARGE_MIN_BYTES};

fn setup(n: usize) -> (zpar::LocalCluster, zpar::Client) {
    let (c, client) = cluster(n);
    let view = client.all();
    let ids: Vec<Value> = client.ids().iter().map(|&i| Value::Int(i.into())).collect();
    view.scatter("id", Value::Array(ids), true)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    view.setup_communicator("com", WAIT).unwrap();
    view.push("add", Value::Function("|a, b| a + b".into()))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    (c, client)
}

#[test]
fn collectives_are_right_for_every_cluster_size() {
    let _watchdog = support::watchdog();
    for n in 1usize..=8 {
        let (_c, client) = setup(n);
        let view = client.all();
        let ids = client.ids();
        // allreduce of scattered 0..1000, folded locally first
        view.scatter(
            "data",
            Value::Array((0..1000).map(Value::Int).collect()),
            false,
        )
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
        let sums = view
            .execute("com.allreduce(add, data, false)")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        assert_eq!(sums, vec![Value::Int(499_500); n], "n = {n}");
        // reduce of ids, not broadcast: root total, others their subtree
        let partial = view
            .execute("com.reduce(add, id, true)")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        let tree = fanout_tree(&ids, COMMUNICATOR_FANOUT);
        for (id, got) in ids.iter().zip(&partial) {
            let want: i64 = subtree(*id, &tree).iter().map(|&i| i64::from(i)).sum();
            assert_eq!(*got, Value::Int(want), "n = {n}, engine {id}");
        }
        // non-commutative: concatenation gives the engines' strings in id order
        let cat = view
            .execute("com.allreduce(add, `<${id}>`)")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        let want: String = ids.iter().map(|i| format!("<{i}>")).collect();
        assert_eq!(cat, vec![Value::Str(want); n], "n = {n}");
        // elementwise f64 arrays stay native
        let arr = view
            .execute("let r = com.allreduce(add, f64_array(1000, 1.0) * id); [r.len, r[0], r[999], type_of(r)]")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        let total = (n * (n - 1) / 2) as f64;
        let want = Value::Array(vec![
            Value::Int(1000),
            Value::Float(total),
            Value::Float(total),
            Value::from("F64Array"),
        ]);
        assert_eq!(arr, vec![want; n], "n = {n}");
    }
}

#[test]
fn many_collectives_in_a_row_never_mix() {
    let _watchdog = support::watchdog();
    let (_c, client) = setup(4);
    let r = client
        .all()
        .execute("let ok = true; for i in 0..300 { let s = com.allreduce(add, id + i); if s != 6 + 4 * i { ok = false; } } ok")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(r, vec![Value::Bool(true); 4]);
    // publish / consume and barrier
    let r = client
        .all()
        .execute("com.barrier(); if com.is_root { com.publish(\"hello\") } else { com.consume() }")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(r, vec![Value::from("hello"); 4]);
}

/// Kills engine `dead` once every engine has taken the request behind
/// `ar`, then checks that it died and that every survivor's call failed
/// naming it.
fn kill_and_expect_survivors_to_name(
    cluster: &mut zpar::LocalCluster,
    client: &zpar::Client,
    ar: &zpar::AsyncResult,
    dead: u32,
) {
    support::wait_until("every engine has taken the request", || {
        client
            .queue_status()
            .unwrap()
            .engines
            .values()
            .all(|q| q.queue > 0)
    });
    cluster.kill_engine(dead).unwrap();
    // Bounded by WAIT; how fast the survivors give up is the communicator's
    // timeout, measured by benchmarks, not asserted here.
    assert!(ar.wait(Some(WAIT)), "the collective hung");
    let name = format!("engine {dead}");
    for reply in ar.replies() {
        match (&reply.outcome, reply.engine) {
            (Err(Error::EngineDied { .. }), Some(e)) if e == dead => {}
            (Err(Error::RemoteError { message, .. }), e) if e != Some(dead) => {
                assert!(message.contains(&name), "engine {e:?}: {message}");
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

#[test]
fn a_dead_peer_fails_the_collective_with_its_name() {
    let _watchdog = support::watchdog();
    let (mut c, client) = setup(4);
    // The tree for 4: 0 -> {1, 2, 3}. Engine 3 never joins: it spins.
    let view = client.all();
    view.execute("com.timeout = 2.0;")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let ar = view
        .execute("if id == 3 { loop {} } com.allreduce(add, id)")
        .unwrap();
    kill_and_expect_survivors_to_name(&mut c, &client, &ar, 3);
    // The survivors still work, and a fresh communicator over them works.
    let survivors = client.view(vec![0, 1, 2]);
    survivors.setup_communicator("com2", WAIT).unwrap();
    let r = survivors
        .execute("com2.allreduce(add, 1)")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(r, vec![Value::Int(3); 3]);
}

#[test]
fn named_elementwise_reductions_are_pipelined_and_right() {
    let _watchdog = support::watchdog();
    let (_c, client) = setup(4);
    let view = client.all();
    // 300,000 elements: three chunks, the last one short.
    let r = view
        .execute(
            "let a = f64_array(300000, 1.0) * (id + 1); let s = com.allreduce(\"sum\", a); \
             let m = com.allreduce(\"max\", a); let p = com.reduce(\"prod\", i64_array(5, id + 1), true, true); \
             [s.len, s[0], s[299999], m[7], p[4], type_of(s), type_of(p), com.allreduce(\"sum\", id)]",
        )
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let want = Value::Array(vec![
        Value::Int(300_000),
        Value::Float(10.0),
        Value::Float(10.0),
        Value::Float(4.0),
        Value::Int(24),
        Value::from("F64Array"),
        Value::from("I64Array"),
        Value::Int(6),
    ]);
    assert_eq!(r, vec![want; 4]);
    // Without broadcast each engine holds its subtree's part (four engines
    // are one root and three leaves).
    let partial = view
        .execute("com.reduce(\"sum\", i64_array(3, 1))[0]")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(
        partial,
        vec![Value::Int(4), Value::Int(1), Value::Int(1), Value::Int(1)]
    );
    // Mismatched lengths fail everywhere, naming what is wrong, and the
    // communicator still works afterwards.
    view.execute("com.timeout = 2.0;")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let bad = view
        .execute("com.allreduce(\"sum\", f64_array(10 + id, 0.0))")
        .unwrap()
        .get_timeout(WAIT);
    assert!(bad.unwrap_err().to_string().contains("elements"));
    let ok = view
        .execute("com.allreduce(\"sum\", 1)")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(ok, vec![Value::Int(4); 4]);
    let unknown = view
        .execute("com.allreduce(\"median\", 1)")
        .unwrap()
        .get_timeout(WAIT);
    assert!(unknown.unwrap_err().to_string().contains("median"));
}

/// The sequential left fold of `parts` in order, elementwise.
fn fold_f64(parts: &[Vec<f64>], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    let mut acc = parts[0].clone();
    for p in &parts[1..] {
        for (a, x) in acc.iter_mut().zip(p) {
            *a = f(*a, *x);
        }
    }
    acc
}

#[test]
fn every_allreduce_algorithm_equals_a_sequential_fold() {
    let _watchdog = support::watchdog();
    // Around each threshold: the large-array paths' and the chunk size.
    let large = LARGE_MIN_BYTES / 8;
    let sizes = [
        0,
        1,
        large - 1,
        large,
        large + 1,
        CHUNK_ELEMS - 1,
        CHUNK_ELEMS,
        CHUNK_ELEMS + 1,
    ];
    for n in 1usize..=8 {
        let (c, client) = setup(n);
        let engines = c.pids().engines;
        let view = client.all();
        for shared in [true, false] {
            view.execute(&format!("com.shared_memory = {shared};"))
                .unwrap()
                .get_timeout(WAIT)
                .unwrap();
            for len in sizes {
                let what = format!("n = {n}, {len} elements, shared memory {shared}");
                // Normal f64s, different on every engine: a sum folded in
                // another order differs in its last bits.
                let got = view
                    .execute(&format!(
                        "let a = normal({len}, id + 7); let b = i64_array({len}, id + 2); \
                         [com.allreduce(\"sum\", a), com.last_algorithm, com.allreduce(\"min\", a), \
                          com.allreduce(\"prod\", b), com.allreduce(add, a)]"
                    ))
                    .unwrap()
                    .get_timeout(WAIT)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let inputs: Vec<Vec<f64>> = view
                    .pull("a")
                    .unwrap()
                    .get_timeout(WAIT)
                    .unwrap()
                    .into_iter()
                    .map(|v| match v {
                        Value::F64Array(a) => a,
                        other => panic!("{what}: pulled {other:?}"),
                    })
                    .collect();
                // The fold order is the tree's pre-order: the engines' ids.
                let sum = Value::F64Array(fold_f64(&inputs, |a, b| a + b));
                let min = Value::F64Array(fold_f64(&inputs, f64::min));
                let prod: i64 = (0..n as i64).map(|id| id + 2).product();
                // One host: shared memory when on, else the ring.
                let path = match (n > 1 && len >= large, shared) {
                    (true, true) => "shared",
                    (true, false) => "ring",
                    (false, _) => "chunked",
                };
                let want = Value::Array(vec![
                    sum.clone(),
                    Value::from(path),
                    min,
                    Value::I64Array(vec![prod; len]),
                    sum,
                ]);
                for (engine, g) in got.iter().enumerate() {
                    if let (Value::Array(g), Value::Array(w)) = (g, &want) {
                        assert_eq!(g[1], w[1], "{what}: engine {engine}'s path");
                    }
                    assert!(*g == want, "{what}: engine {engine} differs");
                }
            }
        }
        // The engines' segments go with them.
        drop(client);
        c.stop();
        support::wait_until("the engines' shared segments are removed", || {
            engines
                .iter()
                .all(|p| zpar_protocol::bulk::segments_of(*p).is_empty())
        });
    }
}

#[test]
fn large_allreduces_refuse_mismatches_and_agree_on_their_path() {
    let _watchdog = support::watchdog();
    let (_c, client) = setup(3);
    let view = client.all();
    let len = LARGE_MIN_BYTES / 8 + 10;
    view.execute("com.timeout = 5.0;")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    // One engine one element short: every engine fails, naming the sizes,
    // on both large-array paths and at the edge to the chunked tree.
    for (shared, short) in [(true, 1), (false, 1), (true, 10)] {
        let bad = view
            .execute(&format!(
                "com.shared_memory = {shared}; \
                 com.allreduce(\"sum\", f64_array({len} - if id == 1 {{ {short} }} else {{ 0 }}, 1.0))"
            ))
            .unwrap()
            .get_timeout(WAIT);
        let text = bad.unwrap_err().to_string();
        assert!(
            text.contains("elements"),
            "shared {shared}, short {short}: {text}"
        );
    }
    // Engines whose thresholds differ: a clear error, not a hang.
    let split = view
        .execute(&format!(
            "com.large_min_bytes = if id == 1 {{ 1 << 30 }} else {{ 1024 }}; \
             com.allreduce(\"sum\", f64_array({len}, 1.0))"
        ))
        .unwrap()
        .get_timeout(WAIT);
    let text = split.unwrap_err().to_string();
    assert!(text.contains("large_min_bytes"), "{text}");
    view.execute(&format!("com.large_min_bytes = {LARGE_MIN_BYTES};"))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    // Engines that disagree on shared memory: all take the ring.
    let mixed = view
        .execute(&format!(
            "com.shared_memory = id != 2; let r = com.allreduce(\"sum\", f64_array({len}, 1.0)); [r.len, r[0], com.last_algorithm]"
        ))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let want = Value::Array(vec![
        Value::Int(len as i64),
        Value::Float(3.0),
        Value::from("ring"),
    ]);
    assert_eq!(mixed, vec![want; 3]);
    // Many calls in a row alternate paths and never mix (the script
    // allreduce of a large array goes through shared memory too).
    let r = view
        .execute(&format!(
            "let ok = true; for i in 0..40 {{ com.shared_memory = i % 3 != 0; \
             let r = com.allreduce(\"sum\", f64_array({len} + i % 2, (id + i) * 1.0)); \
             let small = com.allreduce(add, id); \
             let whole = com.allreduce(add, f64_array({len} - i, (id + i) * 1.0)); \
             if r[0] != 3.0 * i + 3.0 || r.len != {len} + i % 2 || small != 3 \
                || whole[0] != 3.0 * i + 3.0 || whole.len != {len} - i {{ ok = false; }} }} ok"
        ))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(r, vec![Value::Bool(true); 3]);
}

#[test]
fn an_engine_killed_during_large_allreduces_fails_every_survivor_with_its_name() {
    let _watchdog = support::watchdog();
    let (mut c, client) = setup(4);
    let view = client.all();
    // Kept off shared memory, a large named allreduce is a short roster
    // round and then a long ring transfer: a kill lands in the ring almost
    // always, and in either the survivors must name the lost engine.
    let first = view
        .execute(
            "com.timeout = 2.0; com.shared_memory = false; let big = f64_array(1000000, 1.0); \
             let first = com.allreduce(\"sum\", big); [first[0], com.last_algorithm]",
        )
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let want = Value::Array(vec![Value::Float(4.0), Value::from("ring")]);
    assert_eq!(first, vec![want; 4]);
    let ar = view
        .execute("loop { com.allreduce(\"sum\", big); }")
        .unwrap();
    kill_and_expect_survivors_to_name(&mut c, &client, &ar, 2);
}

#[test]
fn engines_stay_in_step_after_a_call_only_some_of_them_failed() {
    let _watchdog = support::watchdog();
    let (_c, client) = setup(4);
    let view = client.all();
    let len = LARGE_MIN_BYTES / 8 + 5;
    // Engine 2 gives up on the root's broadcast (0.3 s) while the root is
    // still busy; the others get the roster and then wait for engine 2 at
    // the shared path's barrier until their own deadline.
    let skewed = view
        .execute(&format!(
            "com.timeout = if id == 2 {{ 0.3 }} else {{ 2.0 }}; \
             if id == 0 {{ let t = timestamp(); while t.elapsed < 1.0 {{}} }} \
             com.allreduce(\"sum\", f64_array({len}, 1.0))"
        ))
        .unwrap()
        .get_timeout(WAIT);
    assert!(skewed.is_err(), "{skewed:?}");
    // An engine passing a string where the others pass arrays fails the
    // call everywhere.
    let mixed = view
        .execute(&format!(
            "com.timeout = 2.0; com.allreduce(\"sum\", if id == 1 {{ \"x\" }} else {{ f64_array({len}, 1.0) }})"
        ))
        .unwrap()
        .get_timeout(WAIT);
    assert!(mixed.is_err(), "{mixed:?}");
    // Every engine is in step again: small, large and script calls work,
    // and arrays that grow from call to call, with nothing in between,
    // never meet the last call's results.
    let r = view
        .execute(&format!(
            "let ok = com.allreduce(add, id) == 6; \
             for i in 0..30 {{ let r = com.allreduce(\"sum\", f64_array({len} + i * 4096, id + 1.0)); \
             if r[0] != 10.0 || r[r.len - 1] != 10.0 || r.len != {len} + i * 4096 {{ ok = false; }} }} \
             com.shared_memory = false; \
             for i in 0..5 {{ let r = com.allreduce(\"max\", f64_array({len} + i, id * 1.0)); \
             if r[0] != 3.0 || r.len != {len} + i {{ ok = false; }} }} ok"
        ))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(r, vec![Value::Bool(true); 4]);
}
