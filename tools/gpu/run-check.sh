#!/usr/bin/env bash
# One device call for a finished state from one packed set of binaries: the CUDA test binaries, then the engine beside
# transformers (run-final.sh DIR --compare).
# Usage (GPU machine, repository root): [SRC_LINK=PATH] tools/gpu/run-check.sh PACK
#   PACK: an xz tar of test_kernels_cuda, test_engine_model_kernels, test_engine_cuda_model, test_engine_decode_graph
#   and bench_engine, built elsewhere for sm_90a from the source tree at PATH (see run-final.sh). Logs go to $OUT.
set -u
B=/tmp/check-bins; mkdir -p "$B" && xz -dc "$1" | tar -C "$B" -xf - && chmod +x "$B"/* || exit 1
exec bash "$(dirname "$0")/run-final.sh" "$B" --compare
