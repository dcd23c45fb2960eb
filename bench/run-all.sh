#!/usr/bin/env bash
# The five cases of BENCHMARKS.md, ROUNDS alternating rounds each (default 3),
# airlay beside wsbench's reference server; then the summary.
#   go build -o airlay-cli ./cmd/airlay-cli && bench/run-all.sh 3
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
export OUT=${OUT:-bench/results.jsonl}
bench/compare.sh "$rounds" broadcast -scenario broadcast -conns 5000
bench/compare.sh "$rounds" perobject -scenario perobject -conns 2000 -keys 10 -keyspace 20000 -batch 20
bench/compare.sh "$rounds" storm -scenario storm -conns 5000 -keys 5
bench/compare.sh "$rounds" idle -scenario idle -conns 10000
bench/compare.sh "$rounds" rate20 -scenario broadcast -conns 2000 -rate 20
wsbench summary -in "$OUT"
