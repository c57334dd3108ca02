//! `zpar console` against real clusters: scripted sessions through a pipe
//! (every command, its output checked line by line), Ctrl-C as a signal,
//! the hub going away, engines joining and leaving, and one session
//! through a pseudo-terminal (prompt, colour, completion, Ctrl-C, history
//! across two sessions) driven by Python's standard `pty` module.
//!
//! Nothing here can hang: every read has a deadline, and the console is
//! killed on drop.

use crate::support::{self, zpar_bin, WAIT};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A console process with piped stdin and stdout, killed on drop.
struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Console {
    fn start(profile_dir: &Path) -> Console {
        let mut child = Command::new(zpar_bin())
            .args(["console", "--timeout", "10", "--profile-dir"])
            .arg(profile_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting zpar console");
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
        let stdin = child.stdin.take();
        Console {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn transcript(&self) -> String {
        self.seen.join("\n")
    }

    fn send(&mut self, input: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{input}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .expect("writing to the console");
    }

    /// Waits for a line containing `needle`; returns it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line with {needle:?} ({e:?}); the console printed:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Closes stdin and waits for the exit; the exit code and every line.
    fn finish(mut self) -> (i32, Vec<String>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "the console did not exit; it printed:\n{}",
                    self.transcript()
                );
            }
            // Also collects output meanwhile.
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line);
            }
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            self.seen.push(line);
        }
        (code, std::mem::take(&mut self.seen))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a whole script through a pipe, as `zpar console < script` does.
fn run_script(profile_dir: &Path, script: &str) -> (i32, Vec<String>) {
    let mut c = Console::start(profile_dir);
    c.stdin
        .as_mut()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("writing the script");
    c.finish()
}

/// Checks that `lines` hold lines equal to `expected`, in this order (other
/// lines may come between). An expected line ending in `...` matches the
/// lines that start with what comes before.
fn assert_in_order(lines: &[String], expected: &[&str]) {
    let mut at = 0;
    for want in expected {
        let matches = |l: &String| match want.strip_suffix("...") {
            Some(prefix) => l.starts_with(prefix),
            None => l == want,
        };
        match lines[at..].iter().position(matches) {
            Some(i) => at += i + 1,
            None => panic!(
                "no line {want:?} after line {at}; the console printed:\n{}",
                lines.join("\n")
            ),
        }
    }
}

fn index_of(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{}", lines.join("\n")))
}

const SCRIPT: &str = r#"%px print(`hello from ${40 + 2}`); 6 * 7
%push greeting = "hi"
%push cfg = {"n": 3, "xs": [1, 2]}
%push add = |a, b| a + b
%px greeting + " " + cfg.n + " " + add.call(1, 2)
%pull greeting
%scatter data = 0..10
%px data
%px let doubled = data.map(|x| x * 2);
%gather doubled
%scatter --flatten id = [0, 1]
%comm com
%px com.allreduce(add, data, false)
%px let ids_sum = com.reduce(add, id + 10, true); ids_sum
%px if true {
  let a = 1;
  a + undefined_name
}
%px --targets 1 id
%targets 0
%px id
%targets all
%engines
%result
%px --noblock loop {}
%px --noblock 1 + 1
%wait 0.5
%abort
%interrupt
%wait
%wait
%px --timeout 0.5 loop {}
%px 1 + 1
%clear
%pull greeting
%autopx
40 + 2
%autopx
plain code
%history
%help scatter
%bogus
%quit
%px print("not reached")
"#;

