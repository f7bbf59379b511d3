#!/usr/bin/env python3
"""Builds the WordPiece fixtures of tests/test_wordpiece.cpp with the reference `tokenizers`
package (Hugging Face, Rust core).

It trains two small WordPiece vocabularies (a few hundred entries) on the corpus below and
writes them to tests/data/wordpiece/ as model folders:
  small_uncased/  tokenizer.json (BertNormalizer lowercase, accents stripped), vocab.txt,
                  tokenizer_config.json (do_lower_case true)
  small_cased/    the same with lowercase false (accents kept)
and two more tokenizer.json files over the uncased vocabulary that flip the other switches:
  small_variants/strip_accents_cased.json   lowercase false, strip_accents true,
                                            handle_chinese_chars false
  small_variants/no_clean_text.json         clean_text false, strip_accents false,
                                            BertProcessing post-processor, decoder cleanup false
Then expected.json: for every tokenizer (and for the real all-MiniLM-L6-v2 tokenizer.json when
it is on disk) and each test string, the ids with and without [CLS]/[SEP], the tokens, the
decoded text (with and without special tokens), truncated encodings and one padded batch, all
computed by `tokenizers`. For the vocab.txt folders it also checks that transformers'
BertTokenizer built from vocab.txt + tokenizer_config.json gives the same ids.

Run from anywhere:  python3 tests/data/wordpiece/make_wordpiece_fixtures.py
(the model is looked up in $DEVIANT_MODELS_DIR, else ~/.cache/deviant/models)
"""
import json
import os

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.environ.get("DEVIANT_MODELS_DIR", os.path.expanduser("~/.cache/deviant/models"))
MINILM = os.path.join(MODELS, "all-MiniLM-L6-v2", "tokenizer.json")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog didn't care; it's sleeping.",
    "I'm sure you'll like it, but we've seen they'd rather stay. Don't shout, I'm listening!",
    "Preference optimization aligns a language model with human judgements about writing.",
    "Training data comes in pairs: a chosen answer and a rejected answer for each prompt.",
    "When the learning rate is too high, the loss diverges; when it is too low, nothing moves.",
    "Numbers like 3.14159, 2718 and 42 appear in reports from 1999 and 2024.",
    "Sentence embeddings map each text to a vector; similar texts get similar vectors.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Die Straße ist nass.",
    "Le cœur a ses raisons que la raison ne connaît point. Où est la gare?",
    "L'été dernier, nous sommes allés à la mer; c'était très agréable.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Καλημέρα σας, τι κάνετε σήμερα; Ο καιρός είναι ωραίος.",
    "我们今天学习机器学习。语言模型可以生成文本。",
    "東京は日本の首都です。今日はとても暑いですね。",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "<div class=\"note\">Hello &amp; welcome</div>",
    "Café naïve résumé, the state-of-the-art models of tomorrow.",
    "Writers write stories; stories need characters, settings and a plot that moves.",
]

LONG_PARAGRAPH = " ".join(
    ["Once upon a time, in a city by the sea, a writer kept a notebook of strange dreams."] * 12
)

CASES = [
    "Hello, world!",
    "Café naïve résumé — déjà vu",
    "Größere Äpfel und Öl in München; die Straße ist nass.",
    "L'été dernier, nous sommes allés à la mer; c'était très agréable.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "ΣΊΣΥΦΟΣ Ὀδυσσεύς — Καλημέρα σας!",
    "我们今天学习机器学习。语言模型可以生成文本",
    "東京は日本の首都です。ひらがなとカタカナ",
    "안녕하세요, 세계! 한국어 텍스트",
    "اللغة العربية جميلة جدا. مرحبا بكم",
    "שָׁלוֹם עוֹלָם",
    "Great job! 🎉🎉 Let's celebrate 🥳 ❤️ 👍🏽 👨‍👩‍👧",
    "3.14159, 2,718 and 1,000,000!!! ??? ... --- ((()))",
    "tab\there\nnew line\r\nend\x00null\x07bell\x1bescape\u200bzero\u00adsoft\ufeffbom\ufffdrepl\x7fdel",
    "a" * 150,
    "b" * 100,
    "c" * 101 + " short",
    "   leading   and    trailing   ",
    "\u00a0nbsp\u2003emsp\u3000ideographic\u2028line\u0085nel\u180emongolian",
    "\t\tindented\n\n\nlines\r\r",
    "<div class=\"note\">Hello &amp; <b>bold</b></div>",
    "def add(a, b):\n    return a + b  # sum\nprint(add(2, 3))",
    "for (int i = 0; i < n; ++i) { sum += x[i] * y[i]; }",
    "https://example.com/path?q=1&r=2 mail: someone@example.org",
    "DON'T SHOUT, I'M LISTENING! McDonald's iPhone",
    "İstanbul ıı İİ",
    "ﬁnancial ﬂow",
    "Ångström, Øresund, Æsir, Œuvre, ß, ẞ",
    "Tiếng Việt có dấu",
    "हिन्दी भाषा",
    "ภาษาไทย",
    "Math: ∑ x² ≤ ∞ ± √2 ≠ π ≈ 3.14 ∀x∈ℝ",
    "$100 €50 £30 ¥1000 ₹500",
    "“Smart quotes” ‘single’ «guillemets» „German“",
    "en–dash em—dash ‐hyphen ⁓ swung",
    "\U0002000b \uf9f1 \U0002a700 \U0002b820 \U0002b920",
    "\ue000private\uf8ff",
    "",
    "   \t\n ",
    "[CLS] special [SEP] tokens [MASK] inside [UNK] text [PAD]",
    "[mask] lowercase is not matched",
    "e\u0301\u0327 a\u0308 o\u031b\u0323",
    "ＡＢＣ１２３　ｆｕｌｌ",
    "!!!???...,,,;;;",
    "state-of-the-art rock'n'roll o'clock",
    "1st 2nd 3rd 2024-06-01 12:30:45 +49 (0) 30 1234567",
    "co\u00adoperate",
    LONG_PARAGRAPH,
]
TRUNCATIONS = [2, 5, 16]
BATCH = [1, 0, 24, 47]  # case indices of one padded batch


