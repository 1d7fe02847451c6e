#!/usr/bin/env bash
# One device call to check a finished state: every CUDA test binary, then bench_engine at 12 layers (prefill profile
# of a 32K prompt at 32768-token steps; decode at batch 1/8/32/64 with graphs; prefill 8K and 32K through the
# scheduler). Usage (GPU machine, repository root): [SRC_LINK=PATH] tools/gpu/run-final.sh DIR [--tests-only]
#   DIR: test_kernels_cuda, test_engine_model_kernels, test_engine_cuda_model, test_engine_decode_graph and
#   bench_engine, built elsewhere for sm_90a from the source tree at PATH (default /work/main: the tests read their
#   fixtures by that absolute path, so it is linked to here when missing). Logs and JSON lines go to $OUT.
#   --tests-only: the tests, then compute-sanitizer memcheck and racecheck on the small cases of the sm_90a prefill
#   kernels (wgmma MoE tiling, warp-specialized attention prefill), instead of the benchmark.
#   --compare: the tests, then the engine beside transformers (run-compare.sh with FULL=1 and DIR/bench_engine).
set -u
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
B="$1"
MODE="${2:-}"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
SRC_LINK="${SRC_LINK:-/work/main}"
[ -e "$SRC_LINK" ] || { mkdir -p "$(dirname "$SRC_LINK")" && ln -s "$PWD" "$SRC_LINK"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
for t in test_kernels_cuda test_engine_model_kernels test_engine_cuda_model test_engine_decode_graph; do
  t0=$(date +%s)
  timeout 300 "$B/$t" > "$OUT/$t.log" 2>&1
  echo "$t rc=$? in $(( $(date +%s) - t0 )) s $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.log" | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
  grep -E "^\[  FAILED|Failure|Expected|Which is|what\(\)" "$OUT/$t.log" | cut -c1-200 | head -n 10
done
if [ "$MODE" = --compare ]; then
  FULL=1 bash "$(dirname "$0")/run-compare.sh" "$B/bench_engine" > /dev/null 2>&1
  cat "$OUT/compare.log"
  exit 0
fi
if [ "$MODE" = --tests-only ]; then
  SAN_FILTER='*MoeExpertsCuda*wgmma*:*AttentionPrefillCuda*single_token*:*AttentionPrefillCuda*odd_prompt*:*AttentionPrefillCuda*chunk_on_prefix*'
  for tool in memcheck racecheck; do
    t0=$(date +%s)
    timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 "$B/test_kernels_cuda" --gtest_filter="$SAN_FILTER" \
      > "$OUT/sanitizer-$tool.log" 2>&1
    echo "compute-sanitizer $tool rc=$? in $(( $(date +%s) - t0 )) s: $(grep -E '^\[  (PASSED|FAILED) |ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
  done
  exit 0
fi
ARGS="--layers 12 --budget 32768 --profile-prefill 32768:32768 --runs 1:1024:64,8:1024:64,32:1024:64,64:1024:64,1:8192:2,1:32768:2,1:65536:2"
echo "bench_engine $ARGS" | tee -a "$OUT/summary.txt"
timeout 400 "$B/bench_engine" $ARGS > "$OUT/bench.jsonl" 2> "$OUT/bench.log"
echo "bench_engine rc=$?" | tee -a "$OUT/summary.txt"
grep -v "^ " "$OUT/bench.log" | tail -n 40
