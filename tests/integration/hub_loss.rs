//! A client never hangs on a dead hub: pending results and new requests
//! fail with `HubLost`, and the same client carries on with a hub restarted
//! in place (`zpar hub --reuse`).

use crate::support::{self, cluster, cluster_with, zpar_bin, WAIT};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use zpar::{AsyncResult, Client, ClientEvent, Error, HubLoss, Value};

/// A lost hub's error, or a panic saying what came instead.
fn expect_hub_lost(what: &str, got: Result<impl std::fmt::Debug, Error>, client: &Client) {
    match got {
        Err(Error::HubLost { url, reason }) => {
            let conn = client.connection();
            assert_eq!(url, conn.url(conn.registration), "it names the hub");
            assert!(
                matches!(reason, HubLoss::Silent { .. }),
                "{what}: {reason:?}"
            );
        }
        other => panic!("{what}: expected HubLost, got {other:?}"),
    }
}

/// Waits (bounded) until `ar` is complete: a killed hub must not leave it
/// pending.
fn settled(ar: &AsyncResult) -> &AsyncResult {
    assert!(
        ar.wait(Some(WAIT)),
        "still pending {WAIT:?} after the hub was killed: {:?}",
        ar.progress()
    );
    ar
}

/// The next event `pick` accepts, within [`WAIT`].
fn next_event<T>(
    events: &mpsc::Receiver<ClientEvent>,
    what: &str,
    mut pick: impl FnMut(ClientEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(e) => {
                if let Some(t) = pick(e) {
                    return t;
                }
            }
            Err(e) => panic!("no {what} event within {WAIT:?}: {e}"),
        }
    }
}

/// A hub restarted in place on the profile's connection files, killed when
/// the test ends.
struct Restarted(Child);

