#!/usr/bin/env bash
# One command, one table: the CPU training step of deviant against PyTorch eager (+ transformers)
# on the same shapes, in the same session, alternating the two programs round by round, at 1 and
# 2 threads, float32 and bf16 (deviant --dtype bf16: bf16 weights and activations with fp32 master
# weights; PyTorch: bf16 autocast over fp32 weights). Prints a markdown table of median step times,
# tokens/s, peak memory and the ratio; raw JSON lines go to BUILD/compare_cpu/.
#   benchmarks/compare_cpu.sh [rounds] [build-dir]      (defaults: 2, build)
# With LLMC_SRC=<llm.c checkout> also a GPT-2 shape SFT step against llm.c's CPU trainer (below);
# with SmolLM2-135M-Instruct fetched (scripts/fetch-models.sh) and peft installed, a LoRA DPO step
# against transformers + peft. Needs a Python with torch and transformers (PYTHON, default python3).
# ROWS="tiny gpt2 lora" (the default) picks the sections; peak memory is the peak resident set.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
build=${2:-build}
py=${PYTHON:-python3}
rows=" ${ROWS:-tiny gpt2 lora} "
for r in $rows; do
  case "$r" in tiny | gpt2 | lora) ;; *) echo "compare_cpu.sh: unknown row '$r' in ROWS (tiny, gpt2, lora)" >&2; exit 1 ;; esac
