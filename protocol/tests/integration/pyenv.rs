//! A Python with `jupyter_client`, `pyzmq`, `ipyparallel`, `ipython` and
//! `jupyter_console` for the interop tests.
//!
//! In order: `$ZPAR_PYTHON` if set (it must have all four packages);
//! otherwise the venv `target/pyenv` of this workspace, created with
//! `python3 -m venv` and filled with `pip install` of [`PACKAGES`] when it
//! cannot import them.
//! Creation is guarded by a lock file (tests run in parallel threads and
//! processes). Without `python3` on PATH the tests print a SKIPPED line and
//! return — except under CI (`CI` set and not empty), where a missing Python
//! fails them, so a CI run cannot pass by skipping. A failed venv creation or
//! pip install (no network) fails them everywhere.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use zpar_protocol::backoff::{poll_until, Backoff};

/// How often to look again at a child or a lock: from 1 ms up to 100 ms.
const PAUSES: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(100));

/// What the interop tests import, and what pip installs for them:
/// jupyter_client 8.9 is the first to read CURVE keys from a connection
/// file (the CURVE interop test uses that); jupyter_console drives a bound
/// kernel under a pseudo-terminal.
const PACKAGES: [&str; 5] = [
    "jupyter_client>=8.9",
    "pyzmq",
    "ipyparallel",
    "ipython",
    "jupyter_console",
];

/// The import line that proves [`PACKAGES`] are there, new enough, and
/// with a libzmq that has CURVE; an older venv fails it and is upgraded.
const IMPORTS: &str = "import jupyter_client, zmq, ipyparallel, IPython, jupyter_console; \
                       assert jupyter_client.version_info >= (8, 9) and zmq.has('curve')";

/// Longest wait for venv creation and pip (pip's own network timeout is
/// shorter), and for another test's setup to finish.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The Python to run the peer with, or None (after printing why) when
/// `python3` is absent outside CI. Under CI a missing `python3` fails the
/// test instead.
pub fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    let python = PYTHON.get_or_init(find_or_make).clone();
    if python.is_none() {
        assert!(
            !in_ci(),
            "python3 not found, and CI is set, so the jupyter interop test may not skip: \
             install python3 with its venv module (e.g. apt-get install python3-venv) in .ci/run, \
             or point ZPAR_PYTHON at a Python with jupyter_client, pyzmq, ipyparallel, ipython \
             and jupyter_console"
        );
        say("SKIPPED: python3 not found; jupyter interop not tested (it would fail under CI)");
    }
    python
}

/// Whether this run is CI's: `CI` set to anything but the empty string.
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Writes straight to stderr, past the test harness's output capture, so a
/// skip or a slow setup step is seen even when the test passes.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn find_or_make() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ZPAR_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            has_jupyter(&p),
            "ZPAR_PYTHON={} cannot `{IMPORTS}`: \
             pip install {} into it, or unset ZPAR_PYTHON",
            p.display(),
            PACKAGES.join(" ")
        );
        return Some(p);
    }
    match Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run python3: {e}"),
        Ok(child) => {
            wait(child, Duration::from_secs(60), "python3 --version");
        }
    }

    // The workspace root holds Cargo.lock; this file is also compiled into
    // the root package's tests, so find it rather than assume a depth.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .expect("the workspace root has a Cargo.lock");
    let venv = workspace.join("target/pyenv");
    let python = venv.join("bin/python");
    if has_jupyter(&python) {
        return Some(python);
    }
    let _lock = Lock::acquire(&venv.with_extension("lock"));
    if has_jupyter(&python) {
        return Some(python); // another test made it while we waited
    }
    let log = venv.with_extension("log");
    if !python.exists() {
        say(&format!(
            "creating {} for the jupyter interop tests",
            venv.display()
        ));
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            &log,
            "python3 -m venv target/pyenv (is the venv module installed, e.g. python3-venv?)",
        );
    }
    say(&format!(
        "pip-installing {} into {}",
        PACKAGES.join(" "),
        venv.display()
    ));
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PACKAGES),
        &log,
        &format!("pip install {} (is PyPI reachable?)", PACKAGES.join(" ")),
    );
    assert!(
        has_jupyter(&python),
        "{} still cannot `{IMPORTS}` after pip install; see {}",
        python.display(),
        log.display()
    );
    Some(python)
}

fn has_jupyter(python: &Path) -> bool {
    match Command::new(python)
        .args(["-c", IMPORTS])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => wait(
            child,
            Duration::from_secs(120),
            "python -c 'import jupyter_client'",
        ),
        Err(_) => false,
    }
}

/// Runs a setup command with its output appended to `log`; fails the test
/// with the log's tail if it fails or times out.
fn run(cmd: &mut Command, log: &Path, what: &str) {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
    let err = out.try_clone().unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if !wait(child, SETUP_TIMEOUT, what) {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what} failed; the jupyter interop test needs it. Last lines of {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
}

/// Waits for a child to exit, polling, and kills it after `timeout`.
/// True if it exited successfully.
fn wait(mut child: std::process::Child, timeout: Duration, what: &str) -> bool {
    match exit_within(&mut child, timeout, what) {
        Some(status) => status.success(),
        None => {
            eprintln!("{what} did not finish within {timeout:?}; killed it");
            false
        }
    }
}

/// The child's exit status once it exits within `timeout` (polled with
/// back-off: std has no wait with a timeout); otherwise kills it and
/// returns None.
pub fn exit_within(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> Option<std::process::ExitStatus> {
    let status = poll_until(Instant::now() + timeout, PAUSES, || {
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// A lock file holding the owner's pid; a lock whose owner is gone is taken
/// over, so a killed test run does not block the next one.
struct Lock(PathBuf);

impl Lock {
    fn acquire(path: &Path) -> Lock {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        let taken = poll_until(
            Instant::now() + SETUP_TIMEOUT,
            PAUSES,
            || match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    Some(Lock(path.to_path_buf()))
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if owner_is_gone(path) {
                        let _ = fs::remove_file(path);
                    }
                    None
                }
                Err(e) => panic!("cannot create lock file {}: {e}", path.display()),
            },
        );
        taken.unwrap_or_else(|| {
            panic!(
                "timed out waiting for {} (another test run is setting up the \
                 Python venv); delete the file if no test is running",
                path.display()
            )
        })
    }
}

fn owner_is_gone(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string(path) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return false; // being written right now
    };
    Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.to_string()).exists()
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
