#!/usr/bin/env python3
"""Independent reference for deviant's optimiser pieces (torch.optim.AdamW, clip_grad_norm_, and
transformers' learning-rate schedulers).

Writes optim_expected.json:
  adamw      — parameters (float64, float32, bfloat16) updated by torch.optim.AdamW over several
               steps with given gradients and per-step learning rates (one step gives a parameter
               no gradient); the parameters after every step and the final exp_avg / exp_avg_sq /
               per-parameter step. bfloat16 follows the fp32-state rule: each step loads the bf16
               weights into float32, runs torch's AdamW with float32 state, and rounds back to bf16.
               With "master_weights" (mixed precision) the float32 copy persists between steps
               (the master) and the bf16 weights are its rounding; "final_master" holds it.
  clip       — torch.nn.utils.clip_grad_norm_ on random gradients: returned norm, gradients after.
  schedules  — transformers' constant/linear/cosine(+min lr) schedules with warmup: the learning
               rate after `step` calls of scheduler.step(), for step = 0..N.
Run: python3 make_adamw_fixture.py  (torch and transformers required)
"""
import json
import os

import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

torch.manual_seed(1234)
HERE = os.path.dirname(os.path.abspath(__file__))


def values(t):
    return [float(x) for x in t.detach().double().flatten().tolist()]


def adamw_case(name, dtype, options, shapes, lrs, no_grad_steps, master_weights=False):
    """no_grad_steps: {step index: parameter index} whose gradient is None in that step."""
    torch_dtype = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    inits = [torch.randn(s, dtype=torch.float64).to(torch_dtype) for s in shapes]
    grads = [[(torch.randn(s, dtype=torch.float64) * 0.5).to(torch_dtype) for s in shapes] for _ in lrs]
    for k, i in no_grad_steps.items():
        grads[k][i] = None

    # bf16 weights are stepped through a float32 copy (float32 state); others directly.
    work_dtype = torch.float32 if torch_dtype == torch.bfloat16 else torch_dtype
    work = [torch.nn.Parameter(p.to(work_dtype).clone()) for p in inits]
    stored = [p.clone() for p in inits]
    opt = torch.optim.AdamW(work, lr=lrs[0], betas=(options["beta1"], options["beta2"]), eps=options["eps"],
                            weight_decay=options["weight_decay"], foreach=False)
    after = []
    for k, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        if not master_weights:
            with torch.no_grad():
                for w, s in zip(work, stored):
                    w.copy_(s.to(work_dtype))
        for w, g in zip(work, grads[k]):
            w.grad = None if g is None else g.to(work_dtype).clone()
        opt.step()
        stored = [w.detach().to(torch_dtype).clone() for w in work]
        after.append([values(s) for s in stored])
    state = []
    for w in work:
        st = opt.state[w]
        state.append({"exp_avg": values(st["exp_avg"]), "exp_avg_sq": values(st["exp_avg_sq"]), "step": int(st["step"].item())})
    case = {
        "name": name,
        "dtype": dtype,
        "master_weights": master_weights,
        "options": options,
        "params": [{"name": f"layer.{i}.weight", "shape": list(s), "init": values(p)} for i, (s, p) in enumerate(zip(shapes, inits))],
        "steps": [{"lr": lr, "grads": [None if g is None else values(g) for g in grads[k]]} for k, lr in enumerate(lrs)],
        "after_step": after,
        "final_state": state,
    }
    if master_weights:
        case["final_master"] = [values(w) for w in work]
    return case


def clip_case(name, dtype, shapes, max_norm):
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    params = [torch.nn.Parameter(torch.zeros(s, dtype=torch_dtype)) for s in shapes]
    grads = [torch.randn(s, dtype=torch.float64).to(torch_dtype) for s in shapes]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return {
        "name": name,
        "dtype": dtype,
        "shapes": [list(s) for s in shapes],
        "grads": [values(g) for g in grads],
        "max_norm": max_norm,
        "norm": float(norm),
        "clipped": [values(p.grad) for p in params],
    }


def schedule_case(kind, base_lr, warmup, total, min_ratio, steps):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    if kind == "constant":
        sched = get_constant_schedule_with_warmup(opt, warmup)
    elif kind == "linear":
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
    elif min_ratio > 0:
        sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr_rate=min_ratio)
    else:
        sched = get_cosine_schedule_with_warmup(opt, warmup, total)
    lrs = []
    for _ in range(steps):
        lrs.append(float(sched.get_last_lr()[0]))
        opt.step()
        sched.step()
    return {"kind": kind, "base_lr": base_lr, "warmup_steps": warmup, "total_steps": total, "min_ratio": min_ratio, "lrs": lrs}


def main():
    shapes = [(3, 4), (5,)]
    lrs = [1e-2, 2e-2, 5e-3, 1e-2, 3e-2, 1e-2]
    out = {
        "adamw": [
            adamw_case("f64 weight decay", "float64", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1},
                       shapes, lrs, {2: 1}),
            adamw_case("f64 beta1 0.5 large eps", "float64", {"beta1": 0.5, "beta2": 0.9, "eps": 1e-3, "weight_decay": 0.0},
                       shapes, lrs, {0: 0}),
            adamw_case("f32 weight decay", "float32", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
                       shapes, lrs, {3: 0}),
            adamw_case("bf16 fp32 state", "bfloat16", {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.05},
                       shapes, lrs, {}),
            # lr far below the bf16 spacing of the weights: only a float32 master accumulates the updates
            adamw_case("bf16 fp32 master", "bfloat16", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
                       shapes, [1e-4] * 8, {3: 1}, master_weights=True),
        ],
        "clip": [
            clip_case("f64 clipped", "float64", [(4, 5), (7,)], 0.5),
            clip_case("f32 clipped", "float32", [(4, 5), (7,)], 1.0),
            clip_case("f64 below max", "float64", [(3,), (2, 2)], 100.0),
        ],
        "schedules": [
            schedule_case("constant", 1e-3, 3, 10, 0.0, 14),
            schedule_case("linear", 1e-3, 3, 10, 0.0, 14),
            schedule_case("linear", 5e-4, 0, 8, 0.0, 11),
            schedule_case("cosine", 1e-3, 3, 10, 0.0, 14),
            schedule_case("cosine", 2e-4, 0, 7, 0.0, 10),
            schedule_case("cosine", 1e-3, 2, 12, 0.1, 15),
        ],
    }
    path = os.path.join(HERE, "optim_expected.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