#[test]
fn console_script_runs_every_command() {
    let (cluster, _client) = support::cluster(2);
    let (code, lines) = run_script(&cluster.profile().dir, SCRIPT);
    let all = lines.join("\n");
    assert_eq!(code, 1, "a failed command makes the exit code 1:\n{all}");
    assert!(
        lines[0].starts_with("zpar console: hub at tcp://127.0.0.1:")
            && lines[0].contains("engines 0,1 (2); targets: all"),
        "{all}"
    );
    // No prompts and no colour without a terminal.
    assert!(!all.contains("In [") && !all.contains('\x1b'), "{all}");
    // %px: the streamed lines, then the values in engine order.
    for e in ["0", "1"] {
        let out = index_of(&lines, &format!("[stdout:{e}] hello from 42"));
        assert!(out < index_of(&lines, "Out[0:1]: 42"), "{all}");
    }
    assert!(index_of(&lines, "Out[0:1]: 42") < index_of(&lines, "Out[1:1]: 42"));
    assert_in_order(
        &lines,
        &[
            // %push: JSON, a Rhai literal and a function; then used.
            "pushed greeting to engines 0,1",
            "pushed cfg to engines 0,1",
            "pushed add to engines 0,1",
            "Out[0:2]: \"hi 3 3\"",
            "Out[1:2]: \"hi 3 3\"",
            // %pull
            "[0] greeting = \"hi\"",
            "[1] greeting = \"hi\"",
            // %scatter / %gather round trip
            "scattered 10 items of data over engines 0,1",
            "Out[0:3]: [0, 1, 2, 3, 4]",
            "Out[1:3]: [5, 6, 7, 8, 9]",
            "doubled = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]",
            "scattered 2 items of id over engines 0,1",
            // %comm, then allreduce and reduce along the tree
            "com: a binary tree communicator over engines 0,1, root 0:",
            "0",
            "  1",
            "Out[0:5]: 45",
            "Out[1:5]: 45",
            "Out[0:6]: 21",
            "Out[1:6]: 11",
            // an error per engine, with line and column
            "[0:error] UnknownName: Variable not found: undefined_name (line 3, column 7)",
            "[1:error] UnknownName: Variable not found: undefined_name (line 3, column 7)",
            // %px --targets, %targets
            "Out[1:8]: 1",
            "targets: 0 (engine 0)",
            "Out[0:8]: 0",
            "targets: all (engines 0,1)",
            // %engines
            "engine  status  queue  completed  target",
        ],
    );
    let only = index_of(&lines, "targets: 0 (engine 0)");
    assert_eq!(
        lines[only + 1..only + 3],
        ["Out[0:8]: 0", "targets: all (engines 0,1)"],
        "%targets 0 leaves engine 1 out"
    );
    let engines = index_of(&lines, "engine  status  queue  completed  target");
    for (row, id) in lines[engines + 1..engines + 3].iter().zip(["0", "1"]) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], id, "{row}");
        assert_eq!(cols[1], "idle", "{row}");
        assert_eq!(cols[2], "0", "{row}");
        assert_eq!(cols[4], "yes", "{row}");
    }
    assert_in_order(
        &lines,
        &[
            // %result shows the last %px again
            "engine  status  queue  completed  target",
            "Out[0:8]: 0",
            // a loop sent without waiting, work queued behind it
            "sent to engines 0,1; %wait or %result show the outcome",
            "sent to engines 0,1; %wait or %result show the outcome",
            "error: still running after 500ms: 0/2 engines done (%wait again, or %interrupt)",
            "aborted the work queued on engines 0,1",
            "interrupted engines 0,1",
            "[0:error] Interrupted: interrupted by the client (line 1, column 6)",
            "[1:error] Interrupted: interrupted by the client (line 1, column 6)",
            "[0:error] Aborted: the request was aborted before it ran",
            "[1:error] Aborted: the request was aborted before it ran",
            "nothing is running",
            // a timeout stops an infinite loop on the engines
            "[0:error] Timeout: ...",
            "[1:error] Timeout: ...",
            // and the engines are alive
            "Out[0:12]: 2",
            "Out[1:12]: 2",
            "cleared the namespaces of engines 0,1",
            "[0:error] UnknownName: no variable named \"greeting\" on this engine",
            "%autopx on: plain lines run on the targets (%autopx again to stop)",
            "Out[0:13]: 42",
            "Out[1:13]: 42",
            "%autopx off",
            "error: plain code runs nowhere here: use `%px CODE` to run it on the engines, or %autopx to send every plain line (%help lists the commands)",
            // %history lists the session, multi-line blocks indented
            "   1  %px print(`hello from ${40 + 2}`); 6 * 7",
            "  15  %px if true {",
            "        let a = 1;",
            "%scatter [--targets SPEC] [--flatten] NAME = SEQUENCE",
            "error: unknown command %bogus (%help lists the commands)",
        ],
    );
    for l in lines.iter().filter(|l| l.contains("Timeout:")) {
        assert!(l.contains("ran past its timeout of 0.5 s"), "{l}");
    }
    assert!(!all.contains("not reached"), "%quit stops reading:\n{all}");
}

#[test]
fn console_script_that_succeeds_exits_zero() {
    let (cluster, _client) = support::cluster(1);
    let (code, lines) = run_script(
        &cluster.profile().dir,
        "%push x = 20\n%px x * 2 + 2\n\n%wait\n",
    );
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert_in_order(
        &lines,
        &["pushed x to engine 0", "Out[0:1]: 42", "nothing is running"],
    );
}

