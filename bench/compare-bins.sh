#!/usr/bin/env bash
# The five cases of BENCHMARKS.md with two airlay binaries in one sitting,
# alternating, the order swapped every round (old, new; new, old; ...: the
# second run of a pair was measured up to 10 % worse than the first, with the
# same binary), a fresh server process per run,
# server and load generator pinned to one core each; then the medians and
# the ratio new/old per case. For a change on a hot path: the five cases
# must not get more than 5 % worse.
#
#   go build -o /tmp/airlay-old ./cmd/airlay-cli   # on the previous commit
#   go build -o /tmp/airlay-new ./cmd/airlay-cli
#   bench/compare-bins.sh /tmp/airlay-old /tmp/airlay-new 3
#
# Needs wsbench on PATH (go build -C ../shared/tools/wsbench -o /usr/local/bin/wsbench .).
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1; new=$2; rounds=${3:-3}
OUT=${OUT:-bench/bins-$(date -u +%Y-%m-%d-%H%M).jsonl}
DIR=${DIR:-bench-airlay}
PORT=${PORT:-8091}
[ -d "$DIR" ] || wsbench setup-airlay -dir "$DIR" -port "$PORT" >/dev/null

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

run_one() {
  local bin=$1 tag=$2 label=$3 pid; shift 3
  taskset -c 0 "$bin" web_socket server --config "$DIR/config.ini" 2>/dev/null & pid=$!
  wait_port "$PORT"
  timeout 360 taskset -c 1 wsbench run -q -target airlay -dir "$DIR" -pid "$pid" \
    -label "$label $tag" -json "$OUT" "$@" >/dev/null || echo "run failed: $tag $label" >&2
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  sleep 1
}

cases=(
  "broadcast|-scenario broadcast -conns 5000"
  "perobject|-scenario perobject -conns 2000 -keys 10 -keyspace 20000 -batch 20"
  "storm|-scenario storm -conns 5000 -keys 5"
  "idle|-scenario idle -conns 10000"
  "rate20|-scenario broadcast -conns 2000 -rate 20"
)
# ONLY=perobject (a space-separated list) runs only those cases.
for r in $(seq "$rounds"); do
  for c in "${cases[@]}"; do
    label=${c%%|*}; flags=${c#*|}
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $label "* ]]; then continue; fi
    if [ $((r % 2)) -eq 1 ]; then
      # shellcheck disable=SC2086
      run_one "$old" old "$label" $flags; run_one "$new" new "$label" $flags
    else
      # shellcheck disable=SC2086
      run_one "$new" new "$label" $flags; run_one "$old" old "$label" $flags
    fi
  done
done
python3 bench/bins-summary.py "$OUT"
