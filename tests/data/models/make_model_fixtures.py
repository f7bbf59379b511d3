#!/usr/bin/env python3
"""Reference fixtures for `deviant score`: tiny random Llama (grouped-query heads, RoPE) and
GPT-2 checkpoints saved by Hugging Face transformers, token-id pairs, and the expected
log-probs, losses and per-parameter gradient norms computed by transformers in float64.

Run from this folder: python3 make_model_fixtures.py   (torch + transformers required)
Writes llama/, llama_ref/, gpt2/, pairs.jsonl, expected.json.
"""
import json
import os

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

VOCAB = 96
torch.manual_seed(0)


def randomize(model, std):
    # larger than the default init so that log-probs are far from uniform
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
            elif "norm" in name or "ln" in name:
                p.uniform_(0.7, 1.3)
            else:
                p.normal_(0.0, 0.05)


def llama(seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2)
    m = LlamaForCausalLM(cfg)
    randomize(m, 0.15)
    return m


def gpt2(seed):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    m = GPT2LMHeadModel(cfg)
    randomize(m, 0.15)
    return m


def make_pairs(rng):
    pairs = []
    for i in range(5):
        lp = int(torch.randint(1, 9, (1,), generator=rng))
        lc = int(torch.randint(1, 12, (1,), generator=rng))
        lr = int(torch.randint(1, 12, (1,), generator=rng))
        ids = lambda n: torch.randint(3, VOCAB, (n,), generator=rng).tolist()
        p = {"prompt_ids": ids(lp), "chosen_ids": ids(lc), "rejected_ids": ids(lr)}
        if i % 2 == 1:
            p["weight"] = round(float(torch.rand(1, generator=rng)) * 2, 4)
        pairs.append(p)
    return pairs


def seq_logp(model, prompt, completion):
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0].double()
    lp = F.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return lp[len(prompt) - 1:].sum()  # completion tokens only


def evaluate(policy, ref, pairs, objective, beta=0.1):
    policy.zero_grad()
    rows, losses = [], []
    for p in pairs:
        c = seq_logp(policy, p["prompt_ids"], p["chosen_ids"])
        r = seq_logp(policy, p["prompt_ids"], p["rejected_ids"])
        nc, nr = len(p["chosen_ids"]), len(p["rejected_ids"])
        row = {"chosen_logp": c.item(), "rejected_logp": r.item(),
               "chosen_logp_mean": c.item() / nc, "rejected_logp_mean": r.item() / nr}
        if ref is not None:
            with torch.no_grad():
                rc = seq_logp(ref, p["prompt_ids"], p["chosen_ids"])
                rr = seq_logp(ref, p["prompt_ids"], p["rejected_ids"])
            row["ref_chosen_logp"], row["ref_rejected_logp"] = rc.item(), rr.item()
        rows.append(row)
        if objective == "sft":
            losses.append(-c / nc)
        elif objective == "dpo":
            losses.append(-F.logsigmoid(beta * ((c - rc) - (r - rr))))
        elif objective == "ddpo":
            losses.append(p.get("weight", 1.0) * -F.logsigmoid(beta * ((c - rc) - (r - rr))))
    loss = torch.stack(losses).mean()
    loss.backward()
    norms = {n: p.grad.norm().item() for n, p in policy.named_parameters() if p.grad is not None}
    return {"pairs": rows, "loss": loss.item(), "grad_norms": norms}


def main():
    rng = torch.Generator().manual_seed(1)
    pairs = make_pairs(rng)
    with open("pairs.jsonl", "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    expected = {}
    models = {"llama": llama(10), "llama_ref": llama(11), "gpt2": gpt2(20)}
    for name, m in models.items():
        m.save_pretrained(name, safe_serialization=True)
        m.double().eval()
    for name, p in models["gpt2"].named_parameters():
        pass
    expected["llama_sft"] = evaluate(models["llama"], None, pairs, "sft")
    expected["llama_dpo"] = evaluate(models["llama"], models["llama_ref"], pairs, "dpo")
    expected["llama_ddpo"] = evaluate(models["llama"], models["llama_ref"], pairs, "ddpo")
    expected["gpt2_sft"] = evaluate(models["gpt2"], None, pairs, "sft")
    # transformers names GPT-2's tied head after the embedding; keep checkpoint names only
    for key in ("gpt2_sft",):
        expected[key]["grad_norms"] = {k: v for k, v in expected[key]["grad_norms"].items() if not k.startswith("lm_head")}
    with open("expected.json", "w") as f:
        json.dump(expected, f, indent=1)
    for name in models:
        for extra in ("generation_config.json",):
            path = os.path.join(name, extra)
            if os.path.exists(path):
                os.remove(path)
    print("ok")


if __name__ == "__main__":
    main()
