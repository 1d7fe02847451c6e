#!/usr/bin/env bash
# The newcomer's demo: install + build (tools/setup.sh), ingest a corpus that exists on every Debian machine
# (/usr/share/common-licenses: GPL, Apache, MPL, ... real long documents) plus this project's docs/, then start
# `evident serve` on 127.0.0.1:8080 in the background and print the URL and an example request.
#
#   tools/demo.sh               build, ingest, serve in the background (log: demo-store/serve.log)
#   tools/demo.sh --foreground  same, but keep the server in the foreground (Ctrl-C stops it)
#   tools/demo.sh --stop        stop the background server
#
# Answers come from the extractive answerer unless a model is configured (EVIDENT_MODEL=DIR for a local Qwen3-Next
# checkpoint, or EVIDENT_OPENAI=URL for an OpenAI-compatible server): the page and the API say which one answered.
set -euo pipefail
cd "$(dirname "$0")/.."

STORE=${EVIDENT_STORE:-demo-store}
HOST=${EVIDENT_HOST:-127.0.0.1}
PORT=${EVIDENT_PORT:-8080}
PIDFILE="$STORE/serve.pid"

stop_server() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")" && echo "demo: stopped server $(cat "$PIDFILE")"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  --stop) stop_server; exit 0 ;;
  --foreground|"") ;;
  *) echo "usage: tools/demo.sh [--foreground|--stop]" >&2; exit 2 ;;
esac

tools/setup.sh
BIN=${BUILD_DIR:-build}/api/evident

echo "demo: ingesting /usr/share/common-licenses and docs/ into $STORE"
"$BIN" ingest /usr/share/common-licenses --store "$STORE" --collection licenses
"$BIN" ingest docs --store "$STORE" --collection docs

serve_args=(serve --store "$STORE" --host "$HOST" --port "$PORT")
[ -n "${EVIDENT_MODEL:-}" ] && serve_args+=(--model "$EVIDENT_MODEL")
[ -n "${EVIDENT_OPENAI:-}" ] && serve_args+=(--openai "$EVIDENT_OPENAI")

cat <<MSG

demo: open http://$HOST:$PORT/ in a browser, or ask from the shell:

  curl -s http://$HOST:$PORT/v1/ask -H 'Content-Type: application/json' \\
       -d '{"question": "Can I distribute modified versions of GPL software?"}'

MSG

if [ "${1:-}" = "--foreground" ]; then
  exec "$BIN" "${serve_args[@]}"
fi

stop_server
setsid nohup "$BIN" "${serve_args[@]}" >"$STORE/serve.log" 2>&1 < /dev/null &
echo $! >"$PIDFILE"
for _ in $(seq 1 100); do
  if curl -fsS "http://$HOST:$PORT/healthz" >/dev/null 2>&1; then
    echo "demo: server $(cat "$PIDFILE") is up at http://$HOST:$PORT/ (log: $STORE/serve.log; stop: tools/demo.sh --stop)"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "demo: the server exited; last lines of $STORE/serve.log:" >&2
    tail -20 "$STORE/serve.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "demo: the server did not answer /healthz within 20 s (log: $STORE/serve.log)" >&2
exit 1
