#!/usr/bin/env bash
# One device call for the serving layer: the scheduler tests, the decode CUDA-graph test (graph replay vs eager on
# tiny-a) and bench_engine at 12 layers (decode at batch 1, 8, 32, 64 after 1024-token prompts; batch 1 also without graphs; prefill 8K and
# 32K). Logs and the JSON lines go to $OUT (default ./gpu-out); the summary is printed last.
# Usage (on the GPU machine, from the repository root): tools/gpu/run-serving.sh [--prebuilt DIR] [--no-bench]
#   --prebuilt DIR: use bench_engine, test_engine_decode_graph, test_engine_scheduler from DIR (built elsewhere for
#                   sm_90a) instead of building here; stops (with ldd's answer) when they do not start.
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
BUILD=build-gpu
PRE=""; BENCH=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) PRE="$2"; shift ;;
    --no-bench) BENCH=0 ;;
  esac
  shift
done
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
summary "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"

BIN_BENCH=""; BIN_GRAPH=""; BIN_SCHED=""
if [ -n "$PRE" ]; then
  if ! "$PRE/test_engine_scheduler" --gtest_list_tests > /dev/null 2>&1; then
    summary "prebuilt binaries do not start"; ldd "$PRE/bench_engine" | grep -i "not found"; exit 1
  fi
  BIN_BENCH="$PRE/bench_engine"; BIN_GRAPH="$PRE/test_engine_decode_graph"; BIN_SCHED="$PRE/test_engine_scheduler"
  summary "using prebuilt binaries from $PRE"
else
  t0=$(date +%s)
  if ! cmake -S . -B "$BUILD" -G Ninja -DEVIDENT_ENGINE_ONLY=ON -DEVIDENT_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
        > "$OUT/build.log" 2>&1; then
    summary "configure FAILED"; tail -n 30 "$OUT/build.log"; exit 1
  fi
  if ! cmake --build "$BUILD" --target test_engine_scheduler test_engine_decode_graph bench_engine -j 16 \
        >> "$OUT/build.log" 2>&1; then
    summary "build FAILED"; grep -E "error" -A3 "$OUT/build.log" | head -n 60; exit 1
  fi
  summary "build ok in $(( $(date +%s) - t0 )) s"
  BIN_BENCH="$BUILD/bench/bench_engine"; BIN_GRAPH="$BUILD/tests/engine/test_engine_decode_graph"
  BIN_SCHED="$BUILD/tests/engine/test_engine_scheduler"
fi

"$BIN_SCHED" > "$OUT/test-scheduler.log" 2>&1
summary "test_engine_scheduler rc=$? $(grep -E '^\[  (PASSED|FAILED)  \] [0-9]+ test' "$OUT/test-scheduler.log" | tr '\n' ' ')"
t0=$(date +%s)
timeout 120 "$BIN_GRAPH" > "$OUT/test-decode-graph.log" 2>&1
summary "test_engine_decode_graph rc=$? in $(( $(date +%s) - t0 )) s $(grep -E '^\[  (PASSED|FAILED|SKIPPED)  \] [0-9]+ test' "$OUT/test-decode-graph.log" | tr '\n' ' ')"
grep -E "Failure|Expected|Which is|what\(\)|error" "$OUT/test-decode-graph.log" | cut -c1-240 | head -n 20

if [ "$BENCH" = 1 ]; then
  t0=$(date +%s)
  timeout 180 "$BIN_BENCH" --layers 12 \
    --runs 1:1024:64,1:1024:64:nog,8:1024:64,32:1024:64,64:1024:64,1:8192:2,1:32768:2 \
    > "$OUT/bench-engine.jsonl" 2> "$OUT/bench-engine.log"
  summary "bench_engine rc=$? in $(( $(date +%s) - t0 )) s"
  cat "$OUT/bench-engine.log" | cut -c1-400
fi
echo "================ summary ================"
cat "$OUT/summary.txt"
