#!/usr/bin/env bash
# scripts/gpu-bundle.sh — prepares the GPU checks on a development machine (no GPU needed).
# Builds every target with CUDA for Hopper in build-gpu/, then packs what a GPU machine runs into
# gpu-bundle.tar.xz (ignored by git; carry it to the GPU machine, about 11 MB: every binary embeds
# the same kernels, which a solid archive stores once): the stripped test, example, benchmark and
# CLI binaries with their CTest files in the same layout, the shared libraries they load that are
# neither glibc, libstdc++ nor the CUDA toolkit's (a bare CUDA image may lack Boost.Test, fmt,
# OpenBLAS, ...), the absolute source path the tests were built under, and optionally the PyTorch
# peer benchmark. scripts/gpu-check.sh unpacks and runs it there.
# usage: scripts/gpu-bundle.sh [path/to/torch_dpo_baseline.py]
set -euo pipefail
cd "$(dirname "$0")/.."
peer=${1:-}
./scripts/install-deps.sh
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEVIANT_CUDA=ON -DDEVIANT_BUILD_BENCHMARKS=ON >/dev/null
cmake --build build-gpu

stage=build-gpu-stage
rm -rf "$stage" gpu-bundle.tar.xz
mkdir -p "$stage/gpu-bundle/build-gpu" "$stage/gpu-bundle/lib"
binaries=()
while IFS= read -r f; do
  mkdir -p "$stage/gpu-bundle/$(dirname "$f")"
  if file -b "$f" | grep -q '^ELF'; then
    strip -o "$stage/gpu-bundle/$f" "$f"
    binaries+=("$f")
  else
    cp "$f" "$stage/gpu-bundle/$f"
  fi
done < <(find build-gpu -name CTestTestfile.cmake -not -path '*/consumer*'
         find build-gpu/tests build-gpu/examples build-gpu/benchmarks build-gpu/bin -maxdepth 1 -type f -perm -u+x \
              \( -name 'test_*' -o -name 'example_*' -o -name 'dpo_step' -o -name 'bench_ops' -o -name 'deviant' \))

# Shared libraries outside glibc, the compiler runtime and the CUDA toolkit (which the GPU machine has).
for b in "${binaries[@]}"; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u |
  grep -v -E '/(libc|libm|libmvec|libpthread|libdl|librt|libresolv|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so|/cuda' |
  while IFS= read -r lib; do cp -L "$lib" "$stage/gpu-bundle/lib/"; done

echo "$PWD" > "$stage/gpu-bundle/source-root"
if [ -n "$peer" ]; then cp "$peer" "$stage/gpu-bundle/"; fi
tar -C "$stage" -cf - gpu-bundle | xz -9e --lzma2=dict=192MiB > gpu-bundle.tar.xz
echo "gpu-bundle.tar.xz: $(du -h gpu-bundle.tar.xz | cut -f1) ($(du -sh "$stage/gpu-bundle" | cut -f1) unpacked," \
     "$(ls "$stage/gpu-bundle/lib" | wc -l) libraries, ${#binaries[@]} binaries)"
