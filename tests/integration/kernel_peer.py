"""Jupyter's own kernel client (jupyter_client.BlockingKernelClient) against a
zpar engine serving as a kernel, for tests/integration/kernel.rs.

Usage: python kernel_peer.py MODE CONNECTION_FILE
  drive     every request a front end sends, checked; hostile input; ends
            with a shutdown_request; prints "kernel peer ok"
  long      starts `loop {}`, prints "running" once the kernel is busy with
            it, waits for a line on stdin, interrupts it, prints "interrupted"
  shutdown  runs one cell, then shutdown_request; prints "shut down"
Every wait has a timeout (STEP seconds), so the test can never hang. On the
first expectation not met it prints why to stderr and exits 1.
"""
import sys, time
import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.session import Session

STEP = 20
MODE, FILE = sys.argv[1], sys.argv[2]


def fail(why):
    sys.stderr.write("KERNEL PEER FAILED: %s\n" % why)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


kc = BlockingKernelClient(connection_file=FILE)
kc.load_connection_file()
kc.start_channels()
kc.wait_for_ready(timeout=STEP)


def reply_to(msg_id, channel="shell"):
    """The reply to msg_id on shell (or control), skipping nothing else."""
    get = kc.get_shell_msg if channel == "shell" else kc.get_control_msg
    msg = get(timeout=STEP)
    check(msg["parent_header"].get("msg_id") == msg_id,
          "a reply to %r came where the one to %s was expected"
          % (msg["parent_header"].get("msg_type"), msg_id))
    return msg


def iopub_of(msg_id):
    """Every iopub message of one request, up to its idle status."""
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=STEP)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        out.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out


def execute(code, **kw):
    msg_id = kc.execute(code, **kw)
    reply = reply_to(msg_id)
    return reply["content"], iopub_of(msg_id)


def shell(msg_type, content):
    msg = kc.session.msg(msg_type, content)
    kc.shell_channel.send(msg)
    return reply_to(msg["header"]["msg_id"])


