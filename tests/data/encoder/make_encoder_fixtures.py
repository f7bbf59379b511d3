#!/usr/bin/env python3
"""Builds the sentence-encoder fixtures of tests/test_sentence_encoder.cpp with transformers and
sentence-transformers.

Three tiny random BERT sentence-transformers folders are written to tests/data/encoder/, each
using the small WordPiece vocabulary of tests/data/wordpiece/small_uncased (420 entries):
  tiny_mean/      hidden 32, 4 heads (head size 8), 2 layers, intermediate 72, gelu;
                  mean pooling + Normalize; max_seq_length 24 (longer texts are truncated)
  tiny_cls_max/   hidden 48, 3 heads (16), 2 layers, intermediate 96, gelu_new;
                  cls and max pooling concatenated (the older pooling_mode_* switches)
  tiny_weighted/  hidden 40, 2 heads (20), 3 layers, intermediate 80, relu, 3 token types;
                  weightedmean + lasttoken + mean_sqrt_len_tokens (the newer pooling_mode list)
Every parameter is drawn from a seeded normal distribution large enough that the layers do
not collapse to their biases. expected.json then holds, for ~12 texts, the embeddings
sentence-transformers computes for each folder and, when all-MiniLM-L6-v2 is on disk
($DEVIANT_MODELS_DIR, else ~/.cache/deviant/models), its embeddings of ~20 texts (long ones
truncated at 256 tokens, non-English ones).

Run from anywhere:  python3 tests/data/encoder/make_encoder_fixtures.py
"""
import json
import os
import shutil

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from transformers import BertConfig, BertModel, BertTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_DIR = os.path.join(HERE, "..", "wordpiece", "small_uncased")
MODELS = os.environ.get("DEVIANT_MODELS_DIR", os.path.expanduser("~/.cache/deviant/models"))
MINILM = os.path.join(MODELS, "all-MiniLM-L6-v2")

LONG = " ".join(["The lighthouse keeper wrote long letters to the sea, and the sea answered with storms."] * 30)

TINY_TEXTS = [
    "the quick brown fox jumps over the lazy dog.",
    "Café naïve résumé, the state-of-the-art models of tomorrow.",
    "Съешь же ещё этих мягких французских булок",
    "我们今天学习机器学习。",
    "",
    "a",
    "Writers write stories; stories need characters, settings and a plot that moves.",
    "Numbers like 3.14159, 2718 and 42 appear in reports from 1999 and 2024.",
    "[MASK] is a special token, [CLS] too",
    LONG,
    "def add(a, b):\n    return a + b",
    "Preference optimization aligns a language model with human judgements about writing. " * 3,
]

MINILM_TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome!",
    "Sentence embeddings map each text to a vector; similar texts get similar vectors.",
    LONG,
    " ".join(["Once upon a time, in a city by the sea, a writer kept a notebook of strange dreams."] * 25),
    "Le cœur a ses raisons que la raison ne connaît point.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Καλημέρα σας, τι κάνετε σήμερα;",
    "我们今天学习机器学习。语言模型可以生成文本。",
    "東京は日本の首都です。",
    "안녕하세요, 세계!",
    "اللغة العربية جميلة جدا.",
    "Great job! 🎉🎉 Let's celebrate 🥳",
    "",
    "ok",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "<div class=\"note\">Hello &amp; welcome</div>",
    "3.14159, 2,718 and 1,000,000!!!",
    "The weather today is sunny with a light breeze from the west and temperatures near 21 degrees. " * 12,
]

TINY = {
    "tiny_mean": dict(hidden=32, heads=4, layers=2, inter=72, act="gelu", types=2, seq=24,
                      pooling=dict(pooling_mode="mean"), normalize=True, legacy=False, seed=1),
    "tiny_cls_max": dict(hidden=48, heads=3, layers=2, inter=96, act="gelu_new", types=2, seq=64,
                         pooling=dict(pooling_mode=("cls", "max")), normalize=False, legacy=True, seed=2),
    "tiny_weighted": dict(hidden=40, heads=2, layers=3, inter=80, act="relu", types=3, seq=48,
                          pooling=dict(pooling_mode=("weightedmean", "lasttoken", "mean_sqrt_len_tokens")),
                          normalize=False, legacy=False, seed=3),
}


def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias") or "LayerNorm" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embeddings" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5 * 1.5)


def rewrite_pooling_legacy(folder, modes):
    """Writes 1_Pooling/config.json in the older pooling_mode_* form."""
    path = os.path.join(folder, "1_Pooling", "config.json")
    cfg = json.load(open(path))
    keys = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
    legacy = {"word_embedding_dimension": cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))}
    for mode, key in keys.items():
        legacy[key] = mode in modes
    json.dump(legacy, open(path, "w"), indent=2)


def build_tiny(name, spec):
    folder = os.path.join(HERE, name)
    shutil.rmtree(folder, ignore_errors=True)
    hf_dir = os.path.join(HERE, "_hf_" + name)
    shutil.rmtree(hf_dir, ignore_errors=True)
    tokenizer = BertTokenizerFast(tokenizer_file=os.path.join(VOCAB_DIR, "tokenizer.json"), do_lower_case=True)
    config = BertConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=spec["hidden"], num_hidden_layers=spec["layers"],
                        num_attention_heads=spec["heads"], intermediate_size=spec["inter"], hidden_act=spec["act"],
                        max_position_embeddings=64, type_vocab_size=spec["types"], layer_norm_eps=1e-12)
    torch.manual_seed(spec["seed"])
    model = BertModel(config, add_pooling_layer=False)
    randomize(model, spec["seed"])
    model.save_pretrained(hf_dir, safe_serialization=True)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(hf_dir, max_seq_length=spec["seq"])
    modules = [transformer, Pooling(spec["hidden"], **spec["pooling"])]
    if spec["normalize"]:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(folder)
    shutil.rmtree(hf_dir, ignore_errors=True)
    # keep the folder small: drop files the C++ loader does not read
    for extra in ("README.md", "config_sentence_transformers.json", "special_tokens_map.json"):
        path = os.path.join(folder, extra)
        if os.path.exists(path):
            os.remove(path)
    if spec["legacy"]:
        rewrite_pooling_legacy(folder, spec["pooling"]["pooling_mode"])
    return folder


def embed(folder, texts):
    st = SentenceTransformer(folder, device="cpu")
    with torch.no_grad():
        e = st.encode(texts, batch_size=4, convert_to_numpy=True)
    return [[float(f"{v:.7g}") for v in row] for row in e]


def main():
    expected = {"tiny_texts": TINY_TEXTS}
    for name, spec in TINY.items():
        folder = build_tiny(name, spec)
        expected[name] = embed(folder, TINY_TEXTS)
    if os.path.isdir(MINILM):
        expected["minilm_texts"] = MINILM_TEXTS
        expected["all-MiniLM-L6-v2"] = embed(MINILM, MINILM_TEXTS)
    else:
        print(f"note: {MINILM} not found, the MiniLM expectations are left out")
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote", ", ".join(k for k in expected if not k.endswith("_texts")))


if __name__ == "__main__":
    main()
