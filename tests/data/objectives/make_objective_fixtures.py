#!/usr/bin/env python3
"""Independent reference for deviant's preference objectives (method.md formulas, PyTorch autograd).

Writes objective_cases.json: random batches of summed log-probs, token counts, reference
log-probs and weights; for every objective variant the batch loss and the gradient of the loss
with respect to the policy's chosen/rejected summed log-probs, in float64. Also records TRL's
ORPO odds-ratio for mean log-probs near zero. Options follow the JSON names of the cases:
beta, lambda, gamma, label_smoothing, nll_alpha, prompt_nll (TRL's ORPO NLL over prompt and
completion), released_code (DORPO weight placement of the paper's code), ipo_average (false =
IPO on summed log-ratios, OpenRLHF's convention).
Run: python3 make_objective_fixtures.py  (torch required)
"""
import json
import math

import torch
import torch.nn.functional as F

torch.manual_seed(0)
B = 6
cases = []


def log1mexp(a):
    # float64 reference: each branch where it is exact
    return torch.where(a < -math.log(2), torch.log1p(-torch.exp(a)), torch.log(-torch.expm1(a)))


def objective(name, lc, lr, tc, tr, rc, rr, w, opts, full_lc=None, full_t=None):
    beta = opts.get("beta", 2.0 if name == "simpo" else 0.1)
    lam = opts.get("lambda", 0.25)
    eps = opts.get("label_smoothing", 0.0)
    alpha = opts.get("nll_alpha", 0.0)
    ac, ar = lc / tc, lr / tr
    if name in ("dpo", "ddpo"):
        z = (lc - rc) - (lr - rr)
        loss = -(1 - eps) * F.logsigmoid(beta * z) - eps * F.logsigmoid(-beta * z)
    elif name == "ipo":
        if opts.get("ipo_average", True):  # TRL: length-averaged log-ratios
            zbar = (lc - rc) / tc - (lr - rr) / tr
        else:  # OpenRLHF: summed log-ratios
            zbar = (lc - rc) - (lr - rr)
        loss = (zbar - 1 / (2 * beta)) ** 2
    elif name == "hinge":
        z = (lc - rc) - (lr - rr)
        loss = torch.relu(1 - beta * z)
    elif name == "simpo":
        gamma = opts.get("gamma", 0.5)
        loss = F.softplus(-(beta * (ac - ar) - gamma))
    elif name in ("orpo", "dorpo"):
        log_or = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
        nll = -(full_lc / full_t) if opts.get("prompt_nll") else -ac
        if opts.get("released_code"):
            # paper's released code: logsig(w logOR); mean weight x batch token-mean NLL
            tok = full_t if opts.get("prompt_nll") else tc
            s = full_lc if opts.get("prompt_nll") else lc
            batch_nll = -(s.sum() / tok.sum())
            return w.mean() * batch_nll - lam * F.logsigmoid(w * log_or).mean()
        loss = nll - lam * F.logsigmoid(log_or)
    elif name == "sft":
        loss = -ac
    else:
        raise ValueError(name)
    if alpha:
        loss = loss + alpha * (-ac)
    if name in ("ddpo", "dorpo"):
        loss = w * loss
    return loss.mean()


def grad_or_zero(t):
    return (t.grad if t.grad is not None else torch.zeros(B, dtype=torch.float64)).tolist()


variants = [
    ("sft", {}), ("dpo", {}), ("dpo", {"beta": 0.5, "label_smoothing": 0.1}), ("ddpo", {}),
    ("ipo", {}), ("ipo", {"beta": 0.3}), ("ipo", {"ipo_average": False}),
    ("ipo", {"beta": 0.3, "ipo_average": False}), ("hinge", {"beta": 0.2}), ("simpo", {}),
    ("simpo", {"beta": 1.5, "gamma": 0.3}), ("orpo", {}), ("orpo", {"lambda": 0.1}),
    ("orpo", {"prompt_nll": True}), ("dorpo", {}), ("dorpo", {"released_code": True}),
    ("dpo", {"nll_alpha": 0.5}), ("ddpo", {"beta": 0.2, "nll_alpha": 1.0}),
    # TRL's ORPO NLL over prompt + completion, also with the released-code weight placement
    ("orpo", {"prompt_nll": True, "lambda": 0.1}), ("dorpo", {"prompt_nll": True}),
    ("dorpo", {"prompt_nll": True, "released_code": True}),
]

for seed in range(3):
    g = torch.Generator().manual_seed(100 + seed)
    tc = torch.randint(1, 40, (B,), generator=g).double()
    tr = torch.randint(1, 40, (B,), generator=g).double()
    # mean log-probs in (-3, -0.05): realistic, and ORPO's odds stay well defined
    lc = -(0.05 + 3 * torch.rand(B, generator=g, dtype=torch.float64)) * tc
    lr = -(0.05 + 3 * torch.rand(B, generator=g, dtype=torch.float64)) * tr
    rc = lc + torch.randn(B, generator=g, dtype=torch.float64)
    rr = lr + torch.randn(B, generator=g, dtype=torch.float64)
    w = torch.rand(B, generator=g, dtype=torch.float64) * 2
    full_t = tc + torch.randint(1, 20, (B,), generator=g).double()
    full_lc = lc - (0.05 + 3 * torch.rand(B, generator=g, dtype=torch.float64)) * (full_t - tc)
    for name, opts in variants:
        lcv, lrv, flv = lc.clone().requires_grad_(), lr.clone().requires_grad_(), full_lc.clone().requires_grad_()
        loss = objective(name, lcv, lrv, tc, tr, rc, rr, w, opts, flv, full_t)
        loss.backward()
        cases.append({
            "objective": name, "options": opts,
            "chosen_logp": lc.tolist(), "rejected_logp": lr.tolist(),
            "chosen_tokens": tc.tolist(), "rejected_tokens": tr.tolist(),
            "ref_chosen_logp": rc.tolist(), "ref_rejected_logp": rr.tolist(),
            "weight": w.tolist(), "chosen_full_logp": full_lc.tolist(), "chosen_full_tokens": full_t.tolist(),
            "loss": loss.item(),
            "grad_chosen": grad_or_zero(lcv), "grad_rejected": grad_or_zero(lrv),
            "grad_chosen_full": grad_or_zero(flv),
        })

with open("objective_cases.json", "w") as f:
    json.dump({"cases": cases}, f, indent=1)
print(f"wrote {len(cases)} cases")
