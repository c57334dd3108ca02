//! The [`Collective`] without sockets: one machine fed by hand ([`Solo`]),
//! then whole trees wired in memory ([`TreeCase`]).
//!
//! In the 7-engine tree most cases use, 0 is the root with children 1 and
//! 4; 1 has 2 and 3; 4 has 5 and 6. With [`T`] = 40 s, a leaf's parent gives
//! up at 50 s, the root at 60 s, and a broadcast is awaited until 70 s.

use super::harness::*;
use super::*;

fn show_msg(m: &Msg<Payload>) -> String {
    match &m.body {
        Body::Part { k, part } => format!(
            "{} part {k} {}",
            m.seq,
            part.json["s"].as_str().unwrap_or("?")
        ),
        Body::Fail { error } => format!("{} fail {error}", m.seq),
    }
}

fn show(outs: &[Output<Payload>]) -> Vec<String> {
    outs.iter()
        .map(|o| match o {
            Output::SendUp(m) => format!("up {}", show_msg(m)),
            Output::Publish(m) => format!("pub {}", show_msg(m)),
            Output::Done => "done".into(),
            Output::Failed(e) => format!("failed: {e}"),
        })
        .collect()
}

fn failure(outs: &[Output<Payload>]) -> &CollectiveError {
    match outs.last() {
        Some(Output::Failed(e)) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

use crate::communicator::wire::Payload;

fn reduce(all: bool) -> Call {
    Call::reduce(1, all, T)
}

// ---- the tree and the deadline formula ----

#[test]
fn tree_places_each_engine_from_the_parent_map() {
    let parents = tree_of(7);
    let middle = Tree::new(1, &parents).unwrap();
    assert_eq!(
        middle,
        Tree {
            me: 1,
            parent: Some(0),
            children: vec![2, 3],
            root: 0,
            height: 1,
            tree_height: 2
        }
    );
    let root = Tree::new(0, &parents).unwrap();
    assert!(root.is_root());
    assert_eq!((root.children.clone(), root.height), (vec![1, 4], 2));
    assert_eq!(Tree::new(6, &parents).unwrap().height, 0);
    assert!(Tree::new(9, &parents)
        .unwrap_err()
        .contains("engine 9 is not in the tree"));
    let two_roots = [(0, None), (1, None)].into_iter().collect();
    assert!(Tree::new(0, &two_roots)
        .unwrap_err()
        .contains("exactly one root"));
    let cycle = [(0, None), (1, Some(2)), (2, Some(1))]
        .into_iter()
        .collect();
    assert!(Tree::new(1, &cycle).unwrap_err().contains("cycle"));
}

#[test]
fn one_deadline_formula_grows_with_the_height() {
    assert_eq!(wait_for(T, 0), T);
    assert_eq!(wait_for(T, 2), Duration::from_secs(60));
    // Gathering: a leaf's parent, then the root; a leaf awaits the broadcast.
    for (me, call, secs) in [
        (1, reduce(false), 50),
        (0, reduce(true), 60),
        (2, reduce(true), 70),
        (5, Call::broadcast_only(T), 70),
    ] {
        let mut s = Solo::new(7, me);
        s.begin(call, &["x"]);
        assert_eq!(s.m.deadline(), Some(s.at(secs as f64)), "engine {me}");
    }
    let idle: Collective<Payload> = Collective::new(Tree::new(0, &tree_of(1)).unwrap());
    assert_eq!(idle.deadline(), None);
}

// ---- one machine ----

#[test]
fn a_leaf_sends_its_part_up_and_is_done() {
    let mut s = Solo::new(7, 2);
    let out = s.begin(reduce(false), &["<2>"]);
    assert_eq!(show(&out), ["up 1 part 0 <2>", "done"]);
    assert_eq!(s.m.seq(), 1);
    assert!(!s.m.is_active());
}

#[test]
fn a_leaf_in_allreduce_takes_the_roots_value() {
    let mut s = Solo::new(7, 2);
    assert_eq!(show(&s.begin(reduce(true), &["<2>"])), ["up 1 part 0 <2>"]);
    assert!(s.m.is_active());
    assert_eq!(show(&s.recv(Source::Root, part(1, 0, "all"))), ["done"]);
    assert_eq!(s.c.pieces, ["all"]);
}

#[test]
fn a_single_engine_publishes_its_own_value() {
    let mut s = Solo::new(1, 0);
    assert_eq!(
        show(&s.begin(reduce(true), &["<0>"])),
        ["pub 1 part 0 <0>", "done"]
    );
    assert_eq!(show(&s.begin(reduce(false), &["<0>"])), ["done"]);
}

#[test]
fn a_parent_combines_its_children_in_id_order_whatever_the_arrival() {
    let mut s = Solo::new(7, 1);
    assert!(s.begin(reduce(false), &["<1>"]).is_empty());
    assert!(s.recv(Source::Child(3), part(1, 0, "<3>")).is_empty());
    assert_eq!(
        show(&s.recv(Source::Child(2), part(1, 0, "<2>"))),
        ["up 1 part 0 <1><2><3>", "done"]
    );
    assert_eq!(s.c.combined, [(0, 2), (0, 3)]);
}

#[test]
fn an_early_message_while_idle_is_stashed_and_replayed() {
    let mut s = Solo::new(7, 1);
    assert!(s.recv(Source::Child(2), part(1, 0, "<2>")).is_empty());
    assert_eq!(s.m.stashed(), 1);
    assert!(s.begin(reduce(false), &["<1>"]).is_empty());
    assert_eq!(s.m.stashed(), 0);
    assert_eq!(
        show(&s.recv(Source::Child(3), part(1, 0, "<3>"))),
        ["up 1 part 0 <1><2><3>", "done"]
    );
}

#[test]
fn a_message_of_the_next_call_waits_for_it() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(false), &["a1"]);
    assert!(s.recv(Source::Child(2), part(2, 0, "b2")).is_empty());
    assert_eq!(s.m.stashed(), 1);
    s.recv(Source::Child(2), part(1, 0, "a2"));
    let out = s.recv(Source::Child(3), part(1, 0, "a3"));
    assert_eq!(show(&out), ["up 1 part 0 a1a2a3", "done"]);
    assert_eq!(s.m.stashed(), 1);
    assert!(s.begin(reduce(false), &["b1"]).is_empty());
    let out = s.recv(Source::Child(3), part(2, 0, "b3"));
    assert_eq!(show(&out), ["up 2 part 0 b1b2b3", "done"]);
}

