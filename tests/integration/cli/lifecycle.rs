//! A cluster's life through the command line: `status` and `stop` after
//! its hub died, a foreground cluster and Ctrl-C, the daemon's log files.

use super::{temp_profile, text, zpar, StopOnDrop};
use crate::support::{self, zpar_bin, Reaper};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use zpar::cluster::{ClusterPids, PID_FILE};
use zpar::Profile;

/// The cluster a profile records (its processes are not this test's
/// children once `zpar cluster start --daemon` has returned: the watchdog
/// is told their pids).
fn recorded(dir: &Path, watchdog: &support::Watchdog) -> ClusterPids {
    let pids: ClusterPids =
        zpar_protocol::connection::read_json_file(&dir.join(PID_FILE)).expect("cluster.json");
    for pid in pids.processes() {
        watchdog.also_kill(pid);
    }
    pids
}

fn kill(signal: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

#[test]
fn cluster_stop_after_the_hub_died_stops_the_engines_and_status_says_it_is_broken() {
    let watchdog = support::watchdog();
    let dir = temp_profile("crash");
    let _guard = StopOnDrop(&dir);
    let out = zpar(&["cluster", "start", "-n", "3", "--daemon"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pids = recorded(&dir, &watchdog);

    // An engine gone: the cluster is not whole.
    kill("-KILL", pids.engines[2]);
    support::wait_until("the engine is gone", || {
        !zpar::cluster::process_alive(pids.engines[2])
    });
    let status = zpar(&["cluster", "status"], &dir);
    let err = text(&status.stderr);
    assert_eq!(status.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("engine processes [{}] are gone", pids.engines[2])),
        "{err}"
    );
    assert!(err.contains("zpar cluster stop"), "says what to do: {err}");

    // The hub gone too.
    kill("-KILL", pids.hub);
    support::wait_until("the hub is gone", || {
        !zpar::cluster::process_alive(pids.hub)
    });
    let status = zpar(&["cluster", "status"], &dir);
    let err = text(&status.stderr);
    assert_eq!(status.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the hub (pid {}) is gone", pids.hub)),
        "{err}"
    );
    assert!(
        text(&status.stdout).contains(&format!("hub pid {}: gone", pids.hub)),
        "{}",
        text(&status.stdout)
    );

    // Stop ends what the record names, and only then drops the record.
    let stop = zpar(&["cluster", "stop"], &dir);
    assert_eq!(
        stop.status.code(),
        Some(0),
        "{}{}",
        text(&stop.stdout),
        text(&stop.stderr)
    );
    assert!(text(&stop.stdout).contains("cluster stopped"));
    for pid in pids.processes() {
        support::wait_until(&format!("process {pid} is gone"), || {
            !zpar::cluster::process_alive(pid)
        });
    }
    assert!(!dir.join(PID_FILE).exists(), "the record goes with them");
    assert!(
        !Profile::from_dir(&dir).client_file().exists(),
        "the dead hub's connection file goes too, so no console waits on it"
    );
}

/// A foreground `zpar cluster start -n 2`, its stdout and stderr into one
/// file (so their order shows), once it has said the cluster started; the
/// wait notice at a 1 ms period, so it speaks while engines register.
fn foreground_cluster(dir: &Path) -> (Reaper, PathBuf) {
    let out = dir.join("foreground.out");
    let file = std::fs::File::create(&out).unwrap();
    let child = Command::new(zpar_bin())
        .args(["cluster", "start", "-n", "2", "--profile-dir"])
        .arg(dir)
        .env(zpar::wait::PERIOD_VAR, "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("starting a foreground cluster");
    let reaper = Reaper::of(child);
    support::wait_until("the foreground cluster says it started", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("press Ctrl-C to stop"))
    });
    (reaper, out)
}

/// SIGINTs the foreground cluster and waits for its exit code.
fn interrupt(cluster: &mut Reaper) -> Option<i32> {
    let child = &mut cluster.0[0];
    kill("-INT", child.id());
    let mut code = None;
    support::wait_until("the foreground cluster exits after SIGINT", || match child
        .try_wait()
        .unwrap()
    {
        Some(status) => {
            code = status.code();
            true
        }
        None => false,
    });
    code
}

#[test]
fn a_foreground_cluster_stops_announcing_its_wait_once_started() {
    let _watchdog = support::watchdog();
    let dir = temp_profile("notice");
    let _guard = StopOnDrop(&dir);
    let (mut cluster, out) = foreground_cluster(&dir);
    interrupt(&mut cluster);
    let all = std::fs::read_to_string(&out).unwrap();
    let (before, after) = all.split_at(all.find("cluster started").unwrap());
    assert!(
        before.contains("waiting for 2 engines to register"),
        "the notice spoke while engines registered: {all}"
    );
    assert!(
        !after.contains("waiting for"),
        "the notice stops once the cluster has started: {all}"
    );
}

#[test]
fn ctrl_c_stops_a_foreground_cluster_and_exits_130() {
    let _watchdog = support::watchdog();
    let dir = temp_profile("ctrl-c");
    let _guard = StopOnDrop(&dir);
    let (mut cluster, out) = foreground_cluster(&dir);
    let pids: ClusterPids = zpar_protocol::connection::read_json_file(&dir.join(PID_FILE)).unwrap();
    let code = interrupt(&mut cluster);
    let all = std::fs::read_to_string(&out).unwrap();
    assert_eq!(code, Some(130), "{all}");
    assert!(all.contains("cluster stopped"), "{all}");
    for pid in pids.processes() {
        assert!(
            !zpar::cluster::process_alive(pid),
            "process {pid} outlived its cluster: {all}"
        );
    }
    assert!(!dir.join(PID_FILE).exists());
}

#[test]
fn daemon_log_files_are_plain_text() {
    let watchdog = support::watchdog();
    let dir = temp_profile("logs");
    let _guard = StopOnDrop(&dir);
    let out = Command::new(zpar_bin())
        .args(["cluster", "start", "-n", "1", "--daemon", "--profile-dir"])
        .arg(&dir)
        .env("ZPAR_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    recorded(&dir, &watchdog);
    let stop = zpar(&["cluster", "stop"], &dir);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let logs = Profile::from_dir(&dir).log_dir();
    let hub = std::fs::read_to_string(logs.join("hub.log")).unwrap();
    assert!(hub.contains("engine registered"), "the hub logged: {hub}");
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.contains(&0x1b),
            "{} holds terminal colour codes: {}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        );
    }
}
