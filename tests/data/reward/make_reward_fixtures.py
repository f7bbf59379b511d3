#!/usr/bin/env python3
"""Reference fixtures for the reward model: tiny random *ForSequenceClassification checkpoints
(one label) saved by Hugging Face transformers, and the scores transformers gives for a few
token rows, batched with right padding (the score is read at the last non-padding token).

  llama/   LlamaForSequenceClassification, untied embeddings (a reward checkpoint has no lm_head)
  qwen2/   Qwen2ForSequenceClassification (q/k/v biases)
Written: <name>/config.json + model.safetensors and expected.json
  {name: {"rows": [[ids...], ...], "scores": [float, ...], "padded_scores": [...]}}
"scores" score each row alone; "padded_scores" score all rows in one right-padded batch (pad id
0, which no row uses) and must agree with "scores".

Run from this folder: python3 make_reward_fixtures.py   (torch + transformers required)
"""
import json
import os

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification, Qwen2Config, Qwen2ForSequenceClassification

VOCAB = 80
PAD = 0


def randomize(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08 if "score" not in name else 0.3)
            elif "norm" in name:
                p.uniform_(0.7, 1.3)
            else:
                p.normal_(0.0, 0.05)


def common():
    return dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2, pad_token_id=PAD, num_labels=1)


def main():
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(7)
    rows = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in (1, 5, 12, 23, 40)]
    expected = {}
    for seed, (name, model) in enumerate([
        ("llama", LlamaForSequenceClassification(LlamaConfig(**common(), rope_theta=10000.0))),
        ("qwen2", Qwen2ForSequenceClassification(Qwen2Config(**common(), rope_theta=1000000.0))),
    ]):
        randomize(model, 100 + seed)
        model.eval()
        with torch.no_grad():
            alone = [model(torch.tensor([r])).logits[0, 0].item() for r in rows]
            T = max(len(r) for r in rows)
            batch = torch.tensor([r + [PAD] * (T - len(r)) for r in rows])
            mask = (batch != PAD).long()
            padded = model(batch, attention_mask=mask).logits[:, 0].tolist()
        os.makedirs(name, exist_ok=True)
        model.to(torch.float32).save_pretrained(name, safe_serialization=True)
        # scores of the float32 weights as saved (what the C++ side loads), in float64 arithmetic
        model.to(torch.float64)
        with torch.no_grad():
            alone = [model(torch.tensor([r])).logits[0, 0].item() for r in rows]
        expected[name] = {"rows": rows, "scores": alone, "padded_scores": padded}
    with open("expected.json", "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
