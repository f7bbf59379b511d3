#!/usr/bin/env python3
"""Reference fixtures for deviant/generate/sampler.hpp, computed by Hugging Face transformers.

1. Logits processors: fixed logits rows run through transformers' own
   RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper and
   TopPLogitsWarper, in that order (the order of generate()), in float64. Every stage is written
   (null = -inf), with the final filtered distribution (softmax).
2. Greedy generation: the tiny Llama fixture (../models/llama) with
   model.generate(do_sample=False, ...) on a few prompts; the generated ids (EOS included when
   produced, as transformers returns them).
3. `deviant generate` end to end: a tiny Llama (llama_756/) whose vocabulary is the one of
   ../tokenizers/fallback_style.json (same layer sizes as ../models/llama, so the LoRA adapter
   ../lora/llama_adapter fits it), prompts.jsonl, and the greedy completions as text: prompts in
   the plain chat format of tokenizer/chat_template.hpp with BOS once, generation by
   transformers (and by PEFT with the adapter), decoded by the tokenizers library.

Run from this folder: python3 make_sampler_fixture.py   (torch, transformers, peft, tokenizers)
Writes sampler_fixture.json, llama_756/, prompts.jsonl.
"""
import json
import math
import os

import torch
from peft import PeftModel
from tokenizers import Tokenizer
from transformers import (LlamaConfig, LlamaForCausalLM, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

HERE = os.path.dirname(os.path.abspath(__file__))


def row(t):
    return [None if math.isinf(v) else v for v in t[0].tolist()]


def processor_cases():
    g = torch.Generator().manual_seed(7)
    cases = []
    settings = [
        # (vocab, context length, penalty, temperature, top_k, top_p)
        (20, 6, 1.1, 1.0, 50, 0.95),   # the paper's settings (top_k larger than the vocabulary)
        (20, 6, 1.3, 0.7, 8, 0.9),
        (32, 10, 1.1, 1.5, 5, 0.95),
        (32, 4, 2.0, 0.5, 0, 0.6),     # top-k off
        (16, 3, 1.0, 1.0, 4, 1.0),     # only top-k
        (16, 8, 1.2, 2.0, 0, 0.3),     # only penalty, temperature, a tight top-p
        (64, 12, 1.1, 1.0, 50, 0.95),
    ]
    for vocab, ctx, penalty, temperature, top_k, top_p in settings:
        logits = torch.randn(1, vocab, generator=g, dtype=torch.float64) * 3.0
        context = torch.randint(0, vocab, (1, ctx), generator=g)
        case = {"logits": row(logits), "context": context[0].tolist(), "repetition_penalty": penalty,
                "temperature": temperature, "top_k": top_k, "top_p": top_p}
        s = logits.clone()
        if penalty != 1.0:
            s = RepetitionPenaltyLogitsProcessor(penalty)(context, s)
        case["after_penalty"] = row(s)
        if temperature != 1.0:
            s = TemperatureLogitsWarper(temperature)(context, s)
        case["after_temperature"] = row(s)
        if top_k != 0:
            s = TopKLogitsWarper(top_k)(context, s)
        case["after_top_k"] = row(s)
        if top_p < 1.0:
            s = TopPLogitsWarper(top_p)(context, s)
        case["after_top_p"] = row(s)
        case["probs"] = torch.softmax(s, dim=-1)[0].tolist()
        cases.append(case)
    return cases


def greedy_cases():
    model = LlamaForCausalLM.from_pretrained(os.path.join(HERE, "..", "models", "llama"), torch_dtype=torch.float32)
    model.eval()
    g = torch.Generator().manual_seed(11)
    prompts = [[1] + torch.randint(3, 96, (n,), generator=g).tolist() for n in (3, 7, 1, 12)]
    cases = []
    for penalty, max_new in ((1.0, 20), (1.3, 16)):
        outputs = []
        for p in prompts:
            ids = torch.tensor([p])
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new,
                                     repetition_penalty=penalty, eos_token_id=2, pad_token_id=0, temperature=None,
                                     top_k=None, top_p=None)
            outputs.append(out[0, len(p):].tolist())
        cases.append({"repetition_penalty": penalty, "max_new_tokens": max_new, "stop_ids": [2], "prompts": prompts,
                      "generated": outputs})
    # the same prompts with an extra stop id: a sequence ends at the first token that is a stop id
    base = cases[0]["generated"]
    stop = base[0][2]  # ends some rows early and leaves another to run to max_new_tokens
    trimmed = []
    for out in base:
        cut = next((i + 1 for i, t in enumerate(out) if t in (2, stop)), len(out))
        trimmed.append(out[:cut])
    cases.append({"repetition_penalty": 1.0, "max_new_tokens": 20, "stop_ids": [2, stop], "prompts": prompts,
                  "generated": trimmed})
    return cases


def tiny_llama_756():
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=756, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, rope_theta=500000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15)
            else:
                p.uniform_(0.7, 1.3)
    m.eval()
    return m


def cli_cases():
    tok = Tokenizer.from_file(os.path.join(HERE, "..", "tokenizers", "fallback_style.json"))
    model = tiny_llama_756()
    model.save_pretrained(os.path.join(HERE, "llama_756"))
    prompts = ["Write a story about a dragon.", "The old sea", "Tell me about the night and the stars, please."]
    with open(os.path.join(HERE, "prompts.jsonl"), "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}) + "\n")
    ids = []
    for p in prompts:
        enc = tok.encode(f"<|user|>\n{p}</s>\n<|assistant|>\n", add_special_tokens=False).ids
        ids.append(enc if enc[:1] == [1] else [1] + enc)
    max_new, penalty = 12, 1.1

    def run(m):
        texts = []
        for p in ids:
            x = torch.tensor([p])
            with torch.no_grad():
                out = m.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new,
                                 repetition_penalty=penalty, eos_token_id=2, pad_token_id=0, temperature=None, top_k=None,
                                 top_p=None)
            gen = out[0, len(p):].tolist()
            if gen and gen[-1] == 2:
                gen = gen[:-1]
            text = tok.decode(gen, skip_special_tokens=True)
            texts.append(text)
        return texts

    base = run(model)
    adapted = run(PeftModel.from_pretrained(model, os.path.join(HERE, "..", "lora", "llama_adapter")))
    return {"prompt_ids": ids, "max_new_tokens": max_new, "repetition_penalty": penalty, "base": base, "adapters": adapted}


def main():
    out = {"processors": processor_cases(), "greedy": greedy_cases(), "cli": cli_cases()}
    with open(os.path.join(HERE, "sampler_fixture.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
