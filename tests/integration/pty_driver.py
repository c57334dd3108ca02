"""Drives a console through a pseudo-terminal for the integration tests:
`zpar console` (tests/integration/console.rs) and `jupyter console` against
zpar kernels (tests/integration/kernel.rs).

Usage: python3 pty_driver.py zpar ZPAR_BINARY PROFILE_DIR
       python pty_driver.py existing CONNECTION_FILE
       python pty_driver.py kernelspec KERNEL_NAME RUNTIME_DIR

`zpar`: two `zpar console` sessions on a running cluster: coloured prompt,
tab completion, %autopx, a block over several lines, Ctrl-C interrupting the
engines and dropping a line at the prompt, engines joining and leaving,
Ctrl-D, then history (up arrow, Ctrl-R) in a second session. Prints "pty
session ok".
`existing`: `jupyter console --existing FILE` on a cluster engine bound as a
kernel: its banner, `40 + 2` shows `Out[1]: 42`, a block typed over several
lines (the kernel's is_complete keeps Enter from running it early), Ctrl-D
leaves the kernel running. Prints "jupyter console ok".
`kernelspec`: `jupyter console --kernel NAME` starts a standalone zpar kernel
through the installed kernelspec, runs code with output, and on Ctrl-D shuts
it down: no process is left running with RUNTIME_DIR (where Jupyter put the
kernel's connection file) in its command line. Prints "jupyter console ok".

Every step has a deadline (STEP seconds). On the first expectation not met
it prints the screen text to stderr and exits 1. Python's standard library
(and, for the Jupyter modes, jupyter_console in this Python).
"""
import os, pty, re, select, signal, struct, subprocess, sys, time, fcntl, termios

STEP = 30.0
# CSI and OSC sequences, charset and keypad switches, carriage returns.
CSI = re.compile(rb'\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r')
# `zpar console` colours only on a terminal without NO_COLOR.
ZPAR_ENV = {"TERM": "xterm", "NO_COLOR": None}
# prompt_toolkit's cursor position requests would wait for an answer.
JUPYTER_ENV = {"TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
JUPYTER = [sys.executable, "-m", "jupyter_console"]
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
    """A program on a pseudo-terminal of 50 x 200: argv, with `env_changes`
    (None removes a variable) over this environment."""

    def __init__(self, argv, env_changes):
        env = dict(os.environ)
        for k, v in env_changes.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        pid, fd = pty.fork()
        if pid == 0:
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
                os.execve(argv[0], argv, env)
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
        if i != -1 and len(buf) - i < 64 and not CSI.match(buf, i):
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


def zpar_console(zpar, profile):
    """Two `zpar console` sessions on a running cluster."""
    # --- first session ---
    c = Console([zpar, "console", "--timeout", "10", "--profile-dir", profile], ZPAR_ENV)
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
    eng = subprocess.Popen([zpar, "engine", "--profile-dir", profile],
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
    if not os.path.exists(os.path.join(profile, "console_history")):
        fail("no history file in the profile folder", c)

    # --- second session: the history is still there ---
    c = Console([zpar, "console", "--timeout", "10", "--profile-dir", profile], ZPAR_ENV)
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


def leave(c, farewell):
    c.send("\x04")  # Ctrl-D
    c.expect(r"Do you really want to exit")
    c.send("y\r")
    c.expect(farewell)
    if c.wait_exit() != 0:
        fail("exit code %s" % c.status, c)


def kernels_in(runtime):
    """The processes whose command line names a connection file in runtime."""
    text = runtime.rstrip("/") + "/kernel-"
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def jupyter_existing(connection_file):
    """`jupyter console --existing` on an engine bound as a kernel."""
    c = Console(JUPYTER + ["--existing", connection_file], JUPYTER_ENV)
    c.expect(r"Rhai on engine 0 of a zpar cluster")
    c.expect(r"In \[1\]: ")
    c.send("40 + 2\r")
    c.expect(r"Out\[1\]: 42")
    c.expect(r"In \[2\]: ")
    # An open block continues on the next line (is_complete says incomplete).
    c.send("if true {\r")
    c.send("print(`from ${6 * 7}`)\r")
    c.send("}\r")
    c.expect(r"from 42")
    c.expect(r"In \[3\]: ")
    leave(c, r"keeping kernel alive")


def jupyter_kernelspec(name, runtime):
    """`jupyter console --kernel NAME`: a standalone kernel, shut down at the end."""
    c = Console(JUPYTER + ["--kernel", name], JUPYTER_ENV)
    c.expect(r"Rhai on a standalone engine")
    c.expect(r"In \[1\]: ")
    if not kernels_in(runtime):
        fail("no kernel process runs with a connection file in " + runtime, c)
    c.send("let total = 0; for i in 1..=4 { total += i; } print(`sum ${total}`); total * 4 + 2\r")
    c.expect(r"sum 10")
    c.expect(r"Out\[1\]: 42")
    c.expect(r"In \[2\]: ")
    c.send("nope + 1\r")
    c.expect(r"UnknownName")
    c.expect(r"In \[3\]: ")
    leave(c, r"Shutting down kernel")
    deadline = time.time() + STEP
    while kernels_in(runtime):
        if time.time() > deadline:
            fail("the kernel process did not end: %s" % kernels_in(runtime))
        time.sleep(0.05)


MODE = sys.argv[1]
if MODE == "zpar":
    zpar_console(sys.argv[2], sys.argv[3])
    done = "pty session ok"
elif MODE == "existing":
    jupyter_existing(sys.argv[2])
    done = "jupyter console ok"
elif MODE == "kernelspec":
    jupyter_kernelspec(sys.argv[2], sys.argv[3])
    done = "jupyter console ok"
else:
    fail("unknown mode " + MODE)
cleanup()
print(done)
