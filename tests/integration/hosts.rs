//! Several hosts, made of network namespaces: a hub on one, engines on
//! others, joined by a bridge. Everything runs as real processes through
//! `ip netns exec`; the addresses (10.77.0.0/24) exist only inside the
//! namespaces a test creates, and every namespace and process is removed
//! when the test ends, also on failure.
//!
//! Needs root and `ip` (iproute2). Outside CI a test without them prints
//! why and passes; with `CI` set it fails instead.

use crate::support::{self, zpar_bin, WAIT};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zpar_protocol::backoff::{poll_until, Backoff};

/// The hub host's address; engine host `i` (1-based) is `10.77.0.{i+1}`.
const HUB_ADDR: &str = "10.77.0.1";

/// A set of hosts: namespace 0 holds the bridge (the "switch") and the hub;
/// namespaces 1.. are engine hosts, each linked to the bridge by a veth
/// pair.
pub struct Hosts {
    prefix: String,
    count: usize,
    children: Mutex<Vec<Child>>,
    dir: PathBuf,
}

/// Why hosts cannot be made here, or None if they can.
fn missing_tool() -> Option<String> {
    if let Some(why) = support::not_root() {
        return Some(format!("{why}: network namespaces need root"));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("no `ip` command (install iproute2)".into()),
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// A hub host and `engine_hosts` engine hosts; None (after saying why)
    /// when this machine cannot make them and `CI` is not set.
    pub fn new(engine_hosts: usize) -> Option<Hosts> {
        if let Some(why) = missing_tool() {
            support::skip_unless_ci("a multi-host test", &why);
            return None;
        }
        let id = zpar_protocol::new_id();
        let hosts = Hosts {
            prefix: format!("zpar-{}", &id[..8]),
            count: engine_hosts + 1,
            children: Mutex::new(Vec::new()),
            dir: std::env::temp_dir().join(format!("zpar-hosts-{}", &id[..8])),
        };
        std::fs::create_dir_all(&hosts.dir).expect("a temporary folder");
        for i in 0..hosts.count {
            ip(&["netns", "add", &hosts.ns(i)]);
            ip(&["-n", &hosts.ns(i), "link", "set", "lo", "up"]);
        }
        let hub = hosts.ns(0);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB_ADDR}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 1..hosts.count {
            let port = format!("v{i}");
            let host = hosts.ns(i);
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &host,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &port, "up"]);
            let addr = format!("{}/24", hosts.addr(i));
            ip(&["-n", &host, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
        }
        Some(hosts)
    }

    /// Namespace name of host `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// Address of host `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    /// A scratch folder removed with the hosts.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `zpar ARGS` on host `i`, as a command to adjust.
    ///
    /// Like a real machine, each engine host has a `/dev/shm` of its own
    /// (a folder of the test's, bind-mounted in a private mount namespace),
    /// so zpar sees another host there and never passes values through
    /// shared memory across hosts.
    pub fn zpar(&self, i: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i)]);
        if i > 0 {
            let shm = self.dir.join(format!("shm-{i}"));
            std::fs::create_dir_all(&shm).expect("a host's /dev/shm folder");
            cmd.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount --bind \"$0\" /dev/shm && exec \"$@\"")
                .arg(&shm);
        }
        cmd.arg(zpar_bin())
            .args(args)
            .env("ZPAR_DIR", self.dir.join(format!("home-{i}")));
        cmd
    }

    /// Starts `cmd` and keeps it, to be killed with the hosts.
    pub fn spawn(&self, mut cmd: Command) -> u32 {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a process on a test host");
        let pid = child.id();
        self.children.lock().expect("children").push(child);
        pid
    }

    /// Runs a scripted console on host `i` against `client_file`, feeding
    /// it `script`; returns its output (bounded by [`WAIT`]).
    pub fn console(&self, i: usize, client_file: &Path, script: &str) -> Output {
        let file = client_file.to_str().expect("a UTF-8 path");
        let mut cmd = self.zpar(i, &["console", "--file", file, "--timeout", "20"]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting a console");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("writing the console's script");
        wait_output(child, WAIT, "a console on a test host")
    }

    /// Takes host `i`'s link to the bridge down (a cable pulled).
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.ns(0), "link", "set", &format!("v{i}"), "down"]);
    }

    /// Runs an sshd on every engine host, with keys made for this run in
    /// the hosts' scratch folder (nothing of the machine's own ssh setup is
    /// read or changed); returns the options `ssh` needs to log in. None
    /// (after saying why) when ssh is not installed and `CI` is not set.
    pub fn start_sshd(&self) -> Option<Vec<String>> {
        for tool in ["/usr/sbin/sshd", "ssh", "ssh-keygen"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                let why = format!("{tool} is missing: install openssh-server (.ci/run does)");
                assert!(std::env::var_os("CI").is_none_or(|v| v.is_empty()), "{why}");
                eprintln!("skipping a multi-host ssh test: {why}");
                return None;
            }
        }
        let keys = self.dir.join("ssh");
        std::fs::create_dir_all(&keys).expect("ssh folder");
        let keygen = |file: &Path| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(file)
                .output()
                .expect("ssh-keygen");
            assert!(out.status.success(), "ssh-keygen: {out:?}");
        };
        keygen(&keys.join("host_key"));
        keygen(&keys.join("id"));
        std::fs::copy(keys.join("id.pub"), keys.join("authorized_keys")).expect("authorized_keys");
        // sshd's privilege-separation folder, as its service would make it.
        let _ = std::fs::create_dir_all("/run/sshd");
        let k = |f: &str| keys.join(f).to_string_lossy().into_owned();
        for i in 1..self.count {
            let mut cmd = Command::new("ip");
            cmd.args([
                "netns",
                "exec",
                &self.ns(i),
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
                "/dev/null",
            ]);
            for opt in [
                format!("HostKey={}", k("host_key")),
                format!("AuthorizedKeysFile={}", k("authorized_keys")),
                format!("ListenAddress={}:22", self.addr(i)),
                "PidFile=none".into(),
                "UsePAM=no".into(),
                "StrictModes=no".into(),
                "PermitRootLogin=prohibit-password".into(),
                "PasswordAuthentication=no".into(),
                "KbdInteractiveAuthentication=no".into(),
            ] {
                cmd.args(["-o", &opt]);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting sshd");
            self.children.lock().expect("children").push(child);
        }
        let args: Vec<String> = [
            "-F",
            "/dev/null",
            "-i",
            &k("id"),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Ready when a login works.
        for i in 1..self.count {
            support::wait_until(&format!("sshd answers on host {i}"), || {
                self.zpar_plain(0, "ssh")
                    .args(&args)
                    .arg(self.addr(i))
                    .arg("true")
                    .stdin(Stdio::null())
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
        }
        Some(args)
    }

    /// Any program on host `i`.
    pub fn zpar_plain(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i), program]);
        cmd
    }

    /// Processes of this test's zpar binary still running on host `i`.
    pub fn zpar_processes(&self, i: usize) -> Vec<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.ns(i)])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(zpar_bin()))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Puts host `i`'s link back.
    pub fn restore(&self, i: usize) {
        ip(&["-n", &self.ns(0), "link", "set", &format!("v{i}"), "up"]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for mut c in self
            .children
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..self.count {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Collects a child's output, killing it if it runs past `bound`.
fn wait_output(child: Child, bound: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} did not finish within {bound:?}");
        }
    }
}

