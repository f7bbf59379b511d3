#!/usr/bin/env python3
"""NumPy reference for deviation weights (docs/method.md, "Deviation weights").

Writes a small random fixture of prompt/responses lines and the expected output of
`deviant deviation` for two settings:
  deviation_fixture.jsonl              input
  deviation_expected.jsonl             default spaces (every space all responses have), no floor
  deviation_expected_sem_floor.jsonl   --spaces sem --floor 0.2
Run from anywhere: python3 tests/data/deviation_reference.py
"""
import copy
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def raw_deviation(e):
    e = np.asarray(e, dtype=np.float64)
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    n = len(u)
    if n == 1:
        return np.zeros(1)
    dist = 1.0 - u @ u.T
    np.fill_diagonal(dist, 0.0)
    return dist.sum(axis=1) / (n - 1)


def weights(raw_per_space, floor=0.0):
    rescaled = []
    for d in raw_per_space:
        lo, hi = d.min(), d.max()
        rescaled.append(np.zeros_like(d) if hi == lo else 2 * (d - lo) / (hi - lo) - 1)
    k = len(rescaled)
    g = np.prod([((r + 1) / 2) ** (1.0 / k) for r in rescaled], axis=0)
    s = 2 * g - 1
    n = len(s)
    w = np.ones(n) if s.min() == s.max() else n * (s + 1) / np.sum(s + 1)
    return np.maximum(w, floor)


def annotate(line, spaces, floor):
    out = copy.deepcopy(line)
    resp = out["responses"]
    if spaces is None:
        spaces = sorted(set.intersection(*[set(r["embedding"]) for r in resp]))
    raw = [raw_deviation([r["embedding"][s] for r in resp]) for s in spaces]
    w = weights(raw, floor)
    for i, r in enumerate(resp):
        r["deviation"] = {s: float(raw[k][i]) for k, s in enumerate(spaces)}
        r["weight"] = float(w[i])
    return out


def fixture():
    rng = np.random.default_rng(20250317)
    lines = []
    for p, n in enumerate([2, 5, 4, 3, 6]):
        responses = []
        for i in range(n):
            emb = {"sem": rng.normal(size=6).round(6).tolist(), "sty": rng.normal(size=4).round(6).tolist()}
            if p == 2 and i % 2 == 0:
                emb["extra"] = rng.normal(size=3).round(6).tolist()  # not in every response: not a default space
            responses.append({"text": f"story {p}.{i}", "score": int(rng.integers(0, 40)), "embedding": emb, "id": f"r{p}-{i}"})
        lines.append({"prompt": f"prompt {p}", "responses": responses, "source": "fixture"})
    return lines


def write(name, lines):
    with open(os.path.join(HERE, name), "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    lines = fixture()
    write("deviation_fixture.jsonl", lines)
    write("deviation_expected.jsonl", [annotate(l, None, 0.0) for l in lines])
    write("deviation_expected_sem_floor.jsonl", [annotate(l, ["sem"], 0.2) for l in lines])
