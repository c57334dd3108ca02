//! Many engines on one machine, and liveness on a machine too busy to be
//! on time: no engine may be declared dead while it lives, and a real
//! death is still seen within the heartbeat limit. Timing figures are the
//! scale bench's (`zpar bench scale`); these tests check behaviour.

use crate::support::{self, departures, zpar_bin, Watchdog, WAIT};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zpar::{LocalCluster, Value};

/// A cluster as a user starts it: the default heartbeat (1 s, 3 misses).
fn default_cluster(n: usize) -> LocalCluster {
    LocalCluster::builder()
        .binary(zpar_bin())
        .engines(n)
        .timeout(Duration::from_secs(120))
        .start()
        .expect("starting a local cluster")
}

#[test]
fn two_hundred_fifty_six_engines_register_execute_and_allreduce() {
    let _watchdog = Watchdog::start(Duration::from_secs(300));
    const N: usize = 256;
    let cluster = default_cluster(N);
    let client = cluster.client().unwrap();
    let events = client.events().unwrap();
    let ids = client.wait_for_engines(N, WAIT).unwrap();
    assert_eq!(
        ids,
        (0..N as u32).collect::<Vec<_>>(),
        "ids 0..{N}, once each"
    );
    let all = client.all();
    let got = all.execute("40 + 2").unwrap().get_timeout(WAIT).unwrap();
    assert_eq!(got, vec![Value::Int(42); N]);
    all.setup_communicator("com", Duration::from_secs(60))
        .unwrap();
    let sums = all
        .execute("com.allreduce(\"sum\", 1)")
        .unwrap()
        .get_timeout(Duration::from_secs(60))
        .unwrap();
    assert_eq!(sums, vec![Value::Int(N as i64); N]);
    let ranks = all
        .execute("com.allreduce(|a, b| a + b, [com.id])")
        .unwrap()
        .get_timeout(Duration::from_secs(60))
        .unwrap();
    let in_order = Value::Array((0..N as i64).map(Value::Int).collect());
    assert!(
        ranks.iter().all(|r| *r == in_order),
        "every engine gets the ranks in order"
    );
    assert_eq!(departures(&events), vec![], "no engine was declared dead");
    assert_eq!(client.queue_status().unwrap().engines.len(), N);
}

/// Processes that keep every core busy until dropped.
struct Load(Vec<Child>);

impl Load {
    fn saturate(processes: usize) -> Load {
        Load(
            (0..processes)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("starting a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn idle_engines_on_a_saturated_machine_live_and_a_killed_one_is_seen_dead() {
    let _watchdog = support::watchdog();
    let mut cluster = default_cluster(4);
    let client = cluster.client().unwrap();
    client.wait_for_engines(4, WAIT).unwrap();
    let events = client.events().unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let load = Load::saturate(2 * cores);
    // Ten seconds of idling under load: an observation window, not a wait
    // for a condition. Any departure fails at once.
    let window = Instant::now() + Duration::from_secs(10);
    while Instant::now() < window {
        let gone = departures(&events);
        assert!(
            gone.is_empty(),
            "declared dead while alive, under load: {gone:?}"
        );
        assert_eq!(client.ids().len(), 4);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still under load: a real death is seen within the limit (3 beats of
    // 1 s, and the beat it happened in).
    let killed = Instant::now();
    cluster.kill_engine(2).unwrap();
    support::wait_until("the killed engine is declared dead", || {
        !client.ids().contains(&2)
    });
    let seen = killed.elapsed();
    drop(load);
    eprintln!("a killed engine was declared dead after {seen:?} on a saturated machine");
    assert!(
        seen < Duration::from_secs(6),
        "a death under load took {seen:?} to be seen (limit: 3 missed beats of 1 s)"
    );
    let gone = departures(&events);
    assert_eq!(gone.len(), 1, "only the killed engine left: {gone:?}");
    assert_eq!(gone[0].0, 2);
    assert_eq!(
        client
            .all()
            .execute("1")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap(),
        vec![Value::Int(1); 3],
        "the others serve on"
    );
}
