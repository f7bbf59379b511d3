#!/usr/bin/env bash
# The paper's study on a real pretrained model, end to end, with deviant's CLI only:
#   data      prepare (split by prompt) -> embed: style (built-in sty) and semantics (a sentence
#             encoder, all-MiniLM-L6-v2) -> score-gap pairs with deviation weights (sem+sty) and
#             DivPO pairs
#   reward    a reward model (the policy's own body + a scalar head, LoRA) regressing the
#             transformed upvote scores (L1), held-out MAE and pair accuracy; the held-out human
#             responses scored as the reference point
#   train     SFT of the instruction model on chosen responses (LoRA); DPO, DDPO and DivPO from the
#             SFT model (also their reference); ORPO and DORPO from the base model
#   sample    4 samples per held-out prompt (temperature 1, top-p 0.95, top-k 50, repetition
#             penalty 1.1) with the paper's system prompt through the chat template
#   judge     rewards, sem + sty embeddings, diversity metrics with 95% CIs -> table + plot
# Every stage is skipped when its outputs exist (a rerun resumes); timings go to timings.tsv.
#
# Usage: examples/creative_writing/run_study.sh [--out DIR] [--model GGUF|HF_DIR] [--encoder DIR]
#          [--data WRITINGPROMPTS.jsonl] [--device cpu|cuda] [--dtype float32|bfloat16]
#          [--preset cpu|paper] [--lora-rank R] [--lora-alpha A] [--train-prompts N]
#          [--rm-steps N] [--max-new-tokens N] [--samples K] [--seed S]
# Presets (any flag after --preset overrides it):
#   cpu    (default) LoRA r=16 alpha=32, pairs of the first 32 training prompts, 1 epoch each,
#          lr 2e-4 (SFT), 1e-4 (DPO family), 1e-4 (ORPO family): about an hour on 2 CPU cores
#   paper  LoRA r=128 alpha=256, every prompt, SFT 1 epoch lr 3e-5, DPO/DDPO/DivPO 3 epochs lr 5e-6
#          beta 0.1, ORPO/DORPO 4 epochs lr 5e-6 lambda 0.25 (the paper's 8B recipe; a GPU job)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
models=${DEVIANT_MODELS_DIR:-$HOME/.cache/deviant/models}

out=runs/creative_writing
model=$models/SmolLM2-135M-Instruct.Q4_1.gguf
encoder=$models/all-MiniLM-L6-v2
data=$root/data/demo/writing_prompts_demo.jsonl
device=cpu dtype=float32 seed=1 samples=4 max_new_tokens=128 rm_steps=60 beta=0.1 lambda=0.25
preset() {
  case $1 in
    cpu) lora_rank=16 lora_alpha=32 train_prompts=32 sft_epochs=1 sft_lr=2e-4 dpo_epochs=1 dpo_lr=1e-4 orpo_epochs=1 orpo_lr=1e-4 ;;
    paper) lora_rank=128 lora_alpha=256 train_prompts=0 sft_epochs=1 sft_lr=3e-5 dpo_epochs=3 dpo_lr=5e-6 orpo_epochs=4 orpo_lr=5e-6 ;;
    *) echo "run_study: --preset must be cpu or paper, got '$1'" >&2; exit 1 ;;
  esac
}
preset cpu
while [ $# -gt 0 ]; do
  need() { [ $# -ge 2 ] || { echo "run_study: $1 needs a value" >&2; exit 1; }; }
  need "$@"
  case $1 in
    --out) out=$2 ;; --model) model=$2 ;; --encoder) encoder=$2 ;; --data) data=$2 ;;
    --device) device=$2 ;; --dtype) dtype=$2 ;; --preset) preset "$2" ;;
    --lora-rank) lora_rank=$2 ;; --lora-alpha) lora_alpha=$2 ;; --train-prompts) train_prompts=$2 ;;
    --rm-steps) rm_steps=$2 ;; --max-new-tokens) max_new_tokens=$2 ;; --samples) samples=$2 ;; --seed) seed=$2 ;;
    *) echo "run_study: unknown option $1 (see the header of $0)" >&2; exit 1 ;;
  esac
  shift 2
done

# Build the CLI (once) and fetch the default models when they are missing.
build=${DEVIANT_STUDY_BUILD:-$root/build-demo}
if [ -z "${DEVIANT_BIN:-}" ]; then
  "$root/scripts/install-deps.sh"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEVIANT_BUILD_TESTS=OFF \
        -DDEVIANT_BUILD_BENCHMARKS=OFF -DDEVIANT_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "$build" --target deviant_cli
fi
deviant=${DEVIANT_BIN:-$build/bin/deviant}
if [ ! -e "$model" ] || [ ! -e "$encoder" ]; then "$root/scripts/fetch-models.sh"; fi
for f in "$model" "$encoder" "$data"; do [ -e "$f" ] || { echo "run_study: $f not found" >&2; exit 1; }; done
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
encoder=$(cd "$encoder" && pwd)
data=$(cd "$(dirname "$data")" && pwd)/$(basename "$data")

mkdir -p "$out"
cd "$out"
system_prompt="You write a creative writing based on the user-given writing prompt."
dev=(--device "$device")
timings=timings.tsv
[ -f "$timings" ] || printf 'stage\tseconds\n' >"$timings"

