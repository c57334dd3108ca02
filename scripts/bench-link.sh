#!/usr/bin/env bash
# Execute round trip and 16 MiB push/pull to an engine on another "host"
# (a network namespace behind a veth pair and a bridge) against the same on
# loopback, in one run. Needs root and iproute2; builds nothing: run
# `cargo build --release` first. Every namespace and process it makes is
# removed on exit. Usage: sudo scripts/bench-link.sh [--scale S]
set -euo pipefail
cd "$(dirname "$0")/.."
ZPAR="$PWD/target/release/zpar"
[ -x "$ZPAR" ] || { echo "build zpar first: cargo build --release" >&2; exit 1; }
P="zpar-bench-$$"
WORK="$(mktemp -d)"
cleanup() {
  ip netns exec "$P-0" "$ZPAR" cluster stop --profile-dir "$WORK/loop" >/dev/null 2>&1 || true
  for pid in $(ip netns pids "$P-0" 2>/dev/null) $(ip netns pids "$P-1" 2>/dev/null); do
    kill "$pid" 2>/dev/null || true
  done
  ip netns del "$P-0" 2>/dev/null || true
  ip netns del "$P-1" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$P-0"; ip netns add "$P-1"
ip -n "$P-0" link set lo up; ip -n "$P-1" link set lo up
ip -n "$P-0" link add br0 type bridge
ip -n "$P-0" addr add 10.77.0.1/24 dev br0
ip -n "$P-0" link set br0 up
ip -n "$P-0" link add v1 type veth peer name eth0 netns "$P-1"
ip -n "$P-0" link set v1 master br0
ip -n "$P-0" link set v1 up
ip -n "$P-1" addr add 10.77.0.2/24 dev eth0
ip -n "$P-1" link set eth0 up

# Across the link: the hub on host 0, one engine on host 1. Plain, like the
# loopback cluster, so the two differ only by the link (`zpar bench curve`
# measures what encryption costs).
ip netns exec "$P-0" "$ZPAR" hub --profile-dir "$WORK/link" --ip 0.0.0.0 --location 10.77.0.1 --no-curve >/dev/null 2>&1 &
for _ in $(seq 100); do [ -f "$WORK/link/security/zpar-engine.json" ] && break; sleep 0.05; done
ZPAR_CONNECTION_INFO="$(cat "$WORK/link/security/zpar-engine.json")" \
  ip netns exec "$P-1" "$ZPAR" engine >/dev/null 2>&1 &
# On loopback: a hub and one engine, both on host 0.
ip netns exec "$P-0" "$ZPAR" cluster start -n 1 --daemon --profile-dir "$WORK/loop" >/dev/null

ip netns exec "$P-0" "$ZPAR" bench link --file "$WORK/loop/security/zpar-client.json" "$@"
ip netns exec "$P-0" "$ZPAR" bench link --file "$WORK/link/security/zpar-client.json" "$@" | tail -n +2