/// A hub on host 0 bound on every interface and advertising the bridge
/// address; returns the client and engine connection files.
fn start_hub(hosts: &Hosts, extra: &[&str]) -> (PathBuf, PathBuf) {
    let profile = hosts.dir().join("hub-profile");
    let dir = profile.to_str().expect("UTF-8");
    let mut args = vec![
        "hub",
        "--profile-dir",
        dir,
        "--ip",
        "0.0.0.0",
        "--location",
        HUB_ADDR,
    ];
    args.extend_from_slice(extra);
    hosts.spawn(hosts.zpar(0, &args));
    let client = profile.join("security").join("zpar-client.json");
    let engine = profile.join("security").join("zpar-engine.json");
    let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
    let written = poll_until(Instant::now() + WAIT, pauses, || {
        (client.exists() && engine.exists()).then_some(())
    });
    assert!(
        written.is_some(),
        "the hub on host 0 wrote no connection files"
    );
    (client, engine)
}

/// Starts `n` engines on host `i`, given the connection through
/// `ZPAR_CONNECTION_INFO` (no shared file: the key stays off the command
/// line).
fn start_engines(hosts: &Hosts, i: usize, n: usize, engine_file: &Path, extra: &[&str]) {
    let info = std::fs::read_to_string(engine_file).expect("the engine connection file");
    for _ in 0..n {
        let mut args = vec!["engine", "--timeout", "20"];
        args.extend_from_slice(extra);
        let mut cmd = hosts.zpar(i, &args);
        cmd.env("ZPAR_CONNECTION_INFO", &info);
        hosts.spawn(cmd);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the console on host 0 sees exactly `ids` registered
/// (`none` for no engine).
fn wait_for_engines(hosts: &Hosts, client: &Path, ids: &str) {
    let want = match ids {
        "none" => "no engines yet".to_string(),
        "0" => "engine 0 (1)".to_string(),
        "0-1" => "engines 0,1 (2)".to_string(),
        many => format!("engines {many} ("),
    };
    support::wait_until(&format!("engines {ids} are registered"), || {
        let out = hosts.console(0, client, "");
        text(&out).contains(&want)
    });
}

/// Every engine `0..total` got the seed's allreduce (`Out[e:1]: 499500`).
fn assert_allreduced(shown: &str, total: usize) {
    for e in 0..total {
        assert!(
            shown.contains(&format!("Out[{e}:1]: 499500")),
            "engine {e} did not get the allreduce:\n{shown}"
        );
    }
}

/// `zpar cluster stop` from the hub host, then no zpar process is left on
/// hosts `0..=last`.
fn stop_everywhere(hosts: &Hosts, dir: &str, last: usize) {
    let stop = hosts.zpar(0, &["cluster", "stop", "--profile-dir", dir]);
    let out = support::output_within(stop, WAIT, "zpar cluster stop");
    assert!(out.status.success(), "{}", text(&out));
    for h in 0..=last {
        support::wait_until(&format!("no zpar process is left on host {h}"), || {
            hosts.zpar_processes(h).is_empty()
        });
    }
}

/// The seed workflow by hand, as the README shows it.
const SEED: &str = "%scatter --flatten id = ID_LIST
%comm com
%push add = |a, b| a + b
%scatter data = 0..1000
%px com.allreduce(add, data, false)
%px com.reduce(add, id, true)
%px com.info.host
%px let big = com.allreduce(\"sum\", f64_array(300000, 1.0)); [big[299999], com.last_algorithm]
%px let whole = com.allreduce(add, f64_array(300000, 1.0)); [whole[0], whole.len]
";

fn seed_across_hosts(per_host: &[usize]) {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(per_host.len()) else {
        return;
    };
    let (client, engine) = start_hub(&hosts, &[]);
    // Bound beyond loopback, the hub encrypts by default: every connection
    // below (clients, engines, the engines' tree) is CURVE.
    let conn: zpar_protocol::ClientConnection =
        zpar_protocol::connection::read_connection_file(&client).expect("the client file");
    assert!(
        conn.curve().expect("valid keys").is_some(),
        "a hub on 0.0.0.0 runs without CURVE"
    );
    for (h, n) in per_host.iter().enumerate() {
        start_engines(&hosts, h + 1, *n, &engine, &[]);
    }
    let total: usize = per_host.iter().sum();
    wait_for_engines(&hosts, &client, &format!("0-{}", total - 1));
    let ids = format!(
        "[{}]",
        (0..total)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = hosts.console(0, &client, &SEED.replace("ID_LIST", &ids));
    let shown = text(&out);
    assert!(out.status.success(), "the seed workflow failed:\n{shown}");
    assert_allreduced(&shown, total);
    let sum: usize = (0..total).sum();
    assert!(
        shown.contains(&format!("Out[0:2]: {sum}")),
        "the root did not get the reduce:\n{shown}"
    );
    // Each engine advertises its own host, never the hub's.
    for h in 1..=per_host.len() {
        assert!(
            shown.contains(&format!("\"{}\"", hosts.addr(h))),
            "no engine advertised host {}:\n{shown}",
            hosts.addr(h)
        );
    }
    assert!(!shown.contains(&format!("\"{HUB_ADDR}\"")), "{shown}");
    // Engines on several hosts: a large named allreduce goes round the
    // ring across the hosts' links (CURVE, as every link here), and a
    // script allreduce of a large array sends it inline to a parent on
    // another host.
    for e in 0..total {
        assert!(
            shown.contains(&format!("Out[{e}:4]: [{total}.0, \"ring\"]")),
            "engine {e} did not get the ring allreduce:\n{shown}"
        );
        assert!(
            shown.contains(&format!("Out[{e}:5]: [{total}.0, 300000]")),
            "engine {e} did not get the script allreduce:\n{shown}"
        );
    }
}

#[test]
fn the_seed_workflow_runs_with_four_engines_on_two_other_hosts() {
    seed_across_hosts(&[2, 2]);
}

#[test]
fn the_seed_workflow_runs_with_seven_engines_on_two_other_hosts() {
    seed_across_hosts(&[4, 3]);
}

#[test]
fn engines_cut_off_between_the_two_limits_come_back_and_serve() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(2) else {
        return;
    };
    // The hub drops an engine after 2 missed beats of 1 s; an engine waits
    // 5 s of silence before it looks for the hub itself. A 4 s cut falls
    // between: only the hub's answer to the returning pongs brings the
    // engines back.
    let (client, engine) = start_hub(&hosts, &["--hb-misses", "2"]);
    start_engines(&hosts, 1, 1, &engine, &[]);
    wait_for_engines(&hosts, &client, "0");
    start_engines(&hosts, 2, 1, &engine, &[]);
    wait_for_engines(&hosts, &client, "0-1");
    let cut_at = Instant::now();
    hosts.cut(2);
    wait_for_engines(&hosts, &client, "0");
    // Hold the cut to 4 s in all: a cut has a length, nothing to poll for.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(cut_at.elapsed()));
    hosts.restore(2);
    wait_for_engines(&hosts, &client, "0-1");
    let out = hosts.console(0, &client, "%px 20 + 22\n");
    let shown = text(&out);
    assert!(
        shown.contains("Out[0:1]: 42") && shown.contains("Out[1:1]: 42"),
        "both engines serve after the cut, under their old ids:\n{shown}"
    );
}

#[test]
fn engines_cut_off_longer_than_both_limits_come_back_and_serve() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(1) else {
        return;
    };
    let (client, engine) = start_hub(&hosts, &["--hb-misses", "2"]);
    start_engines(&hosts, 1, 2, &engine, &[]);
    wait_for_engines(&hosts, &client, "0-1");
    hosts.cut(1);
    wait_for_engines(&hosts, &client, "none");
    // Past the engines' own 5 s silence limit too.
    std::thread::sleep(Duration::from_secs(6));
    hosts.restore(1);
    wait_for_engines(&hosts, &client, "0-1");
    let out = hosts.console(0, &client, "%px 6 * 7\n");
    let shown = text(&out);
    assert!(
        shown.contains("Out[0:1]: 42") && shown.contains("Out[1:1]: 42"),
        "{shown}"
    );
}

#[test]
fn an_engine_given_a_wrong_hub_address_says_which_address_it_tried() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(1) else {
        return;
    };
    let (_client, engine) = start_hub(&hosts, &[]);
    let mut conn: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&engine).unwrap()).unwrap();
    conn["ip"] = "10.77.0.99".into();
    let port = conn["link"].as_u64().unwrap();
    let mut cmd = hosts.zpar(1, &["engine", "--timeout", "2"]);
    cmd.env("ZPAR_CONNECTION_INFO", conn.to_string());
    let out = support::output_within(cmd, WAIT, "an engine with a wrong hub address");
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("10.77.0.99:{port}")),
        "the error names the address and port it tried:\n{shown}"
    );
}

