#!/usr/bin/env python3
"""Minimal configs of the golden fixtures: every key at its config class's default left out.

For each test/golden/<name>/config.json (what save_pretrained wrote), loads it with AutoConfig
and writes test/golden/minimal-configs/<name>.json: the keys of config.to_json_string(use_diff=True)
less transformers_version and less every key whose value equals the one of the config class built
with no arguments (model_type stays: AutoConfig needs it). use_diff=True alone leaves out only
the keys of the base PreTrainedConfig at their defaults, so it writes every model key back.

Then loads the minimal file and checks that transformers builds the same config from it:
to_dict() equal on every key but transformers_version and _name_or_path. A key that the class
derives from others (not from its own default) when it is left out is written back, and the
check repeats; a difference in a key that config.json does not hold fails (exit 1).

The lit test Import/minimal-configs.test checks that moe-opt imports each minimal file to the
plan it makes from the full config.json.

Usage (a machine with transformers):  python3 tools/golden/minimal_configs.py
"""
import json
import pathlib
import sys
import tempfile

import transformers
from transformers import AutoConfig

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "test" / "golden"
OUT = GOLDEN / "minimal-configs"
UNCOMPARED = ("transformers_version", "_name_or_path")


def load(config_dict):
    with tempfile.TemporaryDirectory() as folder:
        (pathlib.Path(folder) / "config.json").write_text(json.dumps(config_dict))
        config = AutoConfig.from_pretrained(folder).to_dict()
    for key in UNCOMPARED:
        config.pop(key, None)
    return config


def main():
    print(f"transformers {transformers.__version__}")
    OUT.mkdir(exist_ok=True)
    failed = False
    for path in sorted(GOLDEN.glob("*/config.json")):
        name = path.parent.name
        full = AutoConfig.from_pretrained(path.parent)
        saved = json.loads(full.to_json_string(use_diff=True))
        saved.pop("transformers_version")
        defaults = type(full)().to_dict()
        minimal = {k: v for k, v in saved.items() if k == "model_type" or k not in defaults or v != defaults[k]}
        want = load(saved)
        while True:
            got = load(minimal)
            diffs = sorted(k for k in want.keys() | got.keys() if want.get(k, "<absent>") != got.get(k, "<absent>"))
            derived = [k for k in diffs if k in saved and k not in minimal]
            if not derived:
                break
            print(f"{name}: derived from other keys when left out, kept: {', '.join(derived)}")
            minimal.update((k, saved[k]) for k in derived)
        (OUT / f"{name}.json").write_text(json.dumps(minimal, indent=2, sort_keys=True) + "\n")
        left_out = sorted(saved.keys() - minimal.keys())
        print(f"{name}: kept {len(minimal)} of {len(saved)} keys; left out {', '.join(left_out)}")
        for k in diffs:
            print(f"  {k}: full {want.get(k, '<absent>')!r}, from the minimal file {got.get(k, '<absent>')!r}")
        failed |= bool(diffs)
    if failed:
        print("a minimal config does not load to its full config", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
