//! A program's own native functions on its engines: a custom-engine
//! cluster started three ways (from the builder, from `zpar cluster start
//! --engine-program`, by the program itself), each serving a native to
//! `apply`, to `execute` and inside an allreduce; and the error when an
//! engine lacks a function.
//!
//! The custom engine program is the `native_kernels` example, which
//! `cargo test` builds with the tests (it serves `pi_hits(seed, n)`).

use crate::support::{self, output_within, zpar_bin, WAIT};
use std::path::PathBuf;
use std::process::Command;
use zpar::{Client, LocalCluster, Value};

/// `pi_hits` as the example computes it: the reference.
fn pi_hits(seed: i64, n: i64) -> i64 {
    let mut rng = fastrand::Rng::with_seed(seed as u64);
    (0..n)
        .filter(|_| {
            let (x, y) = (rng.f64(), rng.f64());
            x * x + y * y <= 1.0
        })
        .count() as i64
}

/// apply, execute and an allreduce, each calling the engines' `pi_hits`.
fn check_native_calls(client: &Client) {
    let view = client.all();
    let n = client.ids().len();
    let natives = view.apply_sync("native_functions", vec![]).unwrap();
    assert_eq!(
        natives,
        vec![Value::Array(vec![Value::from("pi_hits(i64, i64) -> i64")]); n]
    );
    let applied = view
        .apply_async("pi_hits", vec![Value::Int(3), Value::Int(5000)])
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(applied, vec![Value::Int(pi_hits(3, 5000)); n]);
    let executed = view
        .execute("let h = pi_hits(4, 2000); h + 1")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(executed, vec![Value::Int(pi_hits(4, 2000) + 1); n]);
    view.setup_communicator("com", WAIT).unwrap();
    let ids = client.ids();
    let seeds: Vec<Value> = ids.iter().map(|&i| Value::Int(i64::from(i))).collect();
    view.scatter("seed", Value::Array(seeds), true)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let total = view
        .execute("com.allreduce(\"sum\", pi_hits(seed, 1000))")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let want: i64 = ids.iter().map(|&i| pi_hits(i64::from(i), 1000)).sum();
    assert_eq!(total, vec![Value::Int(want); n]);
}

#[test]
fn builder_engine_program_serves_its_natives() {
    let _watchdog = support::watchdog();
    let cluster = LocalCluster::builder()
        .binary(zpar_bin())
        .engine_program(support::example_binary("native_kernels"))
        .engines(2)
        .hub_args(["--hb-period-ms", "200", "--hb-misses", "5"])
        .timeout(WAIT)
        .start()
        .expect("starting a custom-engine cluster");
    check_native_calls(&cluster.client().unwrap());
}

#[test]
fn cluster_start_engine_program_serves_its_natives() {
    let _watchdog = support::watchdog();
    let dir = std::env::temp_dir().join(format!("zpar-native-{}", zpar_protocol::new_id()));
    struct Stop(PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let mut cmd = Command::new(zpar_bin());
            cmd.args(["cluster", "stop", "--profile-dir"]).arg(&self.0);
            let _ = output_within(cmd, WAIT, "zpar cluster stop");
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _stop = Stop(dir.clone());
    let mut cmd = Command::new(zpar_bin());
    cmd.args([
        "cluster",
        "start",
        "-n",
        "2",
        "--daemon",
        "--engine-program",
    ])
    .arg(support::example_binary("native_kernels"))
    .arg("--profile-dir")
    .arg(&dir);
    let out = output_within(cmd, WAIT, "zpar cluster start --engine-program");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let client = Client::from_file(&zpar::Profile::from_dir(&dir).client_file()).unwrap();
    client.wait_for_engines(2, WAIT).unwrap();
    check_native_calls(&client);

    // A missing program is refused before anything starts.
    let mut cmd = Command::new(zpar_bin());
    cmd.args(["cluster", "start", "--engine-program", "/no/such/program"])
        .arg("--profile-dir")
        .arg(dir.join("other"));
    let out = output_within(cmd, WAIT, "zpar cluster start with a bad program");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/no/such/program"),
        "{err}"
    );
}

#[test]
fn the_program_serves_its_own_engines() {
    let _watchdog = support::watchdog();
    let mut cmd = Command::new(support::example_binary("native_kernels"));
    cmd.args([
        "--samples",
        "2000000",
        "--rhai-samples",
        "4000",
        "--engines",
        "2",
    ]);
    let out = output_within(cmd, support::TEST_BOUND, "native_kernels");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("serve [\"pi_hits(i64, i64) -> i64\"]"),
        "{text}"
    );
    assert!(text.contains("check: ok"), "{text}");
}

#[test]
fn calling_a_native_an_engine_lacks_names_it() {
    let _watchdog = support::watchdog();
    let (_cluster, client) = support::cluster(1);
    let view = client.all();
    let err = view
        .apply_async("pi_hits", vec![Value::Int(1), Value::Int(2)])
        .unwrap()
        .get_timeout(WAIT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no function pi_hits (i64, i64)"), "{err}");
    assert!(err.contains("plain engine"), "{err}");
    assert!(err.contains("--engine-program"), "{err}");
    let err = view
        .execute("let x = 1;\nsimulate(x)")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no function simulate"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let natives = view.apply_sync("native_functions", vec![]).unwrap();
    assert_eq!(natives, vec![Value::Array(vec![])]);
}
