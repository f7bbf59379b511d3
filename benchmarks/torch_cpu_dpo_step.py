#!/usr/bin/env python3
"""CPU peer of benchmarks/dpo_step: the same preference-training step in PyTorch eager +
Hugging Face transformers on the CPU, float32 (or, with --bf16, bf16 autocast over fp32 weights).

Same model shapes (randomly initialised LlamaForCausalLM, SDPA attention, untied head), same
batch (P pairs = 2P rows of T tokens: chosen rows then rejected rows), prompt = first quarter of
each sequence masked out of the summed log-probs, same objectives:
  dpo  : policy forward+backward, frozen reference forward under no_grad, sigmoid DPO (beta 0.1)
  orpo : policy forward+backward, SFT + odds-ratio loss (lambda 0.1)
and torch.optim.AdamW (lr 1e-5, default weight decay 0.01). Prints one JSON line per
(config, objective) with the keys of dpo_step (and of the GPU peer torch_dpo_baseline.py):
median step time, tokens/s, peak memory (process peak RSS, GiB) and MFU against a float32
1024^3 matmul timed in the same run.

    python3 benchmarks/torch_cpu_dpo_step.py --configs tiny --objectives dpo --threads 2
"""
import argparse, json, resource, statistics, time

import torch
import torch.nn.functional as F

CONFIGS = {
    # name: (layers, d_model, heads, kv_heads, ffn, vocab, seq, pairs) — as torch_dpo_baseline.py
    "tiny":  (4, 256, 4, 4, 688, 8192, 256, 8),
    "small": (8, 512, 8, 8, 1376, 32000, 512, 8),
    "gpt2s": (12, 768, 12, 12, 2048, 32000, 1024, 8),
}


def sgemm_ceiling():
    """float32 TFLOP/s of one 1024^3 matmul, best of 5 (the same probe dpo_step times)."""
    a = torch.full((1024, 1024), 0.5)
    b = torch.full((1024, 1024), 0.25)
    a @ b
    best = 1e30
    for _ in range(5):
        s = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - s)
    return 2 * 1024**3 / best / 1e12


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # KiB on Linux


def seq_logps(logits, labels, mask):
    lp = torch.log_softmax(logits.float(), -1)
    tok = torch.gather(lp, 2, labels.unsqueeze(-1)).squeeze(-1)
    return (tok * mask).sum(-1), mask.sum(-1)


def run(name, objective, steps, warmup, bf16=False):
    from transformers import LlamaConfig, LlamaForCausalLM
    L, D, H, KV, FF, V, T, P = CONFIGS[name]
    cfg = LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=FF,
                      num_hidden_layers=L, num_attention_heads=H,
                      num_key_value_heads=KV, max_position_embeddings=T,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    policy = LlamaForCausalLM(cfg).float().train()
    ref = None
    if objective == "dpo":
        ref = LlamaForCausalLM(cfg).float().eval()
        ref.load_state_dict(policy.state_dict())
        for p in ref.parameters():
            p.requires_grad_(False)
    n_params = sum(p.numel() for p in policy.parameters())
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    B = 2 * P  # chosen rows then rejected rows
    ids = torch.randint(0, V, (B, T))
    prompt = T // 4
    mask = torch.ones(B, T - 1)
    mask[:, : prompt - 1] = 0  # position t predicts token t+1: completion tokens are prompt..T-1
    beta, lam = 0.1, 0.1

    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)  # bf16 products, fp32 weights and optimizer

    def step():
        with autocast():
            logits = policy(input_ids=ids).logits[:, :-1]
        lps, n = seq_logps(logits, ids[:, 1:], mask)
        if objective == "dpo":
            with torch.no_grad(), autocast():
                rl = ref(input_ids=ids).logits[:, :-1]
            rlps, _ = seq_logps(rl, ids[:, 1:], mask)
            pi = lps[:P] - lps[P:]
            rr = rlps[:P] - rlps[P:]
            loss = -F.logsigmoid(beta * (pi - rr)).mean()
        else:
            avg = lps / n
            log_odds = (avg[:P] - avg[P:]) - (torch.log1p(-torch.exp(avg[:P])) - torch.log1p(-torch.exp(avg[P:])))
            loss = (-avg[:P]).mean() - lam * F.logsigmoid(log_odds).mean()
        loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        s = time.perf_counter(); loss = step(); times.append(time.perf_counter() - s)
    med = statistics.median(times)
    tokens = B * T
    attn = 2 * 2 * L * T * T * D  # QK^T and PV, per sequence, forward, causal not discounted
    fwd_flops = B * (2 * n_params * T + attn)
    flops = 3 * fwd_flops + (fwd_flops if objective == "dpo" else 0)
    return dict(impl="torch-eager", device="cpu", config=name, objective=objective, compiled=False,
                dtype="bf16-autocast" if bf16 else "f32", params=n_params, tokens_per_step=tokens, step_s_median=med,
                step_s_min=min(times), tokens_per_s=tokens / med, tflops=flops / med / 1e12,
                peak_mem_gib=peak_rss_gib(), peak_mem_kind="process peak RSS",
                loss=float(loss.detach()))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny")
    ap.add_argument("--objectives", default="dpo,orpo")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward passes (fp32 weights, AdamW, losses)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    ceiling = sgemm_ceiling()
    print(json.dumps(dict(impl="torch-eager", device="cpu", torch=torch.__version__,
                          cpu_threads=torch.get_num_threads(), f32_sgemm_tflops=round(ceiling, 5),
                          note="CPU run: peak_mem_gib is the process peak RSS, mfu is against the measured 1024^3 float32 matmul")),
          flush=True)
    for c in a.configs.split(","):
        for o in a.objectives.split(","):
            r = run(c, o, a.steps, a.warmup, a.bf16)
            r["mfu"] = r["tflops"] / ceiling
            print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
