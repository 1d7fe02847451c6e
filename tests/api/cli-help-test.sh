#!/usr/bin/env bash
# The command-line contract: `evident <command> [sub] --help` prints a usage line and exits 0; an unknown command or
# flag prints one line and exits 2.   cli-help-test.sh EVIDENT
set -u
EV="$1"; fail=0
check() {  # check WANT_RC WANT_PREFIX ARGS...   (an empty prefix: the output must be exactly one line)
  local want_rc=$1 want=$2; shift 2
  local out rc bad=0; out=$("$EV" "$@" 2>&1); rc=$?
  if [ -n "$want" ]; then [ "${out#"$want"}" = "$out" ] && bad=1; else [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || bad=1; fi
  if [ "$rc" != "$want_rc" ] || [ "$bad" = 1 ]; then
    echo "FAIL evident $*: rc=$rc (want $want_rc), output starts: $(echo "$out" | head -n1 | cut -c1-120)"; fail=1
  else
    echo "ok   evident $*"
  fi
}
for c in ask ingest serve tokenize version "eval retrieval" "model info" "model run" "model chat" "bench engine"; do
  # shellcheck disable=SC2086
  check 0 "usage: evident" $c --help
done
check 2 "evident: unknown command" no-such-command
check 2 "" ingest --no-such-flag
check 2 "" bench engine --no-such-flag
check 2 "" bench no-such-benchmark
check 2 "" serve --device tpu
check 2 "" ask "a question" --device tpu
exit $fail
