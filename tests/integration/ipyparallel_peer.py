"""ipyparallel's own Client and %px magics against a live zpar cluster, plus a
check of every Jupyter message type zpar sends against the spec's required
fields. Usage: python ipyparallel_peer.py <ipcontroller-client.json>.

Prints one line per check; the Rust test reads them. A watchdog ends the
script if anything hangs, so the test never does."""
import os, sys, threading, time

def watchdog():
    time.sleep(90)
    print("TIMEOUT: the ipyparallel peer hung", flush=True)
    os._exit(3)

threading.Thread(target=watchdog, daemon=True).start()

import json
import zmq
import ipyparallel as ipp
from ipyparallel import error
from jupyter_client.session import Session

conn_file = sys.argv[1]
conn = json.load(open(conn_file))

def say(*args):
    print(*args, flush=True)

# ---- Jupyter conformance: every message type against the spec's fields ----
# jupyter_client's Session.deserialize checks the signature and the header;
# the spec's required content fields are this table.
REQUIRED = {
    ("execute_reply", "ok"): ["status", "execution_count", "user_expressions", "payload"],
    ("execute_reply", "error"): ["status", "execution_count", "ename", "evalue", "traceback"],
    ("apply_reply", "error"): ["status", "ename", "evalue", "traceback"],
    ("abort_reply", "ok"): ["status"],
    ("stream", None): ["name", "text"],
    ("execute_input", None): ["code", "execution_count"],
    ("execute_result", None): ["execution_count", "data", "metadata"],
    ("error", None): ["ename", "evalue", "traceback"],
    ("status", None): ["execution_state"],
}
HEADER = ["msg_id", "msg_type", "username", "session", "date", "version"]
REPLY_METADATA = ["engine", "started", "status", "follow", "after"]

def check(msg, kind):
    header, content, md = msg["header"], msg["content"], msg["metadata"]
    t = header["msg_type"]
    missing = [k for k in HEADER if k not in header]
    key = (t, content.get("status")) if kind == "reply" else (t, None)
    missing += [k for k in REQUIRED.get(key, []) if k not in content]
    if key not in REQUIRED:
        missing.append(f"(no table entry for {key})")
    if "traceback" in content and not isinstance(content["traceback"], list):
        missing.append("traceback is not a list")
    if t == "execute_result" and "text/plain" not in content.get("data", {}):
        missing.append("data text/plain")
    if kind == "reply":
        missing += [f"metadata {k}" for k in REPLY_METADATA if k not in md]
        if not isinstance(md.get("engine"), str):
            missing.append("metadata engine is not the uuid")
    return t, key[1], missing

def conformance():
    s = Session(key=conn["key"].encode(), signature_scheme=conn["signature_scheme"], username="conf")
    ctx = zmq.Context.instance()
    url = lambda p: f"{conn['interface']}:{p}"
    q = ctx.socket(zmq.DEALER); q.connect(url(conn["registration"]))
    mux = ctx.socket(zmq.DEALER); mux.connect(url(conn["mux"]))
    ctl = ctx.socket(zmq.DEALER); ctl.connect(url(conn["control"]))
    sub = ctx.socket(zmq.SUB); sub.setsockopt(zmq.SUBSCRIBE, b""); sub.connect(url(conn["iopub"]))
    def recv(sock, timeout=20000):
        if not sock.poll(timeout):
            sys.exit("conformance: no message within 20 s")
        idents, msg = s.feed_identities(sock.recv_multipart())
        return s.deserialize(msg)
    s.send(q, "connection_request", {})
    engines = recv(q)["content"]["engines"]
    uuid = engines["0"].encode()
    # iopub is a PUB: wait until our subscription is surely in place.
    time.sleep(0.5)
    seen = {}
    def run(sock, msg_type, content, buffers=None):
        sent = s.send(sock, msg_type, content, ident=uuid, buffers=buffers)
        reply = recv(sock)
        seen.setdefault((reply["header"]["msg_type"], reply["content"]["status"]), reply)
        return sent["header"]["msg_id"]
    run(mux, "execute_request", {"code": 'print("out"); 40 + 2', "silent": False})
    run(mux, "execute_request", {"code": 'throw "conformance"', "silent": False})
    run(mux, "apply_request", {}, buffers=[b"pickled"])
    run(ctl, "abort_request", {"msg_ids": ["none"]})
    # Each request publishes busy ... idle: collect until the third idle.
    idle = 0
    while idle < 3:
        m = recv(sub)
        seen.setdefault((m["header"]["msg_type"], None), m)
        if m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            idle += 1
    bad = 0
    for (t, status), m in sorted(seen.items(), key=lambda kv: str(kv[0])):
        kind = "reply" if t.endswith("_reply") else "iopub"
        t, st, missing = check(m, kind)
        if kind == "iopub" and t == "status":
            pass
        label = f"{t}/{st}" if st else t
        if missing:
            bad += 1
            say(f"conformance {label} MISSING {missing}")
        else:
            say(f"conformance {label} ok")
    for want in ["execute_reply/ok", "execute_reply/error", "apply_reply/error", "abort_reply/ok",
                 "stream", "execute_input", "execute_result", "error", "status"]:
        t, _, st = want.partition("/")
        if (t, st or None) not in seen:
            bad += 1
            say(f"conformance {want} NEVER SEEN")
    say(f"conformance failures {bad}")
    for sock in (q, mux, ctl, sub):
        sock.close(linger=0)

