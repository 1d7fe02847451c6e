#!/usr/bin/env bash
# Loopback load benchmark of POST /v1/ask with the extractive generator: requests/s and p50/p99 latency (wrk).
#   bench/http-ask.sh [BUILD_DIR]     (needs wrk: tools/setup.sh installs it)
# Ingests the demo corpus (/usr/share/common-licenses) into a scratch store, starts `evident serve`, runs wrk for
# DURATION seconds with CONNECTIONS connections, JSON answers then streamed (SSE) answers. Record results in
# bench/RESULTS.md with the machine and date.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
BIN=$BUILD_DIR/api/evident
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-$(nproc)}
SCRATCH=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$SCRATCH"' EXIT

"$BIN" ingest /usr/share/common-licenses --store "$SCRATCH/store" --collection licenses >/dev/null
"$BIN" serve --store "$SCRATCH/store" --port 0 --workers "$WORKERS" --quiet 2>"$SCRATCH/serve.log" &
SERVER=$!
for _ in $(seq 100); do grep -q "serving http" "$SCRATCH/serve.log" && break; sleep 0.1; done
PORT=$(sed -n 's/.*serving http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$SCRATCH/serve.log")
echo "evident serve on port $PORT: $(nproc) cores, $WORKERS workers, $CONNECTIONS connections, ${DURATION}s each"
echo "docs: $(curl -s "http://127.0.0.1:$PORT/readyz")"
echo "== POST /v1/ask (JSON)"
EV_STREAM=0 wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s -s bench/http-ask.lua "http://127.0.0.1:$PORT" | tail -2
echo "== POST /v1/ask (stream: SSE)"
EV_STREAM=1 wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s -s bench/http-ask.lua "http://127.0.0.1:$PORT" | tail -2
