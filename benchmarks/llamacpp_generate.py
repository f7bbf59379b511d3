#!/usr/bin/env python3
"""Reference point for benchmarks/generate.cpp: llama.cpp (through llama-cpp-python) on the same
GGUF file and shapes. llama-cpp-python's high-level API decodes one sequence at a time, so the B
prompts run one after another (prompt evaluation, then N greedy tokens, no stop); tokens/s is
B * N over the total. llama.cpp computes with its own quantized kernels (activations quantized
too), so its numbers are not the float32 computation the other two run.

  llamacpp_generate.py --model M.gguf [--batch 4,16] [--prompt-tokens 256] [--new-tokens 128] [--threads 2]
"""
import argparse
import json
import random
import resource
import time

from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="4,16")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    t0 = time.perf_counter()
    llm = Llama(model_path=a.model, n_ctx=a.prompt_tokens + a.new_tokens + 8, n_threads=a.threads, n_batch=512, verbose=False)
    load_s = time.perf_counter() - t0
    V = llm.n_vocab()
    for B in [int(x) for x in a.batch.split(",")]:
        rng = random.Random(1234)
        prompts = [[rng.randrange(V // 4, V // 4 + V // 2) for _ in range(a.prompt_tokens)] for _ in range(B)]
        prefill = total = 0.0
        for p in prompts:
            t = time.perf_counter()
            n = 0
            for tok in llm.generate(p, top_k=1, temp=0.0, reset=True):
                if n == 0:
                    prefill += time.perf_counter() - t  # the first token comes right after the prompt's evaluation
                n += 1
                if n == a.new_tokens:
                    break
            total += time.perf_counter() - t
        N = a.new_tokens
        print(json.dumps({"impl": "llama.cpp", "model": a.model, "dtype": "gguf-native", "batch": B,
                          "prompt_tokens": a.prompt_tokens, "new_tokens": N, "threads": a.threads, "load_s": load_s,
                          "prefill_s": prefill, "total_s": total, "decode_s": total - prefill,
                          "new_tokens_per_s": B * N / total, "decode_tokens_per_s": B * N / max(1e-9, total - prefill),
                          "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}), flush=True)


if __name__ == "__main__":
    main()