conformance()

# ---- ipyparallel's own Client ----
rc = ipp.Client(conn_file, timeout=20)
deadline = time.time() + 20
while len(rc.ids) < 2 and time.time() < deadline:
    time.sleep(0.05)
say("ids", rc.ids)
qs = rc.queue_status()
say("queue_status engines", sorted(k for k in qs if isinstance(k, int)), "unassigned" in qs,
    sorted(qs[0]) if 0 in qs else None)

dv = rc[:]
ar = dv.execute('let q = 40 + 2; print(`q=${q}`); q', silent=False, block=True)
say("execute stdout", [s.strip() for s in ar.stdout])
say("execute engines", ar.engine_id)
say("execute results", [r.execute_result["data"]["text/plain"] for r in ar.get()])

try:
    dv.execute('throw "boom"', block=True)
    say("error NOT RAISED")
except error.CompositeError as e:
    for ename, evalue, tb, info in e.elist:
        say(f"error CompositeError ename={ename} evalue={evalue} engine={info.get('engine_id')}")

try:
    rc[0].execute('throw "single"', block=True).get()
    say("single error NOT RAISED")
except error.RemoteError as e:
    say(f"single error RemoteError ename={e.ename} evalue={e.evalue}")

one = rc[0].execute('6 * 7', silent=False, block=True)
say("single result", one.get().execute_result["data"]["text/plain"], "engine", one.engine_id)

# abort: a long job first, so the second is still queued when abort comes.
long = rc[1].execute('let s = 0; for i in 0..400000 { s += i; } s', block=False)
queued = rc[1].execute('1 + 1', block=False)
rc.abort(queued, targets=[1], block=True)
try:
    r = queued.get(timeout=20)
    say("abort result", type(r).__name__)
except Exception as e:
    say("abort raised", type(e).__name__)
long.get(timeout=30)

msg_id = one.msg_ids[0]
recs = rc.db_query({"msg_id": msg_id}, keys=["msg_id", "engine", "status"])
say("db_query", [(r["msg_id"] == msg_id, r["engine"], r["status"]) for r in recs])
# Every field, times included: ipyparallel parses them as dates.
full = rc.db_query({"msg_id": msg_id})
say("db_query times", [type(r["submitted"]).__name__ for r in full])

# Labels (ipyparallel 9.1): set on a request, found with $glob.
labelled = rc[0].execute('40 + 2', silent=False, block=True, label="fit-7")
found = rc.db_query({"label": {"$glob": "fit-*"}}, keys=["msg_id", "label"])
say("db_query label", [(r["msg_id"] == labelled.msg_ids[0], r["label"]) for r in found])
none = rc.db_query({"label": {"$glob": "other-*"}}, keys=["msg_id"])
say("db_query other label", len(none))

rc2 = ipp.Client(conn_file, timeout=20)
got = rc2.get_result(msg_id, block=True)
# From the hub's records: the reply and its output (iopub's execute_result
# is not recorded, so the value is not part of it).
hub_reply = got.get(timeout=20)
say("get_result", got.msg_ids == [msg_id], hub_reply.execution_count == one.get().execution_count,
    type(hub_reply).__name__)
rc2.close()

# Python functions cannot run on Rhai engines: a clear error, no hang.
try:
    dv.apply_sync(lambda: 1)
    say("apply NOT RAISED")
except error.CompositeError as e:
    ename, evalue, tb, info = e.elist[0]
    say(f"apply CompositeError ename={ename} evalue={evalue}")
try:
    rc.broadcast_view().execute("1", block=True)
    say("broadcast NOT RAISED")
except error.CompositeError as e:
    ename, evalue, tb, info = e.elist[0]
    say(f"broadcast CompositeError ename={ename}")
still = dv.execute("1 + 1", silent=False, block=True)
say("still serving", [r.execute_result["data"]["text/plain"] for r in still.get()])

# ---- %px and %autopx in IPython ----
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
rc3 = ipp.Client(conn_file, timeout=20)  # in IPython: activates %px on rc3[:]
say("px begin")
shell.run_line_magic("px", "40 + 2")
say("px end")
say("autopx begin")
shell.run_line_magic("autopx", "")
shell.run_cell("20 + 22")
shell.run_cell("%autopx")
say("autopx end")
rc3.close()

rc.shutdown(hub=True)
say("shutdown done")
