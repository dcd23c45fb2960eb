#!/usr/bin/env bash
# Runs one wsbench case against airlay and the reference server, alternating
# (ref, airlay, ref, airlay, ...), a fresh server process per run, server and
# load generator pinned to one core each. Results are appended to $OUT
# (JSON lines); `wsbench summary -in $OUT` prints medians and ratios.
#
#   bench/compare.sh ROUNDS CASE-LABEL wsbench-run-flags...
#   e.g. bench/compare.sh 3 broadcast -scenario broadcast -conns 5000
#
# Needs: wsbench on PATH (go build -C ../shared/tools/wsbench -o /usr/local/bin/wsbench .)
# and the airlay binary at $AIRLAY (default ./airlay-cli; go build -o airlay-cli ./cmd/airlay-cli).
set -euo pipefail
rounds=$1; label=$2; shift 2
AIRLAY=${AIRLAY:-./airlay-cli}
OUT=${OUT:-bench/results.jsonl}
DIR=${DIR:-bench-airlay}
PORT=${PORT:-8091}
[ -d "$DIR" ] || wsbench setup-airlay -dir "$DIR" -port "$PORT" >/dev/null

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

run_one() {
  local target=$1 pid; shift
  if [ "$target" = ref ]; then
    taskset -c 0 wsbench ref -addr 127.0.0.1:9100 -lifetime 10m 2>/dev/null & pid=$!
    wait_port 9100
  else
    taskset -c 0 "$AIRLAY" web_socket server --config "$DIR/config.ini" 2>/dev/null & pid=$!
    wait_port "$PORT"
  fi
  timeout 360 taskset -c 1 wsbench run -q -target "$target" -dir "$DIR" -pid "$pid" \
    -label "$label" -json "$OUT" "$@" >/dev/null || echo "run failed: $target $label" >&2
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  sleep 1
}

for _ in $(seq "$rounds"); do
  run_one ref "$@"
  run_one airlay "$@"
done