#[test]
fn console_ctrl_c_interrupts_a_running_loop_and_the_engines_live_on() {
    let (cluster, client) = support::cluster(2);
    let mut c = Console::start(&cluster.profile().dir);
    c.expect("zpar console: hub at");
    c.send("%px loop {}");
    // The progress line shows after a second: the loop runs.
    c.expect("[progress] 0/2 engines done");
    let kill = Command::new("kill")
        .args(["-INT", &c.child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success());
    c.expect("[zpar] Ctrl-C: interrupting engines 0,1");
    c.expect("[0:error] Interrupted: interrupted by the client (line 1, column 6)");
    c.expect("[1:error] Interrupted: interrupted by the client (line 1, column 6)");
    let (code, lines) = c.finish();
    assert_eq!(code, 130, "Ctrl-C ends a script:\n{}", lines.join("\n"));
    let v = client
        .all()
        .execute("6 * 7")
        .expect("execute")
        .get_timeout(WAIT)
        .expect("the engines still answer");
    assert_eq!(v, vec![zpar::Value::Int(42), zpar::Value::Int(42)]);
}

#[test]
fn console_announces_engines_joining_and_leaving() {
    let (mut cluster, client) = support::cluster(1);
    let mut c = Console::start(&cluster.profile().dir);
    c.expect("zpar console: hub at");
    cluster.add_engines(1).expect("adding an engine");
    c.expect("[zpar] engine 1 joined");
    client
        .wait_for_engines(2, WAIT)
        .expect("engine 1 registers");
    c.send("%px 1 + 1");
    c.expect("Out[1:1]: 2");
    cluster.kill_engine(1).expect("killing engine 1");
    c.expect("[zpar] engine 1 left");
    c.send("%engines");
    c.expect("     0  idle");
    let (code, lines) = c.finish();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.starts_with("     1 ")), "{lines:?}");
}

