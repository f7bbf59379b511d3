#!/usr/bin/env bash
# Sentence-encoder speed on the CPU, in one session: `deviant embed --model` (the whole command:
# reading, encoding, writing) against sentence-transformers' encode() on the same texts.
# 512 texts of 90-110 words drawn from a fixed word list (seeded), 2 threads each.
# Usage: benchmarks/compare_embed.sh BUILD_DIR MODEL_DIR [PYTHON] [threads]
set -euo pipefail
build=$1 model=$2 py=${3:-python3} threads=${4:-2}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" - "$tmp/texts.jsonl" <<'PY'
import json, random, sys
random.seed(0)
words = ("the quick brown fox jumps over a lazy dog while the old fisherman tells stories about ancient cities, rivers, "
         "mountains and markets; nobody expected the thunderstorm, yet the festival continued until midnight. Scientists "
         "measured temperature, pressure and humidity across seventeen observatories in remote northern valleys").split()
texts = [" ".join(random.choice(words) for _ in range(random.randint(90, 110))) for _ in range(512)]
with open(sys.argv[1], "w") as f:
    for i in range(0, 512, 8):
        f.write(json.dumps({"prompt": f"p{i}", "responses": [{"text": t} for t in texts[i:i + 8]]}) + "\n")
PY
export OPENBLAS_NUM_THREADS=$threads DEVIANT_NUM_THREADS=$threads
for run in 1 2; do
  start=$(date +%s.%N)
  "$build/bin/deviant" embed --model "$model" --input "$tmp/texts.jsonl" --output "$tmp/out.jsonl" --threads "$threads" 2>/dev/null
  end=$(date +%s.%N)
  echo "{\"impl\": \"deviant embed (whole command)\", \"texts\": 512, \"seconds\": $(echo "$end - $start" | bc), \"texts_per_s\": $(echo "512 / ($end - $start)" | bc -l)}"
done
"$py" "$here/st_embed.py" "$model" "$tmp/texts.jsonl" --threads "$threads"
