#!/usr/bin/env python3
"""Inputs for llm.c's CPU trainer (train_gpt2.c), so that it can run the same GPT-2 shape as
deviant's GPT-2 family: a randomly initialised checkpoint in its binary layout (256-int header:
magic 20240326, version 3, max T, vocab, layers, heads, channels, padded vocab; then the float32
tensors in its order) and two token files (header magic 20240520, version 1, count; uint16 ids).
Pure Python, no third-party packages.

    llmc_inputs.py OUTDIR --layers 4 --channels 256 --heads 4 --vocab 8192 --max-t 256
"""
import argparse
import array
import os
import random
import struct


def tensor_sizes(L, C, Vp, T):
    # wte, wpe, ln1 w/b, qkv w/b, attn proj w/b, ln2 w/b, fc w/b, fc proj w/b, lnf w/b
    return [("wte", Vp * C), ("wpe", T * C), ("ln1w", L * C), ("ln1b", L * C), ("qkvw", L * 3 * C * C), ("qkvb", L * 3 * C),
            ("attprojw", L * C * C), ("attprojb", L * C), ("ln2w", L * C), ("ln2b", L * C), ("fcw", L * 4 * C * C),
            ("fcb", L * 4 * C), ("fcprojw", L * 4 * C * C), ("fcprojb", L * C), ("lnfw", C), ("lnfb", C)]


def write_floats(f, n, kind, rng):
    block = 1 << 16
    if kind == "one":
        chunk = array.array("f", [1.0]) * min(n, block)
    elif kind == "zero":
        chunk = array.array("f", [0.0]) * min(n, block)
    else:  # uniform on [-a, a] with the standard deviation 0.02 of GPT-2's normal init
        a = 0.02 * 3 ** 0.5
        chunk = array.array("f", (rng.uniform(-a, a) for _ in range(min(n, block))))
    left = n
    while left > 0:
        k = min(left, len(chunk))
        chunk[:k].tofile(f)
        left -= k


def main():
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--max-t", type=int, default=256)
    p.add_argument("--tokens", type=int, default=1 << 18)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rng = random.Random(a.seed)
    L, C, V, T = a.layers, a.channels, a.vocab, a.max_t
    Vp = (V + 127) // 128 * 128
    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "model.bin"), "wb") as f:
        f.write(struct.pack("<256i", *([20240326, 3, T, V, L, a.heads, C, Vp] + [0] * 248)))
        for name, n in tensor_sizes(L, C, Vp, T):
            kind = "one" if name.endswith("w") and name.startswith("ln") else "zero" if name.endswith("b") else "random"
            write_floats(f, n, kind, rng)
    for name, n in (("train.bin", a.tokens), ("val.bin", a.tokens // 8)):
        with open(os.path.join(a.outdir, name), "wb") as f:
            f.write(struct.pack("<256i", *([20240520, 1, n] + [0] * 253)))
            array.array("H", (rng.randrange(V) for _ in range(n))).tofile(f)


if __name__ == "__main__":
    main()
