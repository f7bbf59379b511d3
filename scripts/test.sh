#!/usr/bin/env bash
# Installs dependencies, configures, builds and runs every test: the test suite (Release), then
# every parser fuzzed for a fixed time (scripts/fuzz.sh) and the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer (scripts/sanitize.sh).
# Usage: scripts/test.sh [build-dir]
#   DEVIANT_TEST_STAGES="suite fuzz sanitize" (the default) picks stages; DEVIANT_FUZZ_SECONDS=30
#   is the time per fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/fetch-models.sh   # real models for the tests that use them (skipped when offline)
build=${1:-build}
stages=${DEVIANT_TEST_STAGES:-suite fuzz sanitize}
jobs=$(nproc)
start=$(date +%s)
stage_time() { echo "== $1: $(( $(date +%s) - start )) s since the start"; }
if [[ " $stages " == *" suite "* ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build "$build" -j "$jobs"
  ctest --test-dir "$build" --output-on-failure -j "$jobs"
  stage_time "test suite"
fi
if [[ " $stages " == *" fuzz "* ]]; then
  ./scripts/fuzz.sh "${DEVIANT_FUZZ_SECONDS:-30}"
  stage_time "fuzzing"
fi
if [[ " $stages " == *" sanitize "* ]]; then
  ./scripts/sanitize.sh
  stage_time "sanitizers"
fi
