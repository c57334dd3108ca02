"""The Jupyter side of zpar's interop test (see jupyter_interop.rs).

Everything on the wire goes through jupyter_client.session.Session, Jupyter's
reference implementation of the message format, over a DEALER socket
(identity b"jupyter-peer") connected to the test's ROUTER:

1. send a push_request with two buffers (an f64 array and a byte blob); when
   signing, also the same kind of message with one header byte changed, and an
   exact replay of the first; then a report of what was sent;
2. for every message zpar sends: feed_identities + deserialize (verifies the
   signature, refuses replays), then report what was decoded (header fields,
   content, metadata, parent) in a `peer_report` message whose buffers echo
   the received buffers byte for byte; a message deserialize refuses is
   reported as rejected with the error;
3. exit 0 on zpar's shutdown_request.

Usage: jupyter_peer.py ENDPOINT USERNAME SESSION_ID, with the key as hex in
$ZPAR_PEER_KEY (empty: no signing). Every receive has a timeout; an unexpected
failure is reported as step "crashed" with the traceback, then exits 1.
"""

import os
import struct
import sys
import traceback
from datetime import datetime

import jupyter_client
import zmq
from jupyter_client.session import Session

TIMEOUT_MS = 30_000
IDENTITY = b"jupyter-peer"
# The same values are in jupyter_interop.rs.
XS = [1.5, -2.25, 1e300, 0.1, -0.0, 5e-324]
BLOB = bytes(range(256)) + b"<IDS|MSG>"


def recv(sock, what):
    if not sock.poll(TIMEOUT_MS, zmq.POLLIN):
        raise TimeoutError(f"no {what} from zpar within {TIMEOUT_MS} ms")
    return sock.recv_multipart(copy=True)


def report(session, sock, step, fields, buffers=()):
    session.send(sock, "peer_report", {"step": step, **fields}, buffers=list(buffers))


def f64s(buffers, marker):
    """The floats a zpar f64 marker refers to, read from the buffers."""
    first, frames = marker["buffer"], marker["frames"]
    data = b"".join(buffers[first : first + frames])
    return list(struct.unpack(f"<{marker['len']}d", data))


def describe(idents, msg):
    """What Session.deserialize made of a message, as JSON fields."""
    header, parent = msg["header"], msg["parent_header"]
    date = header["date"]
    fields = {
        "idents": [i.hex() for i in idents],
        "msg_id": msg["msg_id"],
        "msg_type": msg["msg_type"],
        "session": header["session"],
        "username": header["username"],
        "version": header["version"],
        "date_is_aware_datetime": isinstance(date, datetime) and date.tzinfo is not None,
        "date": date.isoformat() if isinstance(date, datetime) else repr(date),
        "parent_msg_id": parent.get("msg_id"),
        "parent_date_is_datetime": isinstance(parent.get("date"), datetime),
        "metadata": msg["metadata"],
        "content": msg["content"],
        "n_buffers": len(msg["buffers"]),
    }
    buffers = [bytes(b) for b in msg["buffers"]]
    echo = list(buffers)
    if msg["msg_type"] == "apply_request":
        xs = f64s(buffers, msg["content"]["args"][0])
        fields["xs_len"] = len(xs)
        fields["xs_head"] = xs[:4]
        # The floats as Python read them, packed again: zpar compares bytes.
        echo.append(struct.pack(f"<{len(xs)}d", *xs))
    return fields, echo


def converse(session, sock, signing, username):
    # (a) Jupyter -> zpar: a signed push_request with two buffers.
    content = {
        "namespace": {
            "xs": {"$zpar": "f64", "buffer": 0, "frames": 1, "len": len(XS)},
            "blob": {"$zpar": "bytes", "buffer": 1, "frames": 1, "len": len(BLOB)},
            "label": "from jupyter_client",
        }
    }
    buffers = [struct.pack(f"<{len(XS)}d", *XS), BLOB]
    metadata = {"peer": "jupyter_client"}
    sent = session.send(sock, "push_request", content, buffers=buffers, metadata=metadata)
    tampered_id = None
    if signing:
        # (c) The same kind of message with one byte of its header changed.
        tampered = session.msg("push_request", content, metadata=metadata)
        tampered_id = tampered["msg_id"]
        frames = session.serialize(tampered)  # [DELIM, sig, header, parent, metadata, content]
        header = frames[2]
        at = header.index(b'"' + username.encode()) + 1
        frames[2] = header[:at] + bytes([header[at] ^ 0x20]) + header[at + 1 :]
        sock.send_multipart(frames + buffers)
        # An exact replay of the first message.
        session.send(sock, sent, buffers=buffers)
    sent_fields = {
        "msg_id": sent["msg_id"],
        "date": sent["header"]["date"],
        "tampered_msg_id": tampered_id,
        "protocol_version": jupyter_client.protocol_version,
        "jupyter_client_version": jupyter_client.__version__,
        "pyzmq_version": zmq.__version__,
    }
    report(session, sock, "sent", sent_fields)

    # (b), (c) zpar -> Jupyter: verify and decode whatever comes.
    while True:
        idents, msg_list = session.feed_identities(recv(sock, "message"), copy=True)
        try:
            msg = session.deserialize(msg_list, content=True, copy=True)
        except Exception as e:  # what Jupyter raises for a bad message
            report(session, sock, "rejected", {"error": f"{type(e).__name__}: {e}"})
            continue
        if msg["msg_type"] == "shutdown_request":
            return
        fields, echo = describe(idents, msg)
        report(session, sock, "accepted", fields, echo)


def main():
    endpoint, username, session_id = sys.argv[1:4]
    key = bytes.fromhex(os.environ["ZPAR_PEER_KEY"])
    session = Session(
        key=key, signature_scheme="hmac-sha256", username=username, session=session_id
    )
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, IDENTITY)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(endpoint)
    try:
        converse(session, sock, bool(key), username)
    except Exception:
        text = traceback.format_exc()
        print(text, file=sys.stderr)
        try:
            report(session, sock, "crashed", {"error": text})
        finally:
            sock.close()
        sys.exit(1)
    sock.close()


if __name__ == "__main__":
    main()