#[test]
fn stale_messages_are_dropped_idle_or_not() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(false), &["a"]);
    s.recv(Source::Child(2), part(1, 0, "b"));
    s.recv(Source::Child(3), part(1, 0, "c"));
    // Call 1 is over: its messages are stale, idle or in call 2.
    assert!(s.recv(Source::Child(2), part(1, 0, "late")).is_empty());
    assert_eq!(s.m.stashed(), 0);
    s.begin(reduce(false), &["x"]);
    assert!(s.recv(Source::Child(2), part(1, 0, "late")).is_empty());
    assert!(s.recv(Source::Child(3), fail_msg(1, "old news")).is_empty());
    assert!(s.recv(Source::Child(3), part(0, 0, "older")).is_empty());
    assert!(s.m.is_active());
    assert!(s.c.combined.is_empty());
    let out = s.tick(50.0);
    assert_eq!(
        failure(&out).to_string(),
        "engine 2 and engine 3 did not send its part to engine 1 within 50.0s (is it dead or in another collective?)"
    );
}

#[test]
fn a_duplicate_part_is_combined_once() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(true), &["<1>"]);
    assert!(s.recv(Source::Child(3), part(1, 0, "<3>")).is_empty());
    assert!(s.recv(Source::Child(3), part(1, 0, "<3>")).is_empty());
    let out = s.recv(Source::Child(2), part(1, 0, "<2>"));
    assert_eq!(show(&out), ["up 1 part 0 <1><2><3>"]);
    assert!(s.recv(Source::Child(2), part(1, 0, "<2>")).is_empty());
    assert_eq!(s.c.combined, [(0, 2), (0, 3)]);
    assert_eq!(show(&s.recv(Source::Root, part(1, 0, "R"))), ["done"]);
}

#[test]
fn a_duplicate_broadcast_is_accepted_once() {
    let mut s = Solo::new(7, 2);
    let out = s.begin(Call::reduce(2, true, T), &["a", "b"]);
    assert_eq!(show(&out), ["up 1 part 0 a", "up 1 part 1 b"]);
    assert!(s.recv(Source::Root, part(1, 0, "A")).is_empty());
    assert!(s.recv(Source::Root, part(1, 0, "A?")).is_empty());
    assert_eq!(show(&s.recv(Source::Root, part(1, 1, "B"))), ["done"]);
    assert_eq!(s.c.pieces, ["A", "B"]);
}

