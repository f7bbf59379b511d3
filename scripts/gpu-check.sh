#!/usr/bin/env bash
# scripts/gpu-check.sh — the project's GPU checks in one command, on a CUDA machine.
# Runs the prebuilt binaries of gpu-bundle.tar.xz (scripts/gpu-bundle.sh, carried to the machine)
# or, without a bundle, builds build-gpu/ with CMake first (that needs scripts/install-deps.sh's
# libraries on the machine). Each step has its own time limit, so a hang still leaves a summary.
#   card      nvidia-smi: the card, driver and memory the numbers belong to
#   test      ctest: every CPU-vs-CUDA table, 20 CUDA DPO steps against the CPU float32 run, the
#             examples (the install test is left out: it configures a new CMake project)
#   sanitize  compute-sanitizer memcheck over the CUDA cases of the op, optimizer and trainer tests
#   dist      NCCL data parallelism over every GPU (mpirun), against one process
#   bench     dpo_step --device cuda (tiny, small, gpt2s; dpo and orpo), then the PyTorch peer in
#             the same run (eager: all; torch.compile: gpt2s dpo), then compare_steps.py's table
# Logs go to $OUT (or gpu-check-out/): summary.md, ctest.log, sanitizer.log, deviant.jsonl,
# torch_eager.jsonl, torch_compiled.jsonl.
# usage: scripts/gpu-check.sh [all|test|dist|bench] [peer script, default gpu-bundle/torch_dpo_baseline.py]
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
peer=${2:-gpu-bundle/torch_dpo_baseline.py}
out=${OUT:-gpu-check-out}
mkdir -p "$out"
summary=$out/summary.md
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
t0=$(date +%s)
note() { echo "$*" | tee -a "$summary"; }
elapsed() { echo "$(( $(date +%s) - t0 )) s"; }

note "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
note "card: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"

if [ -f gpu-bundle.tar.xz ] && [ ! -d gpu-bundle ]; then
  tar -xJf gpu-bundle.tar.xz 2>/dev/null ||
    python3 -c "import tarfile; tarfile.open('gpu-bundle.tar.xz').extractall()" || { note "cannot unpack gpu-bundle.tar.xz"; exit 1; }
fi
if [ -f gpu-bundle/source-root ]; then
  # The binaries and CTest files name the absolute paths they were built under: make them resolve here.
  src=$(cat gpu-bundle/source-root)
  [ -e build-gpu ] || ln -s gpu-bundle/build-gpu build-gpu
  if [ "$src" != "$PWD" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi
  export LD_LIBRARY_PATH=$PWD/gpu-bundle/lib:$LD_LIBRARY_PATH
  note "binaries: gpu-bundle (built under $src)"
else
  note "binaries: building build-gpu with CMake"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEVIANT_CUDA=ON -DDEVIANT_BUILD_BENCHMARKS=ON > "$out/build.log" 2>&1 &&
    cmake --build build-gpu -j "$(nproc)" >> "$out/build.log" 2>&1 || { note "build FAILED ($(elapsed)); see build.log"; tail -30 "$out/build.log"; exit 1; }
  note "built in $(elapsed)"
fi

if [ "$what" = all ] || [ "$what" = test ]; then
  (cd build-gpu && timeout 240 ctest -j 8 -E install_consumer --timeout 200 --output-on-failure) > "$out/ctest.log" 2>&1
  note "ctest: $(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1) ($(elapsed))"
  grep -E 'Failed|\*\*\*Timeout|Not Run' "$out/ctest.log" | grep -v '^ *0 ' | head -20 | tee -a "$summary"
  grep -hE 'worst relative difference' "$out/ctest.log" | head -4 | tee -a "$summary"
  : > "$out/sanitizer.log"
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for t in test_ops_fused test_ops_attention test_ops_elementwise test_ops_index test_ops_reduce test_ops_matmul test_optim test_trainer; do
    timeout 60 "$sanitizer" --tool memcheck --error-exitcode 99 "build-gpu/tests/$t" --run_test='*cuda*' >> "$out/sanitizer.log" 2>&1
    rc=$?
    note "compute-sanitizer memcheck $t: $([ $rc = 0 ] && echo clean || echo "exit $rc")"
  done
  grep -m5 -E '^========= (Invalid|Program hit|ERROR SUMMARY: [1-9])' "$out/sanitizer.log" | tee -a "$summary"
fi

if [ "$what" = all ] || [ "$what" = bench ]; then
  timeout 150 build-gpu/benchmarks/dpo_step --device cuda --config all --objective all > "$out/deviant.jsonl" 2>&1
  note "dpo_step: exit $? ($(elapsed))"
  if [ -f "$peer" ]; then
    PYTHONUNBUFFERED=1 timeout 150 python3 "$peer" > "$out/torch_eager.jsonl" 2>&1
    note "peer eager: exit $? ($(elapsed))"
    PYTHONUNBUFFERED=1 timeout 180 python3 "$peer" --compile --objectives dpo --configs gpt2s > "$out/torch_compiled.jsonl" 2>&1
    note "peer compiled: exit $? ($(elapsed))"
  else
    note "peer: $peer not found; no comparison"
  fi
  python3 benchmarks/compare_steps.py --ours "$out/deviant.jsonl" --eager "$out/torch_eager.jsonl" \
    --compiled "$out/torch_compiled.jsonl" 2>&1 | tee -a "$summary"
fi
if [ "$what" = all ] || [ "$what" = dist ]; then
  # NCCL data parallelism over every GPU of the machine: N ranks x batch 2 against one process x
  # batch 2N (same global batch), DDPO on the fixture model, 4 steps; losses must agree to 1e-5.
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
  if ! command -v mpirun > /dev/null; then
    note "dist: no mpirun on this machine (apt-get install openmpi-bin); skipped"
  elif [ "$gpus" -lt 1 ]; then
    note "dist: no GPU listed by nvidia-smi; skipped"
  else
    pairs=tests/data/models/pairs.jsonl
    args="train --model tests/data/models/llama --train $pairs --objective ddpo --device cuda --max-steps 4 --lr 5e-3 --quiet"
    rm -rf "$out/dist-1" "$out/dist-n" "$out/dist-z"
    timeout 120 build-gpu/bin/deviant $args --batch-size $((2 * gpus)) --output "$out/dist-1" > "$out/dist.log" 2>&1
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 180 mpirun --oversubscribe -np "$gpus" \
      build-gpu/bin/deviant $args --batch-size 2 --output "$out/dist-n" >> "$out/dist.log" 2>&1
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 180 mpirun --oversubscribe -np "$gpus" \
      build-gpu/bin/deviant $args --batch-size 2 --zero1 --output "$out/dist-z" >> "$out/dist.log" 2>&1
    python3 - "$out" "$gpus" <<'PY' | tee -a "$summary"
import json, sys
out, n = sys.argv[1], sys.argv[2]
def losses(d):
    try:
        return [json.loads(l)["loss"] for l in open(f"{out}/{d}/metrics.jsonl") if '"loss"' in l]
    except OSError:
        return []
one = losses("dist-1")
for d, what in (("dist-n", "NCCL"), ("dist-z", "NCCL + ZeRO-1")):
    got = losses(d)
    ok = len(got) == len(one) == 4 and all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(got, one))
    print(f"dist {what}, {n} GPU(s): {'match' if ok else 'MISMATCH'} (losses {got} vs one process {one})")
PY
  fi
fi
note "total $(elapsed)"