/// A queue of host `on`'s established TCP connections that `filter`
/// picks (`ss` filter words), summed: `Queue::Unread` bytes received and not
/// read, `Queue::Unacknowledged` bytes sent and not acknowledged.
fn queued(hosts: &Hosts, on: usize, filter: &[&str], queue: Queue) -> u64 {
    let out = hosts
        .zpar_plain(on, "ss")
        .args(["-tnH", "state", "established"])
        .args(filter)
        .output()
        .expect("ss");
    // With one state asked for, the columns are Recv-Q Send-Q Local Peer.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(queue as usize)?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Which of a connection's queues [`queued`] sums.
#[derive(Clone, Copy)]
enum Queue {
    Unread = 0,
    Unacknowledged = 1,
}

/// What the hub host has sent on its connections from `port` to host `i`
/// that host `i` has not acknowledged, in bytes.
fn unacknowledged_to(hosts: &Hosts, i: usize, port: u64) -> u64 {
    let filter = ["dst", &hosts.addr(i), "sport", "=", &format!(":{port}")];
    queued(hosts, 0, &filter, Queue::Unacknowledged)
}

/// Starts a console on host `i` with `args` after `console`, its output
/// piped; returns it with its stdin open.
fn spawn_console(hosts: &Hosts, i: usize, args: &[&str]) -> Child {
    let mut cmd = hosts.zpar(i, &[&["console"], args].concat());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a console")
}

/// Feeds `script` to a console from [`spawn_console`] and closes its input.
fn feed(console: &mut Child, script: &[u8]) {
    let mut stdin = console.stdin.take().expect("the console's stdin");
    stdin
        .write_all(script)
        .expect("writing the console's script");
}

/// Tears down, on host `on`, the TCP connections `filter` picks (`ss -K`):
/// what waits in their queues there is gone.
fn tear_down(hosts: &Hosts, on: usize, filter: &[&str]) {
    let cut = hosts
        .zpar_plain(on, "ss")
        .arg("-K")
        .args(filter)
        .output()
        .expect("ss -K");
    assert!(cut.status.success(), "{cut:?}");
}

#[test]
fn a_request_lost_on_a_dropped_connection_fails_clearly_and_the_engine_serves_on() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(1) else {
        return;
    };
    // Heartbeats bear with a short cut; the hub asks about a request
    // silent for 2 s.
    let (client, engine) = start_hub(&hosts, &["--hb-misses", "30", "--recall-after", "2"]);
    start_engines(&hosts, 1, 1, &engine, &[]);
    wait_for_engines(&hosts, &client, "0");
    let conn: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&engine).unwrap()).unwrap();
    let mux = conn["link"].as_u64().expect("the engines' link port");
    // One round trip first: the engine's registration answer travels on
    // the same link, a moment after the client hears of the engine, and
    // must not be what the cut below catches in the queue.
    let warm = text(&hosts.console(0, &client, "%px 1\n"));
    assert!(warm.contains("Out[0:1]: 1"), "{warm}");
    // The engine's host is cut off; a request to it waits, unacknowledged,
    // in the hub host's send queue of the engine's mux connection. That
    // one connection is then torn down on the hub's side (ss -K), taking
    // the request with it, and the cable goes back: the engine reconnects
    // (its ZeroMQ heartbeat meets a connection the hub no longer has),
    // its other connections never noticed.
    hosts.cut(1);
    let file = client.to_str().expect("UTF-8");
    let mut console = spawn_console(&hosts, 0, &["--file", file, "--timeout", "20"]);
    feed(&mut console, b"%px 6 * 7\n%px 20 + 22\n");
    // More than ZeroMQ's own heartbeats (a few bytes each) could make: the
    // signed request, several hundred bytes.
    support::wait_until("the request waits in the hub's send queue", || {
        unacknowledged_to(&hosts, 1, mux) > 256
    });
    tear_down(
        &hosts,
        0,
        &["dst", &hosts.addr(1), "sport", "=", &format!(":{mux}")],
    );
    assert_eq!(
        unacknowledged_to(&hosts, 1, mux),
        0,
        "the connection is gone"
    );
    hosts.restore(1);
    let out = wait_output(console, WAIT, "the console");
    let shown = text(&out);
    assert!(
        shown.contains("Lost") && shown.contains("never reached engine 0"),
        "the lost request fails, saying so:\n{shown}"
    );
    assert!(shown.contains("did not run: submit it again"), "{shown}");
    assert!(
        shown.contains("Out[0:2]: 42"),
        "the engine serves the console's next request:\n{shown}"
    );
}

