#!/usr/bin/env bash
# One device call for engine/cuda/: build (engine-only) the CUDA engine's tests, run them (unit + cuda), then
# compute-sanitizer on small subsets (memcheck on three tests, racecheck on one tiny fixture). Logs go to $OUT
# (default ./gpu-out); a summary is printed last.
# Usage (on the GPU machine, from the repository root):
#   tools/gpu/run-engine.sh [--no-sanitizer | --sanitizers=memcheck,racecheck] [--prebuilt=BUILD_DIR] [gtest filter]
# --prebuilt=BUILD_DIR skips the build and runs BUILD_DIR's test binaries (built elsewhere for sm_90a and carried;
# their tests find the fixtures through the source path baked in at build time, which is linked to this tree).
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
BUILD=build-gpu
SAN=1; SANITIZERS=memcheck,racecheck; FILTER='*'; PREBUILT=
for a in "$@"; do
  case "$a" in
    --no-sanitizer) SAN=0 ;;
    --sanitizers=*) SANITIZERS="${a#--sanitizers=}" ;;
    --prebuilt=*) PREBUILT="${a#--prebuilt=}" ;;
    *) FILTER="$a" ;;
  esac
done
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
summary "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)"

t0=$(date +%s)
if [ -n "$PREBUILT" ]; then
  BUILD="$PREBUILT"
  src=$(grep -ao 'EVIDENT_TEST_SOURCE_DIR=[^ ]*' "$BUILD/build.ninja" 2>/dev/null | head -n1 | cut -d= -f2 | tr -d '"\\')
  if [ -n "$src" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi
  summary "prebuilt binaries from $BUILD (fixtures via ${src:-?})"
elif ! cmake -S . -B "$BUILD" -G Ninja -DEVIDENT_ENGINE_ONLY=ON -DEVIDENT_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
      > "$OUT/build.log" 2>&1; then
  summary "configure FAILED"; tail -n 30 "$OUT/build.log"; exit 1
fi
if [ -z "$PREBUILT" ]; then
  if ! cmake --build "$BUILD" --target test_engine_cuda_slots test_engine_cuda_model -j 16 >> "$OUT/build.log" 2>&1; then
    summary "build FAILED"; grep -E "error" -A3 "$OUT/build.log" | head -n 60; exit 1
  fi
  summary "build ok in $(( $(date +%s) - t0 )) s"
fi

"$BUILD/tests/engine-cuda/test_engine_cuda_slots" > "$OUT/test-slots.log" 2>&1
summary "test_engine_cuda_slots rc=$? $(grep -E '^\[  (PASSED|FAILED)  \] [0-9]+ test' "$OUT/test-slots.log" | tr '\n' ' ')"
t0=$(date +%s)
timeout 240 "$BUILD/tests/engine-cuda/test_engine_cuda_model" --gtest_filter="$FILTER" > "$OUT/test-cuda-model.log" 2>&1
rc=$?
summary "test_engine_cuda_model rc=$rc in $(( $(date +%s) - t0 )) s $(grep -E '^\[  (PASSED|FAILED)  \] [0-9]+ test' "$OUT/test-cuda-model.log" | tr '\n' ' ')"

has_san() { case ",$SANITIZERS," in *",$1,"*) return 0 ;; esac; return 1; }
if [ "$SAN" = 1 ] && has_san memcheck && command -v compute-sanitizer > /dev/null; then
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 --print-limit 20 \
    "$BUILD/tests/engine-cuda/test_engine_cuda_model" \
    --gtest_filter='fixtures/cuda_fixture.logits_match_transformers/tiny_a_fast:kernels/real_heads.chunked_prefill_equals_one_shot/fast:kernels/real_heads.padded_decode_and_graph_replay_equal_eager/fast' \
    > "$OUT/sanitizer-memcheck.log" 2>&1
  rc=$?
  summary "compute-sanitizer memcheck rc=$rc $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer-memcheck.log" | tail -n1)"
fi
# racecheck (shared-memory hazards) on one tiny fixture: the generic kernels and kernels/' MoE + norms at tiny shapes.
if [ "$SAN" = 1 ] && has_san racecheck && command -v compute-sanitizer > /dev/null; then
  timeout 120 compute-sanitizer --tool racecheck --error-exitcode 3 --print-limit 20 \
    "$BUILD/tests/engine-cuda/test_engine_cuda_model" \
    --gtest_filter='fixtures/cuda_fixture.logits_match_transformers/tiny_b_fast' \
    > "$OUT/sanitizer-racecheck.log" 2>&1
  rc=$?
  summary "compute-sanitizer racecheck rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-racecheck.log" | tail -n1)"
fi
echo "================ failures (first lines) ================"
grep -E "Failure|Expected|Which is|actual|error|what\(\)|^\[  FAILED  \] [A-Za-z]" "$OUT/test-cuda-model.log" | cut -c1-240 | head -n 50
echo "================ measurements ================"
grep -E "worst|refusal|kernels/|generic|  position " "$OUT/test-cuda-model.log" | cut -c1-400 | head -n 80
echo "================ summary ================"
cat "$OUT/summary.txt"
