"""A zpar client written against Jupyter's own Session (jupyter_client):
connection request, a fanned-out execute, a load-balanced apply.
Usage: python jupyter_client_peer.py <zpar-client.json>. Every receive has a
timeout so the test can never hang."""
import json, sys, zmq
from jupyter_client.session import Session
conn = json.load(open(sys.argv[1]))
s = Session(key=conn["key"].encode(), signature_scheme="hmac-sha256", username="py")
ctx = zmq.Context()
def dealer(port):
    d = ctx.socket(zmq.DEALER); d.setsockopt(zmq.IDENTITY, s.session.encode()); d.connect(f"tcp://{conn['ip']}:{port}"); return d
def recv(sock):
    if not sock.poll(20000):
        sys.exit("no reply within 20 s")
    return s.recv(sock, mode=0)
q = dealer(conn["registration"]); mux = dealer(conn["mux"]); task = dealer(conn["task"])
s.send(q, "connection_request", {})
idents, msg = recv(q)
msg_engines = msg["content"]["engines"]
print("engines:", msg_engines)
s.send(mux, "execute_request", {"code": "let x = 6 * 7; x", "silent": False}, metadata={"targets": [0, 1]})
for _ in range(2):
    idents, msg = recv(mux)
    c = msg["content"]
    # metadata `engine` is the uuid (ipyparallel's reading); `engine_id` the id.
    md = msg["metadata"]
    assert md["engine"] == msg_engines[str(md["engine_id"])], md
    print(msg["header"]["msg_type"], "engine", md["engine_id"], c["status"], c.get("result"))
s.send(task, "apply_request", {"f": "|a, b| a + b", "args": [40, 2]})
idents, msg = recv(task)
print(msg["header"]["msg_type"], msg["content"]["status"], msg["content"].get("result"))