# stage NAME OUTPUT CMD...: runs CMD unless OUTPUT exists; CMD must create OUTPUT last.
stage() {
  local name=$1 output=$2
  shift 2
  if [ -e "$output" ]; then
    printf '\n== %s: done (%s exists), skipped\n' "$name" "$output"
    return 0
  fi
  printf '\n== %s\n' "$name"
  local start=$SECONDS
  "$@"
  printf '%s\t%s\n' "$name" $((SECONDS - start)) >>"$timings"
}

data_stage() {
  "$deviant" prepare --input "$data" --train-output train.jsonl --test-output test.jsonl
  for split in train test; do
    "$deviant" embed --input $split.jsonl --output ${split}_sty.jsonl --spaces sty
    "$deviant" embed --model "$encoder" --space sem --input ${split}_sty.jsonl --output ${split}_emb.tmp.jsonl
    rm ${split}_sty.jsonl
  done
  "$deviant" pairs --input train_emb.tmp.jsonl --output pairs_train.jsonl --method gap --spaces sem,sty --seed "$seed" --max-prompts "$train_prompts"
  "$deviant" pairs --input train_emb.tmp.jsonl --output pairs_divpo.jsonl --method divpo --spaces sem,sty --n-max 4 --seed "$seed" --max-prompts "$train_prompts"
  "$deviant" pairs --input test_emb.tmp.jsonl --output pairs_test.jsonl --method gap --spaces sem,sty --seed "$seed"
  mv test_emb.tmp.jsonl test_emb.jsonl
  mv train_emb.tmp.jsonl train_emb.jsonl
}
stage data train_emb.jsonl data_stage

reward_stage() {
  "$deviant" reward train --model "$model" --train train.jsonl --eval test.jsonl --output rm.tmp --loss l1 \
      --lora-rank 16 --lora-alpha 32 --lr 2e-4 --max-steps "$rm_steps" --batch-size 8 --seed "$seed" "${dev[@]}"
  "$deviant" reward score --model rm.tmp --input test_emb.jsonl --output test_human_rewards.jsonl "${dev[@]}"
  mv rm.tmp rm
}
stage reward rm reward_stage

common=(--model "$model" --lora --lora-rank "$lora_rank" --lora-alpha "$lora_alpha" --system-prompt "$system_prompt"
        --eval pairs_test.jsonl --batch-size 4 --seed "$seed" --dtype "$dtype" "${dev[@]}")
train_run() {  # name, extra args...
  local name=$1
  shift
  "$deviant" train --output "$name" "${common[@]}" "$@"
}
stage sft sft/final/adapter_config.json train_run sft --train pairs_train.jsonl --objective sft --lr "$sft_lr" --epochs "$sft_epochs"
for run in dpo ddpo divpo; do
  objective=$run pairs=pairs_train.jsonl
  if [ $run = divpo ]; then objective=dpo pairs=pairs_divpo.jsonl; fi
  stage $run $run/final/adapter_config.json train_run $run --adapters sft/final --train $pairs --objective $objective \
      --beta "$beta" --lr "$dpo_lr" --epochs "$dpo_epochs"
done
for run in orpo dorpo; do
  stage $run $run/final/adapter_config.json train_run $run --train pairs_train.jsonl --objective $run \
      --lambda "$lambda" --lr "$orpo_lr" --epochs "$orpo_epochs"
done

sample_and_judge() {  # name, adapter dirs...
  local name=$1
  shift
  local adapters=()
  for a in "$@"; do adapters+=(--adapters "$a/final"); done
  "$deviant" generate --model "$model" "${adapters[@]}" --prompts test.jsonl --output samples_$name.tmp.jsonl \
      --samples "$samples" --temperature 1.0 --top-p 0.95 --top-k 50 --repetition-penalty 1.1 \
      --max-new-tokens "$max_new_tokens" --system-prompt "$system_prompt" --seed "$seed" --batch-size 16 "${dev[@]}"
  "$deviant" reward score --model rm --input samples_$name.tmp.jsonl --output samples_${name}_rw.tmp.jsonl "${dev[@]}"
  "$deviant" embed --input samples_${name}_rw.tmp.jsonl --output samples_${name}_sty.tmp.jsonl --spaces sty
  "$deviant" embed --model "$encoder" --space sem --input samples_${name}_sty.tmp.jsonl --output samples_${name}_judged.jsonl
  "$deviant" evaluate --input samples_${name}_judged.jsonl --embeddings sem,sty --output eval_$name.tmp.json
  rm samples_$name.tmp.jsonl samples_${name}_rw.tmp.jsonl samples_${name}_sty.tmp.jsonl
  mv eval_$name.tmp.json eval_$name.json
}
stage "sample base" eval_base.json sample_and_judge base
stage "sample sft" eval_sft.json sample_and_judge sft sft
for run in dpo ddpo divpo; do stage "sample $run" eval_$run.json sample_and_judge $run sft $run; done
for run in orpo dorpo; do stage "sample $run" eval_$run.json sample_and_judge $run $run; done

printf '\n== results\n'
"$deviant" report --run "base::eval_base.json" --run sft:sft:eval_sft.json \
    --run dpo:dpo:eval_dpo.json --run ddpo:ddpo:eval_ddpo.json --run divpo:divpo:eval_divpo.json \
    --run orpo:orpo:eval_orpo.json --run dorpo:dorpo:eval_dorpo.json \
    --human test_human_rewards.jsonl --samples "$samples" --markdown results.md --json results.json --plot results.png
printf '\nstage times (s):\n'
column -t -s $'\t' "$timings" 2>/dev/null || cat "$timings"
echo "written: $out/results.md, $out/results.json, $out/results.png"
