#!/usr/bin/env bash
# One device call for a finished state: the CUDA test binaries, then the engine beside transformers (run-compare.sh
# with FULL=1: decode at batch 1/8/32/64, prefill at 8K/32K/64K, 12 layers).
# Usage (GPU machine, repository root): [SRC_LINK=PATH] tools/gpu/run-check.sh PACK
#   PACK: an xz tar of test_kernels_cuda, test_engine_model_kernels, test_engine_cuda_model, test_engine_decode_graph
#   and bench_engine, built elsewhere for sm_90a from the source tree at PATH (default /work/main; the tests read their
#   fixtures by that absolute path, so it is linked to here when missing). Logs go to $OUT.
set -u
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
SRC_LINK="${SRC_LINK:-/work/main}"
[ -e "$SRC_LINK" ] || { mkdir -p "$(dirname "$SRC_LINK")" && ln -s "$PWD" "$SRC_LINK"; }
B=/tmp/check-bins; mkdir -p "$B" && xz -dc "$1" | tar -C "$B" -xf - && chmod +x "$B"/*
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
for t in test_kernels_cuda test_engine_model_kernels test_engine_cuda_model test_engine_decode_graph; do
  t0=$(date +%s)
  timeout 150 "$B/$t" > "$OUT/$t.log" 2>&1
  echo "$t rc=$? in $(( $(date +%s) - t0 )) s $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.log" | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
  grep -E "^\[  FAILED|Failure|Expected|Which is|what\(\)" "$OUT/$t.log" | cut -c1-200 | head -n 10
done
FULL=1 bash tools/gpu/run-compare.sh "$B/bench_engine" > /dev/null 2>&1
cat "$OUT/compare.log"
