#!/usr/bin/env python3
"""End-to-end time of a long-generation job from a plan's predictions and what was measured
of it, where the whole job does not fit the GPU time at hand.

A job of N requests (prompts and generations drawn with a fixed seed from the lengths the plan was
made for: its bins, each spreading evenly over its lengths; each request's budget its drawn
generation) runs on a refilled batch of the plan's B slots: while requests are admitted, every
decode step holds the live sequences at the steady state's contexts and takes the measured
steady-state step. The batch is refilled as moe-run refills it: once the plan's refill slots (its
explanation's refill.slots; --refill-slots N instead) are free, or none is busy; each such pass
streams the plan's weights once (refill.weight_seconds) and prefills its prompts at the measured
prefill rate. Once the last request is admitted the batch drains, and a step with n live sequences
takes the plan's step at n (its drain_steps curve, priced at the drain's contexts) times --tail-scale
(measured over predicted for such a step, 1 without a measurement). With --tail-plan, the job moves
to the plan's tail plan as moe-run's TailSwitch would (every request admitted, the live sequences
fit its slots, the steps they are expected to run save more than --switch-seconds of preparing it
plus recomputing their caches at its predicted prefill rate), and its steps take its curve times
--tail-plan-scale (measured over predicted for its step; default --tail-scale).

  python3 bench/job_time.py --explain PLAN.explain.json --steady-step 1.29 --prefill-rate 11000 \\
      [--requests 4096] [--seed 1] [--refill-slots N] [--tail-scale 1.2]
      [--tail-plan [--tail-plan-scale 1.3] --switch-seconds 60] [--json OUT]

Writes one line (and with --json the numbers); a job of 4,096 requests simulates in seconds.
"""
import argparse
import json
import random
import sys


def curve(points):
    """The plan's step seconds at n live sequences, linear between its points."""
    live, seconds = points["live"], points["seconds"]

    def at(n):
        if n <= live[0]:
            return seconds[0]
        for i in range(1, len(live)):
            if n <= live[i]:
                share = (n - live[i - 1]) / (live[i] - live[i - 1])
                return seconds[i - 1] + share * (seconds[i] - seconds[i - 1])
        return seconds[-1]

    return at


class Lengths:
    """A plan's length distribution: [shortest, longest, weight] bins, each spreading evenly over
    its whole lengths (runtime/costmodel/Lengths.h)."""

    def __init__(self, bins):
        self.bins = bins
        self.total = sum(w for _, _, w in bins)

    def draw(self, rng):
        bins = self.bins
        if len(bins) > 1:
            bins = rng.choices(bins, weights=[w for _, _, w in bins])
        shortest, longest, _ = bins[0]
        return rng.randint(shortest, longest)

    def exceeding(self, k):
        """P(X > k)."""
        return sum(w * max(0, b - max(a, int(k) + 1) + 1) / (b - a + 1)
                   for a, b, w in self.bins) / self.total

    def mean_excess(self, k):
        """E[(X - k)+]."""
        total = 0.0
        for a, b, w in self.bins:
            first = max(a, int(k) + 1)
            count = max(0, b - first + 1)
            total += w * (count * (first + b) / 2 - count * k) / (b - a + 1)
        return total / self.total


def expected_left(generated, budget, lengths):
    """Steps a live sequence is expected to run on, as TailSwitch expects them: its length drawn
    from the planned ones longer than what it has, cut at its budget."""
    budget = max(budget, generated)
    running = lengths.exceeding(generated)
    if running <= 0:
        return 1.0
    left = (lengths.mean_excess(generated) - lengths.mean_excess(budget)) / running
    return max(left, 1.0)


