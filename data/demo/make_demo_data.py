#!/usr/bin/env python3
"""Builds deviant's built-in demo data: a small, synthetic creative-writing preference set in the
WritingPrompts preference schema, and a byte-level BPE tokenizer trained on it.

Writes, next to this script:
  writing_prompts_demo.jsonl  one prompt a line: {"post_title", "post_text", "comment_texts",
                              "comment_scores"} (the schema of euclaise/WritingPrompts_preferences)
  tokenizer.json              byte-level BPE (GPT-2 regex), BOS "<s>" added by the post-processor,
                              ChatML tokens "<|im_start|>" / "<|im_end|>" ("<|im_end|>" is the EOS),
                              "<pad>"; trained with the `tokenizers` package
  writing_prompts_demo_labels.jsonl  per prompt, aligned with comment_texts: "kinds" (the plot:
                              "mainstream", a rare plot's name, or "moderator") and "levels" (quality:
                              0 fluent, 1 sloppy, 2 incoherent, -1 moderator); for analysis only
  tokenizer_config.json       names bos/eos/pad tokens and a ChatML chat template (transformers)

Everything is deterministic: one random.Random seeded with SEED drives all choices, and the
tokenizer is trained single-threaded on the corpus in file order. The data are synthetic: see
README.md for the generative design (mainstream plots vs rare-but-good ones, the score model).

Run:  python3 data/demo/make_demo_data.py     (needs: tokenizers)
"""
import json
import math
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20250322
NUM_PROMPTS = 240
VOCAB_SIZE = 2048

# ---------------------------------------------------------------------------------------------
# Prompt material: who (with a short name for the story), and a premise.
# ---------------------------------------------------------------------------------------------
# (prompt noun phrase, short reference, place)
CHARACTERS = [
    ("a lighthouse keeper", "the keeper", "the lighthouse"),
    ("a retired astronaut", "the astronaut", "the porch"),
    ("a night-shift baker", "the baker", "the bakery"),
    ("a young witch", "the witch", "the attic"),
    ("a tired detective", "the detective", "the precinct"),
    ("a school librarian", "the librarian", "the library"),
    ("a deep-sea diver", "the diver", "the boat"),
    ("a village blacksmith", "the blacksmith", "the forge"),
    ("a hospital janitor", "the janitor", "the hospital"),
    ("a lonely robot", "the robot", "the workshop"),
    ("a failed magician", "the magician", "the theatre"),
    ("a border guard", "the guard", "the checkpoint"),
    ("a beekeeper", "the beekeeper", "the orchard"),
    ("a ghost", "the ghost", "the old house"),
    ("a ferry captain", "the captain", "the ferry"),
    ("a teenage hacker", "the hacker", "the bedroom"),
    ("a museum guard", "the guard", "the museum"),
    ("a wedding photographer", "the photographer", "the chapel"),
    ("a dragon", "the dragon", "the mountain"),
    ("an accountant", "the accountant", "the office"),
]

# (title verb phrase, the thing, what the protagonist does to it, what is found)
PREMISES = [
    ("finds a door in the basement that was not there yesterday", "the door", "opened the door",
     "a narrow staircase full of warm light"),
    ("receives a letter from their future self", "the letter", "read the letter",
     "a list of things that had not happened yet"),
    ("discovers that the fog outside is alive", "the fog", "walked into the fog", "a slow, grey heartbeat"),
    ("wakes up able to hear what plants are thinking", "the voices", "listened to the voices",
     "a thousand quiet complaints about the weather"),
    ("is told by a stranger that the world ends on Friday", "the warning", "believed the warning",
     "a calendar with every Friday torn out"),
    ("finds a phone that only calls one number", "the phone", "dialled the number", "a voice that sounded familiar"),
    ("notices that their shadow has started to move on its own", "the shadow", "followed the shadow",
     "a second set of footprints"),
    ("is offered one wish, but it must be spent today", "the wish", "made the wish", "a small box tied with string"),
    ("inherits a map that redraws itself every night", "the map", "followed the map", "an island that was not on any chart"),
    ("hears a knock from inside the wall", "the knock", "knocked back", "an answer in perfect rhythm"),
    ("finds a clock that runs backwards", "the clock", "wound the clock", "yesterday waiting in the hallway"),
    ("learns that the moon has gone missing", "the missing moon", "searched the sky", "a round hole where the moon had been"),
    ("is the last person who remembers colour", "the colours", "painted the colours", "a city that slowly remembered"),
    ("is handed a key that fits every lock but one", "the key", "tried the key", "the one lock it would not open"),
    ("finds a cat that speaks, but only in riddles", "the cat", "answered the cat", "a riddle with no wrong answer"),
    ("discovers that their reflection is a few seconds late", "the reflection", "watched the reflection",
     "a face that was still deciding"),
]

