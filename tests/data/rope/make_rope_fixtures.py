#!/usr/bin/env python3
"""Reference fixtures for RoPE scaling and sliding-window attention: tiny random checkpoints saved
by Hugging Face transformers, one per variant, and the per-token log-probs transformers computes
for a few token rows in float64.

  llama31/       LlamaConfig, rope_scaling {rope_type llama3, factor 8, low 1, high 4,
                 original_max_position_embeddings 512} (head size 8: one frequency kept, one
                 smoothed, two divided), as Llama 3.1 / 3.2 write it
  linear/        rope_type linear, factor 4
  dynamic/       rope_type dynamic, factor 2, max_position_embeddings 16; rows longer than 16
                 tokens change the base (transformers recomputes it from max position + 1 of the
                 batch; each row is scored alone, so per row)
  yarn/          rope_type yarn, factor 4, original_max_position_embeddings 32 (attention factor
                 derived: 0.1 ln 4 + 1)
  yarn_mscale/   yarn with mscale 0.8 / mscale_all_dim 0.6 and beta_fast 16
  mistral/       MistralConfig, sliding_window 5 (rows of up to 24 tokens, so most queries see only
                 their window)
  qwen2_window/  Qwen2Config with sliding_window 4 but use_sliding_window false: full attention
Written: <name>/config.json + model.safetensors and expected.json
  {name: {"rows": [[ids...], ...], "logprobs": [[log p(ids[t+1] | ids[<=t]) ...], ...]}}.

Run from this folder: python3 make_rope_fixtures.py   (torch + transformers required)
"""
import json
import os

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 96


def randomize(model, std, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
            elif "norm" in name:
                p.uniform_(0.7, 1.3)
            else:
                p.normal_(0.0, 0.05)


def common(max_pos=128):
    return dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=max_pos, rms_norm_eps=1e-5, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2)


def variants():
    yield "llama31", LlamaForCausalLM(LlamaConfig(**common(), rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 512}))
    yield "linear", LlamaForCausalLM(LlamaConfig(**common(), rope_theta=10000.0,
                                                 rope_scaling={"rope_type": "linear", "factor": 4.0}))
    yield "dynamic", LlamaForCausalLM(LlamaConfig(**common(16), rope_theta=10000.0,
                                                  rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    yield "yarn", LlamaForCausalLM(LlamaConfig(**common(), rope_theta=10000.0, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}))
    yield "yarn_mscale", LlamaForCausalLM(LlamaConfig(**common(), rope_theta=10000.0, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "mscale": 0.8,
        "mscale_all_dim": 0.6, "beta_fast": 16}))
    yield "mistral", MistralForCausalLM(MistralConfig(**common(), rope_theta=10000.0, sliding_window=5,
                                                      attn_implementation="eager"))
    yield "qwen2_window", Qwen2ForCausalLM(Qwen2Config(**common(), rope_theta=10000.0, sliding_window=4,
                                                       use_sliding_window=False))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    os.chdir(here)
    rng = torch.Generator().manual_seed(7)
    rows = [torch.randint(3, VOCAB, (n,), generator=rng).tolist() for n in (6, 17, 24)]
    expected = {}
    for seed, (name, model) in enumerate(variants()):
        randomize(model, 0.15, 100 + seed)
        model.save_pretrained(name, safe_serialization=True)
        gen = os.path.join(name, "generation_config.json")
        if os.path.exists(gen):
            os.remove(gen)
        model.double().eval()
        out = []
        with torch.no_grad():
            for r in rows:
                ids = torch.tensor([r])
                logits = model(input_ids=ids).logits[0].double()
                lp = F.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
                out.append(lp.tolist())
        expected[name] = {"rows": rows, "logprobs": out}
    with open("expected.json", "w") as f:
        json.dump(expected, f, indent=1)
    print("ok")


if __name__ == "__main__":
    main()
