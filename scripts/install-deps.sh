#!/usr/bin/env bash
# Installs the Debian packages deviant builds and tests with. Idempotent: packages already
# present are skipped, so running it before every build costs a second.
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config
  libboost-test-dev          # unit tests
  libbenchmark-dev           # micro benchmarks
  libopenblas-dev            # CPU matrix products (float64, and float32 with DEVIANT_CPU_GEMM=openblas)
  libdnnl-dev                # CPU float32 matrix products (oneDNN; faster than OpenBLAS here, docs/performance.md)
  nlohmann-json3-dev         # JSON / JSON Lines
  libcli11-dev               # command line
  libfmt-dev                 # formatting
  libtomlplusplus-dev        # trainer config files
  libutf8proc-dev            # Unicode classes for the BPE pre-tokenizer
  gnuplot-nox                # plots of the demo experiment
  libpcre2-dev               # pre-tokenizer regex of tokenizer.json (BPE tokenizer)
  zlib1g-dev                 # gzip compression ratio (diversity metrics)
  clang libclang-rt-dev      # libFuzzer targets (scripts/fuzz.sh)
  openmpi-bin libopenmpi-dev # data-parallel training over several processes (dist/)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
