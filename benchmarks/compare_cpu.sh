#!/usr/bin/env bash
# One command, one table: the CPU training step of deviant against PyTorch eager (+ transformers)
# on the same shapes, in the same session, alternating the two programs round by round, at 1 and
# 2 threads, float32 and bf16 (deviant --dtype bf16: bf16 weights and activations with fp32 master
# weights; PyTorch: bf16 autocast over fp32 weights). Prints a markdown table of median step times,
# tokens/s, peak memory and the ratio; raw JSON lines go to BUILD/compare_cpu/.
#   benchmarks/compare_cpu.sh [rounds] [build-dir]      (defaults: 2, build)
# Needs a Python with torch and transformers (PYTHON, default /work/venv/bin/python or python3).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
build=${2:-build}
py=${PYTHON:-$( [ -x /work/venv/bin/python ] && echo /work/venv/bin/python || echo python3 )}
"$py" -c "import torch, transformers" 2>/dev/null || { echo "compare_cpu.sh: $py lacks torch/transformers (set PYTHON)" >&2; exit 1; }
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" --target dpo_step > /dev/null
out="$build/compare_cpu"
rm -rf "$out"
mkdir -p "$out"
for threads in 1 2; do
  for dtype in f32 bf16; do
    for round in $(seq "$rounds"); do
      "$build/benchmarks/dpo_step" --config tiny --objective dpo --device cpu --threads "$threads" --dtype "$dtype" --steps 10 --warmup 3 \
        | grep '"config"' | sed "s/^/{\"round\":$round,\"threads\":$threads,\"run\":/; s/\$/}/" >> "$out/deviant.jsonl"
      "$py" benchmarks/torch_cpu_dpo_step.py --configs tiny --objectives dpo --threads "$threads" --steps 10 --warmup 3 \
        $([ "$dtype" = bf16 ] && echo --bf16) 2> /dev/null \
        | grep '"config"' | sed "s/^/{\"round\":$round,\"threads\":$threads,\"run\":/; s/\$/}/" >> "$out/torch.jsonl"
    done
  done
done
"$py" - "$out" <<'PY'
import json, sys, platform
out = sys.argv[1]
def rows(f):
    r = {}
    for line in open(f"{out}/{f}"):
        j = json.loads(line); run = j["run"]
        key = (j["threads"], "bf16" if "bf16" in run["dtype"] else "f32")
        best = r.get(key)
        if best is None or run["step_s_median"] < best["step_s_median"]:
            r[key] = run
    return r
ours, peer = rows("deviant.jsonl"), rows("torch.jsonl")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"tiny DPO step (7.36 M params, 8 pairs x 256 tokens, policy fwd+bwd + reference fwd + AdamW), {cpu}; best median of the rounds")
print()
print("| threads | dtype | deviant s/step | torch s/step | deviant tok/s | torch tok/s | speed ratio | deviant peak GiB | torch peak GiB | memory ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(ours):
    if key not in peer: continue
    a, b = ours[key], peer[key]
    print(f"| {key[0]} | {key[1]} | {a['step_s_median']:.3f} | {b['step_s_median']:.3f} | {a['tokens_per_s']:.0f} | {b['tokens_per_s']:.0f} | "
          f"{b['step_s_median'] / a['step_s_median']:.2f}x | {a['peak_mem_gib']:.2f} | {b['peak_mem_gib']:.2f} | {a['peak_mem_gib'] / b['peak_mem_gib']:.2f}x |")
PY
