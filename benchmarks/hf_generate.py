#!/usr/bin/env python3
"""Peer of benchmarks/generate.cpp: the same sampling work with Hugging Face transformers'
generate() on the CPU (KV cache, float32 weights dequantized from the same GGUF file, or a
checkpoint directory). B prompts of P random ids (the same seed rule is not needed: only the
shapes matter), N new tokens each with no stop (min_new_tokens = N), greedy or sampled
(temperature 1, top-k 50, top-p 0.95). One JSON line per batch size, keys as generate.cpp's.

  hf_generate.py --model M.gguf|DIR [--batch 4,16] [--prompt-tokens 256] [--new-tokens 128]
                 [--threads N] [--sample] [--repeat 1]
"""
import argparse
import json
import os
import resource
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="4,16")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    if a.model.endswith(".gguf"):
        d, name = os.path.split(os.path.abspath(a.model))
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    V = model.config.vocab_size
    for B in [int(x) for x in a.batch.split(",")]:
        g = torch.Generator().manual_seed(1234)
        ids = torch.randint(V // 4, V // 4 + V // 2, (B, a.prompt_tokens), generator=g)
        mask = torch.ones_like(ids)
        kw = dict(attention_mask=mask, min_new_tokens=a.new_tokens, pad_token_id=0, repetition_penalty=1.0)
        if a.sample:
            kw.update(do_sample=True, temperature=1.0, top_k=50, top_p=0.95)
        else:
            kw.update(do_sample=False)
        prefill = total = float("inf")
        with torch.inference_mode():
            for _ in range(a.repeat):
                t = time.perf_counter()
                model.generate(ids, max_new_tokens=1, **{**kw, "min_new_tokens": 1})
                prefill = min(prefill, time.perf_counter() - t)
                t = time.perf_counter()
                out = model.generate(ids, max_new_tokens=a.new_tokens, **kw)
                total = min(total, time.perf_counter() - t)
                assert out.shape[1] == a.prompt_tokens + a.new_tokens
        N = a.new_tokens
        print(json.dumps({"impl": "transformers", "model": a.model, "dtype": "f32", "batch": B,
                          "prompt_tokens": a.prompt_tokens, "new_tokens": N, "sample": a.sample,
                          "threads": a.threads or torch.get_num_threads(), "load_s": load_s,
                          "prefill_s": prefill, "total_s": total, "decode_s": total - prefill,
                          "new_tokens_per_s": B * N / total,
                          "decode_tokens_per_s": B * (N - 1) / max(1e-9, total - prefill),
                          "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