#[test]
fn a_reply_lost_on_its_way_to_the_client_comes_from_the_hubs_records() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(1) else {
        return;
    };
    // The hub and its engine on host 0, the client (a console) on host 1.
    let (client, engine) = start_hub(&hosts, &["--hb-misses", "30"]);
    start_engines(&hosts, 0, 1, &engine, &[]);
    wait_for_engines(&hosts, &client, "0");
    let read = |f: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()
    };
    let engine_mux = read(&engine)["link"]
        .as_u64()
        .expect("the engines' link port");
    let client_mux = read(&client)["mux"]
        .as_u64()
        .expect("the clients' mux port");
    let engines: Vec<u32> = hosts
        .zpar_processes(0)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"engine"))
        })
        .collect();
    assert_eq!(engines.len(), 1, "one engine process on host 0");
    let pid = engines[0].to_string();
    let signal = |sig: &str| {
        let done = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(done.success(), "kill {sig} {pid}");
    };
    // The engine holds the request unread until the client's host is cut
    // off; then its reply waits, unacknowledged, in the hub host's send
    // queue of the client's mux connection, which is torn down on the
    // hub's side (ss -K), and the cable goes back. The console asks the
    // hub about a request silent for 2 s, and gets the recorded reply.
    signal("-STOP");
    let file = hosts.dir().join("hub-profile/security/zpar-client.json");
    let file = file.to_str().expect("UTF-8");
    let args = ["--file", file, "--timeout", "20", "--recall-after", "2"];
    let mut console = spawn_console(&hosts, 1, &args);
    feed(&mut console, b"%px 6 * 7\n");
    let engine_mux = format!(":{engine_mux}");
    support::wait_until("the request waits unread at the engine", || {
        queued(&hosts, 0, &["dport", "=", &engine_mux], Queue::Unread) > 256
    });
    hosts.cut(1);
    signal("-CONT");
    support::wait_until("the reply waits in the hub's send queue", || {
        unacknowledged_to(&hosts, 1, client_mux) > 256
    });
    let filter = [
        "dst",
        &hosts.addr(1),
        "sport",
        "=",
        &format!(":{client_mux}"),
    ];
    tear_down(&hosts, 0, &filter);
    hosts.restore(1);
    let out = wait_output(console, WAIT, "the console");
    let shown = text(&out);
    assert!(
        shown.contains("Out[0:1]: 42"),
        "the result comes from the hub's records:\n{shown}"
    );
}

