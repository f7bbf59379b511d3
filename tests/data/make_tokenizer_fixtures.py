#!/usr/bin/env python3
"""Builds the BPE tokenizer fixtures of tests/test_tokenizer.cpp with the reference `tokenizers`
package (Hugging Face, Rust core).

It trains three small BPE tokenizers on the multilingual corpus below and saves them to
tests/data/tokenizers/:
  gpt2_style.json    ByteLevel pre-tokenizer (GPT-2 regex) + ByteLevel decoder, ByteLevel
                     post-processor (no BOS); merges rewritten to the legacy "a b" string form;
                     an lstrip special token "<mask>".
  llama3_style.json  Sequence[Split(Llama-3 regex, isolated), ByteLevel(use_regex=false)],
                     ignore_merges, TemplateProcessing adding <|begin_of_text|>, Llama-3 special
                     tokens and one non-special added token; merges as [a, b] pairs.
  fallback_style.json  no byte-level mapping: Split regex, a small character alphabet, <unk>,
                     byte_fallback with <0x00>..<0xFF>, decoder Sequence[ByteFallback, Fuse].
and writes expected.json: for held-out strings (none of them in the corpus) the ids with and
without special tokens and the decoded text, all computed by `tokenizers`.

gguf_pre_tokenizers.json: for the byte-level pre-tokenizers a GGUF file names in
tokenizer.ggml.pre (llama.cpp's list of split regexes per name, GGUF_PRE_TOKENIZERS below), the
regexes, and the pieces and ids `tokenizers` gives on held-out strings ("texts") when
llama3_style.json's vocabulary is used with Sequence[Split(regex, Isolated)...,
ByteLevel(use_regex=false)].

Run from anywhere:  python3 tests/data/make_tokenizer_fixtures.py
(`... make_tokenizer_fixtures.py pre-tokenizers` rewrites only gguf_pre_tokenizers.json, from the
saved llama3_style.json.)
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tokenizers")

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    # English, contractions in several cases
    "The quick brown fox jumps over the lazy dog. The dog didn't care; it's sleeping.",
    "I'm sure you'll like it, but we've seen they'd rather stay. DON'T SHOUT, I'M LISTENING!",
    "She said: \"Preference optimization aligns a language model with human judgements.\"",
    "Training data comes in pairs: a chosen answer and a rejected answer for each prompt.",
    "When the learning rate is too high, the loss diverges; when it is too low, nothing moves.",
    "Numbers like 3.14159, 2718, 1,000,000 and 42 appear in reports from 1999 and 2024.",
    "Read the manual, then read it again. Questions? Ask the maintainers on the forum.",
    "Tokenizers split text into pieces; byte pair encoding merges the most frequent pairs.",
    "The weather today is sunny with a light breeze from the west and temperatures near 21 degrees.",
    "Would you like tea or coffee? Tea, please, with milk and no sugar.",
    # German
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Die Straße ist nass.",
    "Größere Mengen an Äpfeln und Öl werden in München verkauft; schöne Grüße aus Köln!",
    "Das Mädchen läuft schnell über die Brücke, während der Bär im Wald schläft.",
    # French
    "Le cœur a ses raisons que la raison ne connaît point. Où est la gare, s'il vous plaît?",
    "L'été dernier, nous sommes allés à la mer; c'était très agréable et ensoleillé.",
    "Les élèves préfèrent les exercices pratiques aux leçons théoriques, n'est-ce pas?",
    # Spanish, Italian, Polish
    "¿Dónde está la biblioteca? Mañana vamos a la montaña con los niños.",
    "La città è bellissima di sera, perché le luci si riflettono sull'acqua.",
    "Zażółć gęślą jaźń. Pchnąć w tę łódź jeża lub ośm skrzyń fig.",
    # Russian
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Москва — столица России. Вчера шёл снег, а сегодня светит солнце.",
    "Модель обучается на парах ответов: выбранном и отвергнутом.",
    # Greek
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Καλημέρα σας, τι κάνετε σήμερα; Ο καιρός είναι ωραίος.",
    # Chinese, Japanese, Korean-free on purpose (Korean appears only in the tests)
    "我们今天学习机器学习。语言模型可以生成文本，也可以回答问题。",
    "北京是中国的首都，上海是一个很大的城市。",
    "東京は日本の首都です。今日はとても暑いですね。",
    "私は猫が好きです。ひらがなとカタカナと漢字を使います。",
    # Arabic, Hebrew
    "اللغة العربية جميلة جدا. مرحبا بكم في المدينة.",
    "שלום עולם, מה שלומך היום?",
    # emoji
    "Great job! 🎉🎉 Let's celebrate 🥳 with pizza 🍕 and cake 🎂. ❤️ 👍🏽",
    "Weather: ☀️ then 🌧️, later ⛈️. Mood: 😀😃😄😁",
    # code
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i] * y[i];\n}\n",
    "#include <vector>\nstd::vector<float> v(16, 0.0f); // zeros\n",
    "if x != None and len(x) >= 10:\n        x = x[:10]  # truncate\n",
    "SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name;",
    "const f = (x) => x ** 2; console.log([1, 2, 3].map(f));",
    # numbers and whitespace runs
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 101 256 512 1024 2048 4096 65536",
    "a   b    c\t\td\n\n\ne     f",
    "   leading spaces and trailing spaces   ",
    "line one\r\nline two\r\n\r\nline four",
]


def corpus_lines():
    lines = list(CORPUS)
    # More material from the same languages: short variations keep the corpus small but varied.
    subjects = ["the model", "a student", "our team", "the old man", "my sister", "this library"]
    verbs = ["reads", "writes", "trains", "tests", "compares", "explains"]
    objects = ["the data", "long answers", "short prompts", "a new idea", "every example", "the results"]
    for i, s in enumerate(subjects):
        for j, v in enumerate(verbs):
            o = objects[(i + j) % len(objects)]
            lines.append(f"{s.capitalize()} {v} {o} at {i * 7 + j}:{(i * 13 + j * 5) % 60:02d}.")
    de = ["Wir lernen Deutsch.", "Die Katze schläft.", "Öffne die Tür!", "Ich höre Musik."]
    fr = ["Je mange une pomme.", "Il fait beau aujourd'hui.", "Où sont les clés?", "Ça va très bien."]
    ru = ["Я читаю книгу.", "Мы идём домой.", "Это очень интересно.", "Где находится музей?"]
    el = ["Μου αρέσει η θάλασσα.", "Πού είναι το σπίτι;", "Ευχαριστώ πολύ."]
    zh = ["我喜欢读书。", "今天天气很好。", "他在写代码。"]
    ja = ["ありがとうございます。", "駅はどこですか。", "本を読みます。"]
    for group in (de, fr, ru, el, zh, ja):
        for a in group:
            for b in group:
                if a != b:
                    lines.append(a + " " + b)
    return lines


# Held-out strings: none appears in the corpus. Several contain characters never seen in training
# (Korean, Hindi, Thai, rare emoji) to exercise single-byte tokens / byte fallback.
TEST_STRINGS = [
    "",
    " ",
    "Hello world",
    "hello   world",
    "Don't stop believing, I'M HERE and WE'LL see what YOU'VE done.",
    "they're here, she'd go, it'S fine",
    "Preference pairs: chosen vs. rejected.",
    "Die Bären überqueren größere Flüsse.",
    "Ça coûte 12,50 € à Noël.",
    "Привет, как дела? Всё хорошо.",
    "Γειά σου Κόσμε!",
    "机器翻译和文本摘要。",
    "日本語のテキストを分割します。",
    "مرحبا بالعالم",
    "안녕하세요 세계",
    "नमस्ते दुनिया",
    "สวัสดีครับ",
    "👨‍👩‍👧‍👦 family, 🇩🇪 flag, 🧪 test",
    "x = [i**2 for i in range(10)]\nprint(x)",
    "    indented\n\tand tabbed\n",
    "ends with spaces   ",
    "   ",
    "\n\n\n",
    "a\r\nb\rc\nd",
    "1234567890 987654321",
    "3.14159265358979",
    "user@example.com https://example.org/path?q=1&r=2",
    "CamelCaseIdentifier snake_case_identifier kebab-case",
    "Ünïcödé ñ ß ø å",
    "e\u0301 (combining acute) vs é",
    "zero\u200bwidth\u200bspace and nbsp\u00a0here",
    "tab\tseparated\tvalues",
    "!!!???...,,,;;;",
    "'s 't 're 've 'm 'll 'd",
    "ALL CAPS SENTENCE WITH NUMBERS 2025",
    "mixed日本語and English文字",
    "emoji at end 🎉",
    "a" * 40,
    "ab " * 15,
    "The end.",
]

GPT2_SPECIAL_STRINGS = [
    "Hello<|endoftext|>World",
    "<|endoftext|>",
    "fill <mask> here and <mask>there",
    "two<|endoftext|><|endoftext|>in a row",
]

LLAMA3_SPECIAL_STRINGS = [
    "<|begin_of_text|>Hello there",
    "<|begin_of_text|><|begin_of_text|>double",
    "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "call <tool_call> now",
    "almost <|eot_id but not quite",
]

# Chat renderings the C++ chat template must produce for the messages
#   system "Be brief.", user "What is 2+2?"  (+ generation prompt)
CHAT_TEXT = {
    "llama3_style.json": "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                         "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "gpt2_style.json": "<|system|>\nBe brief.<|endoftext|>\n<|user|>\nWhat is 2+2?<|endoftext|>\n<|assistant|>\n",
}

# Invalid UTF-8 (hex): encode() must treat it as bytes.decode("utf-8", "replace").
INVALID_UTF8_HEX = [
    "ff",
    "48656c6c6fff576f726c64",     # Hello\xffWorld
    "e282",                       # truncated 3-byte sequence
    "c0af",                       # overlong
    "eda080",                     # surrogate
    "f4908080",                   # above U+10FFFF
    "61e282ac62e28262",           # valid euro sign, then a truncated one
    "80808080",                   # lone continuation bytes
]


GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
GPT4O_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NOT_HAN_UPPER = r"(?:(?!\p{Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])"
NOT_HAN_LOWER = r"(?:(?!\p{Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])"
CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
DEEPSEEK_LLM_LETTERS = (  # cased letters as DeepSeek LLM's tokenizer.json lists them
    r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}"
    r"\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}"
    r"\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}"
    r"\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}"
    r"\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}"
    r"\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}"
    r"\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}"
    r"\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}"
    r"\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}"
    r"\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}"
    r"\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+"
)
DEEPSEEK_CJK = r"[\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+"
BLOOM_PATTERN = r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+"

# tokenizer.ggml.pre name -> (split regexes in order, ignore_merges): llama.cpp's lists (src/llama-vocab.cpp),
# with the tokenizer.json originals where llama.cpp rewrites a pattern for its own regex engine.
GGUF_PRE_TOKENIZERS = {
    "default": ([r"[\p{P}\$\+<=>\^~\|]+", GPT2_PATTERN, r"\p{N}+", "[0-9][0-9][0-9]"], False),
    "gpt-2": ([GPT2_PATTERN], False),
    "starcoder": ([r"\p{N}", GPT2_PATTERN], False),
    "falcon": ([r"[\p{P}\$\+<=>\^~\|`]+", GPT2_PATTERN, "[0-9][0-9][0-9]"], False),
    "llama-bpe": ([LLAMA3_PATTERN], True),
    "dbrx": ([LLAMA3_PATTERN], False),
    "jais-2": ([LLAMA3_PATTERN.replace(r"|\s+(?!\S)|\s+", "") + r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)"
                r"|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}"], False),
    "qwen2": ([QWEN2_PATTERN], False),
    "qwen35": ([r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+"], False),
    "deepseek-llm": (["[\r\n]", DEEPSEEK_LLM_LETTERS,
                      r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+", r"\s+$",
                      DEEPSEEK_CJK, r"\p{N}+"], False),
    "deepseek-coder": (["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", DEEPSEEK_CJK, r"\p{N}"], False),
    "deepseek-v3": ([r"\p{N}{1,3}", r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
                     r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
                     r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"], False),
    "bloom": ([BLOOM_PATTERN], False),
    "viking": ([BLOOM_PATTERN, r"\p{N}"], False),
    "tekken": ([r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"], True),
    "chameleon": (["<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", r"([\t\n]|    |  )", r"\p{N}",
                   r"[\p{P}!-/:-@\[-`{-~]", GPT2_PATTERN], False),
    "gpt-4o": ([GPT4O_PATTERN], False),
    "tiny_aya": ([r"\d{1,3}(?=(?:\d{3})*\b)", GPT4O_PATTERN], False),
    "kimi-k2": ([r"[\p{Han}]+"
                 rf"|[^\r\n\p{{L}}\p{{N}}]?{NOT_HAN_UPPER}*{NOT_HAN_LOWER}+{CONTRACTIONS}?"
                 rf"|[^\r\n\p{{L}}\p{{N}}]?{NOT_HAN_UPPER}+{NOT_HAN_LOWER}*{CONTRACTIONS}?"
                 r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"], False),
    "superbpe": ([r"\p{N}+", r"(?=(\d{3})+(?!\d))"], False),
    "bailingmoe": ([r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"],
                   False),
    "seed-coder": ([r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+"
                    r"|\s+(?!\S)|\s+"], False),
    "exaone-moe": ([r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
                    r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+"], False),
    "minicpm5": ([r"\p{N}{1,3}", QWEN2_PATTERN.replace(r"|\p{N}|", r"|\p{N}+|")], True),
    "ufakzeka": ([r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"], False),
    "laguna": ([r"[^\n]+|[\n]+", r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"], False),
}

# Strings where the pre-tokenizers above differ from one another.
PRE_TOKENIZER_STRINGS = [
    "getUserName iPhone helloWorld HTTPServer",
    "1234567 12 123456789 3.14159 1,000,000",
    "汉字和English混合，中文标点。日本語のかなカナ",
    "<sentinel:12> IMGIMGABZ then IMGIMGZ",
    "  double  spaces\t\ttabs    four",
    "\u216b \u00bd \u00b2\u00b3 \u0660\u0661\u0662",
    "\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3 \u210c \u212d \u1fbe \u2126",
    "\uff21\uff22\uff23 \uff01\uff1f\u3002\u3001 \u201cquotes\u201d",
    "I'VE SEEN IT'S THE BEST'LL 'd",
    "path/to/file.txt\nnext/line\r\n",
    "x" + " " * 70 + "y",
    "caf\u00e9 cafe\u0301 na\u00efve",
]


def gguf_pre_tokenizer_cases():
    src = json.load(open(os.path.join(OUT, "llama3_style.json"), encoding="utf-8"))
    strings = PRE_TOKENIZER_STRINGS + [t for t in TEST_STRINGS if len(t) > 12 and len(set(t)) > 3][:14]
    out = {"texts": strings, "pre_tokenizers": {}}
    for name, (splits, ignore_merges) in GGUF_PRE_TOKENIZERS.items():
        j = json.loads(json.dumps(src))
        j["model"]["ignore_merges"] = ignore_merges
        j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False} for r in splits] + [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
        tok = Tokenizer.from_str(json.dumps(j))
        out["pre_tokenizers"][name] = {"splits": splits, "ignore_merges": ignore_merges,
                                       "pieces": [[p for p, _ in tok.pre_tokenizer.pre_tokenize_str(t)] for t in strings],
                                       "ids": [tok.encode(t, add_special_tokens=False).ids for t in strings]}
    with open(os.path.join(OUT, "gguf_pre_tokenizers.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    distinct = len({json.dumps(v["pieces"]) for v in out["pre_tokenizers"].values()})
    print("gguf_pre_tokenizers.json:", len(GGUF_PRE_TOKENIZERS), "pre-tokenizers,", distinct, "distinct encodings of",
          len(strings), "strings")


def train_gpt2(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    return tok


def train_llama3(lines):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
            special_tokens=[("<|begin_of_text|>", bos)],
        ),
    ])
    tok.add_tokens([AddedToken("<tool_call>", special=False)])
    return tok


def train_fallback(lines):
    pattern = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=70,
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m) for m in model["merges"]]
    fb = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    fb.pre_tokenizer = tok.pre_tokenizer
    fb.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    fb.add_special_tokens(["<unk>", "<s>", "</s>"])
    fb.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    return fb


def save(tok, name, legacy_merges=False):
    path = os.path.join(OUT, name)
    data = json.loads(tok.to_str())
    if legacy_merges:
        data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
    # Reload from the written file so the expectations describe exactly what the test reads.
    return Tokenizer.from_file(path)


def cases(tok, strings):
    out = []
    for s in strings:
        with_special = tok.encode(s, add_special_tokens=True).ids
        plain = tok.encode(s, add_special_tokens=False).ids
        out.append({
            "text": s,
            "ids": plain,
            "ids_with_special": with_special,
            "decoded": tok.decode(plain, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(plain, skip_special_tokens=True),
        })
    return out


def invalid_cases(tok):
    out = []
    for h in INVALID_UTF8_HEX:
        replaced = bytes.fromhex(h).decode("utf-8", errors="replace")
        out.append({"hex": h, "ids": tok.encode(replaced, add_special_tokens=False).ids})
    return out


def main():
    if sys.argv[1:] == ["pre-tokenizers"]:
        gguf_pre_tokenizer_cases()
        return
    os.makedirs(OUT, exist_ok=True)
    lines = corpus_lines()
    for s in TEST_STRINGS:
        assert all(s not in line for line in lines if len(s) > 3), f"test string in corpus: {s!r}"
    gpt2 = save(train_gpt2(lines), "gpt2_style.json", legacy_merges=True)
    llama3 = save(train_llama3(lines), "llama3_style.json")
    fallback = save(train_fallback(lines), "fallback_style.json")
    expected = {
        "gpt2_style.json": {
            "cases": cases(gpt2, TEST_STRINGS + GPT2_SPECIAL_STRINGS),
            "invalid_utf8": invalid_cases(gpt2),
        },
        "llama3_style.json": {
            "cases": cases(llama3, TEST_STRINGS + LLAMA3_SPECIAL_STRINGS),
            "invalid_utf8": invalid_cases(llama3),
        },
        "fallback_style.json": {
            "cases": cases(fallback, TEST_STRINGS + ["<s>hi</s>"]),
            "invalid_utf8": invalid_cases(fallback),
        },
    }
    for name, tok in (("llama3_style.json", llama3), ("gpt2_style.json", gpt2)):
        text = CHAT_TEXT[name]
        expected[name]["chat"] = {"text": text, "ids_with_special": tok.encode(text, add_special_tokens=True).ids}
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
    gguf_pre_tokenizer_cases()
    for name in ("gpt2_style.json", "llama3_style.json", "fallback_style.json", "expected.json", "gguf_pre_tokenizers.json"):
        print(name, os.path.getsize(os.path.join(OUT, name)), "bytes")
    print("vocab sizes:", gpt2.get_vocab_size(), llama3.get_vocab_size(), fallback.get_vocab_size())


if __name__ == "__main__":
    main()
