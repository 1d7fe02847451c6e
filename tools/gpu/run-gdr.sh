#!/usr/bin/env bash
# One device call for the chunked gated delta rule, with binaries built elsewhere for sm_90a and carried in .gdr-bin/
# (test_kernels_cuda, bench_kernels): the GDN tests, compute-sanitizer memcheck + racecheck on the small GDN cases,
# then bench_kernels --gdn-only (old WMMA scan, mma scan, mma scan in clusters, in the same process). Logs go to $OUT.
# Usage (on the GPU machine, repository root): tools/gpu/run-gdr.sh [--no-sanitizer] [--no-bench] [--ncu] [--ncu-fused]
#   [--ncu-wg] (v15: the per-instruction SASS source page with stall samples, as CSV; GDR_WG_MODES: 0 = v15, 1 = its
#   producers only, 2 = its consumers only)
set -u
OUT="${OUT:-$PWD/gpu-out}"
BIN="${GDR_BIN:-.gdr-bin}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
SAN=1; NCU=0; NCUF=0; NCUW=0; BENCH=1
for a in "$@"; do
  case "$a" in
    --no-sanitizer) SAN=0 ;;
    --no-bench) BENCH=0 ;;
    --ncu) NCU=1 ;;
    --ncu-fused) NCUF=1 ;;
    --ncu-wg) NCUW=1 ;;
  esac
done
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
summary "gpu: $(nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | head -n1)"
chmod +x "$BIN"/* 2>/dev/null

timeout 60 "$BIN/test_kernels_cuda" --gtest_filter='*Gdn*' > "$OUT/test-gdn.log" 2>&1; rc=$?
summary "test_kernels_cuda *Gdn* rc=$rc $(grep -E '^\[  (PASSED|FAILED)  \] [0-9]+ test' "$OUT/test-gdn.log" | tr '\n' ' ')"

# The benchmark before the sanitizers, so that a call cut short by its time limit still has the numbers.
if [ "$BENCH" = 1 ]; then timeout 60 "$BIN/bench_kernels" --gdn-only > "$OUT/bench.md" 2>&1; summary "bench rc=$?"; fi

if [ "$SAN" = 1 ]; then
  export EVIDENT_KERNELS_SMALL=1
  for tool in memcheck racecheck; do
    timeout "${GDR_SAN_TIMEOUT:-60}" compute-sanitizer --tool $tool --error-exitcode 3 --print-limit 20 \
      "$BIN/test_kernels_cuda" --gtest_filter='*Gdn*' > "$OUT/sanitizer-$tool.log" 2>&1
    rc=$?
    summary "compute-sanitizer $tool rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -n1)"
  done
  unset EVIDENT_KERNELS_SMALL
fi

if [ "$NCU" = 1 ] && command -v ncu > /dev/null; then
  # The first launch of each: prepare (for the mma scan) and the mma scan with v_tile 32, 2 stages.
  timeout 150 ncu --kernel-name regex:'gdn_(prepare|mma_scan)' --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
    --section InstructionStats --section MemoryWorkloadAnalysis "$BIN/bench_kernels" --gdn-only > "$OUT/ncu-prep.txt" 2>&1
  timeout 150 ncu --kernel-name regex:'gdn_mma_scan' --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
    --section InstructionStats --section SourceCounters "$BIN/bench_kernels" --gdn-only > "$OUT/ncu.txt" 2>&1
  summary "ncu rc=$?"
fi
if [ "$NCUF" = 1 ] && command -v ncu > /dev/null; then
  # The first launch of the cooperative kernel (v14, the default): stall reasons and the top stall locations.
  timeout 200 ncu --kernel-name regex:'gdn_coop' --launch-count 1 --section SpeedOfLight --section Occupancy \
    --section WarpStateStats --section SchedulerStats --section InstructionStats --section SourceCounters \
    --section MemoryWorkloadAnalysis "$BIN/bench_kernels" --gdn-only > "$OUT/ncu-fused.txt" 2>&1
  summary "ncu fused rc=$?"
fi
if [ "$NCUW" = 1 ] && command -v ncu > /dev/null; then
  # The first launch of v15 in each mode given by GDR_WG_MODES (default "0"; 1 = producers only, 2 = consumers only): the
  # per-instruction SASS source page with sampled stalls, as CSV (xz).
  for m in ${GDR_WG_MODES:-0}; do
    timeout 150 ncu --kernel-name-base demangled --kernel-name regex:"gdn_wg_kernel<\\(int\\)$m>" --launch-count 1 \
      --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \
      "$BIN/bench_kernels" --gdn-only > "$OUT/ncu-wg$m.csv" 2>&1
    summary "ncu wg mode $m rc=$?"
    xz -T4 "$OUT/ncu-wg$m.csv"
  done
fi
echo "================ failures ================"
grep -E "Failure|Expected|Which is|actual|^\[  FAILED  \] [A-Za-z]" "$OUT/test-gdn.log" | cut -c1-200 | head -n 30
echo "================ accuracy ================"
grep "rel-L2" "$OUT/test-gdn.log" | head -n 60
echo "================ bench ================"
cat "$OUT/bench.md"
echo "================ sanitizer errors (first lines) ================"
grep -hE "Invalid|Race|hazard|ERROR" "$OUT"/sanitizer-*.log 2>/dev/null | head -n 20
echo "================ summary ================"
cat "$OUT/summary.txt"