done
"$py" -c "import torch, transformers" 2>/dev/null || { echo "compare_cpu.sh: $py lacks torch/transformers (set PYTHON)" >&2; exit 1; }
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" --target dpo_step deviant_cli > /dev/null
out="$build/compare_cpu"
rm -rf "$out"
mkdir -p "$out"
# deviant_step RUN_DIR THREADS RSS_FILE: one JSON line, the median step of a `deviant train` run
# (its metrics.jsonl, the first step dropped as warm-up) and the peak resident set /usr/bin/time wrote
deviant_step() {
  "$py" - "$1/metrics.jsonl" "$2" "$3" <<'PY'
import json, sys
metrics, threads, rss = sys.argv[1], int(sys.argv[2]), sys.argv[3]
st = [json.loads(l) for l in open(metrics) if '"loss"' in l][1:]
t = sorted(s["tokens"] / s["tokens_per_second"] for s in st)
print(json.dumps({"impl": "deviant", "threads": threads, "step_s": t[len(t) // 2], "tokens_per_step": st[0]["tokens"],
                  "peak_mem_gib": int(open(rss).read().split()[-1]) / 2**20}))
PY
}
if [[ "$rows" == *" tiny "* ]]; then
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
fi
# llm.c's CPU trainer (train_gpt2.c, fp32, OpenMP) against deviant's GPT-2 family on the same
# shape, an SFT step (forward, backward, AdamW) over B x T tokens: given LLMC_SRC, a checkout of
# github.com/karpathy/llm.c, it is patched to take its inputs from the environment and built in
# BUILD/compare_cpu/llmc (never in the source tree). GPT2_SHAPE="L C H V T B" picks the shape
# (default the tiny widths; "12 768 12 50257 1024 4" is GPT-2 124M).
if [ -n "${LLMC_SRC:-}" ] && [[ "$rows" == *" gpt2 "* ]]; then
  read -r L C H V T B <<< "${GPT2_SHAPE:-4 256 4 8192 256 4}"
  peer="$out/llmc"
  mkdir -p "$peer"
  cp -r "$LLMC_SRC/llmc" "$peer/"
  sed -e 's|gpt2_build_from_checkpoint(&model, "gpt2_124M.bin");|gpt2_build_from_checkpoint(\&model, getenv("CKPT"));|' \
      -e 's|const char\* train_tokens = .*|const char* train_tokens = getenv("TRAIN_BIN");|' \
      -e 's|const char\* val_tokens = .*|const char* val_tokens = getenv("VAL_BIN");|' \
      -e 's|int B = 4;.*|int B = atoi(getenv("B"));|' -e 's|int T = 64;.*|int T = atoi(getenv("T"));|' \
      -e 's|for (int step = 0; step <= 40; step++) {|for (int step = 0; step <= atoi(getenv("STEPS")); step++) {|' \
      "$LLMC_SRC/train_gpt2.c" > "$peer/train_gpt2_env.c"
  cc -Ofast -march=native -fopenmp -DOMP "$peer/train_gpt2_env.c" -lm -lgomp -o "$peer/train_gpt2_env"
  "$py" benchmarks/llmc_inputs.py "$peer/inputs" --layers "$L" --channels "$C" --heads "$H" --vocab "$V" --max-t "$T"
  # deviant: the same GPT-2 (LayerNorm, GELU, learned positions, tied head), SFT on 1 + (T-1) tokens
  "$py" - "$peer" "$L" "$C" "$H" "$V" "$T" "$B" <<'PY'
import json, random, sys
peer, L, C, H, V, T, B = sys.argv[1], *map(int, sys.argv[2:])
json.dump({"model_type": "gpt2", "vocab_size": V, "n_embd": C, "n_layer": L, "n_head": H, "n_positions": T, "n_inner": 4 * C,
           "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}, open(f"{peer}/config.json", "w"))
rng = random.Random(1)
with open(f"{peer}/pairs.jsonl", "w") as f:
    for _ in range(B * 8):
        f.write(json.dumps({"prompt_ids": [rng.randrange(V)], "chosen_ids": [rng.randrange(V) for _ in range(T - 1)],
                            "rejected_ids": [rng.randrange(V)]}) + "\n")
PY
  for threads in 1 2; do
    for round in $(seq "$rounds"); do
      OMP_NUM_THREADS=$threads CKPT="$peer/inputs/model.bin" TRAIN_BIN="$peer/inputs/train.bin" VAL_BIN="$peer/inputs/val.bin" \
        B=$B T=$T STEPS=5 /usr/bin/time -f "%M" -o "$peer/rss" "$peer/train_gpt2_env" > "$peer/llmc.log"
      grep -o 'took [0-9.]* ms' "$peer/llmc.log" | tail -n +2 | awk '{print $2}' | sort -n \
        | awk -v t=$threads -v rss="$(tail -n 1 "$peer/rss")" '{a[NR]=$1} END {print "{\"threads\":" t ",\"impl\":\"llm.c\",\"step_s\":" a[int((NR+1)/2)]/1000 ",\"peak_mem_gib\":" rss/1048576 "}"}' >> "$peer/steps.jsonl"
      # deviant in float32 (llm.c's precision), then in bfloat16 mixed precision (float32 master weights)
      for dtype in float32 bfloat16; do
        rm -rf "$peer/run"
        DEVIANT_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads /usr/bin/time -f "%M" -o "$peer/rss" "$build/bin/deviant" train \
          --init-config "$peer/config.json" --train "$peer/pairs.jsonl" --objective sft --batch-size "$B" --max-steps 5 --lr 1e-4 \
          --dtype "$dtype" --no-shuffle --output "$peer/run" --quiet > /dev/null
        deviant_step "$peer/run" "$threads" "$peer/rss" | sed "s/\"impl\": \"deviant\"/\"impl\": \"deviant $dtype\"/" >> "$peer/steps.jsonl"
      done
    done
  done
fi

# A LoRA DPO step of a real checkpoint, SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32 by
# both sides), against transformers + peft (benchmarks/torch_lora_dpo_step.py): 4 pairs of 64 prompt
# + 192 completion tokens per step, rank 16, alpha 32 on every projection, reference log-probs
# computed once before the steps on both sides. Runs when the model is there (scripts/fetch-models.sh;
# SMOLLM2_GGUF names another copy) and the Python has peft.
gguf=${SMOLLM2_GGUF:-${DEVIANT_MODELS_DIR:-$HOME/.cache/deviant/models}/SmolLM2-135M-Instruct.Q4_1.gguf}
if [[ "$rows" == *" lora "* ]] && [ -f "$gguf" ] && "$py" -c "import peft, gguf" 2>/dev/null; then
  lora="$out/lora"
  mkdir -p "$lora"
  "$py" - "$lora/pairs.jsonl" <<'PY'
import json, random, sys
rng = random.Random(2)
with open(sys.argv[1], "w") as f:
    for _ in range(4 * 5):
        f.write(json.dumps({"prompt_ids": [rng.randrange(1000, 49000) for _ in range(64)],
                            "chosen_ids": [rng.randrange(1000, 49000) for _ in range(192)],
                            "rejected_ids": [rng.randrange(1000, 49000) for _ in range(192)]}) + "\n")
PY
  for threads in 1 2; do
    for round in $(seq "$rounds"); do
      "$py" benchmarks/torch_lora_dpo_step.py "$(dirname "$gguf")" "$(basename "$gguf")" "$lora/pairs.jsonl" --batch-size 4 --steps 5 \
        --threads "$threads" 2> /dev/null | grep '"impl"' >> "$lora/steps.jsonl"
      rm -rf "$lora/run"
      DEVIANT_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads /usr/bin/time -f "%M" -o "$lora/rss" "$build/bin/deviant" train \
        --model "$gguf" --lora --lora-rank 16 --lora-alpha 32 --objective dpo --train "$lora/pairs.jsonl" --batch-size 4 \
        --max-steps 5 --lr 1e-5 --no-shuffle --output "$lora/run" --quiet > /dev/null
      deviant_step "$lora/run" "$threads" "$lora/rss" >> "$lora/steps.jsonl"
    done
  done
fi

"$py" - "$out" <<'PY'
import json, sys, platform
out = sys.argv[1]
def rows(f):
    r = {}
    try:
        lines = open(f"{out}/{f}").readlines()
    except OSError:
        return r
    for line in lines:
        j = json.loads(line); run = j["run"]
        key = (j["threads"], "bf16" if "bf16" in run["dtype"] else "f32")
        best = r.get(key)
        if best is None or run["step_s_median"] < best["step_s_median"]:
            r[key] = run
    return r
ours, peer = rows("deviant.jsonl"), rows("torch.jsonl")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
if ours:
    print(f"tiny DPO step (7.36 M params, 8 pairs x 256 tokens, policy fwd+bwd + reference fwd + AdamW), {cpu}; best median of the rounds")
    print()
    print("| threads | dtype | deviant s/step | torch s/step | deviant tok/s | torch tok/s | speed ratio | deviant peak GiB | torch peak GiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(ours):
        if key not in peer: continue
        a, b = ours[key], peer[key]
        print(f"| {key[0]} | {key[1]} | {a['step_s_median']:.3f} | {b['step_s_median']:.3f} | {a['tokens_per_s']:.0f} | {b['tokens_per_s']:.0f} | "
              f"{b['step_s_median'] / a['step_s_median']:.2f}x | {a['peak_mem_gib']:.2f} | {b['peak_mem_gib']:.2f} | {a['peak_mem_gib'] / b['peak_mem_gib']:.2f}x |")
try:
    runs = [json.loads(l) for l in open(f"{out}/llmc/steps.jsonl")]
except OSError:
    runs = []
if runs:
    print()
    print("GPT-2 shape SFT step (forward, backward, AdamW), deviant's GPT-2 family vs llm.c train_gpt2.c (fp32, OpenMP); best of the rounds")
    print()
    print("| threads | deviant dtype | deviant s/step | llm.c s/step (float32) | speed ratio | deviant peak GiB | llm.c peak GiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for t in sorted({r["threads"] for r in runs}):
        c = min((r for r in runs if r["threads"] == t and r["impl"] == "llm.c"), key=lambda r: r["step_s"])
        for dtype in ("float32", "bfloat16"):
            mine = [r for r in runs if r["threads"] == t and r["impl"] == "deviant " + dtype]
            if not mine: continue
            d = min(mine, key=lambda r: r["step_s"])
            print(f"| {t} | {dtype} | {d['step_s']:.3f} | {c['step_s']:.3f} | {c['step_s'] / d['step_s']:.2f}x | {d['peak_mem_gib']:.2f} | "
                  f"{c['peak_mem_gib']:.2f} | {d['peak_mem_gib'] / c['peak_mem_gib']:.2f}x |")
try:
    runs = [json.loads(l) for l in open(f"{out}/lora/steps.jsonl")]
except OSError:
    runs = []
if runs:
    print()
    print("SmolLM2-135M-Instruct LoRA DPO step (r 16 on every projection, 4 pairs x (64 + 192) tokens, float32), deviant vs transformers + peft; best of the rounds")
    print()
    print("| threads | deviant s/step | peft s/step | speed ratio | deviant peak GiB | peft peak GiB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for t in sorted({r["threads"] for r in runs}):
        d = min((r for r in runs if r["threads"] == t and r["impl"] == "deviant"), key=lambda r: r["step_s"])
        c = min((r for r in runs if r["threads"] == t and r["impl"] != "deviant"), key=lambda r: r["step_s"])
        print(f"| {t} | {d['step_s']:.3f} | {c['step_s']:.3f} | {c['step_s'] / d['step_s']:.2f}x | {d['peak_mem_gib']:.2f} | "
              f"{c['peak_mem_gib']:.2f} | {d['peak_mem_gib'] / c['peak_mem_gib']:.2f}x |")
PY
