#!/usr/bin/env bash
# One device call for engine/cuda's own kernels against their CPU references (test_engine_model_kernels): the whole
# test at the real shapes, then the `Small` tests under compute-sanitizer memcheck. Logs go to $OUT (2 files).
# Usage (GPU machine, repository root): tools/gpu/run-model-kernels.sh [--prebuilt DIR]
#   --prebuilt DIR: test_engine_model_kernels from DIR (built elsewhere for sm_90a against the same CUDA); without it
#   the test is built here (engine-only, sm_90a).
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PRE=""
[ "${1:-}" = "--prebuilt" ] && PRE="$2"
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"; : > "$OUT/tests.log"
summary "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
T=test_engine_model_kernels
if [ -n "$PRE" ]; then
  BIN="$PRE/$T"
else
  cmake -S . -B build-gpu -G Ninja -DEVIDENT_ENGINE_ONLY=ON -DEVIDENT_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    > "$OUT/build.log" 2>&1 && cmake --build build-gpu --target $T -j 16 >> "$OUT/build.log" 2>&1 \
    || { summary "build FAILED"; grep -E "error" -A3 "$OUT/build.log" | head -n 40; exit 1; }
  BIN=$(find build-gpu -name $T -type f | head -n1)
fi
t0=$(date +%s)
echo "======== $T" >> "$OUT/tests.log"
timeout 70 "$BIN" >> "$OUT/tests.log" 2>&1; rc=$?
summary "$T rc=$rc in $(( $(date +%s) - t0 )) s $(grep -E '^\[  (PASSED|FAILED|SKIPPED)  \] [0-9]+ test' "$OUT/tests.log" | tr '\n' ' ')"
grep -E "^\[  FAILED|^\[       OK|Failure|Expected|Which is|gpu .* ref" "$OUT/tests.log" | cut -c1-300 | head -n 60
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -n1)
if [ -n "$SAN" ]; then
  t0=$(date +%s)
  echo "======== memcheck $T --gtest_filter=*Small*" >> "$OUT/tests.log"
  timeout 45 "$SAN" --tool memcheck --leak-check full --error-exitcode 7 "$BIN" --gtest_filter='*Small*' \
    >> "$OUT/tests.log" 2>&1; rc=$?
  summary "memcheck (Small tests) rc=$rc in $(( $(date +%s) - t0 )) s $(grep -E 'ERROR SUMMARY' "$OUT/tests.log" | tail -n1)"
else
  summary "compute-sanitizer not found"
fi
echo "================ summary ================"
cat "$OUT/summary.txt"
