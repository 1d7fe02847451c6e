#!/usr/bin/env bash
# One device call: bench_engine (ours) and transformers' own Qwen3NextForCausalLM, both at 12 layers of the 80B
# model's real widths with random weights, on the same card, one after the other (separate processes).
# Usage (GPU machine, repository root): [FULL=1] tools/gpu/run-compare.sh [BENCH_ENGINE]
#   BENCH_ENGINE: a prebuilt bench_engine (sm_90a, CUDA 13); default: build it with the engine-only build.
#   FULL=1: every row the engine issue asks for: decode at batch 1/8/32/64 and prefill at 8K/32K/64K (bench_engine
#   with 32768-token prefill steps, as the local generator's cuda device runs); default: batch 1/8 and 8K.
# Output in $OUT: engine.jsonl, transformers.jsonl, compare.log.
set -u
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
LOG="$OUT/compare.log"; : > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }
say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)"
BIN="${1:-}"
if [ -z "$BIN" ]; then
  cmake -S . -B build-gpu -G Ninja -DEVIDENT_ENGINE_ONLY=ON -DCMAKE_CUDA_ARCHITECTURES=90a >> "$LOG" 2>&1 &&
    cmake --build build-gpu --target bench_engine -j 16 >> "$LOG" 2>&1 || { say "build FAILED"; tail -n 30 "$LOG"; exit 1; }
  BIN=build-gpu/bench/bench_engine
fi
RUNS="1:1024:32,8:1024:32,1:8192:2"; EXTRA=""; BATCHES=1,8; PREFILL=8192
if [ "${FULL:-0}" = 1 ]; then
  RUNS="1:1024:32,8:1024:32,32:1024:32,64:1024:32,1:8192:2,1:32768:2,1:65536:2"; EXTRA="--budget 32768"
  BATCHES=1,8,32,64; PREFILL=8192,32768,65536
fi
t0=$(date +%s)
timeout 200 "$BIN" --layers 12 $EXTRA --runs "$RUNS" > "$OUT/engine.jsonl" 2>> "$LOG"
say "bench_engine --layers 12 $EXTRA --runs $RUNS rc=$? in $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
timeout 330 python3 tools/reference/bench_transformers_qwen3next.py --layers 12 --prompt 1024 --gen 16 \
  --batches "$BATCHES" --prefill "$PREFILL" > "$OUT/transformers.jsonl" 2>> "$LOG"
say "transformers --layers 12 rc=$? in $(( $(date +%s) - t0 )) s"
say "---- engine"; cat "$OUT/engine.jsonl" | tee -a "$LOG"
say "---- transformers"; cat "$OUT/transformers.jsonl" | tee -a "$LOG"
