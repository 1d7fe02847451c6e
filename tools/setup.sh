#!/usr/bin/env bash
# Installs evident's build dependencies (Debian 12 packages) and builds everything, tests included, in ./build.
# Idempotent: re-running only installs what is missing and rebuilds what changed.
#   tools/setup.sh            Release build
#   BUILD_DIR=... BUILD_TYPE=Debug EVIDENT_SANITIZE=ON tools/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config git python3
  libfaiss-dev libsqlite3-dev libcpp-httplib-dev libssl-dev nlohmann-json3-dev libicu-dev libspdlog-dev libgtest-dev
  libgmock-dev libopenblas-dev libpoppler-cpp-dev libgumbo-dev
)
# Tools the tests use: a real browser for the web page test, PDF makers for ingest fixtures, a load generator.
test_packages=(chromium chromium-driver ghostscript groff-base groff poppler-utils wrk curl)

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=()
for p in "${packages[@]}" "${test_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The OpenAI-compatible endpoint is tested with the real `openai` Python client (PyPI). Debian's own python3 has no pip
# and refuses system-wide installs (PEP 668): install python3-pip, then allow it explicitly.
if ! python3 -c "import openai" >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  python3 -m pip install --quiet --disable-pip-version-check openai 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openai
fi

BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}
cmake_args=(-S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE")
[ -n "${CI:-}" ] && cmake_args+=(-DEVIDENT_WERROR=ON)
[ -n "${EVIDENT_SANITIZE:-}" ] && cmake_args+=(-DEVIDENT_SANITIZE="$EVIDENT_SANITIZE")
[ -n "${EVIDENT_CUDA:-}" ] && cmake_args+=(-DEVIDENT_CUDA="$EVIDENT_CUDA")
cmake "${cmake_args[@]}" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "setup: built $BUILD_DIR/api/evident"
