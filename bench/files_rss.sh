#!/usr/bin/env bash
# Peak RSS of the server around a 1 GiB POST /api/files (with Content-Length,
# then chunked) and a 1 GiB download of it, as BENCHMARKS.md reports. Linux
# only (/proc/PID/status, clear_refs). Builds the binary, works in a fresh temp
# directory and removes it.
#
#   bench/files_rss.sh            (PORT=18181 by default)
#   GRIDFS=1 bench/files_rss.sh   the same with the files in GridFS on a mongosim
#                                 (built from $MONGOSIM_DIR, default ../shared/tools/mongosim)
#   SIZE=256M ...                 another file size (head -c syntax; default 1G)
set -euo pipefail
PORT=${PORT:-18181}
SIZE=${SIZE:-1G}
ROOT=$(pwd)
DIR=$(mktemp -d)
SIMPID=""
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; [ -n "$SIMPID" ] && kill "$SIMPID" 2>/dev/null; rm -rf "$DIR"' EXIT
go build -o "$DIR/airlay-cli" ./cmd/airlay-cli
uri=""
if [ -n "${GRIDFS:-}" ]; then
  go build -C "${MONGOSIM_DIR:-$ROOT/../shared/tools/mongosim}" -o "$DIR/mongosim" .
  "$DIR/mongosim" serve -addr 127.0.0.1:0 -noop-interval 0 >"$DIR/sim.out" 2>&1 &
  SIMPID=$!
  for _ in $(seq 100); do uri=$(grep -o 'mongodb://[^)]*' "$DIR/sim.out" || true); [ -n "$uri" ] && break; sleep 0.1; done
  echo "files in GridFS on mongosim at $uri (a simulator, not a MongoDB server)"
fi
cd "$DIR"
./airlay-cli web_socket keygen . >/dev/null 2>&1
./airlay-cli web_socket config | sed -e 's/^publish_token = .*/publish_token = dev-secret/' \
  -e "s/^port = .*/port = $PORT/" -e 's/^address = .*/address = 127.0.0.1/' \
  -e 's/^max_file_bytes = .*/max_file_bytes = 2GiB/' -e 's/^max_files_bytes = .*/max_files_bytes = 4GiB/' \
  -e 's|^files_dir = .*|files_dir = files|' -e "s|^uri = .*|uri = $uri|" >config.ini
head -c "$SIZE" /dev/urandom >1g.bin
./airlay-cli web_socket server --config config.ini 2>server.log &
PID=$!
base=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
rss() { printf '%-34s' "$1"; awk '/^(VmHWM|VmRSS)/ {printf "%s %d KiB  ", $1, $2}' "/proc/$PID/status"; echo; }
peak_reset() { echo 5 >"/proc/$PID/clear_refs"; }
url() { sed 's/.*"url":"\([^"]*\)".*/\1/'; }
auth='Authorization: Bearer dev-secret'

U=$(curl -sS -H "$auth" --data-binary warm "$base/api/files?name=warm.txt" | url)
curl -sS -o /dev/null "$base$U"
rss "idle, after a small up/download:"
peak_reset
A=$(curl -sS -H "$auth" -X POST -T 1g.bin "$base/api/files?name=1g.bin")
rss "after $SIZE (Content-Length):"
peak_reset
curl -sS -H "$auth" -X POST -T - "$base/api/files?name=1g-chunked.bin" <1g.bin >/dev/null
rss "after $SIZE (chunked):"
peak_reset
got=$(curl -sS "$base$(echo "$A" | url)" | sha256sum)
rss "after the $SIZE download:"
[ "$got" = "$(sha256sum <1g.bin)" ] && echo "download: same SHA-256 as the upload" || { echo "download differs" >&2; exit 1; }