def simulate(args, explain):
    decision, tail = explain["decision"], explain.get("tail")
    batch = decision["resident_batch"]
    prompts = Lengths(decision["prompt_lengths"])
    generations = Lengths(decision["generated_lengths"])
    if "drain_steps" not in explain["report"]:
        sys.exit("job_time: the plan's explanation has no drain_steps (a plan for a job that "
                 "generates has them)")
    if args.tail_plan and not tail:
        sys.exit("job_time: --tail-plan: the plan has no tail plan (moe-opt keeps one only "
                 "where it saves time)")
    refill = explain["report"].get("refill", {})
    refill_at = args.refill_slots or refill.get("slots", 1)
    pass_weight_seconds = refill.get("weight_seconds", 0.0)
    main_at = curve(explain["report"]["drain_steps"])
    if args.tail_plan:
        tail_at = curve(tail["tail_steps"])
        slots = tail["decision"]["resident_batch"]
        recompute_rate = tail["report"]["prefill_tokens_per_second"]
    rng = random.Random(args.seed)
    lengths = [generations.draw(rng) for _ in range(args.requests)]
    prompt_of = [prompts.draw(rng) for _ in range(args.requests)]
    live = []  # [generated, budget, prompt] of each live sequence
    admitted = 0
    now = tokens = steps = 0.0
    passes = 0
    last_admission = switched_at = None
    on_tail = False
    while admitted < args.requests or live:
        free = batch - len(live)
        if admitted < args.requests and (free >= refill_at or not live):
            fresh = min(free, args.requests - admitted)
            live += [[0, lengths[admitted + i], prompt_of[admitted + i]] for i in range(fresh)]
            now += pass_weight_seconds + sum(prompt_of[admitted:admitted + fresh]) / args.prefill_rate
            admitted += fresh
            passes += 1
        drained = admitted == args.requests
        if drained and last_admission is None:
            last_admission = now
        if args.tail_plan and drained and not on_tail and len(live) <= slots:
            left = sorted((expected_left(g, b, generations) for g, b, _ in live), reverse=True)
            saved = sum((left[i] - (left[i + 1] if i + 1 < len(left) else 0))
                        * (main_at(i + 1) * args.tail_scale
                           - tail_at(i + 1) * args.tail_plan_scale)
                        for i in range(len(left)))
            contexts = sum(p + g for g, _, p in live)
            cost = args.switch_seconds + contexts / recompute_rate
            if saved > cost:
                on_tail, switched_at = True, now
                now += cost
        n = len(live)
        if not drained:
            step = args.steady_step
        else:
            step = (tail_at(n) * args.tail_plan_scale if on_tail
                    else main_at(n) * args.tail_scale)
        now += step
        tokens += n
        steps += 1
        live = [[g + 1, b, p] for g, b, p in live if g + 1 < b]
    return {
        "requests": args.requests, "resident_batch": batch, "tail_plan": args.tail_plan,
        "refill_slots": refill_at, "refill_passes": passes,
        "seconds": now, "new_tokens": tokens, "decode_steps": steps,
        "tokens_per_second": tokens / now, "last_admission_seconds": last_admission,
        "tail_seconds": now - last_admission,
        "switched_at_seconds": switched_at,
    }


def duration(seconds):
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2f} h"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--explain", required=True, help="moe-opt --moe-explain-plan=json=true output")
    p.add_argument("--steady-step", type=float, required=True,
                   help="measured decode step of the steady state, seconds")
    p.add_argument("--prefill-rate", type=float, required=True,
                   help="measured prefill of the job's prompts, tokens/s")
    p.add_argument("--requests", type=int, default=4096)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--refill-slots", type=int, default=None,
                   help="refill once this many slots are free (default: the plan's; 1 refills "
                        "as soon as one is)")
    p.add_argument("--tail-scale", type=float, default=1.0,
                   help="measured over predicted for a drained batch's step")
    p.add_argument("--tail-plan", action="store_true", help="switch to the plan's tail plan")
    p.add_argument("--tail-plan-scale", type=float,
                   help="measured over predicted for the tail plan's step (default --tail-scale)")
    p.add_argument("--switch-seconds", type=float, default=60,
                   help="preparing the tail plan's backend (moe-run's prepare_seconds)")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args()
    if args.tail_plan_scale is None:
        args.tail_plan_scale = args.tail_scale
    for name in ("steady_step", "prefill_rate", "tail_scale", "tail_plan_scale"):
        if not getattr(args, name) > 0:
            sys.exit(f"job_time: --{name.replace('_', '-')} must be positive")
    if args.requests < 1:
        sys.exit("job_time: --requests must be at least 1")
    if args.refill_slots is not None and args.refill_slots < 1:
        sys.exit("job_time: --refill-slots must be at least 1")
    with open(args.explain) as f:
        explain = json.load(f)
    result = simulate(args, explain)
    tail = result["tail_seconds"]
    switched = result["switched_at_seconds"]
    print(f"{result['requests']} requests on B {result['resident_batch']}"
          f"{' with the tail plan' if args.tail_plan else ''}: {duration(result['seconds'])}, "
          f"{result['new_tokens']:.0f} new tokens, {result['tokens_per_second']:.1f} tok/s "
          f"overall, {result['refill_passes']} refill passes at {result['refill_slots']} free "
          f"slot{'' if result['refill_slots'] == 1 else 's'}; the tail after the last admission "
          f"{duration(tail)} "
          f"({100 * tail / result['seconds']:.1f}%)"
          + (f", on the tail plan from {duration(switched - result['last_admission_seconds'])} "
             "into it" if switched is not None else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