#[test]
fn pieces_pipeline_and_an_early_broadcast_piece_is_held() {
    let mut s = Solo::new(7, 1);
    assert!(s.begin(Call::reduce(2, true, T), &["p", "q"]).is_empty());
    s.recv(Source::Child(2), part(1, 0, "a"));
    // Piece 0 goes up before anything of piece 1 has come.
    let out = s.recv(Source::Child(3), part(1, 0, "b"));
    assert_eq!(show(&out), ["up 1 part 0 pab"]);
    assert!(s.recv(Source::Root, part(1, 0, "R0")).is_empty());
    assert!(s.recv(Source::Root, part(1, 0, "R0")).is_empty());
    assert_eq!(s.c.pieces, ["pab", "q"], "held, not yet accepted");
    s.recv(Source::Child(3), part(1, 1, "d"));
    let out = s.recv(Source::Child(2), part(1, 1, "c"));
    assert_eq!(show(&out), ["up 1 part 1 qcd"]);
    assert_eq!(s.c.pieces, ["R0", "qcd"]);
    assert_eq!(show(&s.recv(Source::Root, part(1, 1, "R1"))), ["done"]);
    assert_eq!(s.c.combined, [(0, 2), (0, 3), (1, 2), (1, 3)]);
}

#[test]
fn messages_from_strangers_are_dropped() {
    let mut s = Solo::new(7, 1);
    s.recv(Source::Child(5), part(1, 0, "not mine"));
    assert_eq!(s.m.stashed(), 0);
    s.begin(reduce(false), &["x"]);
    assert!(s.recv(Source::Child(5), part(1, 0, "?")).is_empty());
    assert!(s.recv(Source::Child(0), fail_msg(1, "?")).is_empty());
    assert!(s.m.is_active());
    let mut root = Solo::new(7, 0);
    root.begin(reduce(true), &["r"]);
    assert!(root
        .recv(Source::Root, fail_msg(1, "I am the root"))
        .is_empty());
    assert!(root.m.is_active());
}

#[test]
fn a_piece_beyond_the_call_fails_naming_the_sender() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(false), &["x"]);
    let out = s.recv(Source::Child(3), part(1, 4, "?"));
    assert_eq!(
        show(&out),
        [
            "up 1 fail engine 3 sent piece 4 of a value this engine has in 1",
            "failed: engine 3 sent piece 4 of a value this engine has in 1"
        ]
    );
}

#[test]
fn a_gather_timeout_names_the_missing_child_and_reports_up() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(true), &["x"]);
    s.recv(Source::Child(2), part(1, 0, "y"));
    assert!(s.tick(49.9).is_empty());
    let out = s.tick(50.0);
    let text = "engine 3 did not send its part to engine 1 within 50.0s (is it dead or in another collective?)";
    assert_eq!(
        show(&out),
        [format!("up 1 fail {text}"), format!("failed: {text}")]
    );
    assert_eq!(
        failure(&out),
        &CollectiveError::Missing {
            missing: vec![3],
            at: 1,
            waited: Duration::from_secs(50)
        }
    );
    assert!(s.tick(100.0).is_empty());
}

#[test]
fn the_root_publishes_its_timeout_only_when_broadcasting() {
    let text = "engine 1 and engine 4 did not send its part to engine 0 within 60.0s (is it dead or in another collective?)";
    let mut s = Solo::new(7, 0);
    s.begin(reduce(false), &["x"]);
    assert!(s.tick(59.0).is_empty());
    assert_eq!(show(&s.tick(60.0)), [format!("failed: {text}")]);
    let mut s = Solo::new(7, 0);
    s.begin(reduce(true), &["x"]);
    assert_eq!(
        show(&s.tick(60.0)),
        [format!("pub 1 fail {text}"), format!("failed: {text}")]
    );
}

#[test]
fn a_broadcast_timeout_names_the_root_and_reports_nothing() {
    let mut s = Solo::new(7, 2);
    s.begin(reduce(true), &["x"]);
    assert!(s.tick(69.9).is_empty());
    let out = s.tick(70.0);
    assert_eq!(
        show(&out),
        ["failed: engine 2 got no broadcast from the root (engine 0) within 70.0s"]
    );
    assert!(matches!(
        failure(&out),
        CollectiveError::NoBroadcast { at: 2, root: 0, .. }
    ));
}

