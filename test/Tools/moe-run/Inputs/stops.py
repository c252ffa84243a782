"""Stops end an answer where they say, on the tiny Mixtral fixture given a
256-token byte-level tokenizer (one token per byte, so characters of two or
three bytes span tokens).

A first run without stops gives each prompt's text. Then, per prompt: stop
strings taken from the middle of that text (one holding a multi-byte
character where there is one, with a decoy that never occurs and a later
one) end the answer before the earliest, whose text is the first run's up
to it; a stop token id ends it at that id, its text that of the ids before;
generation_config.json's eos_token_id ends it as EOS. Prints one line per
check; exits 1 on the first failure.

    stops.py MOE_RUN PLAN CHECKPOINT WORKDIR
"""
import json
import os
import subprocess
import sys

from run_support import byte_level_checkpoint, check, fail


def run(moe_run, plan, checkpoint, work, name, lines):
    prompts = os.path.join(work, name + ".prompts.jsonl")
    answers = os.path.join(work, name + ".answers.jsonl")
    with open(prompts, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    done = subprocess.run([moe_run, plan, "--checkpoint", checkpoint,
                           "--prompts", prompts, "--output", answers,
                           "--backend", "cpu", "--no-progress"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{name}: moe-run exited {done.returncode}: {done.stderr}")
    with open(answers) as f:
        return [json.loads(line) for line in f]


def main():
    moe_run, plan, source, work = sys.argv[1:5]
    checkpoint = byte_level_checkpoint(source, os.path.join(work, "checkpoint"))

    prompts = [{"prompt": "The stop", "max_new_tokens": 40},
               {"input_ids": [200, 201, 202, 203, 204], "max_new_tokens": 40},
               {"input_ids": [65, 66, 67], "max_new_tokens": 40}]
    free = run(moe_run, plan, checkpoint, work, "free", prompts)
    for i, answer in enumerate(free):
        check(answer["finish_reason"] == "length" and
              len(answer["output_ids"]) == 40,
              f"prompt {i} runs its 40 tokens without stops: {answer}")

    # Stop strings: the earliest of three; the text ends before it.
    stopped = []
    for answer in free:
        text = answer["text"]
        # A well-formed character of several bytes where there is one.
        wide = ([k for k in range(4, len(text) - 2)
                 if ord(text[k]) > 127 and text[k] != "\ufffd"] or
                [k for k in range(4, len(text) - 2) if ord(text[k]) > 127])
        at = wide[0] - 1 if wide else len(text) // 3
        stop = text[at:at + 3]
        later = text[len(text) - 3:]
        stopped.append((stop, later))
    lines = [dict(p, stop=["\x00never\x00", later, stop])
             for p, (stop, later) in zip(prompts, stopped)]
    answers = run(moe_run, plan, checkpoint, work, "strings", lines)
    for i, (answer, base, (stop, later)) in enumerate(
            zip(answers, free, stopped)):
        text = base["text"]
        first = min((text.find(s), -len(s), s) for s in (stop, later)
                    if text.find(s) >= 0)
        want = text[:first[0]]
        check(answer["finish_reason"] == "stop" and
              answer["stop_reason"] == first[2],
              f"prompt {i}: stops at {first[2]!r}: {answer}")
        check(answer["text"] == want and first[2] not in answer["text"],
              f"prompt {i}: text {answer['text']!r}, want {want!r}")
        ids = answer["output_ids"]
        check(ids == base["output_ids"][:len(ids)],
              f"prompt {i}: ids are the first run's")
        kind = ("holds U+FFFD, from ill-formed bytes" if "\ufffd" in first[2]
                else "multi-byte" if any(ord(c) > 127 for c in first[2])
                else "ascii")
        print(f"prompt {i}: stop string {first[2]!r} ({kind}) after "
              f"{len(ids)} tokens, text cut before it")

    # A stop token id: the answer ends at it; its text is that of the ids
    # before it, as a run of that many tokens gives.
    lines, cuts = [], []
    for p, base in zip(prompts, free):
        stop_id = base["output_ids"][5]
        cut = base["output_ids"].index(stop_id)
        cuts.append((stop_id, cut))
        lines.append(dict(p, stop_token_ids=[stop_id]))
    answers = run(moe_run, plan, checkpoint, work, "ids", lines)
    shorter = run(moe_run, plan, checkpoint, work, "shorter",
                  [dict(p, max_new_tokens=max(cut, 1))
                   for p, (_, cut) in zip(prompts, cuts)])
    for i, (answer, base, (stop_id, cut), short) in enumerate(
            zip(answers, free, cuts, shorter)):
        check(answer["finish_reason"] == "stop" and
              answer["stop_reason"] == stop_id and
              answer["output_ids"] == base["output_ids"][:cut + 1],
              f"prompt {i}: stops at id {stop_id}: {answer}")
        want = short["text"] if cut > 0 else ""
        check(answer["text"] == want,
              f"prompt {i}: text {answer['text']!r}, want {want!r}")
        print(f"prompt {i}: stop token {stop_id} after {cut + 1} tokens")

    # generation_config.json's EOS ids end answers as EOS.
    eos = free[0]["output_ids"][6]
    with open(os.path.join(checkpoint, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [eos, 1000000]}, f)
    answers = run(moe_run, plan, checkpoint, work, "eos", prompts[:1])
    cut = free[0]["output_ids"].index(eos)
    check(answers[0]["finish_reason"] == "eos" and
          answers[0]["output_ids"] == free[0]["output_ids"][:cut + 1],
          f"generation_config.json EOS {eos}: {answers[0]}")
    print(f"generation_config.json EOS {eos} ends the answer after "
          f"{cut + 1} tokens")
    with open(os.path.join(checkpoint, "generation_config.json"), "w") as f:
        f.write('{"eos_token_id": "two"}')
    done = subprocess.run([moe_run, plan, "--checkpoint", checkpoint,
                           "--prompts", os.path.join(work, "eos.prompts.jsonl"),
                           "--output", os.path.join(work, "bad.jsonl"),
                           "--backend", "cpu", "--no-progress"],
                          capture_output=True, text=True)
    print(f"bad generation_config.json: exit {done.returncode}: "
          f"{done.stderr.strip()}")


main()
