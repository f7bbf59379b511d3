#!/usr/bin/env python3
"""Writes the small safetensors fixtures read by tests/test_io_safetensors.cpp.

Run from anywhere: python3 tests/data/make_safetensors_fixtures.py
Needs numpy, safetensors and torch (for bfloat16). Every tensor has values the test can state
independently: a closed formula, or a float32/float64 decoding made here by numpy/torch and
stored beside the narrow data ("<name>_ref").
"""
import json
import os

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "safetensors")
os.makedirs(os.path.join(OUT, "sharded"), exist_ok=True)

# basic.safetensors: one tensor of each plain dtype, with closed-form values.
#   f32  (2, 3)  = 0.5 * i - 1            (i = row-major index)
#   f64  (4,)    = 1 / (i + 1)
#   i64  (5,)    = i * i - 3
#   u8   (2, 2)  = 10 * i + 1
#   mask (3,) bool = [True, False, True]
#   empty (0, 4) f32, scalar () f32 = 7.25
basic = {
    "f32": (np.arange(6, dtype=np.float32) * 0.5 - 1).reshape(2, 3),
    "f64": 1.0 / (np.arange(4, dtype=np.float64) + 1),
    "i64": np.arange(5, dtype=np.int64) ** 2 - 3,
    "u8": (np.arange(4, dtype=np.uint8) * 10 + 1).reshape(2, 2),
    "mask": np.array([True, False, True]),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "scalar": np.array(7.25, dtype=np.float32),
}
save_numpy(basic, os.path.join(OUT, "basic.safetensors"), metadata={"format": "np", "note": "fixture"})

# halfs.safetensors: float16 and bfloat16 data with their float32 decodings by numpy / torch.
f16_values = np.array(
    [0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 6.103515625e-05,  # largest and smallest normal
     5.960464477539063e-08, 3.0517578125e-05, 6.097555160522461e-05,  # subnormals: min, 2^-15, max
     -1.1920928955078125e-07, np.inf, -np.inf, np.nan, 0.333251953125, 1000.5],
    dtype=np.float16)
bf16 = torch.tensor([0.0, -0.0, 1.0, -3.140625, 1e30, -1e-30, 9.183549615799121e-41, float("inf"),
                     float("-inf"), float("nan"), 0.0078125, 65280.0], dtype=torch.bfloat16).reshape(3, 4)
save_torch({
    "f16": torch.from_numpy(f16_values.copy()),
    "f16_ref": torch.from_numpy(f16_values.astype(np.float32)),
    "bf16": bf16,
    "bf16_ref": bf16.to(torch.float32),
}, os.path.join(OUT, "halfs.safetensors"))

# sharded/: two shards and an index mapping a.weight, a.bias -> shard 1; b.weight -> shard 2.
shard1 = {"a.weight": (np.arange(6, dtype=np.float32) + 1).reshape(3, 2), "a.bias": np.array([-1, 1], dtype=np.float32)}
shard2 = {"b.weight": (np.arange(4, dtype=np.float32) * -2).reshape(2, 2)}
names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
save_numpy(shard1, os.path.join(OUT, "sharded", names[0]))
save_numpy(shard2, os.path.join(OUT, "sharded", names[1]))
weight_map = {k: names[0] for k in shard1} | {k: names[1] for k in shard2}
total = sum(v.nbytes for v in list(shard1.values()) + list(shard2.values()))
with open(os.path.join(OUT, "sharded", "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    f.write("\n")
