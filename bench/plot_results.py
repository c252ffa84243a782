#!/usr/bin/env python3
"""Plots of a moe benchmark results JSON (written by the benchmark driver).

  decode_vs_batch.png         decode tokens/s against the resident batch B, one series per
                              (model, budget) of results["moe_run"], the plan's roofline bound
                              (B / roofline_step_seconds) dashed in the series' colour, and the
                              transformers baseline (results["transformers"]) as "x" markers.
  predicted_vs_measured.png   per-stage measured vs predicted seconds for the moe_run entries
                              that carry "stages" (at most 6 runs, one subplot each).
  host_attention_sweep.png    decode tokens/s, measured and predicted, against the host's share
                              of decode attention (ω, "cpu_attention_share"), one series per
                              (model, budget) run at two or more shares, each point marked with
                              its plan's B (the planner sizes B per ω); absent without one.
  job_vs_batch.png            a sweep of whole generations (decode_steps = gen_len): new tokens/s
                              measured and the plan's job prediction against B, one series per
                              (model, budget) with two or more B; absent without one.
  dtype_comparison.png        per (model, budget) run in two or more formats (entries'
                              "kv_dtype" and "weight_dtype"): decode tokens/s and the bytes a
                              decode step moves to the GPU, measured (bars, each with its B) and
                              predicted (markers); absent without one.

Missing fields are skipped with a warning on stderr. matplotlib is imported only when plotting.

Usage:
  python3 bench/plot_results.py --results results.json --out-dir plots/
  python3 bench/plot_results.py --self-test --out-dir /tmp/plots
"""
import argparse
import json
import math
import sys
from pathlib import Path

MAX_STAGE_PLOTS = 6
DISPLAY_NAMES = {
    "qwen3-30b-a3b": "Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen3-235B-A22B",
    "deepseek-v2-lite": "DeepSeek-V2-Lite",
    "deepseek-v2": "DeepSeek-V2",
    "deepseek-v3": "DeepSeek-V3",
    "mixtral-8x7b": "Mixtral-8x7B",
    "mixtral-8x22b": "Mixtral-8x22B",
    "qwen1.5-moe-a2.7b": "Qwen1.5-MoE-A2.7B",
    "gpt-oss-20b": "gpt-oss-20b",
    "gpt-oss-120b": "gpt-oss-120b",
}


def warn(msg):
    print(f"plot_results: warning: {msg}", file=sys.stderr)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def number(entry, key, where):
    """entry[key] as a positive finite float, or None (with a warning) when absent or unusable."""
    value = entry.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    warn(f"{where}: {key!r} is {'missing' if value is None else f'unusable ({value!r})'}; skipped")
    return None


def series_label(model, budget):
    name = DISPLAY_NAMES.get(model, model)
    return f"{name}, resident" if budget == "resident" else f"{name}, {budget} offload"


def runs(results, key):
    entries = results.get(key)
    if entries is None:
        warn(f"no {key!r} list in the results")
        return []
    if not isinstance(entries, list):
        warn(f"{key!r} is not a list; ignored")
        return []
    return [e for e in entries if isinstance(e, dict)]


def title_suffix(results):
    card = results.get("card", "unknown card")
    return f"{card}, prompt {results.get('prompt_len', '?')} / gen {results.get('gen_len', '?')} tokens"


