#!/usr/bin/env bash
# Big data across hosts with real link speeds: `zpar bench hosts` on a
# cluster whose hub (and client) sit on one host and whose engines sit, 2
# by 2, on 4 others. The hosts are network namespaces behind one switch (a
# bridge in a namespace of its own); every host's link is rate-limited in
# both directions with `tc qdisc ... tbf` (1gbit unless RATE says), and
# each host has a /dev/shm of its own. The link's raw TCP rate is measured
# first, in the same run, and the figures are given as ratios to it; the
# cluster runs with CURVE on (the default across hosts), then off.
#
# Needs root, iproute2 (ip, tc), unshare and python3; builds nothing: run
# `cargo build --release` first. Every namespace, process and folder it
# makes is removed on exit.
#
#   sudo scripts/bench-hosts.sh [--scale S]     (RATE=10gbit for another link)
set -euo pipefail
cd "$(dirname "$0")/.."
ZPAR="$PWD/target/release/zpar"
[ -x "$ZPAR" ] || { echo "build zpar first: cargo build --release" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench-hosts needs root (network namespaces, tc)" >&2; exit 1; }
RATE="${RATE:-1gbit}"
P="zh$$"
HOSTS=5 # host 0: hub and client; hosts 1-4: two engines each
WORK="$(mktemp -d)"
ns() { echo "$P-$1"; }
cleanup() {
  for i in $(seq 0 $((HOSTS - 1))) sw; do
    for pid in $(ip netns pids "$(ns "$i")" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$(ns "$i")" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The switch, and each host on a rate-limited link to it.
ip netns add "$(ns sw)"
ip -n "$(ns sw)" link add br0 type bridge
ip -n "$(ns sw)" link set br0 up
for i in $(seq 0 $((HOSTS - 1))); do
  h="$(ns "$i")"
  ip netns add "$h"
  ip -n "$h" link set lo up
  ip -n "$(ns sw)" link add "p$i" type veth peer name eth0 netns "$h"
  ip -n "$(ns sw)" link set "p$i" master br0
  ip -n "$(ns sw)" link set "p$i" up
  ip -n "$h" addr add "10.78.0.$((10 + i))/24" dev eth0
  ip -n "$h" link set eth0 up
  tc -n "$h" qdisc add dev eth0 root tbf rate "$RATE" burst 512kb latency 100ms
  tc -n "$(ns sw)" qdisc add dev "p$i" root tbf rate "$RATE" burst 512kb latency 100ms
  mkdir -p "$WORK/shm-$i"
done
# Runs a command on host $1 with that host's own /dev/shm.
on_host() {
  local i="$1"; shift
  ip netns exec "$(ns "$i")" unshare --mount --propagation private \
    sh -c 'mount --bind "$0" /dev/shm && exec "$@"' "$WORK/shm-$i" "$@"
}

# The link's rate: 128 MiB of raw TCP from host 0 to host 1, best of 3.
# The receiver times from the first byte to the end; the sender retries
# its connect until the receiver listens.
RECEIVER='
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); c, _ = s.accept()
n, t = 0, None
while True:
    b = c.recv(1 << 20)
    if t is None: t = time.time()
    if not b: break
    n += len(b)
print(f"{n / 1e6 / (time.time() - t):.1f}")'
SENDER='
import socket, sys, time
deadline = time.time() + 10
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.05)
buf = bytes(1 << 20)
for _ in range(128): s.sendall(buf)
s.close()'
link_mbs() {
  local best=0 port
  for k in 1 2 3; do
    port=$((5200 + k))
    on_host 1 python3 -c "$RECEIVER" "$port" >"$WORK/rate" &
    local receiver=$!
    on_host 0 python3 -c "$SENDER" 10.78.0.11 "$port"
    wait "$receiver"
    best=$(python3 -c "print(max($best, $(cat "$WORK/rate")))")
  done
  echo "$best"
}
LINK="$(link_mbs)"
echo "link: $RATE per host, raw TCP $LINK MB/s (best of 3, 128 MiB)"

for security in --curve --no-curve; do
  dir="$WORK/cluster$security"
  on_host 0 "$ZPAR" hub --profile-dir "$dir" --ip 0.0.0.0 --location 10.78.0.10 "$security" \
    >/dev/null 2>"$WORK/hub.log" &
  for _ in $(seq 200); do [ -f "$dir/security/zpar-engine.json" ] && break; sleep 0.05; done
  for i in $(seq 1 $((HOSTS - 1))); do
    for _ in 1 2; do
      ZPAR_CONNECTION_INFO="$(cat "$dir/security/zpar-engine.json")" \
        on_host "$i" "$ZPAR" engine >/dev/null 2>>"$WORK/engines.log" &
    done
  done
  echo "== CURVE ${security#--}: 8 engines on 4 hosts, hub and client on a fifth"
  on_host 0 "$ZPAR" bench hosts --file "$dir/security/zpar-client.json" --engines 8 \
    --link-mbs "$LINK" "$@"
  for pid in $(ip netns pids "$(ns 0)") $(for i in $(seq 1 $((HOSTS - 1))); do ip netns pids "$(ns "$i")"; done); do
    kill "$pid" 2>/dev/null || true
  done
  sleep 1
done
