#!/bin/sh
# Fails when the compiled kernel library's host code calls exit(): nvcc compiles a __device__-only
# function reached from host code through a generic lambda into a stub that ends the process at
# run time without a message. Catches that on machines without a GPU, where the code never runs.
# usage: kernels_without_device_exit.sh path/to/libdeviant_kernels.a
set -eu
lib=$1
calls=$(objdump -dr "$lib" | grep -E 'R_X86_64_PLT32[[:space:]]+exit-' || true)
if [ -n "$calls" ]; then
  echo "$lib: host code calls exit() (a __device__-only function is called from host code):"
  objdump -dr "$lib" | grep -E '^[0-9a-f]+ <|R_X86_64_PLT32[[:space:]]+exit-' | grep -B1 'exit-' | grep '^[0-9a-f]' | head -5
  exit 1
fi
echo "$lib: no host-side exit() calls"
