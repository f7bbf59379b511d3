#!/usr/bin/env python3
"""Builds the SentencePiece-style tokenizer fixtures of tests/test_sentencepiece.cpp.

It trains a small SentencePiece BPE model (the `sentencepiece` package) the way Llama-2's was
trained — byte_fallback, identity normalization, a dummy "▁" prefix, single digits, white-space-only
pieces, control tokens <unk> <s> </s> at ids 0-2 — on the multilingual corpus below, and writes to
tests/data/sentencepiece/:
  tokenizer.model          the trained SentencePiece model (the reference the ids come from)
  llama_legacy.json        tokenizer.json as Llama-2 checkpoints ship it: BPE with byte_fallback and
                           merges derived from the piece scores, normalizer Sequence[Prepend("▁"),
                           Replace(" ", "▁")], decoder Sequence[Replace("▁", " "), ByteFallback, Fuse,
                           Strip(" ", 1, 0)], TemplateProcessing adding <s>
  llama_metaspace.json     tokenizer.json as transformers' LlamaTokenizerFast saves it today
                           (legacy=False): no normalizer, pre-tokenizer Metaspace(prepend_scheme
                           "first", split false)
  llama_spm.gguf           the vocabulary as llama.cpp's converter lays out a SentencePiece model:
                           tokenizer.ggml.model "llama", tokens, scores (float32), token_type (with
                           three unused [PAD] ids after the model's pieces), bos/eos/unk/padding ids,
                           add_bos_token true, add_eos_token false, add_space_prefix true
  expected.json            two more forms, as llama_legacy.json with some members replaced
                           ("base", "replace"): "metaspace_split" — Metaspace(prepend_scheme
                           "always", split true) and the Metaspace decoder (older Mistral/Llama
                           tokenizer.json files) — and "nfkc" — an NFKC normalizer first; and for
                           each held-out string (none of them in the corpus): the ids of every
                           form (GGUF: SentencePiece's ids, control tokens written in the text
                           matched as tokens and every text segment given the dummy prefix, as
                           llama.cpp does; tokenizer.json forms: the `tokenizers` package's ids), with
                           and without special tokens, and the decoded text

Run from anywhere:  python3 tests/data/make_sentencepiece_fixtures.py
"""
import io
import json
import os

import sentencepiece as spm
from gguf import GGUFWriter
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "sentencepiece")

