#!/usr/bin/env bash
# The end-to-end diversity experiment on the built-in demo data (data/demo), on a small CPU:
#   prepare -> embed -> deviation-weighted pairs (gap) and DivPO pairs
#   -> SFT a small Llama-architecture model from scratch
#   -> DPO, DDPO (deviation-weighted) and DivPO from the SFT model
#   -> sample held-out prompts -> diversity and quality table + plot.
# Usage: scripts/demo.sh [output-dir]   (default runs/demo). About 3.5 minutes on 2 cores once built.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
out=${1:-runs/demo}
build=${DEVIANT_DEMO_BUILD:-build-demo}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEVIANT_BUILD_TESTS=OFF \
      -DDEVIANT_BUILD_BENCHMARKS=OFF -DDEVIANT_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" --target deviant_cli
deviant=$PWD/$build/bin/deviant
data=$PWD/data/demo
mkdir -p "$out"
cd "$out"
rm -rf sft dpo ddpo divpo
step() { printf '\n== %s\n' "$*"; }

step "data: clean, split by prompt, embed (sem, sty), build pairs"
"$deviant" prepare --input "$data/writing_prompts_demo.jsonl" --train-output train.jsonl --test-output test.jsonl
"$deviant" embed --input train.jsonl --output train_emb.jsonl
"$deviant" embed --input test.jsonl --output test_emb.jsonl
"$deviant" pairs --input train_emb.jsonl --output pairs_train.jsonl --method gap --seed 1
"$deviant" pairs --input test_emb.jsonl --output pairs_test.jsonl --method gap --seed 1
"$deviant" pairs --input train_emb.jsonl --output pairs_divpo.jsonl --method divpo --n-max 6 --seed 1

common=(--tokenizer "$data/tokenizer.json" --eval pairs_test.jsonl --batch-size 8 --pack-tokens 256 --seed 1)
step "SFT from scratch on the chosen responses"
"$deviant" train --init-config "$data/model_config.json" --train pairs_train.jsonl --objective sft \
    --lr 3e-3 --schedule cosine --warmup-steps 20 --epochs 4 --output sft "${common[@]}"
for run in dpo ddpo divpo; do
  step "$run from the SFT model (reference = the SFT model)"
  objective=$run; pairs=pairs_train.jsonl
  if [ "$run" = divpo ]; then objective=dpo; pairs=pairs_divpo.jsonl; fi
  "$deviant" train --model sft/final --train "$pairs" --objective "$objective" --beta 0.1 \
      --lr 2e-4 --epochs 2 --output "$run" "${common[@]}"
done

step "sampling held-out prompts (4 samples, temperature 1, top-p 0.95, top-k 50, repetition penalty 1.1)"
runs=()
for run in sft dpo ddpo divpo; do
  "$deviant" generate --model "$run/final" --tokenizer "$data/tokenizer.json" --prompts test.jsonl \
      --output "samples_$run.jsonl" --samples 4 --max-new-tokens 80 --seed 1
  "$deviant" embed --input "samples_$run.jsonl" --output "samples_${run}_emb.jsonl"
  "$deviant" evaluate --input "samples_${run}_emb.jsonl" --embeddings sem,sty --output "eval_$run.json" >/dev/null
  runs+=(--run "$run:$run:eval_$run.json")
done

step "results"
"$deviant" report "${runs[@]}" --human test_emb.jsonl --samples 4 --markdown results.md --json results.json --plot results.png
echo
echo "written: $out/results.md, $out/results.json, $out/results.png"