#[test]
fn a_hub_asked_to_bind_an_address_of_another_host_refuses_clearly() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(1) else {
        return;
    };
    let profile = hosts.dir().join("p");
    let cmd = hosts.zpar(
        0,
        &[
            "hub",
            "--profile-dir",
            profile.to_str().unwrap(),
            "--ip",
            "10.77.0.2",
        ],
    );
    let out = support::output_within(cmd, WAIT, "a hub on a foreign address");
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("10.77.0.2 is not an address of this host"),
        "{shown}"
    );
}

#[test]
fn a_host_cut_off_mid_allreduce_fails_the_survivors_who_go_on_without_it() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(2) else {
        return;
    };
    let (client, engine) = start_hub(&hosts, &[]);
    start_engines(&hosts, 1, 2, &engine, &[]);
    wait_for_engines(&hosts, &client, "0-1");
    start_engines(&hosts, 2, 2, &engine, &[]);
    wait_for_engines(&hosts, &client, "0-3");
    // One console for the whole story, fed line by line while it runs.
    let file = client.to_str().expect("UTF-8");
    let mut console = hosts
        .zpar(0, &["console", "--file", file, "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a console");
    let seen = std::sync::Arc::new(Mutex::new(String::new()));
    let mut stdout = console.stdout.take().expect("stdout");
    let sink = std::sync::Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("output")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut stdin = console.stdin.take().expect("stdin");
    let mut say = |line: &str| {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("writing to the console")
    };
    say("%comm com");
    say("%push add = |a, b| a + b");
    say("%px com.timeout = 3.0; print(`looping`)");
    say("%px --noblock let n = 0; loop { com.allreduce(add, 1); n += 1; }");
    support::wait_until("every engine loops over allreduces", || {
        seen.lock().expect("output").matches("looping").count() >= 4
    });
    hosts.cut(2);
    say("%wait 30");
    say("%targets 0,1");
    say("%comm com2");
    say("%px com2.allreduce(add, 1)");
    drop(stdin);
    let rest = wait_output(console, WAIT, "the console of the cut-off test");
    let _ = reader.join();
    let shown = format!(
        "{}{}",
        seen.lock().expect("output"),
        String::from_utf8_lossy(&rest.stderr)
    );
    for survivor in [0, 1] {
        let line = shown
            .lines()
            .find(|l| l.starts_with(&format!("[{survivor}:error]")))
            .unwrap_or_else(|| panic!("engine {survivor} reported no error:\n{shown}"));
        assert!(
            line.contains("engine 2") || line.contains("engine 3"),
            "the survivor's error names a lost engine: {line}\n{shown}"
        );
    }
    assert!(
        shown.contains("Out[0:")
            && shown
                .lines()
                .any(|l| l.starts_with("Out[0:") && l.ends_with(": 2"))
            && shown
                .lines()
                .any(|l| l.starts_with("Out[1:") && l.ends_with(": 2")),
        "a fresh communicator over the survivors works:\n{shown}"
    );
}