CORPUS = [
    # English
    "A tokenizer turns text into numbers, and a model turns numbers back into text.",
    "The river was cold and clear; we crossed it at dawn and reached the village by noon.",
    "She doesn't know whether they'll arrive today, but we've prepared the rooms anyway.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Good writing is rewriting: cut what is weak, keep what is strong, and read it aloud.",
    "The committee approved the budget for 2025 after a long discussion on Tuesday evening.",
    "Please return the library books before Friday, otherwise a small fee will be charged.",
    "Every answer is compared with the others, and the unusual ones receive a larger weight.",
    "Mountains, lakes and forests covered the map; the roads were thin grey lines between them.",
    "He laughed, shrugged, and said: \"Nothing ever happens here, and that is why I stay.\"",
    # German
    "Der Zug nach Hamburg fährt um halb neun; bitte steigen Sie rechtzeitig ein.",
    "Wir haben gestern im Garten gearbeitet und danach gemeinsam Kuchen gegessen.",
    "Die Übersetzung dieses Romans dauerte fast drei Jahre, weil die Sprache so dicht ist.",
    # French
    "Nous avons marché longtemps sous la pluie avant de trouver un petit café ouvert.",
    "La bibliothèque municipale ferme à dix-huit heures, sauf le samedi où elle ferme à midi.",
    "Les enfants jouaient dans la cour pendant que les parents préparaient le dîner.",
    # Spanish, Italian, Portuguese
    "El mercado abre temprano y los vendedores gritan los precios de las frutas frescas.",
    "Abbiamo visitato il museo e poi abbiamo mangiato una pizza vicino alla stazione.",
    "A cidade acordou devagar, com o cheiro de pão quente saindo das padarias.",
    # Russian, Ukrainian
    "Вечером мы долго гуляли по набережной и разговаривали о книгах.",
    "Учёные объяснили, почему зимой на севере так мало солнечного света.",
    "Ми поїхали до бабусі на вихідні й допомагали їй у саду.",
    # Greek
    "Το καλοκαίρι πηγαίναμε κάθε μέρα στη θάλασσα και κολυμπούσαμε ως το βράδυ.",
    # Chinese, Japanese
    "我们在图书馆里读书，外面下着大雨。今天的作业很多。",
    "这个模型可以写故事，也可以回答简单的问题。",
    "週末は友達と山に登って、頂上でお弁当を食べました。",
    "新しい言葉を覚えるのは楽しいですが、時間がかかります。",
    # Arabic, Hebrew, Turkish, Vietnamese
    "ذهبنا إلى السوق واشترينا الخبز والفواكه الطازجة.",
    "הילדים קראו ספרים בספרייה עד שהשמש שקעה.",
    "Bugün hava çok güzel, parkta yürüyüş yapmaya karar verdik.",
    "Chúng tôi đã học tiếng Việt trong ba tháng và rất thích nó.",
    # emoji
    "We won the match! 🎉🏆 Time to celebrate with friends 🍻 and music 🎶.",
    "Morning routine: ☕ coffee, 📚 reading, 🏃 running, then 💻 work.",
    # code
    "def mean(xs):\n    return sum(xs) / len(xs)\n",
    "while (i < n) {\n    total += values[i];\n    i++;\n}\n",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\n",
    "for key, value in sorted(table.items()):\n    print(f\"{key}: {value}\")\n",
    "<div class=\"note\">Remember to save your work.</div>",
    "git commit -m \"Fix the off-by-one error in the loop\"",
    # numbers, white space
    "Call 555-0100 or 555-0199 between 09:00 and 17:30; room 42, floor 7.",
    "Totals: 1,024 + 2,048 = 3,072 and 12.5% of 640 is 80.",
    "spaces  between   words    vary\tand\ttabs\tappear",
]


def corpus_lines():
    lines = list(CORPUS)
    people = ["the writer", "a farmer", "our teacher", "the pilot", "my brother", "this robot"]
    actions = ["finds", "loses", "paints", "repairs", "describes", "remembers"]
    things = ["an old map", "the blue door", "a quiet song", "every window", "the last letter", "a broken clock"]
    for i, p in enumerate(people):
        for j, a in enumerate(actions):
            lines.append(f"{p.capitalize()} {a} {things[(i + 2 * j) % len(things)]} on day {i * 6 + j + 1}.")
    groups = [
        ["Wir fahren morgen.", "Das Wetter ist schön.", "Ich lese gern.", "Wo ist der Bahnhof?"],
        ["Je suis fatigué.", "Elle chante bien.", "Nous partons demain.", "Quelle heure est-il?"],
        ["Я люблю чай.", "Она пишет письмо.", "Мы учим язык.", "Который час?"],
        ["天气很冷。", "我想喝茶。", "他们在唱歌。"],
        ["おはようございます。", "雨が降っています。", "本を買いました。"],
        ["Hola, ¿qué tal?", "Me gusta leer.", "Vamos al parque."],
    ]
    for g in groups:
        for a in g:
            for b in g:
                if a != b:
                    lines.append(a + " " + b)
    return lines


