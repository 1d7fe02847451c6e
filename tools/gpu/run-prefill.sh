#!/usr/bin/env bash
# One device call for prefill performance work: bench_engine's per-op prefill profile (--profile-prefill) of a 32K
# prompt at several step sizes, then serving runs, for one or more prebuilt bench_engine binaries (each built here for
# sm_90a; e.g. the old and the new binary in the same call, so their times compare on one card). Logs go to $OUT.
# Usage (GPU machine, repository root): tools/gpu/run-prefill.sh [--tests TDIR] [--bench-args "ARGS"] DIR [DIR ...]
#   --tests TDIR: first the MoE / attention kernel tests (test_kernels_cuda, filtered), compute-sanitizer memcheck of
#   their small cases, test_engine_cuda_model and test_engine_decode_graph, all from TDIR (fixtures are found through
#   /work/main, linked here when missing).
#   default ARGS: --layers 12 --budget 32768 --profile-prefill 32768:2048,32768:8192,32768:32768 --runs 1:32768:2
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
ARGS="--layers 12 --budget 32768 --profile-prefill 32768:2048,32768:8192,32768:32768 --runs 1:32768:2"
DIRS=()
TDIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) TDIR="$2"; shift ;;
    --bench-args) ARGS="$2"; shift ;;
    *) DIRS+=("$1") ;;
  esac
  shift
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)" \
  | tee "$OUT/summary.txt"
if [ -n "$TDIR" ]; then
  [ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
  F='*MoeExperts*:MoeCuda.*:*AttentionPrefill*:*AttentionCuda*'
  run_t() {  # name, command...
    local n=$1 t0=$(date +%s); shift
    timeout 300 "$@" > "$OUT/t-$n.log" 2>&1; local rc=$?
    echo "$n rc=$rc in $(( $(date +%s) - t0 )) s $(grep -E '^\[  (PASSED|FAILED|SKIPPED)  \]|ERROR SUMMARY' "$OUT/t-$n.log" \
      | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
    grep -E "^\[  FAILED|Failure|Expected|Which is|what\(\)|rel-L2|worst|Invalid|out of bounds" "$OUT/t-$n.log" \
      | cut -c1-200 | head -n 40 | tee -a "$OUT/summary.txt"
  }
  run_t kernels "$TDIR/test_kernels_cuda" --gtest_filter="$F"
  EVIDENT_KERNELS_SMALL=1 run_t memcheck compute-sanitizer --tool memcheck --error-exitcode 3 --print-limit 20 \
    "$TDIR/test_kernels_cuda" --gtest_filter="*MoeExperts*:*AttentionPrefill*"
  run_t engine "$TDIR/test_engine_cuda_model"
  run_t graph "$TDIR/test_engine_decode_graph"
fi
for d in "${DIRS[@]}"; do
  tag=$(basename "$d")
  t0=$(date +%s)
  timeout 400 "$d/bench_engine" $ARGS > "$OUT/bench-$tag.log" 2>&1
  echo "== $d: bench_engine $ARGS rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  grep -vE "^bench_engine: attention decode|^\{" "$OUT/bench-$tag.log" | cut -c1-300 | tee -a "$OUT/summary.txt"
done
