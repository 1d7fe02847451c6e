#!/usr/bin/env bash
# One device call for decode performance work (engine/cuda): builds bench_engine and the CUDA engine tests, runs the
# per-op decode profile (bench_engine --profile: eager steps, GPU time per op, gemv_small vs cuBLAS) at batch 1 and 8
# after 1024-token prompts, the graph decode runs both ways, then the tests. Logs and JSON lines go to $OUT.
# Usage (GPU machine, repository root): tools/gpu/run-decodeperf.sh [--no-tests] [--prebuilt DIR]
#   --prebuilt DIR: bench_engine, test_engine_cuda_model, test_engine_decode_graph from DIR (built elsewhere for
#   sm_90a with the same CUDA; the tests find their fixtures through a link from the build's source path to here).
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
BUILD=build-gpu
TESTS=1; PRE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-tests) TESTS=0 ;;
    --prebuilt) PRE="$2"; shift ;;
  esac
  shift
done
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
summary "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
t0=$(date +%s)
BENCH="$BUILD/bench/bench_engine"; T_MODEL="$BUILD/tests/engine-cuda/test_engine_cuda_model"
T_GRAPH="$BUILD/tests/engine/test_engine_decode_graph"
if [ -n "$PRE" ]; then
  BENCH="$PRE/bench_engine"; T_MODEL="$PRE/test_engine_cuda_model"; T_GRAPH="$PRE/test_engine_decode_graph"
  [ -n "${SRC_LINK:-}" ] && [ ! -e "$SRC_LINK" ] && mkdir -p "$(dirname "$SRC_LINK")" && ln -s "$PWD" "$SRC_LINK"
  "$BENCH" --help > /dev/null 2>&1; ldd "$BENCH" | grep -i "not found"
  summary "prebuilt binaries from $PRE"
else
  if ! cmake -S . -B "$BUILD" -G Ninja -DEVIDENT_ENGINE_ONLY=ON -DEVIDENT_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
        > "$OUT/build.log" 2>&1; then
    summary "configure FAILED"; tail -n 30 "$OUT/build.log"; exit 1
  fi
  if ! cmake --build "$BUILD" --target bench_engine test_engine_cuda_model test_engine_decode_graph -j 16 \
        >> "$OUT/build.log" 2>&1; then
    summary "build FAILED"; grep -E "error" -A3 "$OUT/build.log" | head -n 60; exit 1
  fi
  summary "build ok in $(( $(date +%s) - t0 )) s"
fi
t0=$(date +%s)
timeout 240 "$BENCH" --layers 12 --profile \
  --runs 1:1024:64,8:1024:64,1:1024:64:cublas,8:1024:64:cublas \
  > "$OUT/bench-profile.jsonl" 2> "$OUT/bench-profile.log"
summary "bench_engine --profile rc=$? in $(( $(date +%s) - t0 )) s"
cut -c1-300 "$OUT/bench-profile.log"
if [ "$TESTS" = 1 ]; then
  for t in "$T_MODEL" "$T_GRAPH"; do
    n=$(basename $t)
    timeout 150 "$t" > "$OUT/$n.log" 2>&1
    summary "$n rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED)  \] [0-9]+ test' "$OUT/$n.log" | tr '\n' ' ')"
    grep -E "^\[  FAILED|Failure|Expected|Which is|what\(\)" "$OUT/$n.log" | cut -c1-240 | head -n 20
  done
fi
echo "================ summary ================"
cat "$OUT/summary.txt"
