#!/usr/bin/env python3
"""Reference values for deviant/eval/diversity.hpp and `deviant evaluate`, computed independently
with the Python standard library and NumPy.

groups.jsonl  generate's output schema: {"prompt", "samples": [...], "embeddings": {"sem": [...],
              "sty": [...]}} (random texts over a small vocabulary, so n-grams repeat; one group
              with a single sample, one with an empty sample, mixed case and tabs)
expected.json per-group values and the summary (mean, sd, 95% CI, n) of every metric:
  cosine_distance_<name>  mean of 1 - cos over pairs i < j
  compression_ratio       len(" ".join(samples)) / len(gzip via zlib level 9, wbits 31, memLevel 8)
  distinct_n              unique / total word n-grams (n = 1..4) within samples
  ngram_diversity         mean of distinct_1..4 over the orders present
  homogenization          mean ROUGE-L F1 (plain dynamic-programming LCS over words) over pairs

Run from this folder: python3 make_diversity_fixture.py
"""
import json
import math
import os
import random
import re
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = ["the", "The", "knight", "dragon", "rode", "into", "castle", "night", "and", "fire", "sea", "old", "a",
         "stars", "fell", "silent", "song", "over", "river", "Dragon", "café", "très"]


def make_groups(rng):
    groups = []
    for g in range(7):
        k = 1 if g == 5 else 4
        samples = []
        for s in range(k):
            n = rng.randint(3, 25)
            words = [rng.choice(VOCAB) for _ in range(n)]
            if g == 2 and s == 1:
                words = []
            text = ""
            for i, w in enumerate(words):
                text += ("" if i == 0 else rng.choice([" ", " ", "  ", "\t", "\n"])) + w
            if g == 3:
                text = samples[0] if s > 0 and s % 2 == 0 else text  # duplicated samples
            samples.append(text)
        emb = {}
        for name, dim in (("sem", 8), ("sty", 5)):
            emb[name] = [[round(rng.gauss(0, 1), 6) for _ in range(dim)] for _ in range(k)]
        if g == 4:
            emb["sem"][1] = list(emb["sem"][0])  # identical embeddings: distance 0
        groups.append({"prompt": f"prompt {g}", "samples": samples, "embeddings": emb})
    return groups


def words(text):
    out = []
    for w in re.split(rb"[ \t\n\r\f\v]+", text.encode("utf-8")):
        if w:
            out.append(w.lower())  # bytes.lower(): ASCII letters only
    return out


def cosine_distance(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return 1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))


def gzip_len(data):
    c = zlib.compressobj(9, zlib.DEFLATED, 31, 8, zlib.Z_DEFAULT_STRATEGY)
    return len(c.compress(data) + c.flush())


def compression_ratio(samples):
    data = " ".join(samples).encode("utf-8")
    return len(data) / gzip_len(data)


def distinct(ws, n):
    grams = [tuple(w[i:i + n]) for w in ws for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[len(a)][len(b)]


def rouge_l(a, b):
    if not a or not b:
        return 0.0
    m = lcs(a, b)
    if m == 0:
        return 0.0
    p, r = m / len(b), m / len(a)
    return 2 * p * r / (p + r)


def pairs(k):
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def summary(values):
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def main():
    rng = random.Random(5)
    groups = make_groups(rng)
    per = {k: [] for k in ["cosine_distance_sem", "cosine_distance_sty", "compression_ratio", "distinct_1", "distinct_2",
                           "distinct_3", "distinct_4", "ngram_diversity", "homogenization"]}
    per_group = []
    for g in groups:
        s = g["samples"]
        ws = [words(t) for t in s]
        row = {}
        for name in ("sem", "sty"):
            e = g["embeddings"][name]
            if len(e) >= 2:
                row["cosine_distance_" + name] = float(np.mean([cosine_distance(e[i], e[j]) for i, j in pairs(len(e))]))
        row["compression_ratio"] = compression_ratio(s)
        ds = []
        for n in range(1, 5):
            d = distinct(ws, n)
            if d is not None:
                row[f"distinct_{n}"] = d
                ds.append(d)
        if ds:
            row["ngram_diversity"] = sum(ds) / len(ds)
        if len(ws) >= 2:
            row["homogenization"] = float(np.mean([rouge_l(ws[i], ws[j]) for i, j in pairs(len(ws))]))
        for k, v in row.items():
            per[k].append(v)
        per_group.append(row)
    metrics = {k: summary(v) for k, v in per.items()}
    everything = [t for g in groups for t in g["samples"]]
    c = compression_ratio(everything)
    metrics["compression_ratio_corpus"] = {"mean": c, "sd": 0.0, "ci_low": c, "ci_high": c, "n": 1}
    with open(os.path.join(HERE, "groups.jsonl"), "w", encoding="utf-8") as f:
        for g in groups:
            f.write(json.dumps(g, ensure_ascii=False) + "\n")
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump({"per_group": per_group, "metrics": metrics}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