# Held-out strings: none appears in the corpus. Korean, Hindi, Thai and rare emoji are never seen in
# training, so they go through byte fallback.
TEST_STRINGS = [
    "",
    " ",
    "  ",
    "Hello world",
    " Hello world",
    "   three leading spaces",
    "trailing spaces   ",
    "hello   world",
    "It's a test, isn't it? They'll see.",
    "Numbers 1234567890 and 3.14159",
    "2024-12-31T23:59:59Z",
    "Die Brücke über den Fluss ist alt.",
    "Où se trouve la gare routière?",
    "¿Cuántos años tienes?",
    "Сегодня холодно и ветрено.",
    "Η γλώσσα είναι όμορφη.",
    "我们明天去公园散步。",
    "東京で寿司を食べたいです。",
    "مرحبا يا صديقي",
    "안녕하세요 여러분",
    "नमस्ते दुनिया",
    "ภาษาไทย",
    "🦄 unicorn, 🧬 DNA, 👩‍💻 coder",
    "emoji at the end 🎉",
    "line one\nline two\n\nline four",
    "\ttabbed\ttext",
    "\n",
    "a\r\nb",
    "def f(x):\n    return x * 2\n",
    "if (a && b) { return -1; }",
    "CamelCaseName snake_case_name",
    "<s>",
    "<s>Hello",
    "Hello</s>",
    "A <s> in the middle",
    "two<s><s>starts",
    "unk <unk> token",
    "not special: <s",
    "x" * 30,
    "ab " * 12,
    # compatibility and combining characters (NFKC changes them)
    "\ufb01ne \u2460 \uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",
    "cafe\u0301 vs caf\u00e9, \u212b vs \u00c5",
    "The end.",
]

SPECIAL_PIECES = ["<unk>", "<s>", "</s>"]  # control and unknown pieces, matched in text


def train():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=3000,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    data = model.getvalue()
    with open(os.path.join(OUT, "tokenizer.model"), "wb") as f:
        f.write(data)
    return spm.SentencePieceProcessor(model_proto=data)


def vocab_and_merges(sp):
    """Vocabulary and merges the way transformers derives them from a SentencePiece BPE model:
    every split of a normal piece into two normal pieces, ranked by the merged piece's score."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    normal = {sp.id_to_piece(i): (sp.get_score(i), i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))}
    ranked = []
    for piece, (score, i) in normal.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                ranked.append((-score, i, left, right))
    return vocab, [(l, r) for _, _, l, r in sorted(ranked)]


def base_tokenizer(vocab, merges):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_PIECES])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", vocab["<s>"])])
    return tok


def legacy_tokenizer(vocab, merges):
    tok = base_tokenizer(vocab, merges)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    return tok


def nfkc_tokenizer(vocab, merges):
    tok = legacy_tokenizer(vocab, merges)
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    return tok


def metaspace_tokenizer(vocab, merges):
    """The tokenizer.json transformers' LlamaTokenizerFast writes (legacy=False)."""
    from transformers import LlamaTokenizerFast
    tmp = os.path.join(OUT, "transformers")
    LlamaTokenizerFast(vocab=vocab, merges=merges, legacy=False, add_bos_token=True).save_pretrained(tmp)
    tok = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json"))
    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)
    return tok


def metaspace_split_tokenizer(vocab, merges):
    tok = base_tokenizer(vocab, merges)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True),
                                     decoders.ByteFallback(), decoders.Fuse()])
    return tok


def variant(tok, base):
    """tok as `base` (a file name) with the members that differ replaced; reloaded from that form."""
    data, base_data = json.loads(tok.to_str()), json.load(open(os.path.join(OUT, base), encoding="utf-8"))
    replace = {k: v for k, v in data.items() if base_data.get(k) != v}
    assert set(replace) <= {"normalizer", "pre_tokenizer", "decoder"}, set(replace)
    base_data.update(replace)
    return {"base": base, "replace": replace}, Tokenizer.from_str(json.dumps(base_data))


def save(tok, name):
    path = os.path.join(OUT, name)
    data = json.loads(tok.to_str())
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
    return Tokenizer.from_file(path)


N_PADDING = 3  # unused ids after the model's pieces, as the converter writes when config.json's vocab_size is larger


