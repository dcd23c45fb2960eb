#!/usr/bin/env bash
# Peak RSS of the server around a 1 GiB POST /api/files (with Content-Length,
# then chunked) and a 1 GiB download of it, as BENCHMARKS.md reports. Linux
# only (/proc/PID/status, clear_refs). Builds the binary, works in a fresh temp
# directory and removes it.
#
#   bench/files_rss.sh            (PORT=18181 by default)
set -euo pipefail
PORT=${PORT:-18181}
DIR=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
go build -o "$DIR/airlay-cli" ./cmd/airlay-cli
cd "$DIR"
./airlay-cli web_socket keygen . >/dev/null 2>&1
./airlay-cli web_socket config | sed -e 's/^publish_token = .*/publish_token = dev-secret/' \
  -e "s/^port = .*/port = $PORT/" -e 's/^address = .*/address = 127.0.0.1/' \
  -e 's/^max_file_bytes = .*/max_file_bytes = 2GiB/' -e 's/^max_files_bytes = .*/max_files_bytes = 4GiB/' \
  -e 's|^files_dir = .*|files_dir = files|' >config.ini
head -c 1G /dev/urandom >1g.bin
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
rss "after 1 GiB (Content-Length):"
peak_reset
curl -sS -H "$auth" -X POST -T - "$base/api/files?name=1g-chunked.bin" <1g.bin >/dev/null
rss "after 1 GiB (chunked):"
peak_reset
got=$(curl -sS "$base$(echo "$A" | url)" | sha256sum)
rss "after the 1 GiB download:"
[ "$got" = "$(sha256sum <1g.bin)" ] && echo "download: same SHA-256 as the upload" || { echo "download differs" >&2; exit 1; }