#[test]
fn a_childs_failure_is_forwarded_up_verbatim() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(true), &["x"]);
    let out = s.recv(Source::Child(3), fail_msg(1, "engine 9 is gone"));
    assert_eq!(
        show(&out),
        ["up 1 fail engine 9 is gone", "failed: engine 9 is gone"]
    );
    assert_eq!(
        failure(&out),
        &CollectiveError::Peer {
            error: "engine 9 is gone".into()
        }
    );
}

#[test]
fn the_roots_failure_ends_the_call_without_a_report() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(true), &["x"]);
    let out = s.recv(Source::Root, fail_msg(1, "engine 5 is gone"));
    assert_eq!(show(&out), ["failed: engine 5 is gone"]);
}

#[test]
fn a_local_combine_error_is_reported_up() {
    let mut s = Solo::new(7, 1);
    s.c.fail = Some(FailAt::Combine);
    s.begin(reduce(true), &["x"]);
    let out = s.recv(Source::Child(2), part(1, 0, "y"));
    assert_eq!(
        show(&out),
        [
            "up 1 fail engine 1: boom in Combine",
            "failed: engine 1: boom in Combine"
        ]
    );
    assert!(matches!(
        failure(&out),
        CollectiveError::Local { at: 1, .. }
    ));
}

#[test]
fn an_error_taking_the_broadcast_is_not_reported() {
    let mut s = Solo::new(7, 2);
    s.c.fail = Some(FailAt::Accept);
    s.begin(reduce(true), &["x"]);
    let out = s.recv(Source::Root, part(1, 0, "R"));
    assert_eq!(show(&out), ["failed: engine 2: boom in Accept"]);
}

#[test]
fn publish_at_the_root_and_consume_elsewhere() {
    let mut root = Solo::new(7, 0);
    let out = root.begin(Call::broadcast_only(T), &["v"]);
    assert_eq!(show(&out), ["pub 1 part 0 v", "done"]);
    let mut s = Solo::new(7, 4);
    assert!(s.begin(Call::broadcast_only(T), &[""]).is_empty());
    // Children send nothing in a broadcast-only call.
    assert!(s.recv(Source::Child(5), part(1, 0, "?")).is_empty());
    assert_eq!(show(&s.recv(Source::Root, part(1, 0, "v"))), ["done"]);
    assert_eq!(s.c.pieces, ["v"]);
    assert!(s.c.combined.is_empty());
}

#[test]
fn consume_times_out_naming_the_root() {
    let mut s = Solo::new(7, 5);
    s.begin(Call::broadcast_only(T), &[""]);
    assert_eq!(
        show(&s.tick(70.0)),
        ["failed: engine 5 got no broadcast from the root (engine 0) within 70.0s"]
    );
}

#[test]
#[should_panic(expected = "in progress")]
fn beginning_during_a_call_is_a_bug() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(false), &["x"]);
    s.begin(reduce(false), &["x"]);
}

#[test]
fn an_abandoned_call_drops_its_messages() {
    let mut s = Solo::new(7, 1);
    s.begin(reduce(false), &["x"]);
    s.m.abandon();
    s.m.check_invariants();
    assert!(!s.m.is_active());
    assert!(s.recv(Source::Child(2), part(1, 0, "late")).is_empty());
    assert_eq!(s.m.stashed(), 0);
    s.begin(reduce(false), &["x"]);
    assert_eq!(s.m.seq(), 2);
}

// ---- whole trees, wired in memory ----

/// The ids below and including `id`, ascending (= pre-order for bintree).
fn subtree(id: u32, parents: &BTreeMap<u32, Option<u32>>) -> Vec<u32> {
    let mut out = vec![id];
    let mut i = 0;
    while i < out.len() {
        let at = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, p)| **p == Some(at))
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    out.sort();
    out
}

fn tag(id: u32) -> Vec<String> {
    vec![format!("<{id}>")]
}

fn tags(ids: impl IntoIterator<Item = u32>) -> String {
    ids.into_iter().map(|i| format!("<{i}>")).collect()
}