def bert_tokenizer(vocab, lowercase, strip_accents=None, chinese=True, clean_text=True, bert_processing=False, cleanup=True):
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=clean_text, handle_chinese_chars=chinese, strip_accents=strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    if bert_processing:
        tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=cleanup)
    tok.add_special_tokens(SPECIALS)
    return tok


def train_vocab(lowercase):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=420, special_tokens=SPECIALS, limit_alphabet=160)
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok.get_vocab()


def write_folder(name, vocab, lowercase):
    folder = os.path.join(HERE, name)
    os.makedirs(folder, exist_ok=True)
    tok = bert_tokenizer(vocab, lowercase)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
            f.write(token + "\n")
    config = {
        "do_lower_case": lowercase,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "model_max_length": 512,
        "tokenizer_class": "BertTokenizer",
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return tok


def check_vocab_txt(folder, tok):
    """transformers' BertTokenizer from vocab.txt + config must agree with the tokenizer.json."""
    from transformers import BertTokenizer

    cfg = json.load(open(os.path.join(folder, "tokenizer_config.json")))
    hf = BertTokenizer(vocab=os.path.join(folder, "vocab.txt"), do_lower_case=cfg["do_lower_case"])
    for text in CASES:
        a = hf(text)["input_ids"]
        b = tok.encode(text).ids
        assert a == b, (folder, text, a, b)


def expectations(tok):
    tok.no_truncation()
    tok.no_padding()
    out = {"cases": []}
    for text in CASES:
        enc = tok.encode(text)
        plain = tok.encode(text, add_special_tokens=False)
        case = {
            "text": text,
            "ids": enc.ids,
            "type_ids": enc.type_ids,
            "ids_no_special": plain.ids,
            "tokens": plain.tokens,
            "normalized": tok.normalizer.normalize_str(text) if tok.normalizer else text,
            "decoded": tok.decode(enc.ids, skip_special_tokens=True),
            "decoded_with_special": tok.decode(enc.ids, skip_special_tokens=False),
            "truncated": {},
        }
        for n in TRUNCATIONS:
            tok.enable_truncation(max_length=n)
            case["truncated"][str(n)] = tok.encode(text).ids
            tok.no_truncation()
        out["cases"].append(case)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    batch = tok.encode_batch([CASES[i] for i in BATCH])
    tok.no_padding()
    out["batch"] = {
        "cases": BATCH,
        "ids": [e.ids for e in batch],
        "type_ids": [e.type_ids for e in batch],
        "attention_mask": [e.attention_mask for e in batch],
    }
    return out


def main():
    uncased_vocab = train_vocab(lowercase=True)
    cased_vocab = train_vocab(lowercase=False)
    tokenizers_out = {}
    tokenizers_out["small_uncased/tokenizer.json"] = write_folder("small_uncased", uncased_vocab, True)
    tokenizers_out["small_cased/tokenizer.json"] = write_folder("small_cased", cased_vocab, False)
    os.makedirs(os.path.join(HERE, "small_variants"), exist_ok=True)
    v1 = bert_tokenizer(uncased_vocab, lowercase=False, strip_accents=True, chinese=False)
    v1.save(os.path.join(HERE, "small_variants", "strip_accents_cased.json"))
    tokenizers_out["small_variants/strip_accents_cased.json"] = v1
    v2 = bert_tokenizer(uncased_vocab, lowercase=True, strip_accents=False, clean_text=False, bert_processing=True, cleanup=False)
    v2.save(os.path.join(HERE, "small_variants", "no_clean_text.json"))
    tokenizers_out["small_variants/no_clean_text.json"] = v2

    check_vocab_txt(os.path.join(HERE, "small_uncased"), tokenizers_out["small_uncased/tokenizer.json"])
    check_vocab_txt(os.path.join(HERE, "small_cased"), tokenizers_out["small_cased/tokenizer.json"])

    expected = {}
    for name, tok in tokenizers_out.items():
        expected[name] = expectations(Tokenizer.from_file(os.path.join(HERE, name)))
    if os.path.exists(MINILM):
        expected["all-MiniLM-L6-v2"] = expectations(Tokenizer.from_file(MINILM))
    else:
        print(f"note: {MINILM} not found, the MiniLM expectations are left out")
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote", ", ".join(expected))


if __name__ == "__main__":
    main()
