#!/usr/bin/env python3
"""The moe benchmark: plans each case, runs moe-run on seeded synthetic weights at the real
shapes, and compares what it measured with what the plan predicted.

  python3 bench/run_benchmarks.py plan --out DIR [--cases ...]   # needs moe-opt (this machine)
  python3 bench/run_benchmarks.py run  --out DIR [--cases ...]   # needs moe-run and the GPU

`plan` writes DIR/<case>.moeplan and DIR/<case>.explain.json (moe-opt --moe-explain-plan=json=true).
`run` runs each planned case and writes DIR/<case>.stats.json, DIR/results.json and prints a table.
With --batches B ... (give the same to both stages), a sweep: `plan` plans each case once per B,
at exactly that resident batch (moe-opt batch=B; DIR/<case>-b<B>.*), so each point has its own
predicted step, job rate and roofline bound, and `run` runs those plans; a B that does not fit
the budgets is reported and left out (DIR/<case>-b<B>.error holds moe-opt's reason).
With --hf-batches N ..., `run` also runs HuggingFace transformers (bench/hf_generate.py) on each
case in the same call: the same model shape, the first N of the same prompts, the same lengths,
the whole model on the GPU for resident cases and accelerate's CPU offload at the case's GPU
budget otherwise; the table then gives moe-run's new tokens/s over transformers' best.
The two stages are apart because the GPU machine may lack the compiler's libraries; on a machine
with both, run `plan` then `run`.

Decode is measured on a window of --decode-steps steps centred on the plan's mean decode context
(prompt + generation / 2), the context its predicted step time is for: prompts are that long
minus half the window. A full 256-token generation of every case does not fit the GPU machine's
command limit; the step time depends on the context, not on how the sequence got there.
With --decode-steps equal to --gen-len, each of the B prompts is generated whole: the measured new
tokens/s is then one cycle of a job that refills the whole batch, the rate the plan's job
prediction (the table's "job pred") is for.
With --gen-len-min, generations are spread evenly over gen-len-min..gen-len (both stages: the plan
is made for that spread) and the window is one of the steady state of a refilled batch: each of the
B sequences is at a context drawn as a refilled batch holds them (a generation of G tokens, drawn
in proportion to G since longer ones hold their slot longer, caught at a uniform point of it), so
the contexts' mean is the plan's mean decode context.
With --lengths FILE (a job's lengths as moe-run --describe-prompts writes them), both stages use
that job's prompt and generation length distributions instead: the plan is made for them
(moe-opt lengths=) and the window's sequences are at contexts drawn as a refilled batch of that job
holds them (a prompt drawn by its count, a generation in proportion to count times length, caught
at a uniform point of it).
With --trace, `run` also writes each case's first decode step as the backend ran it, stream by
stream, beside the plan's timeline (DIR/<case>.trace.json, Chrome's trace format).
"""
import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "models/hardware/h100-sxm-80gb.json"


class Case(NamedTuple):
    model: str  # folder under models/
    gpu_gib: float  # moe-opt's GPU budget
    resident: bool  # the model fits the GPU: transformers runs without offload
    max_batch: int = 65536  # moe-opt's cap on the resident batch
    kv_dtype: str = "bf16"  # moe-opt's kv-dtype
    weight_dtype: str = "declared"  # moe-opt's weight-dtype
    host_attention: str = "auto"  # moe-opt's host-attention (ω)

    @property
    def budget(self):
        return "resident" if self.resident else f"{self.gpu_gib:g} GiB"


