#!/usr/bin/env bash
# Compares zpar's benchmarks at two commits on this machine, alternating
# the two binaries in one sitting so that both see the same load.
#
#   scripts/bench-compare.sh BASE [NEW]
#
# BASE and NEW are commits (NEW defaults to HEAD; `.` is the work tree as
# it is, uncommitted changes included). Each is built in release mode in a
# worktree of its own with a target folder of its own (under
# target/bench-compare/, reused on the next run). Then `zpar bench SUITE
# --json` runs for each suite, BASE, NEW, BASE, NEW, ... RUNS times each,
# and the medians of each figure are printed with the ratio NEW/BASE. A
# figure more than 15% worse is marked `WORSE` (for times and sizes higher
# is worse, for rates lower is).
#
# Environment: SUITES (default "cluster tasks"), RUNS (default 3),
# BENCH_ARGS (passed to every `zpar bench`, e.g. "--scale 0.5"), and
# BASE_BIN / NEW_BIN to use binaries already built instead of building.
#
# A tool for people: CI runs no timing asserts (these machines are shared
# and noisy). It needs git, cargo and python3.
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

root="$(git rev-parse --show-toplevel)"
cd "$root"
base="$1"
new="${2:-HEAD}"
suites="${SUITES:-cluster tasks}"
runs="${RUNS:-3}"
work="$root/target/bench-compare"
mkdir -p "$work"

# Builds zpar at a commit (or `.`, the work tree) and prints its path.
build() {
  local rev="$1" dir
  if [ "$rev" = "." ]; then
    dir="$work/worktree"
    mkdir -p "$dir"
    echo "== building the work tree" >&2
    CARGO_TARGET_DIR="$dir/target" cargo build --release --quiet --bin zpar >&2
    echo "$dir/target/release/zpar"
    return
  fi
  local sha
  sha="$(git rev-parse --verify --quiet "$rev^{commit}")" || {
    echo "bench-compare: $rev is not a commit" >&2
    exit 2
  }
  dir="$work/${sha:0:12}"
  if [ ! -e "$dir/src/.git" ]; then
    rm -rf "$dir/src"
    git worktree add --detach --force "$dir/src" "$sha" >&2
  fi
  echo "== building $rev (${sha:0:12})" >&2
  (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --release --quiet --bin zpar) >&2
  echo "$dir/target/release/zpar"
}

base_bin="${BASE_BIN:-}"
[ -n "$base_bin" ] || base_bin="$(build "$base")"
new_bin="${NEW_BIN:-}"
[ -n "$new_bin" ] || new_bin="$(build "$new")"
out="$work/run-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
echo "== results in $out"

for suite in $suites; do
  for i in $(seq 1 "$runs"); do
    for side in base new; do
      bin="$base_bin"
      [ "$side" = new ] && bin="$new_bin"
      echo "== $suite: $side, run $i of $runs" >&2
      # Each run in a profile of its own, so no cluster of a run is left
      # for the next.
      ZPAR_DIR="$out/zpar-$side-$i" "$bin" bench "$suite" --json ${BENCH_ARGS:-} \
        >"$out/$suite-$side-$i.json" 2>"$out/$suite-$side-$i.log" || {
        echo "bench-compare: zpar bench $suite failed for $side (run $i); see $out/$suite-$side-$i.log" >&2
        exit 1
      }
    done
  done
done

python3 - "$out" "$base" "$new" $suites <<'PY'
import json, statistics, sys, glob, os
out, base, new, suites = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
lower_is_better = {"us", "ms", "s", "MiB", "x"}
print(f"\n{'figure (median of runs)':<52} {'base':>12} {'new':>12} {'unit':<8} {'new/base':>9}")
worse = 0
for suite in suites:
    values = {}
    units = {}
    for side in ("base", "new"):
        for path in sorted(glob.glob(os.path.join(out, f"{suite}-{side}-*.json"))):
            text = open(path).read()
            record = json.loads(text[text.index("{"):])
            for fig in record["figures"]:
                values.setdefault(fig["name"], {}).setdefault(side, []).append(fig["value"])
                units[fig["name"]] = fig["unit"]
    print(f"-- {suite}")
    for name, sides in values.items():
        if "base" not in sides or "new" not in sides:
            continue
        b, n = statistics.median(sides["base"]), statistics.median(sides["new"])
        ratio = n / b if b else float("nan")
        unit = units[name]
        bad = ratio > 1.15 if unit in lower_is_better else ratio < 1 / 1.15
        worse += bad
        mark = "  WORSE" if bad else ""
        print(f"{name:<52} {b:>12.1f} {n:>12.1f} {unit:<8} {ratio:>8.2f}x{mark}")
print(f"\nbase {base}, new {new}; {worse} figure(s) more than 15% worse")
PY
