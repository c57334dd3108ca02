//! Thousands of engines on this machine, in a test binary of its own:
//! cargo runs test binaries one after another, so this test has the
//! machine to itself and starves no other test of it (and none starves
//! it: on two cores, 2,000 engines are all the load the box can take).

#[allow(dead_code)]
#[path = "../integration/support.rs"]
mod support;

use std::time::Duration;
use support::{departures, zpar_bin, Watchdog, WAIT};
use zpar::{LocalCluster, Value};

/// Two thousand engines packed fifty to a process (`--per-process`):
/// they register with ids 0..2000, cost the hub about one descriptor
/// each, run an execute on all and an allreduce; a `kill -9` of one process is fifty engine deaths, each
/// reported, and the rest serve on.
#[test]
fn two_thousand_packed_engines_register_execute_allreduce_and_die_together() {
    let _watchdog = Watchdog::start(Duration::from_secs(600));
    const N: usize = 2_000;
    const PER: usize = 50;
    let mut cluster = LocalCluster::builder()
        .binary(zpar_bin())
        .engines(N)
        .per_process(PER)
        // ipyparallel's heartbeat (3 s) rather than zpar's default 1 s: on
        // two cores busy with 2,000 engines a beat can come seconds late
        // (README, scale). A death is still seen within four beats.
        .hub_args(["--hb-period-ms", "3000"])
        .timeout(Duration::from_secs(300))
        .start()
        .expect("starting 2,000 packed engines");
    assert_eq!(
        cluster.pids().engines.len(),
        N / PER,
        "{PER} engines per process"
    );
    let client = cluster.client().unwrap();
    // Two thousand engines saturate two cores (a debug build, at that):
    // the hub's one I/O thread can fall seconds behind on its pings, and
    // the client's default of three 1 s beats would take that for a hub
    // lost. A user on so loaded a machine sets this too (README, scale).
    client.set_hub_timeout(Duration::from_secs(15)).unwrap();
    let events = client.events().unwrap();
    let ids = client.wait_for_engines(N, WAIT).unwrap();
    assert_eq!(ids, (0..N as u32).collect::<Vec<_>>());
    // A connection per engine (its link), and one heartbeat connection
    // per context of packed engines (two per process of fifty): not two
    // per engine.
    let hub_files = std::fs::read_dir(format!("/proc/{}/fd", cluster.pids().hub))
        .unwrap()
        .count();
    assert!(
        hub_files < N + N / 10,
        "the hub holds {hub_files} descriptors for {N} engines"
    );
    let all = client.all();
    let got = all
        .execute("40 + 2")
        .unwrap()
        .get_timeout(Duration::from_secs(120))
        .unwrap();
    assert_eq!(got, vec![Value::Int(42); N]);
    all.setup_communicator("com", Duration::from_secs(300))
        .unwrap();
    let sums = all
        .execute("com.allreduce(\"sum\", 1)")
        .unwrap()
        .get_timeout(Duration::from_secs(300))
        .unwrap();
    assert_eq!(sums, vec![Value::Int(N as i64); N]);
    assert_eq!(departures(&events), vec![], "no engine was declared dead");

    // Engine 0's process holds 49 more: all fifty die, each reported.
    let pid = cluster.engine_pid(0).expect("engine 0's process");
    let packed: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|id| cluster.engine_pid(*id) == Some(pid))
        .collect();
    assert_eq!(
        packed.len(),
        PER,
        "engine 0 shares its process with {PER} - 1 others"
    );
    cluster.kill_engine(0).unwrap();
    let mut dead = Vec::new();
    support::wait_until("each engine of the killed process is reported dead", || {
        dead.extend(departures(&events).into_iter().map(|(id, _)| id));
        dead.len() >= PER
    });
    dead.sort();
    assert_eq!(dead, packed);
    let left = client
        .view(
            ids.iter()
                .copied()
                .filter(|id| !packed.contains(id))
                .collect::<Vec<_>>(),
        )
        .execute("1")
        .unwrap()
        .get_timeout(Duration::from_secs(120))
        .unwrap();
    assert_eq!(left.len(), N - PER);
}
