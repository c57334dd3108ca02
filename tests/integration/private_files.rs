//! Files at rest are private (issue 18): whatever the umask, every folder
//! zpar creates is 0700 and every file 0600 — the profile, `security/`,
//! `log/`, connection and pid files, logs, and the SQLite task database
//! with its WAL and SHM files; a profile an earlier run left open to others
//! is tightened, with a warning; a `--db` folder that is not zpar's is left
//! alone.

use crate::support::{self, output_within, zpar_bin, Reaper, WAIT};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use zpar::{Client, Profile, Value};

/// `zpar args…` under `umask`, the way a user's shell would run it.
fn under_umask(umask: &str, args: &[&str], paths: &[&Path]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(zpar_bin())
        .args(args)
        .args(paths)
        .env("ZPAR_LOG", "warn");
    cmd
}

fn run(cmd: Command, what: &str) -> Output {
    let out = output_within(cmd, WAIT, what);
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Every folder under and including `dir` is 0700, every file 0600; the
/// files seen, relative to `dir`.
fn assert_private_tree(dir: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        assert_eq!(mode(&d), 0o700, "folder {}", d.display());
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "file {}", p.display());
                seen.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    seen.sort();
    seen
}

/// `text` without terminal colour codes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn temp_root(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zpar-private-{name}-{}", zpar_protocol::new_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Stops the daemon cluster of a profile and removes the test's folder,
/// also when the test fails half way.
struct DaemonGuard(PathBuf, PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = Command::new(zpar_bin())
            .args(["cluster", "stop", "--profile-dir"])
            .arg(&self.0)
            .stdin(Stdio::null())
            .output();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// `zpar cluster start -n 2 --daemon --db sqlite:…` under `umask`, the
/// database in a folder of the user's; after some tasks every folder and
/// file of the profile is private, and so are the database and its WAL and
/// SHM files, while the user's folder is as it was.
fn daemon_cluster_is_private(umask: &str, root: &Path) {
    let watchdog = support::watchdog();
    let profile = root.join("profile");
    let _guard = DaemonGuard(profile.clone(), root.to_path_buf());
    let data = root.join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o755);
    let db = format!("sqlite:{}", data.join("tasks.db").display());
    let cmd = under_umask(
        umask,
        &[
            "cluster",
            "start",
            "-n",
            "2",
            "--daemon",
            "--db",
            &db,
            "--profile-dir",
        ],
        &[&profile],
    );
    run(cmd, "zpar cluster start --daemon");
    let pids: zpar::cluster::ClusterPids =
        zpar_protocol::connection::read_json_file(&profile.join(zpar::cluster::PID_FILE)).unwrap();
    for pid in std::iter::once(pids.hub).chain(pids.engines) {
        watchdog.also_kill(pid);
    }
    let client = Client::from_file(&Profile::from_dir(&profile).client_file()).unwrap();
    let ar = client
        .all()
        .execute("print(\"to the log\"); 40 + 2")
        .unwrap();
    assert_eq!(ar.get_timeout(WAIT).unwrap(), vec![Value::Int(42); 2]);
    let lb = client.load_balanced();
    for i in 0..4 {
        let ar = lb.apply("|x| x * 2", vec![Value::Int(i)]).unwrap();
        assert_eq!(ar.get_timeout(WAIT).unwrap(), vec![Value::Int(2 * i)]);
    }

    for f in ["tasks.db", "tasks.db-wal", "tasks.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f} under umask {umask}");
    }
    assert_eq!(mode(&data), 0o755, "a --db folder that is not zpar's stays");

    let files = assert_private_tree(&profile);
    for f in [
        "cluster.json",
        "log/engine-0.log",
        "log/engine-1.log",
        "log/hub.log",
        "security/zpar-client.json",
        "security/zpar-engine.json",
    ] {
        assert!(
            files.iter().any(|s| s == f),
            "{f} is missing from {files:?}"
        );
    }
}

