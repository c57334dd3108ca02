//! Shared fixtures: real clusters of the built `zpar` binary on loopback,
//! with random ports, stopped on drop (also when a test panics); a watchdog
//! every test starts first, so a hung test fails instead of hanging the run;
//! bounded polling for conditions nothing can block on.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use zpar::{AsyncResult, Client, LocalCluster};
use zpar_protocol::backoff::{poll_until, Backoff};

/// Generous bound for any one wait in a test; nothing should come close.
pub const WAIT: Duration = Duration::from_secs(30);

/// Generous bound for a whole test; [`watchdog`] uses it.
pub const TEST_BOUND: Duration = Duration::from_secs(120);

/// The binary under test.
/// Processes a test started itself, killed and reaped when it ends, also
/// on failure.
pub struct Reaper(pub Vec<Child>);

impl Reaper {
    /// One process.
    pub fn of(child: Child) -> Reaper {
        Reaper(vec![child])
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The built example `name`, next to this test binary's folder.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let program = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target folder")
        .join("examples")
        .join(name);
    assert!(
        program.is_file(),
        "{} is missing: `cargo test` builds it; after a narrower build run `cargo build --example {name}`",
        program.display()
    );
    program
}

pub fn zpar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_zpar")
}

/// A cluster of `n` engines with fast heartbeats (dead after ~1 s).
pub fn cluster(n: usize) -> (LocalCluster, Client) {
    cluster_with(n, &[], &[])
}

/// A cluster with extra hub and engine arguments.
pub fn cluster_with(n: usize, hub_args: &[&str], engine_args: &[&str]) -> (LocalCluster, Client) {
    let cluster = LocalCluster::builder()
        .binary(zpar_bin())
        .engines(n)
        .hub_args(["--hb-period-ms", "200", "--hb-misses", "5"])
        .hub_args(hub_args.iter().copied())
        .engine_args(engine_args.iter().copied())
        .timeout(WAIT)
        .start()
        .expect("starting a local cluster");
    let client = cluster.client().expect("client");
    (cluster, client)
}

/// The result once every reply is in, within [`WAIT`]; fails the test
/// otherwise. For the getters that have no timeout of their own
/// (`get_one`, `get_gathered`, `get_dict`), which then return at once.
pub fn ready(ar: &AsyncResult) -> &AsyncResult {
    assert!(
        ar.wait(Some(WAIT)),
        "no reply within {WAIT:?} to {:?}",
        ar.msg_ids()
    );
    ar
}

/// Polls `condition` with back-off until it holds, at most [`WAIT`]; fails
/// the test naming `what` otherwise.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(10));
    let held = poll_until(Instant::now() + WAIT, pauses, || condition().then_some(()));
    assert!(
        held.is_some(),
        "timed out after {WAIT:?} waiting until {what}"
    );
}

/// A script function `running(n)` that prints "running" every 100,000th
/// call: a request that calls it in its loop says it runs for as long as it
/// does. (Output on iopub reaches a client only once its subscription has
/// reached the engine, which a fresh client's first request can outrun: a
/// single print could be lost, a repeated one is seen.)
pub const RUNNING_EVERY: &str = "fn running(n) { if n % 100000 == 0 { print(\"running\"); } }";

/// A request that runs until it is stopped, saying so (see
/// [`RUNNING_EVERY`]).
pub fn running_loop() -> String {
    format!("{RUNNING_EVERY} let i = 0; loop {{ running(i); i += 1; }}")
}

/// Waits until engine `engine` has printed `text` for `ar`: its request
/// runs. (A request the engine merely queued, or one the hub has sent but
/// the engine not yet taken, would let a control request overtake it.)
pub fn wait_until_printed(ar: &AsyncResult, engine: u32, text: &str) {
    wait_until(&format!("engine {engine} prints {text:?}"), || {
        ar.stdout()
            .get(&engine)
            .is_some_and(|out| out.contains(text))
    });
}

