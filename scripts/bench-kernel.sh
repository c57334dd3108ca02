#!/usr/bin/env bash
# Execute round trip through Jupyter's own client (jupyter_client, from the
# test venv target/pyenv) against zpar kernels — an engine of a cluster bound
# as a kernel, and a standalone kernel started by its kernelspec — and against
# ipykernel, Jupyter's reference kernel, in one run (rounds interleaved).
# Each figure is the median of N executes of `1 + 1`, from sending the
# request to the reply and the kernel's idle status. Builds nothing: run
# `cargo build --release` (and the tests once, which make the venv) first.
# Everything it starts is stopped on exit. Usage: scripts/bench-kernel.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
ZPAR="$PWD/target/release/zpar"
PY="$PWD/target/pyenv/bin/python"
[ -x "$ZPAR" ] || { echo "build zpar first: cargo build --release" >&2; exit 1; }
[ -x "$PY" ] || { echo "no test venv: run cargo test --test integration kernel first" >&2; exit 1; }
"$PY" -c "import ipykernel" 2>/dev/null || { echo "ipykernel is not in $PY (ipyparallel brings it)" >&2; exit 1; }
N="${1:-300}"
WORK="$(mktemp -d)"
cleanup() {
  "$ZPAR" cluster stop --profile-dir "$WORK/profile" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$ZPAR" cluster start -n 1 --daemon --bind-kernel --profile-dir "$WORK/profile" >/dev/null
"$ZPAR" kernel install --prefix "$WORK/prefix" >/dev/null
"$PY" -m ipykernel install --prefix "$WORK/prefix" --name python3 >/dev/null 2>&1
JUPYTER_PATH="$WORK/prefix/share/jupyter" JUPYTER_RUNTIME_DIR="$WORK" "$PY" - "$N" \
  "file=$WORK/profile/security/kernel-0.json" "spec=zpar" "spec=python3" <<'PYEOF'
import sys, time, statistics
from jupyter_client import BlockingKernelClient
from jupyter_client.manager import KernelManager
N = int(sys.argv[1])
names = {"file": "zpar engine bound as a kernel", "spec=zpar": "zpar standalone kernel",
         "spec=python3": "ipykernel (baseline)"}
clients, managers = {}, []
for spec in sys.argv[2:]:
    kind, arg = spec.split("=", 1)
    if kind == "file":
        kc = BlockingKernelClient(connection_file=arg)
        kc.load_connection_file()
    else:
        km = KernelManager(kernel_name=arg)
        km.start_kernel()
        managers.append(km)
        kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    clients[names.get(spec, names.get(kind))] = kc

def once(kc):
    t = time.perf_counter()
    msg_id = kc.execute("1 + 1")
    while kc.get_shell_msg(timeout=10)["parent_header"]["msg_id"] != msg_id:
        pass
    while True:
        m = kc.get_iopub_msg(timeout=10)
        if (m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                and m["content"]["execution_state"] == "idle"):
            return time.perf_counter() - t

times = {name: [] for name in clients}
for kc in clients.values():
    for _ in range(20):
        once(kc)
for _ in range(N):
    for name, kc in clients.items():
        times[name].append(once(kc))
base = statistics.median(times["ipykernel (baseline)"])
for name, ts in times.items():
    m = statistics.median(ts)
    print("%-32s %8.0f us   %.2fx ipykernel" % (name, m * 1e6, m / base))
for km in managers:
    km.shutdown_kernel(now=True)
PYEOF
