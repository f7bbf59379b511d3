#!/usr/bin/env bash
# Fuzzes every parser: builds the libFuzzer targets of tests/fuzz (clang, AddressSanitizer +
# UndefinedBehaviorSanitizer), seeds each with the test fixtures of its format, runs each for a
# fixed time (two at a time) and prints one table: target, executions, corpus size, crashes.
# A finding (crash, sanitizer report, leak, an exception other than deviant::Error, a timeout)
# fails the script; its input is kept under BUILD/findings/.
#
#   scripts/fuzz.sh [seconds-per-target] [build-dir]      (defaults: 60, build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${2:-build-fuzz}
root=$PWD
case "$build" in /*) ;; *) build="$root/$build" ;; esac
case "$seconds" in '' | *[!0-9]*) echo "fuzz.sh: seconds must be a positive integer, got '$seconds'" >&2; exit 1 ;; esac
command -v clang++ > /dev/null || { echo "fuzz.sh: clang++ is needed (libFuzzer); scripts/install-deps.sh installs it" >&2; exit 1; }

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
  -DDEVIANT_FUZZ=ON -DDEVIANT_CUDA=OFF -DDEVIANT_BUILD_TESTS=OFF -DDEVIANT_BUILD_BENCHMARKS=OFF -DDEVIANT_BUILD_EXAMPLES=OFF > /dev/null
cmake --build "$build" --target fuzz_all -j "$(nproc)"

data=tests/data
work="$build/fuzz-run"
rm -rf "$work"
mkdir -p "$work" "$build/findings"

# seeds: each target's fixtures, copied (libFuzzer adds what it finds to the first corpus folder)
seed() {  # seed TARGET FILE...
  local target=$1
  shift
  mkdir -p "$work/$target/seeds" "$work/$target/corpus"
  for f in "$@"; do cp "$f" "$work/$target/seeds/$(echo "$f" | tr '/' '_')"; done
}
seed fuzz_safetensors $(find "$data" -name '*.safetensors' -size -400k)
seed fuzz_gguf $(find "$data" -name '*.gguf' -size -400k)
seed fuzz_model_config $(find "$data" -name 'config.json')
seed fuzz_tokenizer_json $(find "$data" -name 'tokenizer.json' -size -400k)
seed fuzz_chat_template $(find "$data/chat_templates" -name '*.jinja')
seed fuzz_toml tests/fuzz/seeds/toml/*.toml
mkdir -p "$work/fuzz_jsonl/seeds" "$work/fuzz_jsonl/corpus"
i=0
for f in $(find "$data" -name '*.jsonl' -size -100k); do
  for schema in 0 1 2 3 4 5 6 7 8; do  # the first byte picks the reader (tests/fuzz/fuzz_jsonl.cpp)
    { printf "\\x0$schema"; cat "$f"; } > "$work/fuzz_jsonl/seeds/$i-$schema.jsonl"
  done
  i=$((i + 1))
done

run_one() {  # run_one TARGET: fuzz for $seconds, then write TARGET.row
  local t=$1 dir="$work/$1"
  local seeds_n
  seeds_n=$(ls "$dir/seeds" | wc -l)
  set +e
  (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 "$build/tests/fuzz/$t" corpus seeds -max_total_time="$seconds" -timeout=20 \
    -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix="$build/findings/$t-" > "$dir/log.txt" 2>&1)
  local rc=$?
  set -e
  local execs corpus crashes=0
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$dir/log.txt" | awk '{print $2}' | tail -1)
  corpus=$(( $(ls "$dir/corpus" | wc -l) + seeds_n ))
  [ "$rc" -ne 0 ] && crashes=1
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$seconds" "${execs:-?}" "$corpus" "$crashes" > "$dir/row"
  if [ "$rc" -ne 0 ]; then
    echo "== $t: finding (exit $rc); the input is under $build/findings/" >&2
    tail -40 "$dir/log.txt" >&2
  fi
}
export -f run_one
export work build seconds
targets=$(cd "$build/tests/fuzz" && ls fuzz_* | grep -v '\.' || true)
echo "fuzzing $(echo $targets | wc -w) targets for ${seconds}s each, two at a time" >&2
printf '%s\n' $targets | xargs -P 2 -I{} bash -c 'run_one {}'

echo "| target | seconds | executions | corpus | crashes |"
echo "|---|---|---|---|---|"
status=0
for t in $targets; do
  cat "$work/$t/row"
  grep -q '| 0 |$' "$work/$t/row" || status=1
done
exit $status
