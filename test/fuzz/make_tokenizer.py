#!/usr/bin/env python3
"""Writes the fuzz tokenizer: GPT-2's byte-level alphabet (every byte a
token, so any text round-trips) and merges learnt by a few rounds of BPE on
the tokenizer tests' corpus, so the fuzzer exercises the merge loop too.

    make_tokenizer.py CORPUS.jsonl OUT.json
"""
import collections
import json
import sys

sys.path.insert(0, __file__.rsplit("/test/", 1)[0] + "/test/Tools/moe-run/Inputs")
from run_support import byte_level_tokenizer  # noqa: E402

MERGES = 200


def main(corpus, out):
    tokenizer = byte_level_tokenizer()
    vocab = tokenizer["model"]["vocab"]
    alphabet = {b: c for c, b in vocab.items()}
    words = collections.Counter()
    for line in open(corpus, encoding="utf-8"):
        text = json.loads(line).get("text")
        for word in (text or "").split(" "):
            symbols = tuple(alphabet[b] for b in (" " + word).encode("utf-8"))
            words[symbols] += 1
    merges = []
    for _ in range(MERGES):
        pairs = collections.Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda item: (item[1], item[0]))
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
        merged = collections.Counter()
        for word, count in words.items():
            out_word, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == (a, b):
                    out_word.append(a + b)
                    i += 2
                else:
                    out_word.append(word[i])
                    i += 1
            merged[tuple(out_word)] += count
        words = merged
    tokenizer["model"]["merges"] = merges
    with open(out, "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
