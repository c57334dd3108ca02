//! Engines as Jupyter kernels, driven by Jupyter's own tools from the test
//! venv: `jupyter_client`'s `BlockingKernelClient` on a bound engine (every
//! request a front end sends, hostile input, shutdown), one namespace shared
//! with the hub, the hub serving other engines while a kernel cell runs,
//! `jupyter console --existing` and `jupyter console --kernel zpar` through a
//! pseudo-terminal, and a standalone kernel started by hand.
//!
//! Nothing here can hang: the Python peers bound every wait, each is run
//! within a bound, and clusters and kernels are killed on drop.

use crate::pyenv;
use crate::support::{self, cluster_with, wait_until, zpar_bin, WAIT};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use zpar::Value;
use zpar_protocol::KernelConnection;

const PEER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/integration/kernel_peer.py"
);
const PTY_DRIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/integration/pty_driver.py"
);

/// Runs `python args…` to its end within `bound`; fails the test with its
/// output unless it succeeds and prints `done`.
fn python_run(python: &Path, args: &[&std::ffi::OsStr], envs: &[(&str, &Path)], done: &str) {
    let mut cmd = Command::new(python);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = support::output_within(cmd, Duration::from_secs(150), "the Python peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(done),
        "the Python peer failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A folder of its own under the system's temp folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d =
            std::env::temp_dir().join(format!("zpar-kernel-{name}-{}", zpar_protocol::new_id()));
        std::fs::create_dir_all(&d).expect("creating a temp folder");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop, its stdout read line by line.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn start(mut cmd: Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a peer process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines }
    }

    /// The next line containing `needle`, within [`WAIT`].
    fn expect(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} from the peer ({e:?})"),
            }
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .expect("writing to the peer");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn jupyter_client_drives_an_engine_bound_as_a_kernel() {
    let _watchdog = support::watchdog();
    let Some(python) = pyenv::python() else {
        return;
    }; // pyenv printed why (under CI it fails instead)
    let (cluster, client) = support::cluster(2);
    let engine0 = client.view(0);
    support::ready(&engine0.push("from_hub", Value::Int(7)).unwrap())
        .get()
        .unwrap();

    let kernels = engine0.bind_kernel_sync().expect("binding engine 0");
    assert_eq!(kernels.len(), 1);
    let kernel = &kernels[0];
    assert_eq!(kernel.engine, 0);
    let security = cluster.profile().security_dir();
    assert_eq!(kernel.connection_file, security.join("kernel-0.json"));
    assert_eq!(mode_of(&kernel.connection_file), 0o600);
    let written: KernelConnection =
        zpar_protocol::connection::read_json_file(&kernel.connection_file).unwrap();
    assert_eq!(written, kernel.connection, "the file has the cluster's key");
    assert_eq!(written.key, client.connection().key);
    // Asking again answers with the same kernel.
    assert_eq!(engine0.bind_kernel_sync().unwrap(), kernels);
    assert!(!security.join("kernel-1.json").exists());

    python_run(
        &python,
        &[
            PEER.as_ref(),
            "drive".as_ref(),
            kernel.connection_file.as_ref(),
        ],
        &[],
        "kernel peer ok",
    );

    // One namespace: what the kernel defined, the hub reads.
    let pulled = support::ready(&engine0.pull("from_kernel").unwrap())
        .get_one()
        .unwrap();
    assert_eq!(pulled, Value::Int(41));
    // The peer's shutdown_request stopped the kernel, not the engine.
    wait_until("the kernel's file is removed", || {
        !kernel.connection_file.exists()
    });
    let r = support::ready(&engine0.execute("from_kernel + 1").unwrap())
        .get()
        .unwrap();
    assert_eq!(r, [Value::Int(42)]);
    assert!(client.ids().contains(&0));
}

#[test]
fn the_hub_keeps_serving_while_a_bound_kernel_runs_a_long_cell() {
    let _watchdog = support::watchdog();
    let Some(python) = pyenv::python() else {
        return;
    };
    let (cluster, client) = cluster_with(2, &[], &["--bind-kernel"]);
    let file = cluster.profile().security_dir().join("kernel-0.json");
    wait_until("engine 0 writes its kernel file", || file.exists());
    let mut peer_cmd = Command::new(&python);
    peer_cmd.arg(PEER).arg("long").arg(&file);
    let mut peer = Peer::start(peer_cmd);
    peer.expect("running");

    // A hub request to the busy engine waits its turn: never interleaved.
    let queued = client.view(0).execute("40 + 2").unwrap();
    // The other engine serves, and the busy one stays registered (its
    // heartbeat thread answers), for twice the hub's silence limit
    // (--hb-period-ms 200 × --hb-misses 5 = 1 s).
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let r = client
            .view(1)
            .execute(&format!("{served} * 2"))
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        assert_eq!(r, [Value::Int(served * 2)]);
        served += 1;
    }
    assert!(served > 10, "engine 1 served only {served} requests in 2 s");
    assert!(
        !queued.ready(),
        "the hub's request ran inside the kernel's cell"
    );
    let status = client.queue_status().unwrap();
    assert_eq!(status.engines[&0].queue, 1, "{status:?}");
    assert!(client.ids().contains(&0), "engine 0 was dropped while busy");

    peer.say("interrupt");
    peer.expect("interrupted");
    let r = queued.get_timeout(WAIT).unwrap();
    assert_eq!(r, [Value::Int(42)]);
}