/// The same with `zpar hub --db sqlite:…` and two `zpar engine`s started
/// by hand under `umask`; the database stays 0600 after a clean close
/// (when SQLite removes the WAL and SHM).
fn sqlite_hub_is_private(umask: &str, root: &Path) {
    let _watchdog = support::watchdog();
    let profile = root.join("db-profile");
    let data = root.join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o755);
    let db = data.join("tasks.db");
    let mut procs = Reaper(Vec::new());
    let spawn = |args: &[&str]| {
        let mut cmd = under_umask(umask, args, &[]);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd.spawn().expect("starting zpar under sh")
    };
    let db_arg = format!("sqlite:{}", db.display());
    let profile_arg = profile.display().to_string();
    procs.0.push(spawn(&[
        "hub",
        "--db",
        &db_arg,
        "--profile-dir",
        &profile_arg,
    ]));
    for _ in 0..2 {
        procs.0.push(spawn(&[
            "engine",
            "--timeout",
            "30",
            "--profile-dir",
            &profile_arg,
        ]));
    }
    let client_file = Profile::from_dir(&profile).client_file();
    support::wait_until("the hub writes its client file", || client_file.exists());
    let client = Client::from_file(&client_file).unwrap();
    client.wait_for_engines(2, WAIT).unwrap();
    let lb = client.load_balanced();
    for i in 0..8 {
        let ar = lb.apply("|x| x * 2", vec![Value::Int(i)]).unwrap();
        assert_eq!(ar.get_timeout(WAIT).unwrap(), vec![Value::Int(2 * i)]);
    }

    for f in ["tasks.db", "tasks.db-wal", "tasks.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f} under umask {umask}");
    }
    assert_eq!(mode(&data), 0o755, "a --db folder that is not zpar's stays");
    assert_private_tree(&profile);

    if let Ok(ar) = client.shutdown(zpar::Targets::All, true) {
        ar.wait(Some(WAIT));
    }
    for child in &mut procs.0 {
        let what = format!("process {} exits after the shutdown", child.id());
        support::wait_until(&what, || child.try_wait().unwrap().is_some());
    }
    assert_eq!(mode(&db), 0o600, "after a clean close");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_daemon_cluster_is_private_under_umask_022() {
    daemon_cluster_is_private("022", &temp_root("daemon-022"));
}

#[test]
fn a_daemon_cluster_is_private_under_umask_000() {
    daemon_cluster_is_private("000", &temp_root("daemon-000"));
}

#[test]
fn the_task_database_and_its_wal_are_private_under_umask_022() {
    sqlite_hub_is_private("022", &temp_root("db-022"));
}

#[test]
fn the_task_database_and_its_wal_are_private_under_umask_000() {
    sqlite_hub_is_private("000", &temp_root("db-000"));
}

/// A profile an older zpar left 0755, with files 0644, is tightened on the
/// next start, with a warning naming what was open; zpar still starts.
#[test]
fn a_loose_profile_is_tightened_with_a_warning() {
    let watchdog = support::watchdog();
    let root = temp_root("loose");
    let profile = root.join("profile");
    let _guard = DaemonGuard(profile.clone(), root.clone());
    let p = Profile::from_dir(&profile);
    std::fs::create_dir_all(p.security_dir()).unwrap();
    std::fs::create_dir_all(p.log_dir()).unwrap();
    let history = profile.join(zpar_protocol::connection::HISTORY_FILE);
    let old_log = p.log_dir().join("engine-7.log");
    for f in [&history, &old_log] {
        std::fs::write(f, b"from before\n").unwrap();
        chmod(f, 0o644);
    }
    for d in [&profile, &p.security_dir(), &p.log_dir()] {
        chmod(d, 0o755);
    }

    let out = run(
        under_umask(
            "022",
            &["cluster", "start", "-n", "1", "--daemon", "--profile-dir"],
            &[&profile],
        ),
        "zpar cluster start on a loose profile",
    );
    let pids: zpar::cluster::ClusterPids =
        zpar_protocol::connection::read_json_file(&profile.join(zpar::cluster::PID_FILE)).unwrap();
    for pid in std::iter::once(pids.hub).chain(pids.engines) {
        watchdog.also_kill(pid);
    }
    let err = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    for loose in [
        &profile,
        &p.security_dir(),
        &p.log_dir(),
        &history,
        &old_log,
    ] {
        let line = err
            .lines()
            .find(|l| l.contains("tightened") && l.contains(&format!("path={} ", loose.display())))
            .unwrap_or_else(|| panic!("no warning for {}: {err}", loose.display()));
        assert!(line.contains("WARN"), "{line}");
    }
    let files = assert_private_tree(&profile);
    assert!(files.contains(&"log/engine-7.log".to_string()), "{files:?}");
    assert_eq!(
        std::fs::read(&history).unwrap(),
        b"from before\n",
        "tightening keeps contents"
    );
}