if MODE == "drive":
    info = kc.kernel_info(reply=True, timeout=STEP)["content"]
    check(info["language_info"]["name"] == "rhai", info)
    check(info["language_info"]["file_extension"] == ".rhai", info)
    check(info["protocol_version"].startswith("5."), info)
    check("zpar" in info["banner"], info)

    # execute: busy, execute_input, stream, execute_result, idle; one parent.
    content, pub = execute('print("hello from the kernel"); let from_kernel = 41; from_kernel + 1')
    check(content["status"] == "ok", content)
    count = content["execution_count"]
    kinds = [m["msg_type"] for m in pub]
    check(kinds == ["status", "execute_input", "stream", "execute_result", "status"], kinds)
    check(pub[0]["content"]["execution_state"] == "busy", pub[0])
    check(pub[2]["content"] == {"name": "stdout", "text": "hello from the kernel\n"}, pub[2])
    check(pub[3]["content"]["data"]["text/plain"] == "42", pub[3])
    check(pub[3]["content"]["execution_count"] == count, (pub[3], count))
    # The variable the hub pushed before this script ran is here.
    content, pub = execute("from_hub * 2")
    check(content["execution_count"] == count + 1, content)
    results = [m for m in pub if m["msg_type"] == "execute_result"]
    check(results and results[0]["content"]["data"]["text/plain"] == "14", pub)
    # silent: no execute_input, no result, not counted; store_history=False: not counted.
    content, pub = execute("1 + 1", silent=True)
    kinds = [m["msg_type"] for m in pub]
    check(kinds == ["status", "status"], kinds)
    check(content["execution_count"] == count + 1, content)
    content, pub = execute("2 + 2", store_history=False)
    check(content["execution_count"] == count + 1, content)
    check([m["msg_type"] for m in pub].count("execute_result") == 1, pub)

    # an error with its traceback, on iopub and in the reply.
    content, pub = execute('let a = 1;\nthrow "no luck"')
    check(content["status"] == "error", content)
    check(content["ename"] == "RuntimeError" and content["evalue"] == "no luck", content)
    check(any("line 2" in line for line in content["traceback"]), content)
    errors = [m for m in pub if m["msg_type"] == "error"]
    check(errors and errors[0]["content"]["traceback"] == content["traceback"], pub)

    # is_complete, from Rhai's parser.
    for code, status in [("40 + 2", "complete"), ("if x {", "incomplete"),
                         ("let v = [1,", "incomplete"), ("let x = 1 1", "invalid")]:
        msg_id = kc.is_complete(code)
        got = reply_to(msg_id)["content"]
        check(got["status"] == status, (code, got))
    msg_id = kc.is_complete("for i in 0..3 {")
    check(reply_to(msg_id)["content"].get("indent") == "    ", "no indent in a block")

    # complete: names in the namespace, functions, keywords, with the range.
    msg_id = kc.complete("print(from_k", 12)
    got = reply_to(msg_id)["content"]
    check(got["matches"] == ["from_kernel"], got)
    check((got["cursor_start"], got["cursor_end"]) == (6, 12), got)
    msg_id = kc.complete("lo", 2)
    check("loop" in reply_to(msg_id)["content"]["matches"], "no keyword completion")

    # inspect: the type and value of a name.
    msg_id = kc.inspect("from_kernel", 3)
    got = reply_to(msg_id)["content"]
    check(got["found"] and got["data"]["text/plain"] == "from_kernel: i64 = 41", got)

    # history and comm_info: empty answers.
    msg_id = kc.history(hist_access_type="tail", n=10)
    got = reply_to(msg_id)["content"]
    check(got["status"] == "ok" and got["history"] == [], got)
    got = shell("comm_info_request", {})["content"]
    check(got["status"] == "ok" and got["comms"] == {}, got)

    # a comm a front end opens (widgets) is closed at once: no comm targets.
    opening = kc.session.msg("comm_open", {"comm_id": "comm-1", "target_name": "jupyter.widget", "data": {}})
    kc.shell_channel.send(opening)
    while True:
        msg = kc.get_iopub_msg(timeout=STEP)
        if msg["parent_header"].get("msg_id") == opening["header"]["msg_id"]:
            check(msg["msg_type"] == "comm_close" and msg["content"]["comm_id"] == "comm-1", msg)
            break

    # an unknown message type gets a clear error reply of the matching type.
    got = shell("frobnicate_request", {})
    check(got["msg_type"] == "frobnicate_reply", got["msg_type"])
    check(got["content"]["status"] == "error", got)
    check(got["content"]["ename"] == "UnknownMessageType", got)
    check("frobnicate_request" in got["content"]["evalue"], got)

    # interrupt_request on control stops `loop {}`; the kernel goes on. The
    # cell sent behind it is aborted (stop_on_error, Jupyter's default).
    msg_id = kc.execute("loop {}")
    behind = kc.execute("let after_error = 1;")
    while True:  # busy with it
        msg = kc.get_iopub_msg(timeout=STEP)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    interrupt = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(interrupt)
    check(reply_to(interrupt["header"]["msg_id"], "control")["content"]["status"] == "ok",
          "interrupt_reply")
    got = reply_to(msg_id)["content"]
    check(got["status"] == "error" and got["ename"] == "Interrupted", got)
    got = reply_to(behind)["content"]
    check(got["status"] == "aborted", got)
    # Without stop_on_error, the cell behind a failing one runs.
    failing = kc.execute('throw "once"', stop_on_error=False)
    runs = kc.execute("let after_error = 2; after_error", stop_on_error=False)
    check(reply_to(failing)["content"]["status"] == "error", "the failing cell")
    check(reply_to(runs)["content"]["status"] == "ok", "the cell behind it")
    content, _ = execute("40 + 2")
    check(content["status"] == "ok", content)

    # Hostile input on a raw socket: unsigned, wrongly signed and replayed
    # messages get no answer. Each is followed by a good kernel_info_request
    # on the same socket, whose reply must be the next thing to come.
    key = kc.session.key
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect("tcp://%s:%d" % (kc.ip, kc.shell_port))
    good = Session(key=key, signature_scheme="hmac-sha256", username="peer")
    stranger = Session(key=b"not the key", signature_scheme="hmac-sha256", username="x")
    unsigned = Session(key=b"", username="x")

    def next_reply_is(msg_id, why):
        check(raw.poll(STEP * 1000), "no reply at all after " + why)
        _, reply = good.recv(raw, mode=0)
        check(reply["parent_header"]["msg_id"] == msg_id,
              "%s was answered (%s)" % (why, reply["msg_type"]))

    for bad, why in [(stranger, "a wrongly signed request"), (unsigned, "an unsigned request")]:
        bad.send(raw, "execute_request", {"code": "let hacked = 1;", "silent": False})
        probe = good.send(raw, "kernel_info_request", {})
        next_reply_is(probe["header"]["msg_id"], why)
    msg = good.msg("execute_request", {"code": "let replayed = 1; 1", "silent": True})
    frames = good.serialize(msg)
    raw.send_multipart(frames)
    next_reply_is(msg["header"]["msg_id"], "the first copy")
    raw.send_multipart(frames)
    probe = good.send(raw, "kernel_info_request", {})
    next_reply_is(probe["header"]["msg_id"], "a replayed request")
    content, pub = execute('is_def_var("hacked")')
    results = [m["content"]["data"]["text/plain"] for m in pub if m["msg_type"] == "execute_result"]
    check(results == ["false"], ("an unsigned request ran", results))
    msg_id = kc.inspect("hacked", 3)
    check(not reply_to(msg_id)["content"]["found"], "an unsigned request ran")

    # shutdown_request: a bound engine stops serving as a kernel (and stays
    # in its cluster, which the Rust side checks).
    shutdown = kc.session.msg("shutdown_request", {"restart": False})
    kc.control_channel.send(shutdown)
    got = reply_to(shutdown["header"]["msg_id"], "control")["content"]
    check(got["status"] == "ok" and got["restart"] is False, got)
    print("kernel peer ok")

elif MODE == "long":
    msg_id = kc.execute("let spins = 0; loop { spins += 1; }")
    while True:
        msg = kc.get_iopub_msg(timeout=STEP)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    print("running", flush=True)
    if not sys.stdin.readline():
        fail("stdin closed before the interrupt was asked for")
    interrupt = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(interrupt)
    reply_to(interrupt["header"]["msg_id"], "control")
    got = reply_to(msg_id)["content"]
    check(got["status"] == "error" and got["ename"] == "Interrupted", got)
    print("interrupted", flush=True)

elif MODE == "shutdown":
    content, pub = execute("let x = 20; x * 2 + 2")
    results = [m for m in pub if m["msg_type"] == "execute_result"]
    check(results and results[0]["content"]["data"]["text/plain"] == "42", pub)
    shutdown = kc.session.msg("shutdown_request", {"restart": False})
    kc.control_channel.send(shutdown)
    got = reply_to(shutdown["header"]["msg_id"], "control")["content"]
    check(got["status"] == "ok", got)
    print("shut down")

else:
    fail("unknown mode " + MODE)
kc.stop_channels()
