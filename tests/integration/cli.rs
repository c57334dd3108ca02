//! The `zpar` command line as a user runs it: clusters started, inspected
//! and stopped through the profile; an engine started before its hub; a hub
//! stopped by SIGTERM cleaning up. A cluster's life past the first start
//! (its hub dead, Ctrl-C, its logs) is in `lifecycle`; what a new user
//! mistypes or runs too early, in `usage`.

use crate::support::{self, zpar_bin, Reaper, WAIT};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use zpar::{Client, Profile, Value};

mod lifecycle;
mod usage;

fn zpar(args: &[&str], profile: &Path) -> Output {
    Command::new(zpar_bin())
        .args(args)
        .arg("--profile-dir")
        .arg(profile)
        .stdin(Stdio::null())
        .output()
        .expect("running zpar")
}

fn temp_profile(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("zpar-cli-{name}-{}", zpar_protocol::new_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Stops a daemon cluster even if the test fails half way.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = zpar(&["cluster", "stop"], self.0);
        let _ = std::fs::remove_dir_all(self.0);
    }
}

#[test]
fn cluster_start_status_stop_through_the_profile() {
    let watchdog = support::watchdog();
    let dir = temp_profile("daemon");
    let _guard = StopOnDrop(&dir);
    let out = zpar(&["cluster", "start", "-n", "3", "--daemon"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cluster started") && text.contains("ids [0, 1, 2]"),
        "{text}"
    );
    // A daemon's processes are not this binary's children: name them.
    let pids: zpar::cluster::ClusterPids =
        zpar_protocol::connection::read_json_file(&dir.join(zpar::cluster::PID_FILE)).unwrap();
    for pid in std::iter::once(pids.hub).chain(pids.engines) {
        watchdog.also_kill(pid);
    }

    let client = Client::from_file(&Profile::from_dir(&dir).client_file()).unwrap();
    assert_eq!(
        client
            .all()
            .execute("40 + 2")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap(),
        vec![Value::Int(42); 3]
    );

    let again = zpar(&["cluster", "start", "-n", "1", "--daemon"], &dir);
    assert!(
        !again.status.success(),
        "a second cluster on one profile is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let status = zpar(&["cluster", "status"], &dir);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("registered engines: [0, 1, 2]"), "{text}");
    assert_eq!(text.matches("running").count(), 4, "{text}");

    drop(client);
    let stop = zpar(&["cluster", "stop"], &dir);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(!Profile::from_dir(&dir).client_file().exists());
    let after = zpar(&["cluster", "status"], &dir);
    assert!(!after.status.success(), "no cluster is recorded any more");
}

#[test]
fn cluster_start_bind_kernel_says_where_each_engines_kernel_is() {
    let watchdog = support::watchdog();
    let dir = temp_profile("kernel");
    let _guard = StopOnDrop(&dir);
    let out = zpar(
        &["cluster", "start", "-n", "2", "--daemon", "--bind-kernel"],
        &dir,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pids: zpar::cluster::ClusterPids =
        zpar_protocol::connection::read_json_file(&dir.join(zpar::cluster::PID_FILE)).unwrap();
    for pid in std::iter::once(pids.hub).chain(pids.engines) {
        watchdog.also_kill(pid);
    }
    let security = Profile::from_dir(&dir).security_dir();
    let files: Vec<_> = (0..2)
        .map(|id| security.join(format!("kernel-{id}.json")))
        .collect();
    for (id, file) in files.iter().enumerate() {
        let line = format!(
            "engine {id} is a Jupyter kernel: jupyter console --existing {}",
            file.display()
        );
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
        assert!(file.exists(), "{}", file.display());
    }
    let stop = zpar(&["cluster", "stop"], &dir);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    for file in &files {
        assert!(!file.exists(), "{} outlived its engine", file.display());
    }
}

#[test]
fn engine_started_before_its_hub_waits_and_registers() {
    let _watchdog = support::watchdog();
    let dir = temp_profile("early");
    let mut procs = Reaper(Vec::new());
    procs.0.push(
        Command::new(zpar_bin())
            .args(["engine", "--timeout", "30", "--profile-dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    procs.0.push(
        Command::new(zpar_bin())
            .args(["hub", "--profile-dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The hub prints where it listens once bound; then connect.
    let stdout = procs.0[1].stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(WAIT)
        .expect("the hub printed where it listens within WAIT");
    assert!(line.contains("zpar hub listening"), "{line}");
    let client = Client::from_file(&Profile::from_dir(&dir).client_file()).unwrap();
    assert_eq!(client.wait_for_engines(1, WAIT).unwrap(), vec![0]);

    // SIGTERM: the hub stops its engines and removes its files.
    let hub_pid = procs.0[1].id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &hub_pid])
        .status()
        .unwrap()
        .success());
    for child in &mut procs.0 {
        let what = format!("process {} exits after SIGTERM", child.id());
        support::wait_until(&what, || child.try_wait().unwrap().is_some());
    }
    assert!(
        !Profile::from_dir(&dir).client_file().exists(),
        "the hub removed its connection file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn subcommands_fail_clearly_on_bad_input() {
    let _watchdog = support::watchdog();
    let dir = temp_profile("bad");
    let out = zpar(&["cluster", "status"], &dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster is recorded"));
    let out = zpar(&["engine", "--timeout", "0.2"], &dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zpar-engine.json"), "{err}");
    let out = Command::new(zpar_bin())
        .args(["hub", "--scheme", "fastest"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("leastload, lru or random"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// How often `needle` occurs in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn every_error_says_its_cause_once_and_exits_1() {
    let _watchdog = support::watchdog();
    let dir = temp_profile("errors");
    // A task database in a folder that does not exist.
    let out = zpar(&["hub", "--db", "sqlite:/nonexistent/zpar/x.db"], &dir);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(count(&err, "/nonexistent/zpar/x.db"), 1, "{err}");
    assert_eq!(count(&err, "No such file or directory"), 1, "{err}");
    // A corrupted connection file.
    let security = dir.join("security");
    std::fs::create_dir_all(&security).unwrap();
    std::fs::write(
        security.join("zpar-client.json"),
        r#"{"transport": "tcp", "ip": 5}"#,
    )
    .unwrap();
    let out = zpar(&["console"], &dir);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(count(&err, "invalid type: integer `5`"), 1, "{err}");
    assert!(
        err.contains("delete it and restart the hub"),
        "the remedy stays: {err}"
    );
    // Wrong usage is exit code 2.
    let out = zpar(&["cluster", "start", "--no-such-option"], &dir);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_wait_says_what_it_waits_for() {
    let _watchdog = support::watchdog();
    let dir = temp_profile("wait");
    let missing = dir.join("not-written-yet.json");
    let mut cmd = Command::new(zpar_bin());
    cmd.args(["engine", "--timeout", "2", "--file"])
        .arg(&missing);
    let out = support::output_within(cmd, WAIT, "an engine waiting for its file");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("waiting for {}", missing.display())),
        "the wait is announced: {err}"
    );
    assert_eq!(count(&err, "No such file or directory"), 1, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cluster_start_with_sqlite_records_keeps_results_across_a_hub_restart() {
    let watchdog = support::watchdog();
    let dir = temp_profile("sqlite");
    let _guard = StopOnDrop(&dir);
    let db = dir.join("tasks.db");
    let db_arg = format!("sqlite:{}", db.display());
    let out = zpar(
        &[
            "cluster", "start", "-n", "1", "--daemon", "--db", &db_arg, "--scheme", "lru",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = zpar(&["cluster", "status"], &dir);
    let shown = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        shown.contains(&format!("--db {db_arg}")),
        "status shows the options: {shown}"
    );
    assert!(shown.contains("--scheme lru"), "{shown}");
    let pids: zpar::cluster::ClusterPids =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap()).unwrap();
    watchdog.also_kill(pids.hub);
    for p in &pids.engines {
        watchdog.also_kill(*p);
    }
    let profile = Profile::from_dir(&dir);
    let client = Client::from_file(&profile.client_file()).unwrap();
    let done = client.all().execute("40 + 2").unwrap();
    assert_eq!(done.get_timeout(WAIT).unwrap(), vec![Value::Int(42)]);
    let msg_id = done.msg_ids()[0].clone();
    drop(client);
    // The hub dies; another takes its place on the same files and records.
    let killed = Command::new("kill")
        .args(["-KILL", &pids.hub.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    support::wait_until("the old hub is gone", || {
        !zpar::cluster::process_alive(pids.hub)
    });
    let hub = Command::new(zpar_bin())
        .args(["hub", "--reuse", "--db", &db_arg, "--profile-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _reaper = Reaper(vec![hub]);
    let _engines = KillOnDrop(pids.engines.clone());
    let again = Client::from_file(&profile.client_file()).unwrap();
    let fetched = again.get_result(&msg_id).unwrap();
    assert_eq!(fetched.get_timeout(WAIT).unwrap(), vec![Value::Int(42)]);
    // The engine registers with the new hub too, so `cluster stop` (the
    // guard) reaches it.
    again.wait_for_engines(1, WAIT).unwrap();
}

/// Kills processes this test did not start itself (a daemon cluster's
/// engines) when it ends, however it ends.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Standard output or error as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether process `pid` has ended (gone, or a zombie its parent has not
/// reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Idle packed engines act on SIGTERM at once: with a slow heartbeat
/// their request loops sleep up to about four beats between looks, and the
/// signal interrupts none of their polls (it lands on the process's main
/// thread), but they poll the pipe the signal handler writes to.
#[test]
fn idle_packed_engines_stop_at_once_on_sigterm() {
    use std::time::{Duration, Instant};
    let _watchdog = support::watchdog();
    let cluster = zpar::LocalCluster::builder()
        .binary(zpar_bin())
        .engines(3)
        .per_process(3)
        .hub_args(["--hb-period-ms", "3000"])
        .timeout(WAIT)
        .start()
        .expect("starting a cluster");
    let client = cluster.client().unwrap();
    let ones = client
        .all()
        .execute("1")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(ones, vec![Value::Int(1); 3]);
    let pid = cluster.engine_pid(0).expect("the engines' process");
    // SAFETY: a signal to a child process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    // Their loops would next look at the stop flag some 12 s from now.
    let within = Duration::from_secs(6);
    let pauses =
        zpar_protocol::backoff::Backoff::new(Duration::from_millis(1), Duration::from_millis(20));
    let stopped =
        zpar_protocol::backoff::poll_until(signalled + within, pauses, || ended(pid).then_some(()));
    assert!(
        stopped.is_some(),
        "the idle engines were still running {within:?} after SIGTERM"
    );
}
