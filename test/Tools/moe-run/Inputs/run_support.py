"""What the moe-run test scripts share: a checkpoint of the tiny fixtures'
weights with a 256-token byte-level tokenizer.json (GPT-2's byte-to-unicode
alphabet, no merges: one token per byte, so characters of two or three
bytes span tokens), and failing with a message."""
import json
import os
import sys


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def byte_level_tokenizer():
    """tokenizer.json of GPT-2's byte-to-unicode alphabet, no merges."""
    printable = (list(range(ord("!"), ord("~") + 1)) +
                 list(range(ord("\xa1"), ord("\xac") + 1)) +
                 list(range(ord("\xae"), ord("\xff") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    byte_level = {"type": "ByteLevel", "add_prefix_space": False,
                  "trim_offsets": True, "use_regex": True}
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [], "normalizer": None,
            "pre_tokenizer": byte_level, "post_processor": None,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False,
                      "byte_fallback": False,
                      "vocab": {chars[b]: b for b in range(256)},
                      "merges": []}}



def byte_level_checkpoint(source, checkpoint):
    """`checkpoint` with `source`'s config and weights (linked) and the
    byte-level tokenizer; returns its path."""
    os.makedirs(checkpoint, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        target = os.path.join(checkpoint, name)
        if not os.path.exists(target):
            os.symlink(os.path.abspath(os.path.join(source, name)), target)
    with open(os.path.join(checkpoint, "tokenizer.json"), "w") as f:
        json.dump(byte_level_tokenizer(), f)
    return checkpoint