#[test]
fn jupyter_console_existing_on_a_bound_engine() {
    console_existing_on_a_bound_engine(&[]);
}

/// With CURVE on the hub's sockets, the kernel's own sockets stay plain
/// (signed, as every Jupyter kernel's): Jupyter's front end still gets its
/// output on iopub.
#[test]
fn jupyter_console_existing_on_a_bound_engine_of_a_curve_cluster() {
    console_existing_on_a_bound_engine(&["--curve"]);
}

fn console_existing_on_a_bound_engine(hub_args: &[&str]) {
    let _watchdog = support::Watchdog::start(Duration::from_secs(200));
    let Some(python) = pyenv::python() else {
        return;
    };
    let (cluster, client) = cluster_with(1, hub_args, &["--bind-kernel"]);
    let file = cluster.profile().security_dir().join("kernel-0.json");
    wait_until("engine 0 writes its kernel file", || file.exists());
    let home = TempDir::new("home");
    python_run(
        &python,
        &[PTY_DRIVER.as_ref(), "existing".as_ref(), file.as_ref()],
        &[
            ("HOME", &home.0),
            ("JUPYTER_RUNTIME_DIR", &home.0.join("runtime")),
        ],
        "jupyter console ok",
    );
    // The console left the kernel running: the engine still serves both.
    assert!(file.exists(), "leaving jupyter console stopped the kernel");
    let r = support::ready(&client.view(0).execute("40 + 2").unwrap())
        .get()
        .unwrap();
    assert_eq!(r, [Value::Int(42)]);
}

#[test]
fn the_installed_kernelspec_starts_through_jupyter_console() {
    let _watchdog = support::Watchdog::start(Duration::from_secs(200));
    let Some(python) = pyenv::python() else {
        return;
    };
    let prefix = TempDir::new("prefix");
    let out = support::output_within(
        {
            let mut c = Command::new(zpar_bin());
            c.args(["kernel", "install", "--prefix"]).arg(&prefix.0);
            c
        },
        WAIT,
        "zpar kernel install",
    );
    assert!(out.status.success(), "{out:?}");
    let spec_file = prefix.0.join("share/jupyter/kernels/zpar/kernel.json");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_file).unwrap()).unwrap();
    let zpar = std::fs::canonicalize(zpar_bin()).unwrap();
    assert_eq!(
        spec["argv"],
        serde_json::json!([
            zpar.display().to_string(),
            "kernel",
            "-f",
            "{connection_file}"
        ])
    );
    assert_eq!(spec["language"], "rhai");

    let runtime = prefix.0.join("runtime");
    let home = prefix.0.join("home");
    std::fs::create_dir_all(&runtime).unwrap();
    python_run(
        &python,
        &[
            PTY_DRIVER.as_ref(),
            "kernelspec".as_ref(),
            "zpar".as_ref(),
            runtime.as_ref(),
        ],
        &[
            ("JUPYTER_PATH", &prefix.0.join("share/jupyter")),
            ("JUPYTER_RUNTIME_DIR", &runtime),
            ("HOME", &home),
        ],
        "jupyter console ok",
    );
}

#[test]
fn a_standalone_kernel_writes_its_own_file_and_exits_on_shutdown() {
    let _watchdog = support::watchdog();
    let Some(python) = pyenv::python() else {
        return;
    };
    let dir = TempDir::new("standalone");
    // A folder that is not zpar's, open to others: the kernel leaves it so.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let file = dir.0.join("k.json");
    let mut cmd = Command::new(zpar_bin());
    cmd.args(["kernel", "-f"]).arg(&file);
    let mut kernel = Peer::start(cmd);
    let line = kernel.expect("zpar kernel listening");
    assert!(
        line.contains(&format!("jupyter console --existing {}", file.display())),
        "{line}"
    );
    assert_eq!(mode_of(&file), 0o600);
    assert_eq!(mode_of(&dir.0), 0o755, "the folder is left alone");
    let written: KernelConnection = zpar_protocol::connection::read_json_file(&file).unwrap();
    assert_eq!(written.ip, "127.0.0.1");
    assert!(!written.key.is_empty());

    python_run(
        &python,
        &[PEER.as_ref(), "shutdown".as_ref(), file.as_ref()],
        &[],
        "shut down",
    );
    let status = pyenv::exit_within(&mut kernel.child, WAIT, "the standalone kernel")
        .expect("the kernel exits after its shutdown_request");
    assert!(status.success(), "{status}");
    assert!(!file.exists(), "the kernel removes the file it wrote");
}