#[test]
fn every_tree_shape_from_1_to_64_engines_gives_the_sequential_answer() {
    for n in 1..=64u32 {
        let parents = tree_of(n);
        // allreduce: everyone gets the left fold in id order.
        let mut case = TreeCase::new(n);
        case.begin_all(reduce(true), tag);
        case.deliver_in_order();
        for id in case.ids() {
            let children: Vec<u32> = Tree::new(id, &parents).unwrap().children;
            let order: Vec<u32> = case.combined(id).iter().map(|(_, c)| *c).collect();
            assert_eq!(order, children, "n = {n}, engine {id}");
        }
        case.check_ok(|_| vec![tags(0..n)]);
        // reduce: the root has it all; each engine its subtree's fold.
        let mut case = TreeCase::new(n);
        case.begin_all(reduce(false), tag);
        case.deliver_in_order();
        case.check_ok(|id| vec![tags(subtree(id, &parents))]);
    }
}

#[test]
fn every_tree_shape_survives_reordering_and_late_starters() {
    for n in 1..=64u32 {
        let mut case = TreeCase::new(n).seed(u64::from(n));
        // Children begin before parents, so parts reach idle parents.
        for id in case.ids().into_iter().rev() {
            case.begin(id, reduce(true), &tag(id));
            let k = case.in_flight() / 2;
            case.deliver_some(k);
        }
        case.deliver_shuffled();
        case.check_ok(|_| vec![tags(0..n)]);
    }
}

#[test]
fn duplicated_messages_change_nothing() {
    for (n, seed) in [(1, 1), (2, 2), (3, 3), (7, 4), (12, 5), (33, 6), (64, 7)] {
        let mut case = TreeCase::new(n).seed(seed);
        case.begin_all(reduce(true), tag);
        case.deliver_with_duplicates();
        case.check_ok(|_| vec![tags(0..n)]);
    }
}

#[test]
fn calls_in_a_row_never_mix_even_when_engines_race_ahead() {
    const CALLS: u32 = 6;
    let n = 13;
    let parents = tree_of(n);
    let mut case = TreeCase::new(n).seed(42);
    // Even calls reduce (non-roots finish at once and race ahead), odd
    // calls allreduce.
    let call = |c: u32| reduce(c % 2 == 1);
    let value = |c: u32, id: u32| format!("{c}:{id};");
    let expect = |c: u32, id: u32| -> String {
        let ids = if c % 2 == 1 {
            (0..n).collect()
        } else {
            subtree(id, &parents)
        };
        ids.into_iter().map(|i| value(c, i)).collect()
    };
    let mut done = vec![0u32; n as usize];
    let mut started = vec![false; n as usize];
    loop {
        for id in case.ids() {
            let i = id as usize;
            if started[i] && !case.running(id) {
                let got = case.outcome(id).cloned().expect("an outcome");
                assert_eq!(got, Ok(vec![expect(done[i], id)]), "engine {id}");
                done[i] += 1;
                started[i] = false;
            }
            if !started[i] && done[i] < CALLS {
                case.begin(id, call(done[i]), &[value(done[i], id)]);
                started[i] = true;
            }
        }
        if done.iter().all(|d| *d == CALLS) {
            break;
        }
        assert!(case.in_flight() > 0, "stuck: {done:?}");
        case.deliver_some(1);
    }
    case.assert_no_more();
}

#[test]
fn a_dead_leaf_is_named_by_every_survivor() {
    let mut case = TreeCase::new(7);
    case.kill(3);
    case.begin_all(reduce(true), tag);
    case.deliver_in_order();
    case.tick_at(49.0);
    assert!(case.live().iter().all(|id| case.outcome(*id).is_none()));
    // Engine 1, nearest the dead leaf, notices first and reports up; the
    // root publishes.
    case.tick_at(50.0);
    assert!(case.outcome(1).is_some_and(|o| o.is_err()));
    assert_eq!(case.in_flight(), 1);
    case.deliver_in_order();
    let errors = case.check_failed("engine 3 did not send its part to engine 1 within 50.0s");
    assert!(matches!(errors[&1], CollectiveError::Missing { .. }));
    assert!(matches!(errors[&0], CollectiveError::Peer { .. }));
    assert!(matches!(errors[&6], CollectiveError::Peer { .. }));
}

#[test]
fn a_dead_middle_engine_is_named_by_every_survivor() {
    let mut case = TreeCase::new(7);
    case.kill(1);
    case.begin_all(reduce(true), tag);
    case.deliver_in_order();
    case.tick_at(59.0);
    assert!(case.live().iter().all(|id| case.outcome(*id).is_none()));
    case.tick_at(60.0);
    case.deliver_in_order();
    case.check_failed("engine 1 did not send its part to engine 0 within 60.0s");
}

