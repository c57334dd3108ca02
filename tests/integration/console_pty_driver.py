"""Drives `zpar console` through a pseudo-terminal, for the integration test
`console_through_a_pseudo_terminal` (tests/integration/console.rs).

Usage: python3 console_pty_driver.py ZPAR_BINARY PROFILE_DIR

Two console sessions on a running cluster: coloured prompt, tab completion,
%autopx, a block over several lines, Ctrl-C interrupting the engines and
dropping a line at the prompt, engines joining and leaving, Ctrl-D, then
history (up arrow, Ctrl-R) in a second session. Every step has a deadline
(STEP seconds). Prints "pty session ok" on success; on the first expectation
not met, prints the screen text to stderr and exits 1. Standard library only.
"""
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