#[test]
fn console_says_when_the_hub_is_gone_keeps_running_and_sees_it_back() {
    let (mut cluster, _client) = support::cluster(1);
    let mut c = Console::start(&cluster.profile().dir);
    c.expect("zpar console: hub at");
    c.send("%px 1 + 1");
    c.expect("Out[0:1]: 2");
    cluster.kill_hub().expect("killing the hub");
    let notice = c.expect("is not answering; commands fail until it is back");
    assert!(
        notice.starts_with("[zpar] the hub at tcp://127.0.0.1:"),
        "{notice}"
    );
    c.send("%px 2 + 2");
    let e = c.expect("error:");
    assert!(
        e.contains("is not answering, so nothing was sent"),
        "a clear error, at once: {e}"
    );
    c.send("%help quit");
    c.expect("%quit");
    // A hub restarted in place: the console says so, and commands work.
    let hub = Command::new(zpar_bin())
        .args(["hub", "--reuse", "--hb-period-ms", "200", "--profile-dir"])
        .arg(&cluster.profile().dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("restarting the hub");
    let _hub = KillOnDrop(hub);
    c.expect("answers again");
    c.expect("[zpar] engine ");
    c.send("%px 3 + 3");
    let out = c.expect(": 6");
    assert!(out.starts_with("Out["), "{out}");
    let (code, lines) = c.finish();
    assert_eq!(code, 1, "{}", lines.join("\n"));
}

/// A process of the test's own, killed when the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Drives `zpar console` through a pseudo-terminal. Prints the transcript
/// and exits 1 on the first expectation not met.
const PTY_DRIVER: &str = r#"
import os, pty, re, select, signal, struct, subprocess, sys, time, fcntl, termios

ZPAR, PROFILE = sys.argv[1], sys.argv[2]
STEP = 30.0
CSI = re.compile(rb'\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r')
extra = []
consoles = []

def cleanup():
    for p in extra:
        if p.poll() is None:
            p.kill()
            p.wait()
    for c in consoles:
        c.kill()

def fail(msg, c=None):
    sys.stderr.write("PTY TEST FAILED: " + msg + "\n")
    if c is not None:
        sys.stderr.write("--- screen text (escapes removed) ---\n")
        sys.stderr.write(c.clean[-6000:].decode(errors="replace") + "\n---\n")
    cleanup()
    sys.exit(1)

class Console:
    def __init__(self):
        env = dict(os.environ, TERM="xterm")
        env.pop("NO_COLOR", None)
        pid, fd = pty.fork()
        if pid == 0:
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
                os.execve(ZPAR, [ZPAR, "console", "--timeout", "10", "--profile-dir", PROFILE], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.raw, self.tail, self.clean, self.pos = b"", b"", b"", 0
        self.status = None
        consoles.append(self)

    def feed(self, data):
        self.raw += data
        buf = self.tail + data
        cut = len(buf)
        i = buf.rfind(b"\x1b")
        if i != -1 and len(buf) - i < 32 and not CSI.match(buf, i):
            cut = i  # an escape split across reads: wait for its end
        self.clean += CSI.sub(b"", buf[:cut])
        self.tail = buf[cut:]

    def read_some(self, timeout):
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not r:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if not data:
            return False
        self.feed(data)
        return True

    def expect(self, pattern, timeout=STEP):
        rx = re.compile(pattern.encode())
        deadline = time.time() + timeout
        while True:
            m = rx.search(self.clean, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.time()
            if left <= 0:
                fail("timed out waiting for %r" % pattern, self)
            if not self.read_some(min(left, 0.5)):
                m = rx.search(self.clean, self.pos)
                if m:
                    self.pos = m.end()
                    return m
                fail("the console ended while waiting for %r" % pattern, self)

    def send(self, s):
        os.write(self.fd, s.encode())

    def wait_exit(self, timeout=STEP):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
                return self.status
            self.read_some(0.1)
        fail("the console did not exit", self)

    def kill(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            self.status = -9

# --- first session ---
c = Console()
c.expect(r"zpar console: hub at tcp://127\.0\.0\.1:\d+; engines 0,1")
c.expect(r"In \[1\]: ")
if b"\x1b[32m" not in c.raw:
    fail("the prompt is not coloured on a terminal", c)
c.send("%push alpha_value = 41\r")
c.expect(r"pushed alpha_value to engines 0,1")
c.expect(r"In \[2\]: ")
# Tab completes a name the session pushed ...
c.send("%px alpha_v\t")
c.expect(r"alpha_value")
c.send(" + 1\r")
c.expect(r"Out\[0:1\]: 42")
c.expect(r"Out\[1:1\]: 42")
c.expect(r"In \[3\]: ")
# ... and a command.
c.send("%autop\t")
c.expect(r"%autopx")
c.send("\r")
c.expect(r"%autopx on")
c.expect(r"\[px\] In \[4\]: ")
c.send("alpha_value * 2\r")
c.expect(r"Out\[0:2\]: 82")
c.send("%autopx\r")
c.expect(r"%autopx off")
c.expect(r"In \[6\]: ")
# An unfinished block continues on the next line.
c.send("%px if true {\r")
c.send("  40 + 2\r")
c.send("}\r")
c.expect(r"Out\[0:3\]: 42")
c.expect(r"In \[7\]: ")
# Ctrl-C interrupts an infinite loop on the engines and returns to the prompt.
c.send("%px loop {}\r")
c.expect(r"0/2 engines done \(\d+\.\d s\)")
c.send("\x03")
c.expect(r"Ctrl-C: interrupting engines 0,1")
c.expect(r"\[0:error\] Interrupted: interrupted by the client \(line 1, column 6\)")
c.expect(r"\[1:error\] Interrupted: interrupted by the client")
c.expect(r"In \[8\]: ")
# Ctrl-C at the prompt drops the line.
c.send("%px this_is_dropped")
c.expect(r"this_is_dropped")
c.send("\x03")
c.expect(r"In \[8\]: ")
c.send("%px 40 + 2\r")
c.expect(r"Out\[0:5\]: 42")
c.expect(r"In \[9\]: ")
# An engine joining and leaving is announced on its own line; the prompt
# comes back after it.
eng = subprocess.Popen([ZPAR, "engine", "--profile-dir", PROFILE],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
extra.append(eng)
m = c.expect(r"\[zpar\] engine (\d+) joined\n")
new_id = m.group(1).decode()
c.expect(r"In \[9\]: ")
eng.terminate()
try:
    eng.wait(timeout=STEP)
except subprocess.TimeoutExpired:
    fail("the extra engine did not stop", c)
c.expect(r"\[zpar\] engine %s left" % new_id)
c.expect(r"In \[9\]: ")
c.send("%px 40 + 2\r")
c.expect(r"Out\[1:6\]: 42")
c.expect(r"In \[10\]: ")
# Ctrl-D leaves.
c.send("\x04")
if c.wait_exit() != 0:
    fail("exit code %s after Ctrl-D" % c.status, c)
if not os.path.exists(os.path.join(PROFILE, "console_history")):
    fail("no history file in the profile folder", c)

# --- second session: the history is still there ---
c = Console()
c.expect(r"In \[1\]: ")
c.send("\x1b[A")
c.expect(r"%px 40 \+ 2")
c.send("\r")
c.expect(r"Out\[0:1\]: 42")
c.expect(r"In \[2\]: ")
# Ctrl-R searches back through the history.
c.send("\x12")
c.send("alpha_value +")
c.expect(r"reverse-i-search\)`alpha_value \+': %px alpha_value \+ 1")
c.send("\r")
c.expect(r"Out\[0:2\]: 42")
c.expect(r"In \[3\]: ")
c.send("%quit\r")
if c.wait_exit() != 0:
    fail("exit code %s after %%quit" % c.status, c)
cleanup()
print("pty session ok")
"#;

#[test]
fn console_through_a_pseudo_terminal() {
    let (cluster, _client) = support::cluster(2);
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PTY_DRIVER)
        .arg(zpar_bin())
        .arg(&cluster.profile().dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the pseudo-terminal driver");
    // The driver bounds each step itself; this bounds the whole.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the pseudo-terminal driver did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("driver output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success() && stdout.contains("pty session ok"),
        "the pseudo-terminal session failed ({status}):\n{stdout}\n{stderr}"
    );
}
