#!/usr/bin/env bash
# One device call for kernels/: build (engine-only), the kernel tests (unit + cuda), compute-sanitizer memcheck and
# racecheck on small shapes, then the benchmark. Logs go to $OUT (default ./gpu-out); the summary is printed last.
# Usage (on the GPU machine, from the repository root): tools/gpu/run-kernels.sh [--no-bench] [--quick-bench] [--new-only]
#   --new-only: sanitizers on the MoE / prefill attention / sampling tests only, no GDN profiling, bench --new-only.
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
LOGS=/tmp/kernels-logs   # bulky logs stay on the machine; $OUT returns at most 8 files
mkdir -p "$LOGS"
BUILD=build-gpu
BENCH=1; BENCH_ARGS=""; NEW_ONLY=0
SAN_FILTER='*Gdn*:*Conv1d*:*Norm*:*Rope*:*Embedding*:*Sampling*:*Attention*:*Moe*'
for a in "$@"; do
  case "$a" in
    --no-bench) BENCH=0 ;;
    --quick-bench) BENCH_ARGS="--quick" ;;
    --new-only) NEW_ONLY=1; BENCH_ARGS="--new-only"; SAN_FILTER='*MoeExperts*:*MoeCuda.Permute*:*MoeCuda.Swiglu*:*Prefill*:*TopK*' ;;
  esac
done
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv > "$LOGS/gpu.txt" 2>&1
summary "gpu: $(tail -n1 "$LOGS/gpu.txt")"
summary "nvcc: $(nvcc --version | tail -n1)  cmake: $(cmake --version | head -n1)"

t0=$(date +%s)
if ! cmake -S . -B "$BUILD" -G Ninja -DEVIDENT_ENGINE_ONLY=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
      -DEVIDENT_KERNELS_PTXAS_VERBOSE=ON > "$LOGS/configure.log" 2>&1; then
  summary "configure FAILED"; tail -n 30 "$LOGS/configure.log"; exit 1
fi
if ! cmake --build "$BUILD" --target test_kernels_ref test_kernels_cuda bench_kernels -j 16 > "$LOGS/build.log" 2>&1; then
  summary "build FAILED"; grep -E "error" -A3 "$LOGS/build.log" | head -n 60; exit 1
fi
summary "build ok in $(( $(date +%s) - t0 )) s"
grep -E "Compiling entry|registers|spill" "$LOGS/build.log" | grep -B1 -A1 "gdn" | head -n 40 > "$OUT/ptxas-gdn.txt"
grep -E "Compiling entry|registers|spill" "$LOGS/build.log" | grep -A2 -E "prefill|grouped_gemm|sample_kernel|permute" \
  | grep -E "Compiling|registers|spill" | sed -E 's/.*entry function .(_Z[^ ]*)..*/\1/' | cut -c1-160 > "$LOGS/ptxas-new.txt"

"$BUILD/tests/kernels/test_kernels_ref" > "$LOGS/test-ref.log" 2>&1; summary "test_kernels_ref rc=$? $(tail -n1 "$LOGS/test-ref.log")"
TEST_FILTER='*'
[ "$NEW_ONLY" = 1 ] && TEST_FILTER='*Moe*:*Attention*:*Sampling*'
timeout 300 "$BUILD/tests/kernels/test_kernels_cuda" --gtest_filter="$TEST_FILTER" > "$OUT/test-cuda.log" 2>&1; rc=$?
summary "test_kernels_cuda rc=$rc $(grep -E '^\[  (PASSED|FAILED)  \] [0-9]+ test' "$OUT/test-cuda.log" | tr '\n' ' ')"

export EVIDENT_KERNELS_SMALL=1
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 3 --print-limit 20 \
    "$BUILD/tests/kernels/test_kernels_cuda" --gtest_filter="$SAN_FILTER" \
    > "$OUT/sanitizer-$tool.log" 2>&1
  rc=$?
  summary "compute-sanitizer $tool rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -n1)"
done
unset EVIDENT_KERNELS_SMALL

# Opcode histogram of the scan kernel (BV=32, 16 warps) from the SASS: what the WMMA code compiled to.
obj=$(find "$BUILD" -name 'gated-delta-rule.cu.o' | head -n1)
[ "$NEW_ONLY" = 1 ] && obj=""
if [ -n "$obj" ] && command -v cuobjdump > /dev/null; then
  cuobjdump -sass "$obj" | awk '/Function : .*gdn_chunk_scan_kernelILi32ELi16E/{f=1;next} /Function :/{f=0} f' \
    | grep -oE '^ +/\*[0-9a-f]+\*/ +[A-Z0-9_.]+' | awk '{print $2}' | sort | uniq -c | sort -rn | head -n 40 \
    > "$LOGS/sass-hist.txt"
  { echo "---- SASS opcode histogram, gdn_chunk_scan_kernel<32,16>"; cat "$LOGS/sass-hist.txt"; } >> "$OUT/ptxas-gdn.txt"
fi
if [ "$NEW_ONLY" = 0 ] && command -v ncu > /dev/null; then
  # The two chunked kernels at 32K tokens: where the time goes (launch 0/1 = prepare/scan of the first timed call).
  timeout 240 ncu --kernel-name regex:'gdn_(prepare|chunk_scan)' --launch-skip 2 --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section SourceCounters "$BUILD/kernels/bench_kernels" --gdn-only > "$OUT/ncu.txt" 2>&1
  summary "ncu rc=$?"
fi
if [ "$BENCH" = 1 ]; then
  timeout 300 "$BUILD/kernels/bench_kernels" $BENCH_ARGS > "$OUT/bench.md" 2>&1; summary "bench rc=$?"
fi
echo "================ failures (first lines) ================"
grep -E "Failure|Expected|Which is|actual|error|^\[  FAILED  \] [A-Za-z]" "$OUT/test-cuda.log" | cut -c1-200 | head -n 40
echo "================ accuracy ================"
grep "rel-L2" "$OUT/test-cuda.log" | head -n 40
echo "================ bench ================"
cat "$OUT/bench.md" 2>/dev/null
echo "================ ptxas (new kernels) ================"
cat "$LOGS/ptxas-new.txt" 2>/dev/null | head -n 30
echo "================ sanitizer errors (first lines) ================"
grep -hE "Invalid|Race|hazard|ERROR" "$OUT"/sanitizer-*.log 2>/dev/null | head -n 20
echo "================ summary ================"
cat "$OUT/summary.txt"
