//! What a new user runs too early or mistypes: a console or an engine with
//! no hub that could come, the examples' `--`, a count given to
//! `--engines`, an unknown bench suite. Each is said at once, in one line.

use super::{temp_profile, text, zpar};
use crate::support::{self, zpar_bin, WAIT};
use std::process::Command;
use std::time::Duration;
use zpar::cluster::{ClusterPids, PID_FILE};

#[test]
fn console_and_engine_say_at_once_when_no_hub_could_write_their_file() {
    let _watchdog = support::watchdog();
    let dir = temp_profile("nothing");
    // Well below the 30 s they used to wait.
    let at_once = Duration::from_secs(10);
    let run = |args: &[&str], what: &str| {
        let mut cmd = Command::new(zpar_bin());
        cmd.args(args)
            .env("ZPAR_DIR", &dir)
            .env(zpar::wait::PERIOD_VAR, "1");
        let out = support::output_within(cmd, at_once, what);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        err
    };
    let profile = dir.to_str().unwrap();
    for args in [
        &["console", "--profile-dir", profile][..],
        &["console", "--profile", "nosuch"][..],
    ] {
        let err = run(args, "a console without a cluster");
        assert!(err.contains("no cluster runs for the profile"), "{err}");
        assert!(err.contains("`zpar cluster start`"), "{err}");
        assert!(!err.contains("waiting for"), "nothing to wait for: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let file = dir.join("no-such-folder").join("x.json");
    let err = run(
        &["engine", "--file", file.to_str().unwrap()],
        "an engine with a file in no folder",
    );
    assert!(
        err.contains(&format!(
            "no folder {}",
            dir.join("no-such-folder").display()
        )),
        "{err}"
    );
    assert!(!err.contains("waiting for"), "{err}");

    // A recorded hub that is gone cannot write it either.
    let mut exited = Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    let record = dir.join(PID_FILE);
    let gone = ClusterPids::new(exited.id(), vec![]);
    zpar_protocol::connection::write_json_file(&record, &gone).unwrap();
    let err = run(
        &["console", "--profile-dir", profile],
        "a console, hub gone",
    );
    assert!(err.contains("has lost its hub"), "{err}");

    // A recorded hub that runs (this test, standing in) may still write
    // it: the console waits, saying so, until its timeout.
    let running = ClusterPids::new(std::process::id(), vec![]);
    zpar_protocol::connection::write_json_file(&record, &running).unwrap();
    let err = run(
        &["console", "--timeout", "0.5", "--profile-dir", profile],
        "a console waiting for a starting hub",
    );
    assert!(err.contains("waiting for the hub to write"), "{err}");
    assert!(err.contains("no hub connection file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_built_examples_take_the_double_dash_of_cargo_run() {
    let _watchdog = support::watchdog();
    // The README's `cargo run --example bintree_script -- --engines 3`, as
    // the built program given the same words.
    let mut cmd = Command::new(support::example_binary("bintree_script"));
    cmd.args(["--", "--engines", "3"])
        .env("ZPAR_BIN", zpar_bin());
    let out = support::output_within(cmd, WAIT, "bintree_script -- --engines 3");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("allreduce sum of data on all engines: [499500, 499500, 499500]"),
        "{stdout}"
    );
    let mut cmd = Command::new(support::example_binary("native_kernels"));
    cmd.args(["--", "--engines", "0"]);
    let out = support::output_within(cmd, WAIT, "native_kernels -- --engines 0");
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("must be at least 1"),
        "`--` is passed over: {err}"
    );
}

#[test]
fn cluster_start_engines_with_a_count_is_wrong_usage_that_suggests_n() {
    let _watchdog = support::watchdog();
    let dir = temp_profile("launcher");
    let out = zpar(&["cluster", "start", "--engines", "4"], &dir);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "`--engines` takes a launcher (local, ssh, mpi, slurm); for a count of engines use -n 4"
        ),
        "{err}"
    );
    assert!(!dir.join(PID_FILE).exists(), "nothing started");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_with_an_unknown_suite_is_wrong_usage_before_any_output() {
    let _watchdog = support::watchdog();
    let mut cmd = Command::new(zpar_bin());
    cmd.args(["bench", "nosuch"]);
    let out = support::output_within(cmd, WAIT, "zpar bench nosuch");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(text(&out.stdout), "", "no table header");
    assert!(
        err.contains("protocol") && err.contains("million"),
        "lists the suites: {err}"
    );
    assert!(
        !err.contains("raw-echo"),
        "the raw peers' roles stay hidden: {err}"
    );
}