/// `zpar cluster start --engines ssh` from the hub host, over sshd on the
/// engine hosts; the seed workflow on the result; `zpar cluster stop`.
fn ssh_cluster(per_host: &[usize]) {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(per_host.len()) else {
        return;
    };
    let Some(ssh) = hosts.start_sshd() else {
        return;
    };
    let profile = hosts.dir().join("cluster");
    let dir = profile.to_str().expect("UTF-8").to_string();
    let total: usize = per_host.iter().sum();
    let host_list = per_host
        .iter()
        .enumerate()
        .map(|(h, n)| format!("{}:{n}", hosts.addr(h + 1)))
        .collect::<Vec<_>>()
        .join(",");
    let n = total.to_string();
    let ssh_args = ssh.join(" ");
    let start = hosts.zpar(
        0,
        &[
            "cluster",
            "start",
            "--profile-dir",
            &dir,
            "-n",
            &n,
            "--engines",
            "ssh",
            "--hosts",
            &host_list,
            "--ssh-args",
            &ssh_args,
            "--remote-zpar",
            zpar_bin(),
            "--location",
            HUB_ADDR,
            "--daemon",
        ],
    );
    let out = support::output_within(start, WAIT, "zpar cluster start --engines ssh");
    assert!(
        out.status.success(),
        "the ssh cluster did not start:\n{}",
        text(&out)
    );
    let client = profile.join("security").join("zpar-client.json");
    let ids = format!(
        "[{}]",
        (0..total)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let run = hosts.console(0, &client, &SEED.replace("ID_LIST", &ids));
    let shown = text(&run);
    assert_allreduced(&shown, total);
    for h in 1..=per_host.len() {
        assert!(
            !hosts.zpar_processes(h).is_empty(),
            "no engine ran on host {h}"
        );
    }
    stop_everywhere(&hosts, &dir, per_host.len());
}

#[test]
fn the_ssh_launcher_runs_the_seed_workflow_with_four_engines() {
    ssh_cluster(&[2, 2]);
}

#[test]
fn the_ssh_launcher_runs_the_seed_workflow_with_seven_engines() {
    ssh_cluster(&[4, 3]);
}

#[test]
fn the_mpi_launcher_gives_engines_their_ranks_as_ids_over_two_hosts() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(2) else {
        return;
    };
    if Command::new("mpiexec").arg("--version").output().is_err() {
        let why = "no mpiexec: install openmpi-bin (.ci/run does)";
        assert!(std::env::var_os("CI").is_none_or(|v| v.is_empty()), "{why}");
        eprintln!("skipping: {why}");
        return;
    }
    let Some(ssh) = hosts.start_sshd() else {
        return;
    };
    let profile = hosts.dir().join("cluster");
    let dir = profile.to_str().expect("UTF-8").to_string();
    let mpi_args = format!(
        "--allow-run-as-root --oversubscribe --host {}:2,{}:2",
        hosts.addr(1),
        hosts.addr(2)
    );
    let mut start = hosts.zpar(
        0,
        &[
            "cluster",
            "start",
            "--profile-dir",
            &dir,
            "-n",
            "4",
            "--engines",
            "mpi",
            "--mpi-args",
            &mpi_args,
            "--location",
            HUB_ADDR,
            "--daemon",
        ],
    );
    // Open MPI starts its remote daemons over ssh with these options.
    start
        .env("OMPI_MCA_plm_rsh_agent", "ssh")
        .env("OMPI_MCA_plm_rsh_args", ssh.join(" "));
    let out = support::output_within(start, WAIT, "zpar cluster start --engines mpi");
    assert!(
        out.status.success(),
        "the mpi cluster did not start:\n{}",
        text(&out)
    );
    let client = profile.join("security").join("zpar-client.json");
    let run = hosts.console(0, &client, &SEED.replace("ID_LIST", "[0, 1, 2, 3]"));
    let shown = text(&run);
    assert_allreduced(&shown, 4);
    // Open MPI fills the slots in order: ranks 0 and 1 on the first host,
    // 2 and 3 on the second; engine ids are the ranks.
    for (e, h) in [(0, 1), (1, 1), (2, 2), (3, 2)] {
        assert!(
            shown.contains(&format!("Out[{e}:3]: \"{}\"", hosts.addr(h))),
            "engine {e} is not rank {e} on host {h}:\n{shown}"
        );
    }
    stop_everywhere(&hosts, &dir, 2);
}

