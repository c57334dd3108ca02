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
        Console::start_with(profile_dir, |_| {})
    }

    /// Started with `configure` applied to its command (standard error,
    /// environment).
    fn start_with(profile_dir: &Path, configure: impl FnOnce(&mut Command)) -> Console {
        let mut cmd = Command::new(zpar_bin());
        cmd.args(["console", "--timeout", "10", "--profile-dir"])
            .arg(profile_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("starting zpar console");
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
%run {SCRIPTS}/setup.rhai
%px tripled(base)
%run --targets 1 {SCRIPTS}/broken.rhai
%run {SCRIPTS}/missing.rhai
%quit
%px print("not reached")
"#;

#[test]
fn console_script_runs_every_command() {
    let _watchdog = support::watchdog();
    let (cluster, _client) = support::cluster(2);
    // Files for %run; the one it imports is found next to it.
    let scripts = cluster.profile().dir.join("scripts");
    std::fs::create_dir_all(scripts.join("lib")).expect("mkdir");
    for (name, text) in [
        (
            "setup.rhai",
            "import \"lib/util\" as util;\nlet base = 10;\nfn tripled(x) { util::twice(x) + x }\n\"ready\"",
        ),
        ("lib/util.rhai", "fn twice(x) { x * 2 }"),
        ("broken.rhai", "let ok = 1;\nok + nowhere"),
    ] {
        std::fs::write(scripts.join(name), text).expect("writing a script");
    }
    let scripts = scripts.display().to_string();
    let script = SCRIPT.replace("{SCRIPTS}", &scripts);
    let (code, lines) = run_script(&cluster.profile().dir, &script);
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
            "com: a tree communicator over engines 0,1, root 0:",
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
            "engine  status  queue  completed  target  host",
        ],
    );
    let only = index_of(&lines, "targets: 0 (engine 0)");
    assert_eq!(
        lines[only + 1..only + 3],
        ["Out[0:8]: 0", "targets: all (engines 0,1)"],
        "%targets 0 leaves engine 1 out"
    );
    let engines = index_of(&lines, "engine  status  queue  completed  target  host");
    for (row, id) in lines[engines + 1..engines + 3].iter().zip(["0", "1"]) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], id, "{row}");
        assert_eq!(cols[1], "idle", "{row}");
        assert_eq!(cols[2], "0", "{row}");
        assert_eq!(cols[4], "yes", "{row}");
        assert_eq!(cols[5], "127.0.0.1", "{row}");
    }
    assert_in_order(
        &lines,
        &[
            // %result shows the last %px again
            "engine  status  queue  completed  target  host",
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
    // %run: a file (and its import) on every target, then its definitions
    // used; an engine's error at the file's line; a missing file reported
    // before anything is sent.
    let broken = format!(
        "[1:error] UnknownName: Variable not found: nowhere ({scripts}/broken.rhai, line 2, column 6)"
    );
    let missing =
        format!("error: {scripts}/missing.rhai: cannot run this script file: no such file...");
    assert_in_order(
        &lines,
        &[
            "Out[0:14]: \"ready\"",
            "Out[1:14]: \"ready\"",
            "Out[0:15]: 30",
            "Out[1:15]: 30",
            &broken,
            &missing,
        ],
    );
    assert!(
        !all.contains("[0:error] UnknownName: Variable not found: nowhere"),
        "{all}"
    );
    for l in lines.iter().filter(|l| l.contains("Timeout:")) {
        assert!(l.contains("ran past its timeout of 0.5 s"), "{l}");
    }
    assert!(!all.contains("not reached"), "%quit stops reading:\n{all}");
}

#[test]
fn console_script_that_succeeds_exits_zero() {
    let _watchdog = support::watchdog();
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

/// Eight engines fail alike: one line, even where each error names its
/// own engine; plain arrays of numbers take the toolkit's reductions.
#[test]
fn console_groups_errors_that_differ_only_by_their_engine() {
    let _watchdog = support::watchdog();
    let (cluster, _client) = support::cluster(8);
    let (_, lines) = run_script(
        &cluster.profile().dir,
        "%scatter d = 0..16\n%px d.sum()\n%px d.cumsum()\n",
    );
    assert_in_order(
        &lines,
        &[
            "scattered 16 items of d over engines 0-7",
            "Out[0:1]: 1",
            "Out[7:1]: 29",
            "[0-7:error] UnknownName: the engine has no function cumsum (array): plain arrays of numbers take sum...",
        ],
    );
    let errors = lines.iter().filter(|l| l.contains(":error]")).count();
    assert_eq!(errors, 1, "{}", lines.join("\n"));
}

#[test]
fn console_binds_engines_as_jupyter_kernels() {
    let _watchdog = support::watchdog();
    let (cluster, _client) = support::cluster(2);
    let security = cluster.profile().security_dir();
    let (code, lines) = run_script(
        &cluster.profile().dir,
        "%bind_kernel --targets 1\n%bind_kernel\n",
    );
    assert_eq!(code, 0, "{}", lines.join("\n"));
    let line = |id: u32| {
        format!(
            "[{id}] kernel: jupyter console --existing {}",
            security.join(format!("kernel-{id}.json")).display()
        )
    };
    // Engine 1 first; then both, engine 1 with the same file as before.
    assert_in_order(&lines, &[&line(1), &line(0), &line(1)]);
    assert!(security.join("kernel-0.json").exists());
    assert!(security.join("kernel-1.json").exists());
}

#[test]
fn console_ctrl_c_interrupts_a_running_loop_and_the_engines_live_on() {
    let _watchdog = support::watchdog();
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

/// `%map` shows results as they come (in input order with `--ordered`),
/// labels its tasks, and over an endless range runs until Ctrl-C cancels
/// it: the tasks in flight are aborted or stopped, the engines live on.
#[test]
fn console_map_shows_results_as_they_come_and_ctrl_c_cancels_an_endless_one() {
    let _watchdog = support::watchdog();
    let (cluster, client) = support::cluster(2);
    let mut c = Console::start(&cluster.profile().dir);
    c.expect("zpar console: hub at");
    c.send("%map --ordered --max 4 --label squares 0..20 |x| x * x");
    c.expect("[0] 0");
    c.expect("[19] 361");
    c.expect("mapped 20 items");
    c.send("%map [1, 0, 2] |x| 10 / x");
    c.expect("mapped 3 items, 1 failed");
    c.send("%map --max 2 0.. |x| { let t = timestamp(); while t.elapsed < 0.05 {} x }");
    c.expect("[3] ");
    let kill = Command::new("kill")
        .args(["-INT", &c.child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success());
    c.expect("cancelled the map after");
    let (code, lines) = c.finish();
    assert_eq!(code, 130, "Ctrl-C ends a script:\n{}", lines.join("\n"));
    let v = client
        .all()
        .execute("6 * 7")
        .expect("execute")
        .get_timeout(WAIT)
        .expect("the engines still answer");
    assert_eq!(v, vec![zpar::Value::Int(42), zpar::Value::Int(42)]);
    let labelled = client
        .db_query(
            serde_json::json!({"label": {"$glob": "squa*"}}),
            Some(&["msg_id"]),
        )
        .expect("db_query");
    assert_eq!(labelled.len(), 20, "{labelled:?}");
}

#[test]
fn console_announces_engines_joining_and_leaving() {
    let _watchdog = support::watchdog();
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
    let _watchdog = support::watchdog();
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
    let _hub = support::Reaper::of(hub);
    // The client announces the engine as soon as the hub is back; the
    // console's own watch says "answers again" on its next beat: either order.
    let mut want = vec!["answers again", "[zpar] engine "];
    while !want.is_empty() {
        let line = c.expect("");
        want.retain(|w| !line.contains(w));
    }
    c.send("%px 3 + 3");
    let out = c.expect(": 6");
    assert!(out.starts_with("Out["), "{out}");
    let (code, lines) = c.finish();
    assert_eq!(code, 1, "{}", lines.join("\n"));
}

#[test]
fn console_prints_no_log_lines_when_the_hub_goes() {
    let _watchdog = support::watchdog();
    let (mut cluster, _client) = support::cluster(1);
    let err_file = cluster.profile().dir.join("console.err");
    let err = std::fs::File::create(&err_file).expect("creating console.err");
    let mut c = Console::start_with(&cluster.profile().dir, |cmd| {
        cmd.stderr(err).env_remove("ZPAR_LOG");
    });
    c.expect("zpar console: hub at");
    // A request pending when the hub goes fails once the client finds the
    // hub lost, which the client also logs (a `zpar_client` warning).
    c.send("%px --noblock loop {}");
    c.expect("sent to engine 0");
    cluster.kill_hub().expect("killing the hub");
    c.expect("is not answering; commands fail until it is back");
    c.send("%wait");
    let failed = c.expect("error");
    assert!(failed.contains("hub"), "{failed}");
    let (_, lines) = c.finish();
    let logged = std::fs::read_to_string(&err_file).expect("reading console.err");
    assert!(
        !logged.contains("WARN") && !logged.contains("lost the hub"),
        "the console says it in its own lines, not as log lines: {logged}\n{}",
        lines.join("\n")
    );
}

/// Drives `zpar console` through a pseudo-terminal (Python's standard `pty`
/// module). Prints the transcript and exits 1 on the first expectation not
/// met.
const PTY_DRIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/integration/pty_driver.py"
);

#[test]
fn console_through_a_pseudo_terminal() {
    let _watchdog = support::Watchdog::start(Duration::from_secs(240));
    let (cluster, _client) = support::cluster(2);
    let mut driver = Command::new("python3");
    driver
        .arg(PTY_DRIVER)
        .arg("zpar")
        .arg(zpar_bin())
        .arg(&cluster.profile().dir);
    // The driver bounds each step itself; this bounds the whole.
    let out = support::output_within(
        driver,
        Duration::from_secs(180),
        "the pseudo-terminal driver",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("pty session ok"),
        "the pseudo-terminal session failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