def plot_decode_vs_batch(results, out_dir):
    """decode_vs_batch.png; returns its path, or None when there is nothing to plot."""
    series = {}  # (model, budget) -> [(B, measured tok/s, roofline tok/s or None)]
    for i, run in enumerate(runs(results, "moe_run")):
        where = f"moe_run[{i}]"
        model, budget = run.get("model"), run.get("budget")
        if model is None or budget is None:
            warn(f"{where}: no model/budget; skipped")
            continue
        batch = number(run, "B", where)
        measured = number(run, "decode_tokens_per_second", where)
        if batch is None or measured is None:
            continue
        step = number(run, "roofline_step_seconds", where)
        series.setdefault((model, budget), []).append((batch, measured, batch / step if step else None))

    baseline = {}  # (model, budget) -> [(batch, new tok/s)]
    stopped = set()  # series with a generate stopped early (hf_generate --max-seconds)
    for i, run in enumerate(runs(results, "transformers")):
        where = f"transformers[{i}]"
        if "error" in run:
            warn(f"{where}: failed run ({run['error']}); not plotted")
            continue
        model, budget = run.get("model"), run.get("budget")
        if model is None or budget is None:
            warn(f"{where}: no model/budget; skipped")
            continue
        batch = number(run, "batch", where)
        rate = number(run, "new_tokens_per_second", where)
        if batch is not None and rate is not None:
            baseline.setdefault((model, budget), []).append((batch, rate))
            if run.get("stopped_early"):
                stopped.add((model, budget))

    if not series and not baseline:
        warn("nothing to plot for decode_vs_batch.png")
        return None

    plt = pyplot()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = list(series) + [k for k in baseline if k not in series]
    colour = {k: colours[i % len(colours)] for i, k in enumerate(keys)}

    fig, ax = plt.subplots(figsize=(10, 6.5))
    for key, points in series.items():
        points.sort()
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], marker="o", color=colour[key], label=f"moe, {series_label(*key)}")
        roof = [(p[0], p[2]) for p in points if p[2] is not None]
        if roof:  # a lone point still shows, as an open marker
            ax.plot([r[0] for r in roof], [r[1] for r in roof], linestyle="--", marker="_", markersize=18,
                    markeredgewidth=2, color=colour[key], alpha=0.8)
    for key, points in baseline.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], linestyle="none", marker="x", markersize=9,
                markeredgewidth=2, color=colour[key],
                label=f"transformers, {series_label(*key)}" + (" (stopped early)" if key in stopped else ""))
    if any(p[2] is not None for points in series.values() for p in points):
        # One legend entry for all roofline lines (same colour as their series).
        ax.plot([], [], linestyle="--", marker="_", markersize=18, markeredgewidth=2, color="grey",
                label="plan roofline bound (B / roofline step)")

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("resident batch B (sequences)")
    ax.set_ylabel("tokens/s  (moe: decode;  transformers: new tokens / wall, prefill included)")
    ax.set_title(f"Decode throughput vs batch\n{title_suffix(results)}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = out_dir / "decode_vs_batch.png"
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def stage_runs(results):
    """[(title, [(stage, measured_s, predicted_s)])] of the moe_run entries that carry stages."""
    found = []
    for i, run in enumerate(runs(results, "moe_run")):
        stages = run.get("stages")
        if stages is None:
            continue
        where = f"moe_run[{i}]"
        if not isinstance(stages, dict):
            warn(f"{where}: 'stages' is not an object; skipped")
            continue
        rows = []
        for stage, times in stages.items():
            if not isinstance(times, dict):
                warn(f"{where}.stages[{stage!r}] is not an object; skipped")
                continue
            measured = number(times, "measured_s", f"{where}.stages[{stage!r}]")
            predicted = number(times, "predicted_s", f"{where}.stages[{stage!r}]")
            if measured is not None and predicted is not None:
                rows.append((stage, measured, predicted))
        if not rows:
            warn(f"{where}: no stage with both measured_s and predicted_s; skipped")
            continue
        title = f"{series_label(run.get('model', '?'), run.get('budget', '?'))}, B={run.get('B', '?')}"
        measured_step, predicted_step = run.get("measured_step_seconds"), run.get("predicted_step_seconds")
        if isinstance(measured_step, (int, float)) and isinstance(predicted_step, (int, float)):
            title += f"\nstep: measured {measured_step:.3g} s, predicted {predicted_step:.3g} s"
        found.append((title, rows))
    return found


def plot_predicted_vs_measured(results, out_dir):
    """predicted_vs_measured.png; returns its path, or None when no run has stages."""
    found = stage_runs(results)
    if not found:
        warn("no moe_run entry with stages; predicted_vs_measured.png not written")
        return None
    if len(found) > MAX_STAGE_PLOTS:
        warn(f"{len(found)} runs have stages; plotting the first {MAX_STAGE_PLOTS}")
        found = found[:MAX_STAGE_PLOTS]

    plt = pyplot()
    cols = min(3, len(found))
    rows = math.ceil(len(found) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.5 * rows), squeeze=False)
    width = 0.38
    for ax, (title, stages) in zip(axes.flat, found):
        xs = range(len(stages))
        measured = [s[1] for s in stages]
        predicted = [s[2] for s in stages]
        ax.bar([x - width / 2 for x in xs], measured, width, label="measured")
        ax.bar([x + width / 2 for x in xs], predicted, width, label="predicted")
        top = max(measured + predicted)
        for x, m, p in zip(xs, measured, predicted):
            ax.annotate(f"{m / p:.2f}x", (x, max(m, p)), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=8)
        ax.set_ylim(0, top * 1.15)  # room for the ratio labels
        ax.set_xticks(list(xs))
        ax.set_xticklabels([s[0] for s in stages], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("seconds")
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(found):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Per-stage time, measured vs predicted (labels: measured / predicted)\n{title_suffix(results)}")
    fig.tight_layout()
    path = out_dir / "predicted_vs_measured.png"
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_measured_and_predicted(series, path, title, xlabel, ylabel, predicted, log_x=False):
    """One line of measured and one of predicted values per (model, budget) of `series`
    ({key: {x: (measured, predicted, a point's note or None)}}), saved to `path`."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, ((model, budget), points) in enumerate(sorted(series.items())):
        color = f"C{index}"
        xs = sorted(points)
        label = series_label(model, budget)
        ax.plot(xs, [points[x][0] for x in xs], "o-", color=color, label=f"{label}: measured")
        ax.plot(xs, [points[x][1] for x in xs], "x--", color=color, label=f"{label}: {predicted}")
        for x in xs:
            if points[x][2]:
                ax.annotate(points[x][2], (x, points[x][0]), textcoords="offset points",
                            xytext=(4, -12), fontsize=7, color=color)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_host_attention_sweep(results, out_dir):
    """host_attention_sweep.png; returns its path, or None when no series has two shares."""
    series = {}
    for e in runs(results, "moe_run"):
        share = e.get("cpu_attention_share")
        measured = e.get("decode_tokens_per_second")
        predicted = e.get("predicted_decode_tokens_per_second")
        if not isinstance(share, (int, float)) or not measured or not predicted:
            continue
        key = (e.get("model", "?"), e.get("budget", "?"))
        series.setdefault(key, {})[float(share)] = (float(measured), float(predicted),
                                                    f"B {e.get('B', '?')}")
    series = {k: v for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    return plot_measured_and_predicted(
        series, out_dir / "host_attention_sweep.png",
        f"Decode attention on the host's cores\n{title_suffix(results)}",
        "host's share of decode attention ω (of the B sequences)", "decode tokens/s",
        "predicted")


def plot_job_vs_batch(results, out_dir):
    """job_vs_batch.png; returns its path, or None without a sweep of whole generations."""
    if results.get("decode_steps") != results.get("gen_len"):
        return None  # decode windows: new tokens/s is not a job's
    series = {}
    for e in runs(results, "moe_run"):
        measured = e.get("new_tokens_per_second")
        predicted = e.get("predicted_job_tokens_per_second")
        if not isinstance(e.get("B"), int) or not measured or not predicted:
            continue
        key = (e.get("model", "?"), e.get("budget", "?"))
        series.setdefault(key, {})[e["B"]] = (float(measured), float(predicted), None)
    series = {k: v for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    return plot_measured_and_predicted(
        series, out_dir / "job_vs_batch.png",
        f"The job's rate against B\n{title_suffix(results)}",
        "resident batch B (sequences)", "new tokens/s of the whole generation",
        "the plan's job prediction", log_x=True)


def format_label(entry):
    """How a run stores its KV and routed experts, e.g. "fp8 KV, fp8 experts"."""
    weights = entry.get("weight_dtype") or "declared"
    return f"{entry.get('kv_dtype') or 'bf16'} KV, {'bf16' if weights == 'declared' else weights} experts"


def plot_dtype_comparison(results, out_dir):
    """dtype_comparison.png; returns its path, or None when no (model, budget) has two formats."""
    groups = {}  # (model, budget) -> {format: entry}
    for e in runs(results, "moe_run"):
        if "kv_dtype" not in e and "weight_dtype" not in e:
            continue
        if not e.get("decode_tokens_per_second") or e.get("h2d_bytes_per_decode_step") is None:
            continue
        groups.setdefault((e.get("model", "?"), e.get("budget", "?")), {})[format_label(e)] = e
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.6 * len(groups)), squeeze=False)
    panels = (("decode_tokens_per_second", "predicted_decode_tokens_per_second", 1.0,
               "decode tokens/s"),
              ("h2d_bytes_per_decode_step", "predicted_h2d_bytes_per_decode_step", 1e-9,
               "GB to the GPU per decode step"))
    for row, ((model, budget), formats) in enumerate(sorted(groups.items())):
        names = list(formats)
        for col, (measured, predicted, scale, ylabel) in enumerate(panels):
            ax = axes[row][col]
            values = [float(formats[n].get(measured) or 0.0) * scale for n in names]
            bars = ax.bar(range(len(names)), values, color=[f"C{i}" for i in range(len(names))])
            for i, bar in enumerate(bars):
                ax.annotate(f"B {formats[names[i]].get('B', '?')}", (bar.get_x() + bar.get_width() / 2, 0),
                            textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
            marks = [(i, float(formats[n][predicted]) * scale) for i, n in enumerate(names)
                     if isinstance(formats[n].get(predicted), (int, float))]
            if marks:
                ax.plot([m[0] for m in marks], [m[1] for m in marks], "kx", label="predicted")
                ax.legend(fontsize=7)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, fontsize=7)
            ax.set_ylabel(ylabel)
            ax.grid(True, axis="y", alpha=0.3)
            ax.set_title(series_label(model, budget), fontsize=9)
    fig.suptitle(f"bf16 against fp8\n{title_suffix(results)}", fontsize=9)
    fig.tight_layout()
    path = out_dir / "dtype_comparison.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def synthetic_results():
    """A results dict in the driver's format, with one deliberately incomplete entry."""
    moe_run = []
    for model, budget, step0, per_seq in (("qwen3-30b-a3b", "24 GiB", 0.9, 9e-4),
                                          ("deepseek-v2-lite", "resident", 0.02, 4e-4)):
        for b in (16, 32, 64, 128, 256, 512, 1024):
            roof = step0 + per_seq * b
            measured = roof * (1.08 + 0.1 / math.log2(b))
            run = {"model": model, "budget": budget, "B": b, "decode_tokens_per_second": b / measured,
                   "prefill_tokens_per_second": 20000.0, "roofline_step_seconds": roof,
                   "predicted_step_seconds": roof * 1.02, "measured_step_seconds": measured,
                   "new_tokens_per_second": 0.6 * b / measured,
                   "predicted_job_tokens_per_second": 0.65 * b / (roof * 1.02)}
            if b in (64, 1024):
                run["stages"] = {
                    "attention": {"measured_s": 0.12 * measured, "predicted_s": 0.10 * roof},
                    "router": {"measured_s": 0.02 * measured, "predicted_s": 0.015 * roof},
                    "experts": {"measured_s": 0.70 * measured, "predicted_s": 0.75 * roof},
                    "weight_stream": {"measured_s": 0.14 * measured, "predicted_s": 0.13 * roof},
                    "lm_head": {"measured_s": 0.02 * measured, "predicted_s": 0.005 * roof},
                }
            moe_run.append(run)
    for kv, weights, b, rate, h2d in (("bf16", "declared", 1024, 2050.0, 27.0e9),
                                      ("fp8", "declared", 1024, 3000.0, 15.0e9),
                                      ("fp8", "fp8", 724, 9000.0, 0.0)):
        moe_run.append({"model": "deepseek-v2-lite", "budget": "24 GiB", "B": b, "kv_dtype": kv,
                        "weight_dtype": weights, "decode_tokens_per_second": rate,
                        "predicted_decode_tokens_per_second": rate * 1.1,
                        "h2d_bytes_per_decode_step": h2d, "predicted_h2d_bytes_per_decode_step": h2d})
    moe_run.append({"model": "qwen3-30b-a3b", "budget": "24 GiB", "B": 2048})  # no rates: warned, skipped
    transformers = [
        {"model": "qwen3-30b-a3b", "budget": "24 GiB", "batch": 16, "new_tokens_per_second": 4.1},
        {"model": "qwen3-30b-a3b", "budget": "24 GiB", "batch": 64, "new_tokens_per_second": 15.0},
        {"model": "qwen3-30b-a3b", "budget": "resident", "batch": 64, "new_tokens_per_second": 276.0},
        {"model": "deepseek-v2-lite", "budget": "resident", "batch": 64, "new_tokens_per_second": 310.0},
        {"model": "deepseek-v2-lite", "budget": "resident", "batch": 512,
         "error": "CUDA out of memory during generate (batch 512)"},
    ]
    return {"card": "NVIDIA H100 80GB HBM3", "prompt_len": 512, "gen_len": 256, "decode_steps": 256,
            "moe_run": moe_run, "transformers": transformers}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", type=Path, help="results JSON of the benchmark driver")
    source.add_argument("--self-test", action="store_true", help="render the plots from synthetic results")
    p.add_argument("--out-dir", required=True, type=Path, help="where the PNG files go")
    args = p.parse_args(argv)

    results = synthetic_results() if args.self_test else json.loads(args.results.read_text())
    if not isinstance(results, dict):
        p.error("the results JSON must be an object")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = [path for path in (plot_decode_vs_batch(results, args.out_dir),
                                 plot_predicted_vs_measured(results, args.out_dir),
                                 plot_host_attention_sweep(results, args.out_dir),
                                 plot_job_vs_batch(results, args.out_dir),
                                 plot_dtype_comparison(results, args.out_dir))
               if path is not None]
    for path in written:
        print(f"wrote {path}")
    if args.self_test and len(written) != 4:
        print("plot_results: self-test failed: expected 4 plots", file=sys.stderr)
        return 1
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