impl Restarted {
    fn hub(profile_dir: &Path, db: &str) -> Restarted {
        let child = Command::new(zpar_bin())
            .args([
                "hub",
                "--reuse",
                "--hb-period-ms",
                "200",
                "--hb-misses",
                "5",
            ])
            .args(["--db", db, "--profile-dir"])
            .arg(profile_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("restarting the hub with --reuse");
        Restarted(child)
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh SQLite file for the hub's records, removed on drop.
struct Db(PathBuf);

impl Db {
    fn new() -> Db {
        let dir = std::env::temp_dir().join(format!("zpar-hub-loss-{}", zpar_protocol::new_id()));
        std::fs::create_dir_all(&dir).expect("db folder");
        Db(dir)
    }

    fn arg(&self) -> String {
        format!("sqlite:{}", self.0.join("tasks.db").display())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_pending_execute_fails_with_hub_lost_when_the_hub_is_killed() {
    let _watchdog = support::watchdog();
    let (mut cluster, client) = cluster(1);
    let events = client.events().unwrap();
    let pending = client.all().execute("loop {}").unwrap();
    cluster.kill_hub().unwrap();
    // The default limit (3 s); the bound is far above it.
    expect_hub_lost("the pending execute", settled(&pending).get(), &client);
    let url = next_event(&events, "HubLost", |e| match e {
        ClientEvent::HubLost { url, .. } => Some(url),
        _ => None,
    });
    assert!(url.starts_with("tcp://127.0.0.1:"), "{url}");
    assert!(client.hub_lost().is_some());
}

#[test]
fn a_new_request_while_the_hub_is_down_fails_at_once() {
    let _watchdog = support::watchdog();
    let (mut cluster, client) = cluster(1);
    client.set_hub_timeout(Duration::from_secs(1)).unwrap();
    cluster.kill_hub().unwrap();
    support::wait_until("the client finds the hub lost", || {
        client.hub_lost().is_some()
    });
    // Refused before anything is sent: an error, not a result to wait on.
    expect_hub_lost("a new execute", client.all().execute("1"), &client);
    expect_hub_lost(
        "a new task",
        client.load_balanced().apply("|x| x", vec![Value::Int(1)]),
        &client,
    );
    expect_hub_lost("a queue status", client.queue_status(), &client);
    expect_hub_lost("get_result", client.get_result("m"), &client);
}

/// A connection file of an older hub has no heartbeat port: the client asks
/// the hub itself when it has been quiet, and still finds it lost.
#[test]
fn a_client_without_the_heartbeat_port_finds_the_hub_lost_by_asking() {
    let _watchdog = support::watchdog();
    let (mut cluster, client) = cluster(1);
    let mut old = client.connection().clone();
    old.hb_ping = None;
    let client = Client::from_connection(old).unwrap();
    client.set_hub_timeout(Duration::from_secs(1)).unwrap();
    // (Whether a quiet hub that answers stays "not lost" is a matter of
    // timing, checked by the unit tests of the watch with a fixed clock.)
    assert_eq!(
        client
            .all()
            .execute("6 * 7")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap(),
        vec![Value::Int(42)]
    );
    let pending = client.all().execute("loop {}").unwrap();
    cluster.kill_hub().unwrap();
    expect_hub_lost("the pending execute", settled(&pending).get(), &client);
}

#[test]
fn the_same_client_carries_on_with_a_hub_restarted_on_sqlite() {
    let _watchdog = support::watchdog();
    let db = Db::new();
    let (mut cluster, client) = cluster_with(2, &["--db", &db.arg()], &[]);
    client.set_hub_timeout(Duration::from_secs(1)).unwrap();
    let events = client.events().unwrap();
    let done = client.view(0).execute("40 + 2").unwrap();
    assert_eq!(support::ready(&done).get().unwrap(), vec![Value::Int(42)]);
    let pending = client.view(1).execute("loop {}").unwrap();
    cluster.kill_hub().unwrap();
    expect_hub_lost("the pending execute", settled(&pending).get(), &client);
    next_event(&events, "HubLost", |e| {
        matches!(e, ClientEvent::HubLost { .. }).then_some(())
    });

    let _hub = Restarted::hub(&cluster.profile().dir, &db.arg());
    next_event(&events, "HubReturned", |e| {
        matches!(e, ClientEvent::HubReturned { .. }).then_some(())
    });
    // Engine 1 still runs `loop {}`; engine 0 registers again under its id.
    support::wait_until("engine 0 is back", || {
        client
            .refresh_engines(WAIT)
            .is_ok_and(|ids| ids.contains(&0))
    });
    let again = client.view(0).execute("6 * 7").unwrap();
    assert_eq!(again.get_timeout(WAIT).unwrap(), vec![Value::Int(42)]);
    let before = client.get_result(&done.msg_ids()[0]).unwrap();
    assert_eq!(before.get_timeout(WAIT).unwrap(), vec![Value::Int(42)]);
}

#[test]
fn a_map_in_flight_when_the_hub_dies_comes_back_or_fails_hub_lost() {
    let _watchdog = support::watchdog();
    let db = Db::new();
    let (mut cluster, client) = cluster_with(2, &["--db", &db.arg()], &[]);
    client.set_hub_timeout(Duration::from_secs(1)).unwrap();
    let lb = client.load_balanced();
    let items: Vec<Value> = (0..200).map(Value::Int).collect();
    let work = "|x| { let s = 0; for i in 0..20000 { s += i; } x }";
    // One task per item, so items finish one by one.
    let tasks: Vec<AsyncResult> = items
        .iter()
        .map(|x| lb.apply(work, vec![x.clone()]).unwrap())
        .collect();
    support::wait_until("a first task is back", || tasks.iter().any(|t| t.ready()));
    cluster.kill_hub().unwrap();
    let (mut back, mut lost) = (Vec::new(), 0);
    for (x, t) in items.iter().zip(&tasks) {
        match settled(t).get_one() {
            Ok(v) => {
                assert_eq!(&v, x);
                back.push(t.msg_ids()[0].clone());
            }
            Err(e @ Error::HubLost { .. }) => {
                expect_hub_lost("a task", Err::<(), _>(e), &client);
                lost += 1;
            }
            Err(e) => panic!("item {x:?}: neither back nor HubLost: {e}"),
        }
    }
    assert!(!back.is_empty(), "the first task came back");
    assert!(
        lost > 0,
        "200 tasks of real work cannot all be back at once"
    );

    let _hub = Restarted::hub(&cluster.profile().dir, &db.arg());
    support::wait_until("both engines are back", || {
        client.refresh_engines(WAIT).is_ok_and(|ids| ids.len() == 2)
    });
    let sum = lb.map_sync("|x| x * 2", items[..10].to_vec(), 3).unwrap();
    assert_eq!(sum, (0..10).map(|x| Value::Int(x * 2)).collect::<Vec<_>>());
    let first = client.get_result(&back[0]).unwrap();
    assert_eq!(first.get_timeout(WAIT).unwrap().len(), 1);
}

/// Waits (bounded) for the event that reports a hub restarted in place.
fn expect_restart_reported(events: &mpsc::Receiver<ClientEvent>) {
    next_event(events, "HubLost(Restarted)", |e| {
        matches!(
            e,
            ClientEvent::HubLost {
                reason: HubLoss::Restarted,
                ..
            }
        )
        .then_some(())
    });
}

/// One engine and a hub that beats every 20 s, so no ping of it reaches a
/// client before the test kills it.
fn slowly_beating_cluster(db: &Db) -> (zpar::LocalCluster, Client) {
    let cluster = zpar::LocalCluster::builder()
        .binary(zpar_bin())
        .engines(1)
        .hub_args(["--hb-period-ms", "20000", "--hb-misses", "5"])
        .hub_args(["--db", db.arg().as_str()])
        .timeout(WAIT)
        .start()
        .expect("starting a local cluster");
    let client = cluster.client().expect("client");
    (cluster, client)
}

/// A client that heard no heartbeat ping yet still knows which hub it
/// connected to (its connection reply names the instance), so a hub killed
/// and restarted in place inside the silence limit is reported as a
/// restart, not taken for the hub it connected to. The first hub beats
/// slowly, so no ping of it can reach the client before the kill.
#[test]
fn a_hub_restarted_before_any_ping_was_heard_is_reported_as_a_restart() {
    let _watchdog = support::watchdog();
    let db = Db::new();
    let (mut cluster, client) = slowly_beating_cluster(&db);
    // Silence cannot reveal the restart: only the instance can.
    client.set_hub_timeout(Duration::from_secs(120)).unwrap();
    let events = client.events().unwrap();
    cluster.kill_hub().unwrap();
    let _hub = Restarted::hub(&cluster.profile().dir, &db.arg());
    expect_restart_reported(&events);
    next_event(&events, "HubReturned", |e| {
        matches!(e, ClientEvent::HubReturned { .. }).then_some(())
    });
    support::wait_until("engine 0 is back", || {
        client
            .refresh_engines(WAIT)
            .is_ok_and(|ids| ids.contains(&0))
    });
    let again = client.view(0).execute("6 * 7").unwrap();
    assert_eq!(again.get_timeout(WAIT).unwrap(), vec![Value::Int(42)]);
}

/// Work sent while the hub was down reaches the hub restarted in place (the
/// client's sockets reconnect and deliver what they queued), and the new
/// hub runs it. The client, finding the restart, asks the new hub about
/// what it waits for instead of failing work that is running there.
#[test]
fn work_sent_while_the_hub_was_down_is_answered_by_the_restarted_hub() {
    let _watchdog = support::watchdog();
    let db = Db::new();
    let (mut cluster, client) = slowly_beating_cluster(&db);
    client.set_hub_timeout(Duration::from_secs(120)).unwrap();
    let events = client.events().unwrap();
    cluster.kill_hub().unwrap();
    let sent = client
        .load_balanced()
        .apply("|x| x * 2", vec![Value::Int(21)])
        .unwrap();
    let _hub = Restarted::hub(&cluster.profile().dir, &db.arg());
    expect_restart_reported(&events);
    assert_eq!(sent.get_timeout(WAIT).unwrap(), vec![Value::Int(42)]);
}

/// An engine killed and started again under the same uuid before the hub
/// noticed (slow beats) registers again while the hub still holds it: not
/// a fresh registration, yet it must be sent the clients' iopub topics
/// again, or its output never leaves it. Its output streams while its
/// request runs.
#[test]
fn an_engine_restarted_under_its_uuid_is_sent_the_output_topics_again() {
    let _watchdog = support::watchdog();
    let cluster = zpar::LocalCluster::builder()
        .binary(zpar_bin())
        .engines(0)
        .hub_args(["--hb-period-ms", "20000", "--hb-misses", "5"])
        .timeout(WAIT)
        .start()
        .expect("starting a hub");
    let client = cluster.client().expect("client");
    let uuid = zpar_protocol::new_id();
    let engine = || {
        Command::new(zpar_bin())
            .args([
                "engine",
                "--timeout",
                "30",
                "--uuid",
                &uuid,
                "--profile-dir",
            ])
            .arg(&cluster.profile().dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting an engine")
    };
    let mut first = support::Reaper::of(engine());
    client.wait_for_engines(1, WAIT).unwrap();
    let view = client.view(0);
    assert_eq!(
        view.execute("1 + 1").unwrap().get_timeout(WAIT).unwrap(),
        vec![Value::Int(2)]
    );
    // Killed; the hub, beating every 20 s, still lists it.
    first.0[0].kill().unwrap();
    first.0[0].wait().unwrap();
    let _second = support::Reaper::of(engine());
    // Held by the hub until the new process's link is up, then run there.
    assert_eq!(
        view.execute("40 + 2").unwrap().get_timeout(WAIT).unwrap(),
        vec![Value::Int(42)]
    );
    let looping = view.execute(&support::running_loop()).unwrap();
    support::wait_until_printed(&looping, 0, "running");
    client
        .abort_running(0u32, None)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
}

/// Established TCP connections whose local end is `port` on this machine
/// (the hub's side of its peers' connections to that port).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // cols[1]: local address, cols[3]: state (01: established).
            cols.get(1).is_some_and(|a| a.ends_with(&local)) && cols.get(3) == Some(&"01")
        })
        .count()
}

/// Three engines packed in one process share one heartbeat connection to
/// the hub; when the hub is killed and restarted on its records, that
/// connection's hellos bring all three back under their ids.
#[test]
fn packed_engines_share_one_heartbeat_connection_and_all_come_back_to_a_restarted_hub() {
    let _watchdog = support::watchdog();
    let db = Db::new();
    let mut cluster = zpar::LocalCluster::builder()
        .binary(zpar_bin())
        .engines(3)
        .per_process(3)
        .hub_args([
            "--hb-period-ms",
            "200",
            "--hb-misses",
            "5",
            "--db",
            &db.arg(),
        ])
        .timeout(WAIT)
        .start()
        .expect("starting three packed engines");
    let client = cluster.client().unwrap();
    client.set_hub_timeout(Duration::from_secs(1)).unwrap();
    let engines: zpar::EngineConnection =
        zpar_protocol::connection::read_json_file(&cluster.profile().engine_file()).unwrap();
    support::wait_until("one heartbeat connection for the three", || {
        connections_to(engines.heartbeat) == 1
    });
    assert_eq!(connections_to(engines.link), 3, "a link each");
    let events = client.events().unwrap();
    cluster.kill_hub().unwrap();
    next_event(&events, "HubLost", |e| {
        matches!(e, ClientEvent::HubLost { .. }).then_some(())
    });
    let _hub = Restarted::hub(&cluster.profile().dir, &db.arg());
    support::wait_until("the three engines are back under their ids", || {
        client
            .refresh_engines(WAIT)
            .is_ok_and(|ids| ids == vec![0, 1, 2])
    });
    let values = client
        .all()
        .execute("6 * 7")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(values, vec![Value::Int(42); 3]);
    assert_eq!(connections_to(engines.heartbeat), 1, "still one");
}