TAGS = ["[WP]"] * 14 + ["[SP]", "[CW]", "[TT]", "[EU]"]
POST_TEXTS = [""] * 10 + [
    "Bonus points for a happy ending.",
    "Keep it short.",
    "Any genre is welcome.",
    "Inspired by a dream I had last night.",
    "Surprise me.",
    "No dream endings, please.",
]

NAMES = ["Mara", "Tobias", "Ines", "Otto", "Lena", "Ravi", "Ada", "Felix", "June", "Hugo", "Nell", "Sami", "Vera", "Iris",
         "Milo", "Tess", "Arlo", "Cleo", "Bram", "Wren"]

# ---------------------------------------------------------------------------------------------
# Mainstream plots: two common story shapes, each with many near-synonymous phrasings.
# ---------------------------------------------------------------------------------------------
AFRAID = ["afraid of", "scared of", "frightened by", "nervous about", "wary of"]
AT_FIRST = ["at first", "in the beginning", "for a long time"]
BUT_WHEN = ["But when", "But once", "Then, when", "But the day"]
FOUND = ["found", "discovered", "saw"]
REALISED = ["realized", "understood", "finally learned", "knew at last"]
LESSON = ["that home had been there all along", "that family was what mattered most", "that love was the answer",
          "that the real treasure was the friends made along the way", "that there was nothing to fear",
          "that courage was inside all along"]
CLOSER = ["", " And everything was going to be okay.", " It was the best day of their life.",
          " Tears of joy ran down their face.", " They smiled for the first time in years."]

WOKE = ["woke up", "opened their eyes", "sat up in bed"]
DREAM = ["it had all been a dream", "none of it had been real", "it was only a dream", "it was just a dream after all"]
WONDER_VERB = ["filled the room", "surrounded them", "appeared before them", "shone everywhere"]
DREAM_CLOSER = ["", " Or was it?", " But on the pillow lay a single feather.", " They laughed and went back to sleep.",
                " The alarm clock was ringing."]


def mainstream_hope(r, c):
    name = r.choice(NAMES)
    return (f"{name} was {r.choice(AFRAID)} {c['thing']} {r.choice(AT_FIRST)}. "
            f"{r.choice(BUT_WHEN)} {name} {c['act']}, they {r.choice(FOUND)} {c['wonder']} and {r.choice(REALISED)} "
            f"{r.choice(LESSON)}.{r.choice(CLOSER)}")


def mainstream_dream(r, c):
    name = r.choice(NAMES)
    return (f"{name} {c['act']}, and {c['wonder']} {r.choice(WONDER_VERB)}. "
            f"Then {name} {r.choice(WOKE)} in {c['place']} and {r.choice(REALISED)} that {r.choice(DREAM)}."
            f"{r.choice(DREAM_CLOSER)}")


# ---------------------------------------------------------------------------------------------
# Rare-but-good plots: distinct situations, vocabularies and forms (dialogue, second person,
# letters, transcripts, recipes, verse, ...). Each prompt gets one or two of these.
# ---------------------------------------------------------------------------------------------
def rare_dialogue(r, c):
    name = r.choice(NAMES)
    day = r.choice(["Tuesdays", "holidays", "full moons", "rainy afternoons"])
    return (f"\"Is {c['thing']} supposed to hum like that?\" {name} asked. "
            f"\"Only on {day},\" said the neighbour, not looking up. "
            f"\"It's Thursday,\" {name} said. \"Then {r.choice(['run', 'duck', 'hide the biscuits', 'call your mother'])}.\"")


def rare_bureaucracy(r, c):
    form = r.choice(["27-B", "114-C", "9-Q", "42-F"])
    return (f"Form {form} requires that {c['thing']} be reported within three business days. "
            f"{c['short'].capitalize()} filled it out in triplicate; the clerk stamped it, sighed, and filed it under "
            f"{r.choice(['Miracles, Minor', 'Apocalypses, Pending', 'Weather, Miscellaneous', 'Not Our Department'])}.")


