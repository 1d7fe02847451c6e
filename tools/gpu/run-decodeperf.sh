#!/usr/bin/env bash
# One device call for decode performance work (engine/cuda): the CUDA engine tests first, then bench_engine at 12
# layers with the per-op decode profile (--profile: eager steps, GPU time per op on the default / cuBLAS-only / legacy
# paths) and the serving runs (graph decode at batch 1, 8, 32, 64 beside the same runs on the legacy paths; prefill
# 8K and 32K), then the other engine-only tests (unit + kernels). Logs and JSON lines go to $OUT (4 files).
# Usage (GPU machine, repository root): tools/gpu/run-decodeperf.sh [--prebuilt DIR] [--runs SPEC] [--no-tests]
#   --prebuilt DIR: bench_engine and the test binaries from DIR (built elsewhere for sm_90a against the same CUDA);
#   set SRC_LINK to the build's source path (e.g. /work/main) so the tests find their fixtures through a link to here.
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
BUILD=build-gpu
TESTS=1; PRE=""
RUNS="1:1024:64,1:1024:64:legacy,1:1024:64:nog,8:1024:64,8:1024:64:legacy,32:1024:64,32:1024:64:legacy"
RUNS="$RUNS,64:1024:64,64:1024:64:legacy,1:8192:2,1:32768:2"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-tests) TESTS=0 ;;
    --prebuilt) PRE="$2"; shift ;;
    --runs) RUNS="$2"; shift ;;
  esac
  shift
done
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"; : > "$OUT/tests.log"
summary "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
CUDA_TESTS="test_engine_cuda_model test_engine_decode_graph"
OTHER_TESTS="test_engine_cuda_slots test_engine_scheduler test_engine_model test_engine_checkpoint test_engine_sampling"
OTHER_TESTS="$OTHER_TESTS test_base test_kernels_ref test_kernels_cuda"
t0=$(date +%s)
if [ -n "$PRE" ]; then
  BIN="$PRE"
  [ -n "${SRC_LINK:-}" ] && [ ! -e "$SRC_LINK" ] && mkdir -p "$(dirname "$SRC_LINK")" && ln -s "$PWD" "$SRC_LINK"
  ldd "$BIN/bench_engine" | grep -i "not found"
  summary "prebuilt binaries from $PRE"
else
  BIN="$BUILD/bin-links"
  if ! cmake -S . -B "$BUILD" -G Ninja -DEVIDENT_ENGINE_ONLY=ON -DEVIDENT_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
        > "$OUT/build.log" 2>&1; then
    summary "configure FAILED"; tail -n 30 "$OUT/build.log"; exit 1
  fi
  if ! cmake --build "$BUILD" --target bench_engine $CUDA_TESTS $OTHER_TESTS -j 16 >> "$OUT/build.log" 2>&1; then
    summary "build FAILED"; grep -E "error" -A3 "$OUT/build.log" | head -n 60; exit 1
  fi
  mkdir -p "$BIN"; for f in $(find "$BUILD" -type f -perm -u+x \( -name 'test_*' -o -name bench_engine \)); do
    ln -sf "$PWD/$f" "$BIN/$(basename "$f")"; done
  summary "build ok in $(( $(date +%s) - t0 )) s"
fi
run_test() {
  local n=$1 t0=$(date +%s)
  echo "======== $n" >> "$OUT/tests.log"
  timeout 200 "$BIN/$n" > "$OUT/t.log" 2>&1; local rc=$?
  cat "$OUT/t.log" >> "$OUT/tests.log"
  summary "$n rc=$rc in $(( $(date +%s) - t0 )) s $(grep -E '^\[  (PASSED|FAILED|SKIPPED)  \] [0-9]+ test' "$OUT/t.log" | tr '\n' ' ')"
  grep -E "^\[  FAILED|Failure|Expected|Which is|what\(\)" "$OUT/t.log" | cut -c1-240 | head -n 20
  rm -f "$OUT/t.log"
}
if [ "$TESTS" = 1 ]; then for n in $CUDA_TESTS; do run_test $n; done; fi
t0=$(date +%s)
timeout 300 "$BIN/bench_engine" --layers 12 --profile --runs "$RUNS" > "$OUT/bench.jsonl" 2> "$OUT/bench.log"
summary "bench_engine --profile --runs $RUNS rc=$? in $(( $(date +%s) - t0 )) s"
grep -vE "^  " "$OUT/bench.log" | cut -c1-400
if [ "$TESTS" = 1 ]; then for n in $OTHER_TESTS; do run_test $n; done; fi
echo "================ summary ================"
cat "$OUT/summary.txt"
