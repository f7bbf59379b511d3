# Writes sample.jsonl and malformed.jsonl, the WritingPrompts fixtures of tests/test_writing_prompts.cpp.
import json

rows = [
    {"post_title": "[WP] A dragon wakes up in a library", "post_text": "It has been asleep for a thousand years.",
     "comment_texts": ["**Welcome to the Prompt!** All top-level comments must be a story or poem.",
                       "The dragon opened one eye and saw the shelves.",
                       "Dust fell like snow as the dragon stretched.",
                       "   ",
                       "She read every book before the librarian noticed."],
     "comment_scores": [1, 12, 30, 2, 7]},
    {"post_title": "[EU] Harry Potter, but the wand chooses wrong", "post_text": "",
     "comment_texts": ["Ollivander frowned at the smoking box.", "one two three four five six seven eight nine ten eleven twelve"],
     "comment_scores": [5, 9]},
    {"post_title": "[WP]The moon sends an apology letter", "post_text": "  Dear Earth,  ",
     "comment_texts": ["Sorry about the tides.", "this submission has been removed for rule 3", "**Off-Topic Discussion**: reply here"],
     "comment_scores": [4, 0, 0]},
    {"post_title": "No tag at all [not a tag]", "post_text": "Body text.",
     "comment_texts": ["Short one.", "Another short one.", "A third response, fine."],
     "comment_scores": [3, -2, 8.5]},
]
with open("sample.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
with open("malformed.jsonl", "w") as f:
    f.write(json.dumps(rows[0]) + "\n")
    f.write('{"post_title": "[WP] broken", "comment_texts": ["a"]\n')  # line 2: invalid JSON
    f.write("\n")  # line 3: blank, ignored
    f.write(json.dumps({"post_title": "[WP] x", "post_text": "", "comment_texts": ["a", "b"], "comment_scores": [1]}) + "\n")  # 4: counts differ
    f.write(json.dumps({"post_title": "[WP] y", "post_text": "", "comment_texts": ["a", "b"], "comment_scores": [1, "2"]}) + "\n")  # 5: score text
    f.write(json.dumps(rows[3]) + "\n")