def rare_second_person(r, c):
    return (f"You {c['act'].replace('their', 'your')}. You expect {c['wonder']}. "
            f"Instead you find your own handwriting on the wall: "
            f"{r.choice(['do not trust the second version of you', 'you have done this nine times', 'leave now, and take the cat', 'this is the last loop'])}.")


def rare_letter(r, c):
    return (f"Dear Management, I regret to inform you that {c['thing']} has formed a union. "
            f"Its demands are modest: {r.choice(['dental cover', 'two tea breaks', 'a window seat', 'weekends off'])} and an apology. "
            f"Please advise. Yours, {c['short'].capitalize()}.")


def rare_recipe(r, c):
    return (f"Ingredients: one {c['thing'].replace('the ', '')}, two cups of stubbornness, a pinch of "
            f"{r.choice(['regret', 'moonlight', 'bad luck', 'cinnamon'])}. Method: stir until {c['short']} stops arguing. "
            f"Serves one, badly.")


def rare_transcript(r, c):
    return (f"JUDGE: State your name. WITNESS: {c['thing'].capitalize()}. JUDGE: And where were you on the night in question? "
            f"WITNESS: {r.choice(['Inside the defendant', 'Exactly where I was left', 'Everywhere, your honour', 'Asleep, mostly'])}. "
            f"JUDGE: Strike that from the record.")


def rare_object_pov(r, c):
    years = r.choice(["four hundred", "nine thousand", "eleven", "a million"])
    return (f"I am {c['thing']}, and I have waited {years} years for someone like {c['short']}. "
            f"Most of them flinch. This one {r.choice(['offered me tea', 'asked my name', 'laughed', 'sat down and stayed'])}, "
            f"so I decided to stay small for a while.")


def rare_noir(r, c):
    return (f"The rain came down like unpaid debts. {c['short'].capitalize()} lit a cigarette and stared at {c['thing']}, "
            f"which stared back with the patience of a loan shark. "
            f"{r.choice(['Somebody was going to pay', 'Nobody in this town was innocent', 'It was going to be a long night', 'Trouble always knocks twice'])}.")


def rare_news(r, c):
    town = r.choice(["Little Hollow", "Port Amsel", "East Brindle", "Marrow Falls"])
    return (f"BREAKING: Residents of {town} report that {c['thing']} has been elected mayor. "
            f"Officials confirm turnout was {r.choice(['unusually high', 'suspiciously low', 'entirely ghosts', 'mostly pigeons'])}. "
            f"More at eleven.")


def rare_verse(r, c):
    return (f"{c['thing'].capitalize()} at dawn, / salt on the window, / {c['short']} counts to {r.choice(['seven', 'nine', 'twelve'])}. / "
            f"Nothing answers. / {r.choice(['Then, softly, everything does.', 'The kettle sings anyway.', 'A gull laughs once.'])}")


def rare_steps(r, c):
    return (f"Step one: do not panic about {c['thing']}. Step two: panic quietly. "
            f"Step three: {r.choice(['bribe it with soup', 'ask it politely to leave', 'give it a name', 'file it under hobbies'])}. "
            f"{c['short'].capitalize()} had never reached step four.")


def rare_backwards(r, c):
    return (f"It ended with {c['short']} laughing, so start there. Before that, the shouting; before that, the soup; "
            f"before that, {c['thing']}, quiet as a held breath, and nobody yet knowing it was {r.choice(['hungry', 'lonely', 'lost', 'a gift'])}.")


RARE_PLOTS = [rare_dialogue, rare_bureaucracy, rare_second_person, rare_letter, rare_recipe, rare_transcript,
              rare_object_pov, rare_noir, rare_news, rare_verse, rare_steps, rare_backwards]
MAINSTREAM_PLOTS = [mainstream_hope, mainstream_dream]

