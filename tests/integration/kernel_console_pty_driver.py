"""Drives `jupyter console` through a pseudo-terminal against zpar kernels, for
tests/integration/kernel.rs.

Usage: python kernel_console_pty_driver.py existing CONNECTION_FILE
       python kernel_console_pty_driver.py kernelspec KERNEL_NAME RUNTIME_DIR

`existing`: `jupyter console --existing FILE` on a cluster engine bound as a
kernel: its banner, `40 + 2` shows `Out[1]: 42`, a block typed over several
lines (the kernel's is_complete keeps Enter from running it early), Ctrl-D
leaves the kernel running.
`kernelspec`: `jupyter console --kernel NAME` starts a standalone zpar kernel
through the installed kernelspec, runs code with output, and on Ctrl-D shuts
it down: no process is left running with RUNTIME_DIR (where Jupyter put the
kernel's connection file) in its command line.

Every step has a deadline (STEP seconds). Prints "jupyter console ok" on
success; on the first expectation not met, prints the screen text to stderr
and exits 1. Python's standard library, and jupyter_console in this Python.
"""
import os, pty, re, select, signal, struct, sys, time, fcntl, termios

MODE = sys.argv[1]
STEP = 30.0
CSI = re.compile(rb'\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r')


class Console:
    def __init__(self, args):
        env = dict(os.environ, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
        pid, fd = pty.fork()
        if pid == 0:
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
                os.execve(sys.executable, [sys.executable, "-m", "jupyter_console"] + args, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.clean, self.tail, self.pos = b"", b"", 0
        self.status = None

    def feed(self, data):
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
                fail("jupyter console ended while waiting for %r" % pattern, self)

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
        fail("jupyter console did not exit", self)

    def kill(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            self.status = -9


console = None


def fail(msg, c=None):
    sys.stderr.write("JUPYTER CONSOLE TEST FAILED: " + msg + "\n")
    if c is not None:
        sys.stderr.write("--- screen text (escapes removed) ---\n")
        sys.stderr.write(c.clean[-6000:].decode(errors="replace") + "\n---\n")
    if console is not None:
        console.kill()
    sys.exit(1)


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


if MODE == "existing":
    console = Console(["--existing", sys.argv[2]])
    c = console
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
elif MODE == "kernelspec":
    name, runtime = sys.argv[2], sys.argv[3]
    console = Console(["--kernel", name])
    c = console
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
else:
    fail("unknown mode " + MODE)
print("jupyter console ok")