/// Runs `cmd` with piped stdout and stderr to its end, at most `bound`;
/// kills it and fails the test naming `what` if it takes longer.
pub fn output_within(mut cmd: Command, bound: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // Read both pipes meanwhile, so a chatty child never blocks on a full one.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
    let status = poll_until(Instant::now() + bound, pauses, || {
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let err = stderr.join().unwrap_or_default();
        panic!(
            "{what} did not finish within {bound:?}; killed it. Its stderr:\n{}",
            String::from_utf8_lossy(&err)
        );
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Fails a hung test instead of letting it hang the run: the first line of
/// every integration test, `let _watchdog = support::watchdog();`.
///
/// Tests are threads of one process, and a thread blocked in a call cannot
/// be made to fail from outside; so when the bound passes, the watchdog
/// prints which test hung, kills every process this test binary started
/// (its descendants, found in /proc — every test's clusters, consoles and
/// Python peers — plus any pid handed to [`Watchdog::also_kill`]) and ends
/// the test binary with a failure. Dropping the guard at the end of the
/// test disarms it.
pub struct Watchdog {
    /// Dropped to disarm: the watchdog thread sees its channel close.
    disarm: Option<mpsc::Sender<()>>,
    extra: Arc<Mutex<Vec<u32>>>,
}

/// A [`Watchdog`] with the default bound, [`TEST_BOUND`].
pub fn watchdog() -> Watchdog {
    Watchdog::start(TEST_BOUND)
}

impl Watchdog {
    /// Arms a watchdog for the calling test that fires after `bound`.
    pub fn start(bound: Duration) -> Watchdog {
        let test = std::thread::current()
            .name()
            .unwrap_or("an integration test")
            .to_string();
        let (disarm, disarmed) = mpsc::channel::<()>();
        let extra = Arc::new(Mutex::new(Vec::new()));
        let pids = Arc::clone(&extra);
        std::thread::Builder::new()
            .name(format!("watchdog: {test}"))
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(bound) {
                    let extra = pids.lock().map(|p| p.clone()).unwrap_or_default();
                    expire(&test, bound, extra);
                }
            })
            .expect("starting the test watchdog thread");
        Watchdog {
            disarm: Some(disarm),
            extra,
        }
    }

    /// Kills `pid` too if the test hangs: for processes that are not this
    /// binary's descendants, such as a daemon cluster's hub and engines.
    pub fn also_kill(&self, pid: u32) {
        if let Ok(mut pids) = self.extra.lock() {
            pids.push(pid);
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm.take();
    }
}

/// The watchdog fired: kill, say why, and end the test binary.
fn expire(test: &str, bound: Duration, extra: Vec<u32>) -> ! {
    let mut pids = descendants(std::process::id());
    pids.extend(extra);
    // Straight to stderr: the harness captures `eprintln!` of test threads
    // (and of threads they start), and would drop it at the exit below.
    let _ = writeln!(
        std::io::stderr(),
        "\nWATCHDOG: test `{test}` was still running after {bound:?}, so it hangs. \
         Killing the processes of this test binary {pids:?} and failing the run. \
         To see where it waits, run it alone: cargo test -p zpar --test integration \
         -- --nocapture {test}"
    );
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .status();
    }
    std::process::exit(101);
}

/// Every live descendant of `root`, from /proc (Linux).
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            found.push(c);
            todo.push(c);
        }
    }
    found
}

/// Every engine that left, as the client heard it.
pub fn departures(events: &mpsc::Receiver<zpar::ClientEvent>) -> Vec<(u32, String)> {
    events
        .try_iter()
        .filter_map(|e| match e {
            zpar::ClientEvent::EngineUnregistered { engine, reason } => Some((engine, reason)),
            _ => None,
        })
        .collect()
}

/// Why this process is not root (its effective uid, from
/// `/proc/self/status`), or None when it is.
pub fn not_root() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("?");
    (euid != "0").then(|| format!("not root (euid {euid})"))
}

/// A test that cannot run here (`why`): with `CI` set it fails, else it
/// says why it skips `what` and passes.
pub fn skip_unless_ci(what: &str, why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{what} cannot run: {why}");
    }
    eprintln!("skipping {what}: {why}");
}