# ---------------------------------------------------------------------------------------------
# Quality: fluent (level 0), sloppy (level 1: typos, lost capitals and punctuation) or
# incoherent (level 2: scrambled words, repetitions, cut off).
# ---------------------------------------------------------------------------------------------
def typo(r, word):
    if len(word) < 4 or not word.isalpha():
        return word
    i = r.randrange(len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def sloppy(r, text):
    words = text.replace(";", "").replace(":", "").split()
    out = []
    for w in words:
        if r.random() < 0.18:
            w = typo(r, w)
        if r.random() < 0.5:
            w = w.rstrip(",")
        out.append(w.lower())
    return " ".join(out)


def incoherent(r, text):
    words = text.split()
    cut = max(8, int(len(words) * r.uniform(0.55, 0.85)))
    words = words[:cut]
    for _ in range(max(2, len(words) // 5)):
        i, j = r.randrange(len(words)), r.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    k = r.randrange(len(words))
    words.insert(k, words[k])
    words.insert(k, words[k])
    return " ".join(words).lower().rstrip(".,") + " and then"


def degrade(r, text, level):
    return text if level == 0 else sloppy(r, text) if level == 1 else incoherent(r, text)


# Upvotes: log-normal around a median that depends on the quality level only (never on rarity).
SCORE_MEDIAN = {0: 24.0, 1: 6.0, 2: 1.5}
SCORE_SIGMA = 0.45


def score(r, level):
    return max(0, int(round(SCORE_MEDIAN[level] * math.exp(r.gauss(0.0, SCORE_SIGMA)))))


MODERATOR = ("**Welcome to the Prompt!** All top-level comments must be a story or poem. Reply here for other comments.\n\n"
             "**Reminders**:\n* Stories at least 100 words.\n* No AI-generated content.\n* See the wiki for more.")


def make_prompt(r, who, premise):
    noun, short, place = who
    title_vp, thing, act, wonder = premise
    c = {"thing": thing, "act": act, "wonder": wonder, "short": short, "place": place}
    title = f"{r.choice(TAGS)} {noun[0].upper() + noun[1:]} {title_vp}."
    post_text = r.choice(POST_TEXTS)
    n = r.randint(6, 10)
    n_rare_good = r.choice([1, 1, 2])
    n_rare_poor = 1 if r.random() < 0.2 else 0
    n_main = n - n_rare_good - n_rare_poor
    # Mainstream: about 60% fluent, the rest sloppy or incoherent. At least one fluent and one poor.
    main_levels = [0, 1 if r.random() < 0.5 else 2] + [r.choice([0, 0, 0, 1, 2]) for _ in range(n_main - 2)]
    rare_kinds = r.sample(RARE_PLOTS, n_rare_good + n_rare_poor)
    stories = []  # (text, level, kind)
    for level in main_levels:
        plot = r.choice(MAINSTREAM_PLOTS)
        stories.append((degrade(r, plot(r, c), level), level, "mainstream"))
    for i, plot in enumerate(rare_kinds):
        level = 0 if i < n_rare_good else r.choice([1, 2])
        stories.append((degrade(r, plot(r, c), level), level, plot.__name__))
    r.shuffle(stories)
    texts = [s[0] for s in stories]
    scores = [score(r, s[1]) for s in stories]
    kinds = [s[2] for s in stories]
    levels = [s[1] for s in stories]
    if r.random() < 0.1:  # a moderator sticky, first as on the site; the reader must drop it
        texts.insert(0, MODERATOR)
        scores.insert(0, 1)
        kinds.insert(0, "moderator")
        levels.insert(0, -1)
    row = {"post_title": title, "post_text": post_text, "comment_texts": texts, "comment_scores": scores}
    labels = {"post_title": title, "kinds": kinds, "levels": levels}
    return row, labels


def make_data():
    r = random.Random(SEED)
    combos = [(w, p) for w in CHARACTERS for p in PREMISES]
    r.shuffle(combos)
    rows = [make_prompt(r, w, p) for w, p in combos[:NUM_PROMPTS]]
    return [x[0] for x in rows], [x[1] for x in rows]


def train_tokenizer(lines):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    specials = ["<s>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[AddedToken(s, special=True) for s in specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos)])
    return tok


CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def main():
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # deterministic and polite on small machines
    data, labels = make_data()
    path = os.path.join(HERE, "writing_prompts_demo.jsonl")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in data:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(HERE, "writing_prompts_demo_labels.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for row in labels:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    corpus = []
    for row in data:
        corpus.append(row["post_title"] + "\n" + row["post_text"])
        corpus.extend(row["comment_texts"])
    tok = train_tokenizer(corpus)
    tok.save(os.path.join(HERE, "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "<|im_end|>", "pad_token": "<pad>", "model_max_length": 512,
              "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE}
    with open(os.path.join(HERE, "tokenizer_config.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    n_resp = sum(len(x["comment_texts"]) for x in data)
    print(f"wrote {len(data)} prompts, {n_resp} comments to {path}; tokenizer vocab {tok.get_vocab_size()}")


if __name__ == "__main__":
    main()
