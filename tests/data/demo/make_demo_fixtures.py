#!/usr/bin/env python3
"""Reference encodings for tests/test_demo_data.cpp, computed by the `tokenizers` package from the
committed demo tokenizer (data/demo/tokenizer.json, made by data/demo/make_demo_data.py).

Writes tokenizer_expected.json: for held-out strings the ids with and without special tokens,
and for a ChatML conversation its rendering and ids (with special tokens).

Run from anywhere:  python3 tests/data/demo/make_demo_fixtures.py
"""
import json
import os

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))

STRINGS = [
    "",
    "The keeper opened the door and found a narrow staircase full of warm light.",
    "\"Is the fog supposed to hum like that?\" Mara asked.",
    "Form 27-B requires that the clock be reported within three business days.",
    "A sentence the corpus never saw: quantum giraffes negotiate with Zürich bankers \U0001F992.",
    "tabs\tand\nnewlines  and   spaces ",
    "<|im_start|>user\nWrite a story.<|im_end|>\n",
    "<s>already has a BOS",
]

CHAT_TEXT = ("<|im_start|>system\nYou are a writer.<|im_end|>\n<|im_start|>user\nA dragon finds a key.<|im_end|>\n"
             "<|im_start|>assistant\n")


def main():
    tok = Tokenizer.from_file(os.path.join(ROOT, "data", "demo", "tokenizer.json"))
    cases = []
    for s in STRINGS:
        cases.append({"text": s, "ids": tok.encode(s, add_special_tokens=False).ids,
                      "ids_special": tok.encode(s, add_special_tokens=True).ids})
    out = {"cases": cases, "chat_text": CHAT_TEXT, "chat_ids": tok.encode(CHAT_TEXT, add_special_tokens=True).ids,
           "bos": tok.token_to_id("<s>"), "im_start": tok.token_to_id("<|im_start|>"),
           "im_end": tok.token_to_id("<|im_end|>"), "pad": tok.token_to_id("<pad>"), "vocab_size": tok.get_vocab_size()}
    with open(os.path.join(HERE, "tokenizer_expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
