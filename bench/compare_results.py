#!/usr/bin/env python3
"""Two runs of the benchmark side by side: a candidate's moe-run against its predecessor's on the
same plans and card (run_benchmarks.py `run` twice with different --bin and --out).

  python3 bench/compare_results.py BEFORE AFTER [--tolerance 0.03]

BEFORE and AFTER are results.json files or folders whose results.json files (at any depth, e.g.
one per case, as bench/compare_binaries.sh writes them) are taken together.

Prints, per case, prefill and decode tokens/s, the decode step and new tokens/s of both runs and
their ratio, and exits 1 when any of them is slower after than before by more than the tolerance
(a regression), so a script can gate on it.
"""
import argparse
import json
import sys
from pathlib import Path

# Higher is better for each; the step time is compared through decode tokens/s.
MEASURES = [("prefill_tokens_per_second", "prefill/s"),
            ("decode_tokens_per_second", "decode/s"),
            ("new_tokens_per_second", "new/s")]


def entries(path):
    files = sorted(path.rglob("results.json")) if path.is_dir() else [path]
    if not files:
        sys.exit(f"compare_results: no results.json in {path}")
    cards, cases = set(), {}
    for file in files:
        results = json.loads(file.read_text())
        cards.add(results["card"])
        cases.update({r["case"]: r for r in results["moe_run"]})
    if len(cards) != 1:
        sys.exit(f"compare_results: {path} holds runs of several cards: {sorted(cards)}")
    return cards.pop(), cases


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--tolerance", type=float, default=0.03,
                   help="largest slowdown not counted as a regression (0.03: 3%%)")
    args = p.parse_args()
    card_before, before = entries(args.before)
    card_after, after = entries(args.after)
    if card_before != card_after:
        sys.exit(f"compare_results: the runs are of different cards ({card_before} vs "
                 f"{card_after}): compare only runs on the same card")
    print(f"{card_after}: after / before, regression below {1 - args.tolerance:.2f}")
    print(f"{'case':28s} " + " ".join(f"{label:>25s}" for _, label in MEASURES))
    regressions = []
    for case in [c for c in before if c in after]:
        old, new = before[case], after[case]
        if "error" in old or "error" in new:
            print(f"{case:28s} error: {old.get('error') or new.get('error')}")
            regressions.append(case)
            continue
        cells = []
        for key, label in MEASURES:
            ratio = new[key] / old[key] if old[key] else float("nan")
            if ratio < 1 - args.tolerance:
                regressions.append(f"{case} {label}")
            cells.append(f"{old[key]:9.1f} {new[key]:9.1f} {ratio:.3f}")
        print(f"{case:28s} " + " ".join(cells))
    for case in [c for c in before if c not in after] + [c for c in after if c not in before]:
        print(f"{case:28s} measured in one run only")
    if regressions:
        print("regressions: " + ", ".join(regressions))
        sys.exit(1)


if __name__ == "__main__":
    main()
