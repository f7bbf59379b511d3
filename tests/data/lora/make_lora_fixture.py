#!/usr/bin/env python3
"""Reference LoRA adapters made by PEFT on the tiny checkpoints of tests/data/models/, and the
logits / next-token log-probs that PEFT + transformers compute with them (float32).

Run from this folder: python3 make_lora_fixture.py   (torch, transformers, peft required)
Writes llama_adapter/ and gpt2_adapter/ (adapter_model.safetensors + adapter_config.json, as
PeftModel.save_pretrained writes them) and expected.json:
  {family: {ids: [[...]], logits: [...] (B*T*V, row-major), logprobs: [...] (B*(T-1)),
            base_logprobs: [...] (adapters disabled), merged_logprobs: [...] (merge_and_unload)}}

python3 make_lora_fixture.py --check-export DIR FAMILY
  loads an adapter directory written elsewhere (e.g. by LoraAdapters::export_peft) with
  PeftModel.from_pretrained and prints its next-token log-probs for the fixture ids.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")

FAMILIES = {
    "llama": dict(r=4, lora_alpha=8, fan_in_fan_out=False,
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    # GPT-2 stores its projections as Conv1D (in, out): PEFT needs fan_in_fan_out
    "gpt2": dict(r=3, lora_alpha=12, fan_in_fan_out=True, target_modules=["c_attn", "c_proj", "c_fc"]),
}
IDS = [[3, 17, 40, 16, 86, 68, 77, 5], [9, 1, 95, 42, 42, 7, 60, 33]]


def load_base(family):
    m = AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, family), dtype=torch.float32)
    m.eval()
    return m


def next_token_logprobs(logits, ids):
    lp = F.log_softmax(logits[:, :-1].double(), dim=-1)
    return lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def make(family, seed):
    torch.manual_seed(seed)
    spec = FAMILIES[family]
    cfg = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, bias="none", **spec)
    model = get_peft_model(load_base(family), cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-zero B so that the adapters change the outputs
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    out_dir = os.path.join(HERE, f"{family}_adapter")
    model.save_pretrained(out_dir)
    readme = os.path.join(out_dir, "README.md")  # an empty model card
    if os.path.exists(readme):
        os.remove(readme)
    cfg_path = os.path.join(out_dir, "adapter_config.json")
    with open(cfg_path) as f:
        saved = json.load(f)
    saved["base_model_name_or_path"] = f"tests/data/models/{family}"  # not this machine's path
    with open(cfg_path, "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        lp = next_token_logprobs(logits, ids)
        with model.disable_adapter():
            base_lp = next_token_logprobs(model(input_ids=ids).logits, ids)
        merged = model.merge_and_unload()
        merged_lp = next_token_logprobs(merged(input_ids=ids).logits, ids)
    assert (lp - base_lp).abs().max() > 1e-2, "the adapters should change the outputs"
    return {"ids": IDS, "logits": logits.flatten().tolist(), "logprobs": lp.flatten().tolist(),
            "base_logprobs": base_lp.flatten().tolist(), "merged_logprobs": merged_lp.flatten().tolist()}


def check_export(adapter_dir, family):
    model = PeftModel.from_pretrained(load_base(family), adapter_dir)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        print(json.dumps(next_token_logprobs(model(input_ids=ids).logits, ids).flatten().tolist()))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check-export":
        check_export(sys.argv[2], sys.argv[3])
    else:
        expected = {"llama": make("llama", 1), "gpt2": make("gpt2", 2)}
        with open(os.path.join(HERE, "expected.json"), "w") as f:
            json.dump(expected, f)
