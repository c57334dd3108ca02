"""Jupyter's own tools against a zpar hub that runs with CURVE.

jupyter_client reads the connection file's curve_publickey and
curve_secretkey (ConnectionFileMixin.load_connection_info, jupyter_client
8.9+) and its connect_* methods make CURVE client sockets with them; its
Session signs and verifies. zpar's ports are given to jupyter_client's
channels: registration as stdin, mux as shell, task as control (all three
DEALERs, as zpar's clients use).

Usage: python curve_peer.py <zpar-client.json> [--without-keys]
With --without-keys the file's curve_ fields are dropped, so the sockets are
plain: the hub must answer nothing, and this prints "no answer".
Every receive has a timeout, so the test can never hang."""
import json
import sys

import zmq
from jupyter_client.connect import ConnectionFileMixin

conn = json.load(open(sys.argv[1]))
without_keys = "--without-keys" in sys.argv[2:]
if without_keys:
    conn.pop("curve_publickey", None)
    conn.pop("curve_secretkey", None)
assert zmq.has("curve"), "this pyzmq has no CURVE"

cf = ConnectionFileMixin()
cf.context = zmq.Context()
cf.load_connection_info(conn)
if not without_keys:
    assert cf.curve_publickey == conn["curve_publickey"].encode(), "jupyter_client did not read the key"
cf.stdin_port = conn["registration"]
cf.shell_port = conn["mux"]
cf.control_port = conn["task"]
s = cf.session
s.username = "py"
identity = s.session.encode()
query = cf.connect_stdin(identity=identity)
mux = cf.connect_shell(identity=identity)
task = cf.connect_control(identity=identity)


def recv(sock, wait_ms):
    if not sock.poll(wait_ms):
        return None
    # Session.recv verifies the HMAC signature before it returns.
    return s.recv(sock, mode=0)[1]


s.send(query, "connection_request", {})
if without_keys:
    reply = recv(query, 3000)
    print("no answer" if reply is None else f"ANSWERED: {reply}")
    sys.exit(0)

reply = recv(query, 20000)
if reply is None:
    sys.exit("no connection_reply within 20 s")
print(reply["header"]["msg_type"], "verified; engines:", sorted(reply["content"]["engines"]))
s.send(mux, "execute_request", {"code": "let x = 6 * 7; x", "silent": False}, metadata={"targets": [0, 1]})
for _ in range(2):
    msg = recv(mux, 20000)
    if msg is None:
        sys.exit("no execute_reply within 20 s")
    print(msg["header"]["msg_type"], "engine", msg["metadata"]["engine_id"], msg["content"]["status"], msg["content"].get("result"))
s.send(task, "apply_request", {"f": "|a, b| a + b", "args": [40, 2]})
msg = recv(task, 20000)
if msg is None:
    sys.exit("no apply_reply within 20 s")
print(msg["header"]["msg_type"], msg["content"]["status"], msg["content"].get("result"))