#[test]
fn a_dead_root_leaves_every_survivor_naming_it() {
    let mut case = TreeCase::new(7);
    case.kill(0);
    case.begin_all(reduce(true), tag);
    case.deliver_in_order();
    case.tick_at(69.0);
    assert!(case.live().iter().all(|id| case.outcome(*id).is_none()));
    case.tick_at(70.0);
    let errors = case.check_failed("got no broadcast from the root (engine 0) within 70.0s");
    assert_eq!(errors.len(), 6);
}

#[test]
fn a_failure_reported_from_a_leaf_reaches_everyone() {
    let mut case = TreeCase::new(7);
    case.fail_at(3, FailAt::Piece);
    case.begin_all(reduce(true), tag);
    case.deliver_shuffled();
    case.check_failed("engine 3: boom in Piece");
}

#[test]
fn a_failure_reported_from_the_middle_reaches_everyone() {
    let mut case = TreeCase::new(7);
    case.fail_at(4, FailAt::Combine);
    case.begin_all(reduce(true), tag);
    case.deliver_in_order();
    let errors = case.check_failed("engine 4: boom in Combine");
    assert!(matches!(errors[&4], CollectiveError::Local { at: 4, .. }));
}

#[test]
fn a_failure_reported_from_the_root_reaches_everyone() {
    let mut case = TreeCase::new(7);
    case.fail_at(0, FailAt::Combine);
    case.begin_all(reduce(true), tag);
    case.deliver_shuffled();
    case.check_failed("engine 0: boom in Combine");
}

#[test]
fn a_reduce_without_broadcast_fails_only_on_the_path_up() {
    let mut case = TreeCase::new(7);
    case.kill(3);
    case.begin_all(reduce(false), tag);
    case.deliver_in_order();
    case.tick_at(50.0);
    case.deliver_in_order();
    for id in [2, 4, 5, 6] {
        assert!(matches!(case.outcome(id), Some(Ok(_))), "engine {id}");
    }
    for id in [0, 1] {
        let e = case.outcome(id).unwrap().as_ref().unwrap_err();
        assert!(e.to_string().contains("engine 3 did not send"), "{e}");
    }
    case.assert_no_more();
}

#[test]
fn a_lost_message_times_out_at_the_nearest_parent_and_the_next_call_works() {
    let mut case = TreeCase::new(15).seed(9);
    // In the 15-engine tree, leaf 3's parent is 2 (height 1).
    case.begin_all(reduce(true), tag);
    assert_eq!(case.drop_between(Source::Child(3), 2), 1);
    case.deliver_shuffled();
    case.tick_at(50.0);
    case.deliver_shuffled();
    case.check_failed("engine 3 did not send its part to engine 2 within 50.0s");
    // The next call starts clean; leftovers of the failed one are stale.
    case.begin_all(reduce(true), |id| vec![format!("[{id}]")]);
    case.deliver_with_duplicates();
    case.check_ok(|_| vec![(0..15).map(|i| format!("[{i}]")).collect()]);
}

#[test]
fn chunked_values_combine_piece_by_piece_in_any_order() {
    let n = 10;
    let mut case = TreeCase::new(n).seed(3);
    let pieces = |id: u32| (0..3).map(|k| format!("{k}<{id}>")).collect();
    case.begin_all(Call::reduce(3, true, T), pieces);
    case.deliver_with_duplicates();
    case.check_ok(|_| {
        (0..3)
            .map(|k| (0..n).map(|id| format!("{k}<{id}>")).collect())
            .collect()
    });
}

#[test]
fn publish_reaches_every_consumer() {
    let mut case = TreeCase::new(9);
    case.begin(0, Call::broadcast_only(T), &["news".to_string()]);
    for id in 1..9 {
        case.begin(id, Call::broadcast_only(T), &[String::new()]);
    }
    case.deliver_shuffled();
    case.check_ok(|_| vec!["news".to_string()]);
    assert!(case.ids().iter().all(|id| case.combined(*id).is_empty()));
}

#[test]
#[should_panic(expected = "not checked")]
fn an_unchecked_tree_case_panics() {
    let _case = TreeCase::new(3);
}
