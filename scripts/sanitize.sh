#!/usr/bin/env bash
# Builds the whole test suite with AddressSanitizer + UndefinedBehaviorSanitizer (clang, -O0, CPU
# only) and runs it. Any report fails the run: UBSan does not recover, ASan stops at the first
# error, LeakSanitizer checks every test program at exit.
#   scripts/sanitize.sh [build-dir]      (default: build-asan)
#   SANITIZE_CXX=g++ SANITIZE_OPT=-Og picks another compiler and optimisation level.
# Why clang at -O0: it builds the suite in half the time GCC takes at -Og (the build is most of this
# stage; the tests' time is spent in the BLAS and oneDNN libraries, which are not instrumented, and
# barely changes), and its UBSan checks float-to-integer conversions, which GCC's does not.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-asan}
cxx=${SANITIZE_CXX:-clang++}
case "$cxx" in *clang++*) cc=${cxx/clang++/clang} ;; *g++*) cc=${cxx/g++/gcc} ;; *) cc=cc ;; esac
command -v "$cxx" > /dev/null || { echo "sanitize.sh: $cxx not found (scripts/install-deps.sh installs clang; SANITIZE_CXX picks another)" >&2; exit 1; }
flags="${SANITIZE_OPT:--O0} -g1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_CXX_FLAGS_SANITIZE="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS_SANITIZE="-fsanitize=address,undefined" -DDEVIANT_CUDA=OFF -DDEVIANT_BUILD_BENCHMARKS=OFF > /dev/null
cmake --build "$build" -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
# Open MPI unloads its plugins at MPI_Finalize, leaving their allocations without a module name;
# kept loaded, the suppressions above can name them.
export OMPI_MCA_mca_base_component_disable_dlclose=1
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 1200
