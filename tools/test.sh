#!/usr/bin/env bash
# Builds evident with its tests (tools/setup.sh) and runs the whole suite. Fails when any test fails.
#   tools/test.sh                 every test
#   tools/test.sh -L unit         only one label (unit, integration, cuda, slow); extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" "$@"