/// Bytes host `i` has sent into the bridge so far (host 0's bridge
/// interface, or an engine host's end of its link): what crossed its
/// link outward.
fn sent_into_bridge(hosts: &Hosts, i: usize) -> u64 {
    let dev = if i == 0 { "br0" } else { "eth0" };
    let out = Command::new("ip")
        .args(["-n", &hosts.ns(i), "-s", "-j", "link", "show", dev])
        .output()
        .expect("ip -s link");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip's JSON");
    stats[0]["stats64"]["tx"]["bytes"]
        .as_u64()
        .expect("a byte count")
}

/// Bytes the bridge has sent host `i` so far (its port's outward count).
fn sent_to_host(hosts: &Hosts, i: usize) -> u64 {
    let out = Command::new("ip")
        .args([
            "-n",
            &hosts.ns(0),
            "-s",
            "-j",
            "link",
            "show",
            &format!("v{i}"),
        ])
        .output()
        .expect("ip -s link");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip's JSON");
    stats[0]["stats64"]["tx"]["bytes"]
        .as_u64()
        .expect("a byte count")
}

/// The JSON text of the array `0..n`, as the console sends it (the size of
/// the value on the wire).
fn json_range_bytes(n: u64) -> u64 {
    (0..n).map(|i| i.to_string().len() as u64 + 1).sum::<u64>() + 1
}

/// Starts 2 engines on each of hosts `1..=hosts_used`, one host after the
/// other, so host `h` has engines `2(h-1)` and `2(h-1)+1`.
fn two_engines_per_host(hosts: &Hosts, client: &Path, engine: &Path, hosts_used: usize) {
    for h in 1..=hosts_used {
        start_engines(hosts, h, 2, engine, &[]);
        let ids = match h {
            1 => "0-1".to_string(),
            _ => format!("0-{}", 2 * h - 1),
        };
        wait_for_engines(hosts, client, &ids);
    }
}

/// A value pushed to six engines on three hosts leaves the hub's host once,
/// not once per engine: the hub relays it along a chain of engines, host
/// by host (each host's link carries it once in and once out). Each
/// engine gets it whole, with CURVE on (the default across hosts); a
/// scatter of uneven blocks over the six gathers back whole.
#[test]
fn a_value_pushed_to_six_engines_on_three_hosts_leaves_the_hub_host_once() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(3) else {
        return;
    };
    let (client, engine) = start_hub(&hosts, &[]);
    two_engines_per_host(&hosts, &client, &engine, 3);
    let n = 1_500_000;
    let before = sent_into_bridge(&hosts, 0);
    let into_host_2 = sent_to_host(&hosts, 2);
    let out = hosts.console(
        0,
        &client,
        &format!(
            "%push big = 0..{n}\n%px big.len == {n} && big[{}] == {}\n",
            n - 1,
            n - 1
        ),
    );
    let sent = sent_into_bridge(&hosts, 0) - before;
    let into_host_2 = sent_to_host(&hosts, 2) - into_host_2;
    let shown = text(&out);
    for e in 0..6 {
        assert!(
            shown.contains(&format!("Out[{e}:1]: true")),
            "engine {e} did not get the value whole:\n{shown}"
        );
    }
    let value = json_range_bytes(n);
    assert!(
        sent < value * 3 / 2,
        "the hub's host sent {sent} bytes for a value of {value} to 6 engines on 3 hosts: \
         more than one copy"
    );
    assert!(
        into_host_2 < value * 3 / 2,
        "host 2 (two engines) took in {into_host_2} bytes for a value of {value}: more than \
         one copy"
    );
    // 1,000,003 over six: the first block has one more.
    let out = hosts.console(
        0,
        &client,
        "%scatter part = 0..1000003\n%px part.len\n%gather part\n",
    );
    let shown = text(&out);
    for e in 0..6 {
        let len = if e == 0 { 166_668 } else { 166_667 };
        assert!(
            shown
                .lines()
                .any(|l| l.contains(&format!("Out[{e}:")) && l.ends_with(&format!("]: {len}"))),
            "engine {e}'s block is not {len} long:\n{shown}"
        );
    }
    assert!(
        shown.contains("1000002] (1000003 items)"),
        "the gather did not give the range back whole:\n{shown}"
    );
}

