#!/usr/bin/env python3
"""Independent reference for include/deviant/eval/embedder.hpp (NumPy), used by
tests/test_embedder.cpp. Writes expected.json: for every fixture string its "sem" (256) and
"sty" (21) vectors, the sem features with counts and the raw style statistics.

The specification implemented here (the header's comment):
  sem: lowercase ASCII; tokens = runs of [a-z0-9] or bytes >= 0x80; drop tokens shorter than 2
       bytes and stop words; features = unigrams + "a b" bigrams of adjacent kept tokens, or
       "<empty>"; h = FNV-1a 64(feature); v[h % 256] += (-1 if bit 63 else 1) * (1 + ln tf);
       L2-normalise.
  sty: map “ ” ‘ ’ — – … to " ' - - ...; words = runs of [A-Za-z0-9'] or bytes >= 0x80 with
       apostrophes stripped at both ends; sentences = pieces between [.!?\n] holding >= 1 word;
       20 statistics, (x - mean) / scale, clip to [-5, 5], append 1, L2-normalise.

Run from anywhere:  python3 tests/data/embedder/make_embedder_fixtures.py
"""
import json
import math
import os
import re

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

STOP = set("""a about above after again against all am an and any are as at be been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves""".split())
FIRST = {"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves"}
SECOND = {"you", "your", "yours", "yourself", "yourselves"}
THIRD = {"he", "him", "his", "she", "her", "hers", "they", "them", "their", "theirs", "it", "its"}
MEAN = [14.0, 6.0, 4.3, 0.7, 0.06, 0.06, 0.005, 0.005, 0.02, 0.005, 0.005, 0.005, 0.45, 0.02, 0.005, 0.06, 0.05, 0.1,
        0.005, 0.01]
SCALE = [8.0, 5.0, 0.8, 0.15, 0.05, 0.04, 0.02, 0.02, 0.06, 0.02, 0.02, 0.02, 0.1, 0.03, 0.02, 0.04, 0.2, 0.08, 0.03, 0.03]

FIXTURES = [
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!!!",
    "the the the and of a I",
    "",
    "   \n\t  ",
    "Rain, rain, rain: the rain in Spain falls mainly on the plain; rain again.",
    "\"Is the door supposed to hum like that?\" Mara asked. \"Only on Tuesdays,\" said the neighbour.",
    "\u201cWhere are you going?\u201d she asked \u2014 and I didn\u2019t answer\u2026 not yet.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe caf\u00e9 caf\u00e9",
    "Form 27-B requires that the fog be reported within 3 business days (in triplicate) / stamped * twice.",
    "You open the door. You expect light. Instead you find your own handwriting on the wall.",
    "Line one\nline two\n\nline four? yes! 'quoted' words' and 'tis",
    "x y z 1 2 3 ab cd ab cd ab cd",
    "Dear Management,\nI regret to inform you that the fog has formed a union.\nYours, the keeper.",
    "\"Unclosed dialogue runs to the end of the text",
    "...!!!???",
]


def fnv1a64(b):
    h = 0xcbf29ce484222325
    for c in b:
        h ^= c
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def sem_features(text):
    b = text.encode("utf-8").lower()  # bytes.lower() changes ASCII letters only
    toks = [t for t in re.findall(rb"[a-z0-9\x80-\xff]+", b) if len(t) >= 2 and t.decode("utf-8", "replace") not in STOP]
    feats = {}
    for i, t in enumerate(toks):
        feats[t] = feats.get(t, 0) + 1
        if i + 1 < len(toks):
            bg = t + b" " + toks[i + 1]
            feats[bg] = feats.get(bg, 0) + 1
    return feats or {b"<empty>": 1}


def embed_sem(text):
    v = np.zeros(256)
    for f, tf in sem_features(text).items():
        h = fnv1a64(f)
        v[h % 256] += (-1.0 if h >> 63 else 1.0) * (1.0 + math.log(tf))
    return v / np.linalg.norm(v)


def style_features(text):
    for a, b in (("\u201c", '"'), ("\u201d", '"'), ("\u2018", "'"), ("\u2019", "'"), ("\u2014", "-"), ("\u2013", "-"),
                 ("\u2026", "...")):
        text = text.replace(a, b)
    t = text.encode("utf-8")
    def words_of(s):
        return [w.strip(b"'") for w in re.findall(rb"[A-Za-z0-9'\x80-\xff]+", s) if w.strip(b"'")]
    words = words_of(t)
    sent = [len(words_of(p)) for p in re.split(rb"[.!?\n]", t)]
    sent = np.array([n for n in sent if n > 0], dtype=float)
    quoted = sum(len(p) for p in t.split(b'"')[1::2])
    f = np.zeros(20)
    f[16] = quoted / len(t) if t else 0.0
    n = len(words)
    if n == 0:
        return f
    f[0] = sent.mean()
    f[1] = sent.std()
    f[2] = sum(len(w) for w in words) / n
    lower = [w.lower().decode("utf-8", "replace") for w in words]
    f[3] = len(set(w.lower() for w in words)) / n
    for k, chars in ((4, b","), (5, b"."), (6, b"?"), (7, b"!"), (8, b'"'), (9, b":;"), (10, b"-"), (11, b"()[]/*"), (19, b"\n")):
        f[k] = sum(t.count(bytes([c])) for c in chars) / n
    f[12] = sum(w in STOP for w in lower) / n
    f[13] = sum(w in FIRST for w in lower) / n
    f[14] = sum(w in SECOND for w in lower) / n
    f[15] = sum(w in THIRD for w in lower) / n
    f[17] = sum(65 <= w[0] <= 90 for w in words) / n
    f[18] = sum(len(w) >= 2 and all(65 <= c <= 90 for c in w) for w in words) / n
    return f


def embed_sty(text):
    z = np.clip((style_features(text) - np.array(MEAN)) / np.array(SCALE), -5.0, 5.0)
    v = np.append(z, 1.0)
    return v / np.linalg.norm(v)


def main():
    out = []
    for s in FIXTURES:
        out.append({"text": s, "sem": embed_sem(s).tolist(), "sty": embed_sty(s).tolist(),
                    "sem_features": {k.decode("utf-8"): v for k, v in sem_features(s).items()},
                    "style_features": style_features(s).tolist()})
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