def write_gguf(sp):
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else
                     6 if sp.is_byte(i) else 1)
    for k in range(N_PADDING):
        tokens.append(f"[PAD{n + k}]")
        scores.append(-10000.0)
        types.append(5)
    w = GGUFWriter(os.path.join(OUT, "llama_spm.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)  # float32 array
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_pad_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def split_specials(text):
    """Text -> [(is_special, piece)], control/unknown pieces matched leftmost-longest."""
    out, pos, start = [], 0, 0
    while pos < len(text):
        hit = max((t for t in SPECIAL_PIECES if text.startswith(t, pos)), key=len, default=None)
        if hit is None:
            pos += 1
            continue
        if pos > start:
            out.append((False, text[start:pos]))
        out.append((True, hit))
        pos = start = pos + len(hit)
    if start < len(text):
        out.append((False, text[start:]))
    return out


def spm_ids(sp, text):
    """SentencePiece's ids with control tokens written in the text matched as tokens; every text
    segment is encoded on its own and so gets the dummy prefix (llama.cpp's rule)."""
    ids = []
    for special, piece in split_specials(text):
        ids += [sp.piece_to_id(piece)] if special else sp.encode(piece)
    return ids


def reference_cases(tok, strings, ids_of=None):
    out = []
    for s in strings:
        ids = ids_of(s) if ids_of else tok.encode(s, add_special_tokens=False).ids
        with_special = ids_of(s) if ids_of else tok.encode(s, add_special_tokens=True).ids
        if ids_of:
            with_special = [1] + with_special  # add_bos_token
        out.append({
            "text": s,
            "ids": ids,
            "ids_with_special": with_special,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = corpus_lines()
    for s in TEST_STRINGS:
        assert all(s not in line for line in lines if len(s.strip()) > 3), f"test string in corpus: {s!r}"
    sp = train()
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    vocab, merges = vocab_and_merges(sp)
    legacy = save(legacy_tokenizer(vocab, merges), "llama_legacy.json")
    metaspace = save(metaspace_tokenizer(vocab, merges), "llama_metaspace.json")
    split_form, split = variant(metaspace_split_tokenizer(vocab, merges), "llama_legacy.json")
    nfkc_form, nfkc = variant(nfkc_tokenizer(vocab, merges), "llama_legacy.json")
    write_gguf(sp)

    expected = {
        # GGUF: SentencePiece's ids; decoded text from the same decoder as llama_legacy.json.
        "llama_spm.gguf": {"cases": reference_cases(legacy, TEST_STRINGS, lambda s: spm_ids(sp, s))},
        "llama_legacy.json": {"cases": reference_cases(legacy, TEST_STRINGS)},
        "llama_metaspace.json": {"cases": reference_cases(metaspace, TEST_STRINGS)},
        "metaspace_split": dict(split_form, cases=reference_cases(split, TEST_STRINGS)),
        "nfkc": dict(nfkc_form, cases=reference_cases(nfkc, TEST_STRINGS)),
    }
    # SentencePiece's own decoding agrees with the decoder for text without control tokens.
    for c in expected["llama_spm.gguf"]["cases"]:
        if not any(t in c["text"] for t in SPECIAL_PIECES):
            assert sp.decode(c["ids"]) == c["decoded"], c["text"]
    differ = [c["text"] for c, g in zip(expected["llama_legacy.json"]["cases"], expected["llama_spm.gguf"]["cases"])
              if c["ids"] != g["ids"]]
    byte_fallback = sum(any(sp.is_byte(i) for i in c["ids"]) for c in expected["llama_spm.gguf"]["cases"])
    assert byte_fallback >= 4, byte_fallback
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
    print("pieces:", sp.get_piece_size(), "merges:", len(merges), "cases:", len(TEST_STRINGS),
          "with byte fallback:", byte_fallback)
    print("legacy tokenizer.json and SentencePiece differ on:", differ)
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)), "bytes")


if __name__ == "__main__":
    main()
