#!/usr/bin/env bash
# One device call for prefill performance work: bench_engine's per-op prefill profile (--profile-prefill) of a 32K
# prompt at several step sizes, then serving runs, for one or more prebuilt bench_engine binaries (each built here for
# sm_90a; e.g. the old and the new binary in the same call, so their times compare on one card). Logs go to $OUT.
# Usage (GPU machine, repository root): tools/gpu/run-prefill.sh [--tests TDIR] [--filter F] [--bench-args "ARGS"]
#   [--env-run "NAME=VALUE" [--env-args "ARGS"]] [--ncu "NCU ARGS" [--ncu-env "NAME=VALUE"] [--ncu-args "ARGS"]]
#   DIR [DIR ...]
#   --tests TDIR: first the kernel tests (test_kernels_cuda, filtered: F, default the MoE / attention ones),
#   compute-sanitizer memcheck of their small cases, test_engine_cuda_model and test_engine_decode_graph, all from TDIR
#   (fixtures are found through /work/main, linked here when missing).
#   --env-run NAME=VALUE: after the DIRs, test_engine_cuda_model (with --tests) and the last DIR's bench_engine (with
#   --env-args, default ARGS) again with that variable set (e.g. a kernel variant picked by environment).
#   --ncu "NCU ARGS": last, Nsight Compute on the last DIR's bench_engine (--ncu-args, default ARGS; --ncu-env sets a
#   variable for it): `ncu --clock-control none NCU ARGS bench_engine ...`, its text report to $OUT/ncu.txt.
#   default ARGS: --layers 12 --budget 32768 --profile-prefill 32768:2048,32768:8192,32768:32768 --runs 1:32768:2
set -u
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
ARGS="--layers 12 --budget 32768 --profile-prefill 32768:2048,32768:8192,32768:32768 --runs 1:32768:2"
DIRS=()
TDIR=""
F='*MoeExperts*:MoeCuda.*:*AttentionPrefill*:*AttentionCuda*'
ENV_RUN=""
ENV_ARGS=""
NCU=""
NCU_ENV=""
NCU_ARGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) TDIR="$2"; shift ;;
    --filter) F="$2"; shift ;;
    --bench-args) ARGS="$2"; shift ;;
    --env-run) ENV_RUN="$2"; shift ;;
    --env-args) ENV_ARGS="$2"; shift ;;
    --ncu) NCU="$2"; shift ;;
    --ncu-env) NCU_ENV="$2"; shift ;;
    --ncu-args) NCU_ARGS="$2"; shift ;;
    *) DIRS+=("$1") ;;
  esac
  shift
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)" \
  | tee "$OUT/summary.txt"
if [ -n "$TDIR" ]; then
  [ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
  run_t() {  # name, command...
    local n=$1 t0=$(date +%s); shift
    timeout 300 "$@" > "$OUT/t-$n.log" 2>&1; local rc=$?
    echo "$n rc=$rc in $(( $(date +%s) - t0 )) s $(grep -E '^\[  (PASSED|FAILED|SKIPPED)  \]|ERROR SUMMARY' "$OUT/t-$n.log" \
      | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
    grep -E "^\[  FAILED|Failure|Expected|Which is|what\(\)|rel-L2|worst|Invalid|out of bounds" "$OUT/t-$n.log" \
      | cut -c1-200 | head -n 40 | tee -a "$OUT/summary.txt"
  }
  run_t kernels "$TDIR/test_kernels_cuda" --gtest_filter="$F"
  EVIDENT_KERNELS_SMALL=1 run_t memcheck compute-sanitizer --tool memcheck --error-exitcode 3 --print-limit 20 \
    "$TDIR/test_kernels_cuda" --gtest_filter="$F"
  run_t engine "$TDIR/test_engine_cuda_model"
  run_t graph "$TDIR/test_engine_decode_graph"
fi
for d in "${DIRS[@]}"; do
  tag=$(basename "$d")
  t0=$(date +%s)
  timeout 400 "$d/bench_engine" $ARGS > "$OUT/bench-$tag.log" 2>&1
  echo "== $d: bench_engine $ARGS rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  grep -vE "^bench_engine: attention decode|^\{" "$OUT/bench-$tag.log" | cut -c1-300 | tee -a "$OUT/summary.txt"
done
if [ -n "$ENV_RUN" ] && [ ${#DIRS[@]} -gt 0 ]; then
  d="${DIRS[${#DIRS[@]}-1]}"
  [ -n "$TDIR" ] && ( export "$ENV_RUN"; run_t engine-env "$TDIR/test_engine_cuda_model" )
  EA="${ENV_ARGS:-$ARGS}"
  t0=$(date +%s)
  env "$ENV_RUN" timeout 400 "$d/bench_engine" $EA > "$OUT/bench-env.log" 2>&1
  echo "== $ENV_RUN $d: bench_engine $EA rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  grep -vE "^bench_engine: attention decode|^\{" "$OUT/bench-env.log" | cut -c1-300 | tee -a "$OUT/summary.txt"
fi
if [ -n "$NCU" ] && [ ${#DIRS[@]} -gt 0 ]; then
  d="${DIRS[${#DIRS[@]}-1]}"
  NA="${NCU_ARGS:-$ARGS}"
  t0=$(date +%s)
  NCU_BIN=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n1)
  env ${NCU_ENV:-EVIDENT_NCU=1} timeout 300 "${NCU_BIN:-ncu}" --clock-control none $NCU "$d/bench_engine" $NA > "$OUT/ncu.txt" 2>&1
  echo "== ncu $NCU $d/bench_engine $NA rc=$? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
fi
