#!/usr/bin/env bash
# One device call for the serving layer on the CUDA engine: test_engine_decode_graph (graph replay vs eager, device
# sampling vs kernels::sample_ref, serving_engine with concurrent callers) plain and under compute-sanitizer memcheck.
# Usage (GPU machine, repository root): [SRC_LINK=PATH] tools/gpu/run-serving-checks.sh DIR   (DIR holds
# test_engine_decode_graph, built elsewhere for sm_90a from the source tree at PATH, default /work/main; the tests read
# tests/fixtures by that absolute path, so it is linked to here when missing)
set -u
OUT="${OUT:-$PWD/gpu-out}"; mkdir -p "$OUT"
B="$1"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
SRC_LINK="${SRC_LINK:-/work/main}"
[ -e "$SRC_LINK" ] || { mkdir -p "$(dirname "$SRC_LINK")" && ln -s "$PWD" "$SRC_LINK"; }
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/summary.txt"
"$B/test_engine_decode_graph" > "$OUT/decode-graph.log" 2>&1
echo "test_engine_decode_graph rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/decode-graph.log" | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
grep -E "Failure|Expected|Which is|FAILED|what\(\)" "$OUT/decode-graph.log" | head -n 20
compute-sanitizer --tool memcheck --leak-check full "$B/test_engine_decode_graph" > "$OUT/decode-graph-memcheck.log" 2>&1
echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY|LEAK SUMMARY' "$OUT/decode-graph-memcheck.log" | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