/// A host cut off while a value is relayed through it: its engines' pushes
/// fail (`EngineDied`), the engines after it in the chain fail naming the
/// engine they waited on, those before it get the value, and the next push
/// to the engines left works. Links are slowed (`tc`) so the cut lands
/// mid-transfer.
#[test]
fn a_host_cut_off_mid_relay_fails_its_engines_and_those_after_it_and_the_next_push_works() {
    let _watchdog = support::watchdog();
    let Some(hosts) = Hosts::new(3) else {
        return;
    };
    let (client, engine) = start_hub(&hosts, &[]);
    two_engines_per_host(&hosts, &client, &engine, 3);
    for i in 1..=3 {
        let out = Command::new("tc")
            .args(["-n", &hosts.ns(0), "qdisc", "add", "dev", &format!("v{i}")])
            .args([
                "root", "tbf", "rate", "20mbit", "burst", "64kb", "latency", "400ms",
            ])
            .output()
            .expect("tc (install iproute2)");
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let n = 1_500_000;
    let file = client.to_str().expect("UTF-8");
    let mut console = hosts
        .zpar(0, &["console", "--file", file, "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a console");
    let mut stdin = console.stdin.take().expect("stdin");
    let mut say = |line: &str| {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("writing to the console")
    };
    // Engines 0, 1 (host 1) → 2, 3 (host 2) → 4, 5 (host 3).
    let into_host_2 = sent_to_host(&hosts, 2);
    say(&format!("%push big = 0..{n}"));
    support::wait_until("the value is on its way into host 2", || {
        sent_to_host(&hosts, 2) - into_host_2 > 1 << 20
    });
    hosts.cut(2);
    say(&format!("%px --targets 0,1,4,5 big.len == {n}"));
    say("%targets 0,1,4,5");
    say(&format!("%push again = 0..{n}"));
    say(&format!(
        "%px again.len == {n} && again[{}] == {}",
        n - 1,
        n - 1
    ));
    drop(stdin);
    let out = wait_output(console, WAIT, "the console of the cut-mid-relay test");
    let shown = text(&out);
    for e in [2, 3] {
        assert!(
            shown.contains(&format!("[{e}:error] EngineDied")),
            "engine {e} (host 2) died:\n{shown}"
        );
    }
    for (e, through, from) in [(4, "[0, 1, 2, 3]", 3), (5, "[0, 1, 2, 3, 4]", 4)] {
        let line = shown
            .lines()
            .find(|l| l.starts_with(&format!("[{e}:error] Lost")))
            .unwrap_or_else(|| panic!("engine {e}'s push did not fail as lost:\n{shown}"));
        assert!(
            line.contains(&format!("relayed through engines {through}"))
                && line.contains(&format!("(engine {from}, which passes them on")),
            "engine {e}'s push names the engines it waited on: {line}"
        );
    }
    // The first value: whole on the engines before the cut, no part of it
    // after; then the next push reaches all four.
    let first = |e: u32| {
        shown
            .lines()
            .find(|l| {
                l.starts_with(&format!("Out[{e}:1]"))
                    || l.starts_with(&format!("[{e}:error] UnknownName"))
            })
            .unwrap_or_else(|| panic!("nothing from engine {e} about the first value:\n{shown}"))
            .to_string()
    };
    for e in [0, 1] {
        assert_eq!(first(e), format!("Out[{e}:1]: true"), "{shown}");
    }
    for e in [4, 5] {
        assert!(
            first(e).contains("not found: big"),
            "engine {e} kept part of the value:\n{shown}"
        );
    }
    for e in [0, 1, 4, 5] {
        assert!(
            shown.contains(&format!("Out[{e}:2]: true")),
            "engine {e} got the next push:\n{shown}"
        );
    }
}
