#!/usr/bin/env python3
"""Peer of `deviant embed --model`: sentence-transformers encodes the texts of a responses JSONL
file (the same file benchmarks/compare_embed.sh gives deviant) on the CPU and reports texts/s.
Encoding only (the model loaded and warmed up first), as deviant's timing line reports it.

  st_embed.py MODEL_DIR INPUT.jsonl [--threads 2] [--batch-size 32] [--repeat 2]
"""
import argparse
import json
import time

import torch
from sentence_transformers import SentenceTransformer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    texts = [r["text"] for line in open(a.input) for r in json.loads(line)["responses"]]
    m = SentenceTransformer(a.model, device="cpu")
    m.encode(texts[:64], batch_size=a.batch_size)
    best = float("inf")
    for _ in range(a.repeat):
        t = time.perf_counter()
        m.encode(texts, batch_size=a.batch_size)
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"impl": "sentence-transformers", "texts": len(texts), "seconds": best, "texts_per_s": len(texts) / best,
                      "threads": a.threads, "batch_size": a.batch_size, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
