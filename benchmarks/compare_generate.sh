#!/usr/bin/env bash
# Sampling speed on the CPU, in one session: deviant (benchmarks/generate, KV cache, decoding from
# the GGUF blocks, and --dense from the dequantized float32 weights), transformers' generate
# (benchmarks/hf_generate.py, float32) and, when llama-cpp-python is importable, llama.cpp
# (benchmarks/llamacpp_generate.py). Same GGUF file, same shapes, same thread count.
# Usage: benchmarks/compare_generate.sh BUILD_DIR MODEL.gguf [PYTHON] [batches] [prompt] [new] [threads]
set -euo pipefail
build=$1 model=$2 py=${3:-python3} batches=${4:-4,16} prompt=${5:-256} new=${6:-128} threads=${7:-2}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
export OPENBLAS_NUM_THREADS=$threads DEVIANT_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
args=(--model "$model" --batch "$batches" --prompt-tokens "$prompt" --new-tokens "$new" --threads "$threads")
"$build/benchmarks/generate" "${args[@]}" | tee -a "$out"
"$build/benchmarks/generate" "${args[@]}" --dense | tee -a "$out"
"$py" "$here/hf_generate.py" "${args[@]}" 2>/dev/null | tee -a "$out"
if "$py" -c "import llama_cpp" 2>/dev/null; then "$py" "$here/llamacpp_generate.py" "${args[@]}" 2>/dev/null | tee -a "$out"; fi
"$py" - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("\n| impl | weights | batch | prefill s | decode tok/s | new tok/s | vs transformers | peak RSS GiB |")
print("|---|---|---|---|---|---|---|---|")
ref = {r["batch"]: r["new_tokens_per_s"] for r in rows if r["impl"] == "transformers"}
for r in rows:
    w = {"deviant": "GGUF blocks" if r.get("packed_matrices") else "float32", "transformers": "float32"}.get(r["impl"], "GGUF (own kernels)")
    ratio = r["new_tokens_per_s"] / ref[r["batch"]] if r["batch"] in ref else float("nan")
    print(f"| {r['impl']} | {w} | {r['batch']} | {r['prefill_s']:.2f} | {r['decode_tokens_per_s']:.1f} | {r['new_tokens_per_s']:.1f} | {ratio:.2f}x | {r['peak_rss_gib']:.2f} |")
PY
rm -f "$out"