# "The whole GPU" is what an H100 80GB leaves after the CUDA context and cuBLASLt's workspace
# (79.1 GiB free, 1 GiB kept back by the CUDA backend).
WHOLE_GPU = 77.5
CASES = {
    "mixtral-8x7b": Case("mixtral-8x7b", WHOLE_GPU, resident=False),
    # The same with the host's cores attending no sequences (ω = 0) or a fixed share of them,
    # beside the share the planner chooses: the sweep of ω.
    "mixtral-8x7b-gpu-attention": Case("mixtral-8x7b", WHOLE_GPU, resident=False,
                                       host_attention="0"),
    "mixtral-8x7b-host-0.4": Case("mixtral-8x7b", WHOLE_GPU, resident=False,
                                  host_attention="0.4"),
    "mixtral-8x7b-host-0.8": Case("mixtral-8x7b", WHOLE_GPU, resident=False,
                                  host_attention="0.8"),
    "qwen3-30b-a3b-24g": Case("qwen3-30b-a3b", 24, resident=False),
    "qwen3-30b-a3b-24g-gpu-attention": Case("qwen3-30b-a3b", 24, resident=False,
                                            host_attention="0"),
    "qwen3-30b-a3b-resident": Case("qwen3-30b-a3b", WHOLE_GPU, resident=True),
    # Capped so that a whole 512 + 256 generation and transformers' beside it fit the GPU
    # machine's 10-minute command limit (the uncapped plan, B 4096, prefills 2.1 M tokens).
    "deepseek-v2-lite-24g": Case("deepseek-v2-lite", 24, resident=False, max_batch=1024),
    "deepseek-v2-lite-resident": Case("deepseek-v2-lite", WHOLE_GPU, resident=True),
    # The same plans with an fp8 KV cache (E4M3, a scale per token and head).
    "mixtral-8x7b-fp8kv": Case("mixtral-8x7b", WHOLE_GPU, resident=False, kv_dtype="fp8"),
    "qwen3-30b-a3b-24g-fp8kv": Case("qwen3-30b-a3b", 24, resident=False, kv_dtype="fp8"),
    "deepseek-v2-lite-24g-fp8kv": Case("deepseek-v2-lite", 24, resident=False, max_batch=1024,
                                       kv_dtype="fp8"),
    # fp8 routed experts (E4M3, a scale per 128 x 128 block) with an fp8 KV cache. Qwen3 capped
    # as its fp8-KV plan is planned.
    "mixtral-8x7b-fp8": Case("mixtral-8x7b", WHOLE_GPU, resident=False, kv_dtype="fp8",
                             weight_dtype="fp8"),
    "qwen3-30b-a3b-24g-fp8": Case("qwen3-30b-a3b", 24, resident=False, max_batch=2048,
                                  kv_dtype="fp8", weight_dtype="fp8"),
    "deepseek-v2-lite-24g-fp8": Case("deepseek-v2-lite", 24, resident=False, max_batch=1024,
                                     kv_dtype="fp8", weight_dtype="fp8"),
    # 141 B parameters, 262 GB in bf16: runs only with fp8 experts (136 GiB) on one H100 and
    # host memory.
    "mixtral-8x22b-fp8": Case("mixtral-8x22b", WHOLE_GPU, resident=False, kv_dtype="fp8",
                              weight_dtype="fp8"),
    # 117 B parameters, 234 GB in bf16, shipped with MXFP4 experts (weight-dtype=declared plans
    # them so): 65 GB, one H100.
    "gpt-oss-120b": Case("gpt-oss-120b", WHOLE_GPU, resident=False, kv_dtype="fp8"),
    "gpt-oss-20b-24g": Case("gpt-oss-20b", 24, resident=False, kv_dtype="fp8"),
    # The driver's own smoke test (CPU backend, tiny lengths; see test/bench).
    "tiny-mixtral": Case("tiny-mixtral", 0.002, resident=False),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tool(args, name):
    path = args.bin / name
    if not path.is_file():
        sys.exit(f"run_benchmarks: {name} not found in {args.bin} (--bin)")
    return str(path)


def plan_name(case, batch):
    """The plan of `case` at resident batch `batch` (a sweep point), or the case's own."""
    return f"{case}-b{batch}" if batch else case


def explanation(args, case, batch):
    """The explain JSON `plan` wrote for `case` (at sweep point `batch`); exits if there is none."""
    path = args.out / f"{plan_name(case, batch)}.explain.json"
    if not path.is_file():
        sys.exit(f"run_benchmarks: no plan of {case}{f' at B {batch}' if batch else ''} in "
                 f"{args.out}: run `plan` with the same --out, --cases and --batches first")
    return json.loads(path.read_text())


def plan(args):
    moe_opt = tool(args, "moe-opt")
    args.out.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        model, gpu = CASES[case].model, args.gpu_mem or CASES[case].gpu_gib
        # A sweep plans each B itself, so that its prediction and roofline bound are for that B.
        for batch in args.batches or [None]:
            name = plan_name(case, batch)
            options = [f"profile={args.profile}", f"host-mem={args.host_mem}", f"gpu-mem={gpu}",
                       f"batch={batch}" if batch else f"max-batch={CASES[case].max_batch}",
                       f"kv-dtype={CASES[case].kv_dtype}",
                       f"weight-dtype={CASES[case].weight_dtype}",
                       f"host-attention={CASES[case].host_attention}",
                       *lengths_options(args),
                       f"output={args.out / (name + '.moeplan')}"]
            (args.out / f"{name}.error").unlink(missing_ok=True)
            planned = subprocess.run(
                [moe_opt, str(ROOT / "models" / model / "config.json"),
                 "--moe-plan=" + " ".join(options), "--moe-explain-plan=json=true", "-o", "/dev/null"],
                check=not batch, capture_output=True, text=True)
            if planned.returncode != 0:
                lines = planned.stderr.strip().splitlines()
                reason = next((l for l in lines if "error:" in l), lines[-1] if lines else "")
                (args.out / f"{name}.error").write_text(reason + "\n")
                log(f"{name}: left out of the sweep: {reason}")
                continue
            (args.out / f"{name}.explain.json").write_text(planned.stdout)
            report = json.loads(planned.stdout)["report"]
            job = report.get("job_tokens_per_second")
            log(f"{name}: B {json.loads(planned.stdout)['decision']['resident_batch']}, predicted "
                f"decode {report['decode_tokens_per_second']:.0f} tok/s"
                + (f", job {job:.0f} new tok/s" if job else ""))


PROMPT_SEED = 1


def lengths_options(args):
    """moe-opt's options for the lengths the cases are planned for."""
    if args.lengths:
        return [f"lengths={args.lengths}"]
    return [f"prompt-len={args.prompt_len}", f"gen-len={args.gen_len}",
            f"gen-len-min={args.gen_len_min}"]


def job_lengths(path):
    """The [length, count] histograms of a job's lengths file: (prompts, generations)."""
    job = json.loads(Path(path).read_text())
    return job["prompt_tokens"], job["generated_tokens"]


def max_context(args):
    """The context moe-run holds for each sequence: the longest prompt and generation."""
    if args.lengths:
        prompts, generations = job_lengths(args.lengths)
        return max(l for l, _ in prompts) + max(l for l, _ in generations)
    return args.prompt_len + args.gen_len


def vocab_size(model):
    return json.loads((ROOT / "models" / model / "config.json").read_text())["vocab_size"]


def measured_prompt_len(args):
    """Prompts end half the measured decode steps before the plan's mean decode context."""
    return args.prompt_len + args.gen_len // 2 - args.decode_steps // 2


def write_prompts(path, count, length, vocab, new_tokens, seed):
    """`count` random prompts of `length` tokens (or of lengths[i], a list); a smaller count with
    the same seed gives the first of them."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(count):
            ids = [rng.randrange(3, vocab) for _ in range(length[i] if isinstance(length, list)
                                                          else length)]
            f.write(json.dumps({"input_ids": ids, "max_new_tokens": new_tokens}) + "\n")


def steady_state_prompt_lens(args, count, seed):
    """Prompt lengths that put `count` sequences at the contexts of a refilled batch's steady state
    (generations spread evenly over gen-len-min..gen-len) half the decode window early."""
    rng = random.Random(seed)
    generations = range(args.gen_len_min, args.gen_len + 1)
    drawn = rng.choices(generations, weights=generations, k=count)
    longest = args.prompt_len + args.gen_len - args.decode_steps
    return [min(longest, max(1, args.prompt_len + rng.randrange(g) - args.decode_steps // 2))
            for g in drawn]


def job_steady_state_prompt_lens(args, count, seed):
    """Prompt lengths that put `count` sequences at the contexts a refilled batch of the job in
    --lengths holds, half the decode window early."""
    rng = random.Random(seed)
    prompts, generations = job_lengths(args.lengths)
    drawn_prompts = rng.choices([l for l, _ in prompts], weights=[c for _, c in prompts], k=count)
    drawn = rng.choices([l for l, _ in generations], weights=[l * c for l, c in generations],
                        k=count)
    longest = max_context(args) - args.decode_steps
    return [min(longest, max(1, p + rng.randrange(g) - args.decode_steps // 2))
            for p, g in zip(drawn_prompts, drawn)]


def run_case(args, case, batch):
    """moe-run on the plan of `case` (at `batch`, when a sweep planned it): its results entry."""
    name = plan_name(case, batch)
    explain = explanation(args, case, batch)
    batch = explain["decision"]["resident_batch"]
    model = CASES[case].model
    prompts = args.out / f"{name}.prompts.jsonl"
    if args.lengths or args.gen_len_min:
        lengths = (job_steady_state_prompt_lens if args.lengths else steady_state_prompt_lens)(
            args, batch, PROMPT_SEED)
        write_prompts(prompts, batch, lengths, vocab_size(model), args.decode_steps,
                      seed=PROMPT_SEED)
        prompt_len = sum(lengths) / len(lengths)
    else:
        prompt_len = measured_prompt_len(args)
        write_prompts(prompts, batch, prompt_len, vocab_size(model), args.decode_steps,
                      seed=PROMPT_SEED)
    stats_path = args.out / f"{name}.stats.json"
    command = [tool(args, "moe-run"), str(args.out / f"{name}.moeplan"), "--synthetic-seed", "1",
               "--prompts", str(prompts), "--output", str(args.out / f"{name}.answers.jsonl"),
               "--stats", str(stats_path), "--backend", args.backend, "--batch", str(batch),
               "--max-context", str(max_context(args)), "--progress"]
    if args.trace:
        command += ["--trace", str(args.out / f"{name}.trace.json")]
    log(f"{name}: {' '.join(command)}")
    started = time.time()
    log_path = args.out / f"{name}.log"
    failed = {"case": name, "model": model, "budget": CASES[case].budget, "B": batch}
    stats_path.unlink(missing_ok=True)
    note = None
    with open(log_path, "w") as log_file:
        try:
            done = subprocess.run(command, timeout=args.timeout, stderr=log_file)
            if done.returncode != 0:
                lines = [l for l in log_path.read_text().replace("\r", "\n").splitlines()
                         if l.strip()]
                return failed | {"error": f"moe-run exited {done.returncode}: "
                                          f"{lines[-1] if lines else ''}"}
        except subprocess.TimeoutExpired:
            # moe-run writes its stats once every answer is out; freeing a large pinned
            # host pool at exit can take longer than the rest of the limit.
            if not stats_path.is_file():
                return failed | {"error": f"timed out after {args.timeout} s"}
            note = f"moe-run wrote its stats, then was still exiting at the {args.timeout:g} s limit"
            log(f"{name}: {note}")
    entry = summarize(case, name, batch, prompt_len, json.loads(stats_path.read_text()), explain)
    entry["wall_seconds"] = time.time() - started
    if note:
        entry["note"] = note
    return entry


# Measured decode stages per step next to the plan's (both named by the planner's stages),
# grouped where the backend times one op for what the plan prices as several (attention waits
# for its KV loads inside its op), times apart what the plan prices with an op (the experts'
# wait for their streamed weights) or times what the plan folds into each module (residuals).
STAGE_GROUPS = {
    "attention + KV load": (["attention"], ["attention", "KV load"]),
    "routed experts + weight copy": (["routed experts", "weight wait"],
                                     ["routed experts", "weight copy"]),
    "shared + dense MLPs": (["shared experts", "dense MLP"], ["shared experts", "dense MLP"]),
    "LM head": (["LM head"], ["LM head"]),
    "router + norms + residuals": (["router", "norm", "residual", "embedding"],
                                   ["router", "norm", "embedding"]),
}


def summarize(case, name, batch, prompt_len, stats, explain):
    """One results entry from moe-run's stats and the plan's explanation."""
    report = explain["report"]
    steps = stats["decode"]["steps"]
    measured_step = stats["decode"]["seconds_per_step"]
    roofline = report["roofline"]["seconds"]
    predicted_step = report["decode_step_seconds"]
    decode_stages = stats["stage_seconds"].get("decode", {})
    stages = {group: {"measured_s": sum(decode_stages.get(s, 0.0) for s in ours) / max(steps, 1),
                      "predicted_s": sum(report["decode_stage_seconds"].get(s, 0.0) for s in plans)}
              for group, (ours, plans) in STAGE_GROUPS.items()}
    return {
        "case": name, "model": CASES[case].model, "budget": CASES[case].budget,
        "B": batch, "prompt_len": prompt_len, "decode_steps": steps,
        "kv_dtype": CASES[case].kv_dtype, "weight_dtype": CASES[case].weight_dtype,
        "cpu_attention_share": explain["decision"].get("cpu_attention_share", 0.0),
        "prepare_seconds": stats.get("prepare_seconds"),
        "prefill_tokens_per_second": stats["prefill"]["tokens_per_second"],
        "decode_tokens_per_second": stats["decode"]["tokens_per_second"],
        "new_tokens_per_second": stats["new_tokens_per_second"],
        "predicted_job_tokens_per_second": report.get("job_tokens_per_second"),
        "measured_step_seconds": measured_step,
        "predicted_step_seconds": predicted_step,
        "roofline_step_seconds": roofline,
        "roofline_bound": report["roofline"]["bound"],
        "fraction_of_roofline": roofline / measured_step if measured_step else None,
        "predicted_over_measured": predicted_step / measured_step if measured_step else None,
        "predicted_decode_tokens_per_second": report["decode_tokens_per_second"],
        "predicted_prefill_tokens_per_second": report["prefill_tokens_per_second"],
        "h2d_bytes_per_decode_step": stats["bytes_moved"]["host_to_device_per_decode_step"],
        "predicted_h2d_bytes_per_decode_step": report["decode_bytes_per_step"]["h2d_weights"]
        + report["decode_bytes_per_step"]["h2d_kv"],
        "stage_seconds": stats["stage_seconds"],
        "predicted_stage_seconds_per_step": report["decode_stage_seconds"],
        "predicted_prefill_stage_seconds": report.get("prefill_stage_seconds", {}),
        "stages": stages,
        "memory": stats["memory"],
    }


def card_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip() or "no GPU"
    except FileNotFoundError:
        return "no GPU"


def run_transformers(args, case, batch):
    """bench/hf_generate.py on `case` at static batch `batch`: its result, or an error entry."""
    model = CASES[case].model
    name = f"{case}-hf-b{batch}"
    prompts = args.out / f"{name}.prompts.jsonl"
    write_prompts(prompts, batch, measured_prompt_len(args), vocab_size(model), args.decode_steps,
                  seed=PROMPT_SEED)
    result_path = args.out / f"{name}.json"
    command = [sys.executable, str(ROOT / "bench/hf_generate.py"),
               "--config", str(ROOT / "models" / model / "config.json"), "--prompts", str(prompts),
               "--batch", str(batch), "--gen-len", str(args.decode_steps), "--json", str(result_path)]
    if not CASES[case].resident:
        command += ["--gpu-mem-gib", f"{CASES[case].gpu_gib:g}"]
    if args.hf_max_seconds:
        command += ["--max-seconds", f"{args.hf_max_seconds:g}"]
    log(f"{name}: {' '.join(command)}")
    failed = {"tool": "transformers", "case": name, "model": model, "budget": CASES[case].budget,
              "batch": batch}
    result_path.unlink(missing_ok=True)
    with open(args.out / f"{name}.log", "w") as log_file:
        try:
            subprocess.run(command, timeout=args.timeout, stdout=log_file, stderr=subprocess.STDOUT)
        except subprocess.TimeoutExpired:
            return failed | {"error": f"timed out after {args.timeout} s"}
    if not result_path.is_file():
        return failed | {"error": f"no result; see {name}.log"}
    result = json.loads(result_path.read_text())
    result.update(case=name, budget=CASES[case].budget)
    return result


def print_table(results, args):
    window = f"decode window of {args.decode_steps} steps"
    if args.lengths:
        lengths = f"the lengths of {args.lengths} ({window} at the steady state's contexts)"
    elif args.gen_len_min:
        lengths = (f"prompt {args.prompt_len} + {args.gen_len_min}..{args.gen_len} ({window} at "
                   f"the steady state's contexts)")
    else:
        lengths = f"prompt {args.prompt_len} + {args.gen_len} ({window} at the mean context)"
    print(f"\n{results['card']}, {lengths}, synthetic bf16 weights")
    print(f"{'case':28s} {'B':>5s} {'prefill/s':>10s} {'decode/s':>9s} {'pred/s':>8s} "
          f"{'step s':>7s} {'pred s':>7s} {'roof':>6s} {'GB/step':>8s} {'new/s':>8s} {'job pred':>8s}")
    for r in results["moe_run"]:
        if "error" in r:
            print(f"{r['case']:28s} {r['error']}")
            continue
        fraction = r["fraction_of_roofline"]
        print(f"{r['case']:28s} {r['B']:5d} {r['prefill_tokens_per_second']:10.0f} "
              f"{r['decode_tokens_per_second']:9.1f} {r['predicted_decode_tokens_per_second']:8.1f} "
              f"{r['measured_step_seconds']:7.3f} {r['predicted_step_seconds']:7.3f} "
              f"{(f'{100 * fraction:5.1f}%' if fraction else '   -  '):>6s} "
              f"{r['h2d_bytes_per_decode_step'] / 1e9:8.2f} {r['new_tokens_per_second']:8.1f} "
              f"{r['predicted_job_tokens_per_second'] or 0:8.1f}")
    for r in results["transformers"]:
        if "error" in r:
            print(f"{r['case']:28s} {r['error']}")
            continue
        stopped = (f"  (stopped after {r['generated_per_sequence']} of {r['gen_len']} tokens)"
                   if r.get("stopped_early") else "")
        print(f"{r['case']:28s} {r['batch']:5d} {r.get('prefill_tokens_per_second', 0):10.0f} "
              f"{r.get('decode_tokens_per_second', 0):9.1f} {'':8s} {'':7s} {'':7s} {'':6s} {'':8s} "
              f"{r['new_tokens_per_second']:8.1f}{stopped}")
    # New tokens over wall time, prefill included: the measure a user of either tool sees.
    for r in results["moe_run"]:
        peers = [t for t in results["transformers"] if "error" not in t
                 and (t["model"], t["budget"]) == (r.get("model"), r.get("budget"))]
        if "error" not in r and peers:
            best = max(peers, key=lambda t: t["new_tokens_per_second"])
            print(f"{r['case']}: {r['new_tokens_per_second'] / best['new_tokens_per_second']:.1f}x "
                  f"transformers' best ({best['new_tokens_per_second']:.1f} new tok/s at batch {best['batch']})")


def run(args):
    tool(args, "moe-run")
    results = {"card": card_name(), "prompt_len": args.prompt_len, "gen_len": args.gen_len,
               "gen_len_min": args.gen_len_min,
               "lengths": str(args.lengths) if args.lengths else None,
               "decode_steps": args.decode_steps,
               "moe_run": [], "transformers": []}

    def save():
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    for case in args.cases:
        for batch in args.batches or [None]:
            unfit = args.out / f"{plan_name(case, batch)}.error"
            if unfit.is_file():
                log(f"{plan_name(case, batch)}: skipped, no plan: {unfit.read_text().strip()}")
                continue
            results["moe_run"].append(run_case(args, case, batch))
            save()
        for batch in args.hf_batches:
            results["transformers"].append(run_transformers(args, case, batch))
            save()
    print_table(results, args)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["plan", "run"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--bin", type=Path, default=ROOT / "build/bin")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--profile", type=Path, default=PROFILE)
    p.add_argument("--host-mem", type=float, default=120, help="host budget in GiB")
    p.add_argument("--gpu-mem", type=float, default=None,
                   help="GPU budget in GiB for every case (plan; default: the case's)")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--gen-len", type=int, default=256)
    p.add_argument("--gen-len-min", type=int, default=0,
                   help="generations spread evenly from this up to --gen-len (0: all --gen-len)")
    p.add_argument("--lengths", type=Path, default=None,
                   help="a job's prompt and generation lengths (moe-run --describe-prompts's "
                        "JSON) instead of --prompt-len, --gen-len and --gen-len-min")
    p.add_argument("--decode-steps", type=int, default=16, help="decode steps measured")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help="a sweep: plan and run each case at each of these resident batches")
    p.add_argument("--backend", default="cuda", choices=["cuda", "cpu", "auto"])
    p.add_argument("--trace", action="store_true",
                   help="run: write each case's first decode step, as run, beside the plan's "
                        "timeline (DIR/<case>.trace.json, moe-run --trace)")
    p.add_argument("--hf-batches", type=int, nargs="+", default=[],
                   help="also run HuggingFace transformers on each case at these static batches")
    p.add_argument("--hf-max-seconds", type=float, default=None,
                   help="stop each transformers generate after this many seconds (its rate is then "
                        "over the tokens it generated)")
    p.add_argument("--timeout", type=float, default=540, help="seconds per moe-run or transformers run")
    args = p.parse_args()
    if args.lengths and args.gen_len_min:
        p.error("--lengths gives the generations' distribution: --gen-len-min is not for it")
    plan(args) if args.stage == "plan" else run(args)


if __name__ == "__main__":
    sys.exit(main())
