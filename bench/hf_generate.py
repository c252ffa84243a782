#!/usr/bin/env python3
"""HuggingFace transformers baseline for the moe benchmark.

Builds a model from an HF config.json with random bf16 weights at the config's full shape, then
times one static-batch greedy model.generate over the first --batch prompts of a JSONL file.

  * Resident (no --gpu-mem-gib): the whole model on cuda:0.
  * Offloaded (--gpu-mem-gib X): accelerate's device map with an X GiB GPU budget; the decoder
    layers that do not fit stay in host memory and are copied to the GPU for every forward, as
    transformers' from_pretrained(device_map="auto", max_memory=...) does.

Every sequence generates exactly --gen-len tokens (EOS disabled), or as many as --max-seconds
allows (then "stopped_early" is true and the rates are over the tokens generated). The result, or
the error, is written as one JSON object to --json; the exit code is 1 on any failure.

Example:
  python3 bench/hf_generate.py --config models/qwen3-30b-a3b/config.json \
      --prompts prompts.jsonl --batch 64 --gen-len 256 --gpu-mem-gib 24 --json hf.json
"""
import argparse
import json
import os
import platform
import resource
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import accelerate
import torch
import transformers
from accelerate import dispatch_model, infer_auto_device_map, init_empty_weights
from transformers import (AutoConfig, AutoModelForCausalLM, GenerationConfig, StoppingCriteria,
                          StoppingCriteriaList)

GiB = 1 << 30
INIT_STD = 0.02
WARMUP_TOKENS = 4


def log(msg):
    print(f"[hf_generate {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="HF config.json")
    p.add_argument("--prompts", required=True, type=Path,
                   help='JSONL, one {"input_ids": [...]} per line, all of the same length')
    p.add_argument("--batch", required=True, type=int, help="static batch size (the first BATCH prompts)")
    p.add_argument("--gen-len", required=True, type=int, help="new tokens per prompt")
    p.add_argument("--gpu-mem-gib", type=float, default=None,
                   help="GPU budget for weights in GiB; enables accelerate CPU offload. KV cache and "
                        "activations come on top of it. Absent: the whole model resident on the GPU")
    p.add_argument("--host-mem-gib", type=float, default=None,
                   help="host budget for offloaded weights in GiB (default: 90%% of physical memory)")
    p.add_argument("--seed", type=int, default=0, help="weights seed")
    p.add_argument("--json", required=True, type=Path, help="where to write the results")
    p.add_argument("--attn-impl", default="sdpa", help="attention implementation (falls back to eager)")
    p.add_argument("--experts-impl", default=None, choices=["eager", "grouped_mm", "batched_mm"],
                   help="transformers experts implementation (default: transformers' own default)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop the timed generate after this many seconds (a slow offloaded baseline "
                        "then reports its rate over the tokens it generated)")
    p.add_argument("--no-prefill-probe", action="store_true",
                   help="skip the separate prefill-only forward over the batch")
    args = p.parse_args(argv)
    if args.batch < 1 or args.gen_len < 1:
        p.error("--batch and --gen-len must be >= 1")
    if args.gpu_mem_gib is not None and args.gpu_mem_gib <= 0:
        p.error("--gpu-mem-gib must be > 0")
    if args.max_seconds is not None and args.max_seconds <= 0:
        p.error("--max-seconds must be > 0")
    return args


def load_prompts(path, batch, vocab_size):
    """The first `batch` prompts as a [batch, prompt_len] int64 tensor (on the CPU)."""
    prompts = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            ids = json.loads(line).get("input_ids")
            if not isinstance(ids, list) or not ids:
                raise ValueError(f"{path}:{line_no}: no non-empty \"input_ids\" list")
            prompts.append(ids)
            if len(prompts) == batch:
                break
    if len(prompts) < batch:
        raise ValueError(f"{path} has {len(prompts)} prompts, --batch needs {batch}")
    lengths = {len(p) for p in prompts}
    if len(lengths) != 1:
        raise ValueError(f"prompts of a batch must have one length, got lengths {sorted(lengths)}")
    ids = torch.tensor(prompts, dtype=torch.int64)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"prompt token ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
    return ids


def build_empty_model(cfg, attn_impl, experts_impl):
    """The model with every parameter on the meta device; returns (model, attention implementation used).

    init_empty_weights(include_buffers=False) puts parameters on meta but leaves buffers real, so
    the buffers the model computes in __init__ (rotary inv_freq, DeepSeek-V3's
    e_score_correction_bias, ...) keep their values; a plain `with torch.device("meta")` would lose
    them. Building on meta also skips torch's slow CPU initialisation of 30 B parameters.
    """
    kwargs = {"dtype": torch.bfloat16}
    if experts_impl is not None:
        kwargs["experts_implementation"] = experts_impl
    try:
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_impl, **kwargs)
    except (ValueError, ImportError) as e:
        if attn_impl == "eager":
            raise
        log(f"attn_implementation={attn_impl!r} rejected ({type(e).__name__}: {e}); falling back to eager")
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", **kwargs)
    model.eval()
    return model, model.config._attn_implementation


def device_name(device):
    """accelerate names GPUs by index; use torch's spelling ("cuda:0") everywhere in the report."""
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def placement(device_map, tensor_name):
    """Device of a parameter: the device-map entry with the longest module prefix of its name."""
    parts = tensor_name.split(".")
    for i in range(len(parts), -1, -1):
        prefix = ".".join(parts[:i])
        if prefix in device_map:
            return device_name(device_map[prefix])
    raise KeyError(f"{tensor_name} is not covered by the device map")


def offload_device_map(model, no_split, gpu_gib, host_gib):
    """accelerate's device map for a GPU budget of gpu_gib and a host budget of host_gib.

    This is the computation from_pretrained(device_map="auto", max_memory=...) runs on one GPU:
    infer_auto_device_map fills cuda:0 in module order up to the budget (keeping room for the
    largest decoder layer, which is where offloaded layers are streamed to) and puts the rest on
    the CPU, never splitting a `no_split` class.
    """
    max_memory = {0: f"{gpu_gib:g}GiB", "cpu": f"{host_gib:g}GiB"}
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)
    if "disk" in device_map.values():
        raise RuntimeError(f"the model does not fit a {gpu_gib:g} GiB GPU + {host_gib:g} GiB host budget "
                           "(accelerate wants disk offload, which this benchmark does not do)")
    return device_map


@torch.no_grad()
def materialise(model, device_map, seed):
    """Replace every meta parameter by a seeded random one on the device the map gives it.

    Values are drawn on the GPU (fast, and independent of the placement): N(0, INIT_STD) for
    matrices and other weights, ones for norm weights, zeros for biases; parameters on "cpu" are
    then copied to host memory. Tied parameters stay tied (one new tensor per original).
    """
    gen = torch.Generator(device="cuda")
    gen.manual_seed(seed)
    replaced = {}  # id(meta param) -> (meta param, new param); the meta param is kept so its id stays unique
    done_bytes, next_report = 0, 8 * GiB
    for module_name, module in model.named_modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) in replaced:
                module._parameters[name] = replaced[id(param)][1]
                continue
            full_name = f"{module_name}.{name}" if module_name else name
            if not param.is_meta:
                raise RuntimeError(f"{full_name} was not built on the meta device")
            value = torch.empty(param.shape, dtype=param.dtype, device="cuda")
            if name.endswith("bias"):
                value.zero_()
            elif is_norm and name == "weight":
                value.fill_(1.0)
            else:
                value.normal_(0.0, INIT_STD, generator=gen)
            value = value.to(placement(device_map, full_name))
            new = torch.nn.Parameter(value, requires_grad=False)
            module._parameters[name] = new
            replaced[id(param)] = (param, new)
            done_bytes += value.numel() * value.element_size()
            if done_bytes >= next_report:
                log(f"  materialised {done_bytes / GiB:.1f} GiB")
                next_report += 8 * GiB
    on_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if on_meta:
        raise RuntimeError(f"{len(on_meta)} tensors are still on the meta device, e.g. {on_meta[:5]}")
    torch.cuda.synchronize()


class ProgressLog(StoppingCriteria):
    """A stopping criterion that logs progress, times the first new token and stops only once
    max_seconds have passed since `start`.

    generate calls it once per generated token; the single synchronize at the first call pins the
    end of prefill + first token without adding a sync per decode step (generate's own check of
    the finished sequences keeps the host in step with the GPU).
    """

    def __init__(self, prompt_len, gen_len, max_seconds=None):
        self.prompt_len = prompt_len
        self.gen_len = gen_len
        self.max_seconds = max_seconds
        self.every = max(1, gen_len // 10)
        self.start = None
        self.first_token_time = None

    def __call__(self, input_ids, scores, **kwargs):
        step = input_ids.shape[1] - self.prompt_len
        elapsed = time.perf_counter() - self.start
        if self.first_token_time is None:
            torch.cuda.synchronize()
            self.first_token_time = time.perf_counter()
            log(f"  first token after {self.first_token_time - self.start:.2f} s")
        elif step % self.every == 0 or step == self.gen_len:
            log(f"  token {step}/{self.gen_len} at {elapsed:.2f} s")
        stop = self.max_seconds is not None and elapsed >= self.max_seconds and step < self.gen_len
        if stop:
            log(f"  stopped after token {step}/{self.gen_len}: {elapsed:.2f} s >= --max-seconds")
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def generation_config(new_tokens):
    # EOS and padding off and min_new_tokens = max_new_tokens: every sequence generates exactly
    # new_tokens tokens whatever the random model predicts.
    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            eos_token_id=None, pad_token_id=None, use_cache=True)


def generate(model, input_ids, new_tokens, progress=None):
    """New tokens per sequence: new_tokens, or fewer where `progress` stopped generate early."""
    criteria = StoppingCriteriaList([progress]) if progress is not None else None
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         generation_config=generation_config(new_tokens), stopping_criteria=criteria)
    generated = out.shape[1] - input_ids.shape[1]
    may_stop = progress is not None and progress.max_seconds is not None
    if out.shape[0] != input_ids.shape[0] or not (0 < generated <= new_tokens) or (
            generated < new_tokens and not may_stop):
        raise RuntimeError(f"generate returned shape {tuple(out.shape)}, expected "
                           f"{(input_ids.shape[0], input_ids.shape[1] + new_tokens)}")
    return generated


@torch.no_grad()
def prefill_probe(model, input_ids):
    """Seconds of one forward over the prompts with a fresh KV cache, as generate's prefill does."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=True, logits_to_keep=1)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del out
    return seconds


def run(args, result):
    """Fills `result` as it goes, so that a failure still reports what was known."""
    phase = "setup"
    try:
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device")
        result["device_name"] = torch.cuda.get_device_name(0)

        phase = "config and prompts"
        # AutoConfig takes the directory (the tested path); a config.json carrying an auto_map
        # (DeepSeek-V2) still resolves to transformers' native class.
        src = args.config.parent if args.config.name == "config.json" else args.config
        cfg = AutoConfig.from_pretrained(src, trust_remote_code=False)
        result["architecture"] = (cfg.architectures or [type(cfg).__name__])[0]
        input_ids = load_prompts(args.prompts, args.batch, cfg.vocab_size)
        prompt_len = input_ids.shape[1]
        result["prompt_len"] = prompt_len

        phase = "build"
        t_setup = time.perf_counter()
        model, attn_used = build_empty_model(cfg, args.attn_impl, args.experts_impl)
        result["attn_implementation"] = attn_used
        result["experts_implementation"] = getattr(model.config, "_experts_implementation", None)
        # The classes device maps must keep whole: every submodel's _no_split_modules (transformers
        # 5.17 has no public accessor), at least the decoder layer's.
        no_split = sorted({name for m in model.modules()
                           for name in (getattr(m, "_no_split_modules", None) or [])}
                          | {type(model.model.layers[0]).__name__})
        params = dict(model.named_parameters())
        result["n_params"] = sum(p.numel() for p in params.values())
        result["param_bytes"] = sum(p.numel() * p.element_size() for p in params.values())
        log(f"{result['architecture']}: {result['n_params'] / 1e9:.2f} B parameters, "
            f"{result['param_bytes'] / GiB:.1f} GiB bf16; attn={attn_used} "
            f"experts={result['experts_implementation']} no_split={no_split}")

        phase = "device map"
        if args.gpu_mem_gib is None:
            device_map = {"": 0}
        else:
            host_gib = args.host_mem_gib
            if host_gib is None:
                host_gib = round(0.9 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1)
            result["host_budget_gib"] = host_gib
            device_map = offload_device_map(model, no_split, args.gpu_mem_gib, host_gib)
        bytes_by_device = Counter()
        for name, p in params.items():
            bytes_by_device[placement(device_map, name)] += p.numel() * p.element_size()
        layers_by_device = Counter(placement(device_map, name) for name, m in model.named_modules()
                                   if type(m).__name__ in no_split)
        result["device_map_entries"] = dict(Counter(device_name(d) for d in device_map.values()))
        result["decoder_layers_by_device"] = dict(layers_by_device)
        result["param_bytes_by_device"] = dict(bytes_by_device)
        log(f"placement: layers {dict(layers_by_device)}, "
            f"GiB {({d: round(b / GiB, 2) for d, b in bytes_by_device.items()})}")
        del params

        phase = "materialise weights"
        materialise(model, device_map, args.seed)
        if "cpu" in bytes_by_device:
            # dispatch_model keeps the "cpu" weights in host memory and attaches accelerate's
            # AlignDevicesHook to each offloaded module: before its forward the weights are copied
            # to cuda:0, after it they are dropped again (the path from_pretrained's device_map
            # offload takes). preload_module_classes = the decoder layer classes makes each
            # offloaded layer load as a whole at the start of its forward instead of per leaf
            # module: DeepseekV2Moe reads self.gate.weight without calling self.gate, so per-leaf
            # hooks would leave that weight on meta. The bytes copied per forward are the same,
            # and infer_auto_device_map already reserved one decoder layer of GPU memory for it.
            dispatch_model(model, device_map=device_map, skip_keys=model._skip_keys_device_placement,
                           preload_module_classes=no_split)
        else:
            model.to("cuda:0")  # the buffers; parameters are there already
        result["setup_seconds"] = time.perf_counter() - t_setup
        log(f"model ready in {result['setup_seconds']:.1f} s, "
            f"GPU allocated {torch.cuda.memory_allocated() / GiB:.1f} GiB")

        input_ids = input_ids.to("cuda:0")
        phase = "warm-up generate"
        generate(model, input_ids[: min(args.batch, 2)], WARMUP_TOKENS)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

        phase = f"generate (batch {args.batch})"
        log(f"timed generate: batch {args.batch}, prompt {prompt_len}, {args.gen_len} new tokens")
        progress = ProgressLog(prompt_len, args.gen_len, args.max_seconds)
        torch.cuda.synchronize()
        progress.start = start = time.perf_counter()
        generated = generate(model, input_ids, args.gen_len, progress)
        torch.cuda.synchronize()
        end = time.perf_counter()
        wall = end - start
        new_tokens = args.batch * generated
        result.update(new_tokens=new_tokens, generated_per_sequence=generated,
                      stopped_early=generated < args.gen_len, wall_seconds=wall,
                      new_tokens_per_second=new_tokens / wall,
                      first_token_seconds=progress.first_token_time - start,
                      gpu_peak_bytes=torch.cuda.max_memory_allocated())
        if generated > 1:
            # Tokens 2..generated, after the prefill and the first token.
            decode = end - progress.first_token_time
            result.update(decode_seconds=decode, decode_tokens_per_second=args.batch * (generated - 1) / decode)

        if not args.no_prefill_probe:
            phase = "prefill probe"
            try:
                seconds = prefill_probe(model, input_ids)
                result.update(prefill_seconds=seconds, prefill_tokens_per_second=args.batch * prompt_len / seconds)
            except torch.cuda.OutOfMemoryError as e:
                result["prefill_error"] = f"CUDA out of memory: {str(e).splitlines()[0]}"
    except torch.cuda.OutOfMemoryError as e:
        result["error"] = f"CUDA out of memory during {phase}: {str(e).splitlines()[0]}"
    except Exception as e:
        result["error"] = f"{type(e).__name__} during {phase}: {e}"
        result["traceback"] = traceback.format_exc()  # in the JSON, so that stderr keeps one line
    finally:
        result["host_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None):
    args = parse_args(argv)
    result = {
        "tool": "transformers",
        "model": args.config.resolve().parent.name,
        "config": str(args.config),
        "batch": args.batch,
        "prompt_len": None,
        "gen_len": args.gen_len,
        "gpu_budget_gib": args.gpu_mem_gib,
        "budget": "resident" if args.gpu_mem_gib is None else f"{args.gpu_mem_gib:g} GiB",
        "seed": args.seed,
        "attn_implementation_requested": args.attn_impl,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__},
    }
    run(args, result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if "error" in result:
        print(f"hf_generate: {result['model']} batch {args.batch} ({result['budget']}): {result['error']}",
              file=sys.stderr, flush=True)
        return 1
    summary = (f"{result['model']} B={args.batch} prompt={result['prompt_len']} "
               f"gen={result['generated_per_sequence']}/{args.gen_len} "
               f"{result['budget']}: {result['new_tokens_per_second']:.1f} new tok/s "
               f"(wall {result['wall_seconds']:.2f} s")
    if "decode_tokens_per_second" in result:
        summary += f", decode {result['decode_tokens_per_second']:.1f} tok/s"
    if "prefill_tokens_per_second" in result:
        summary += f", prefill {result['prefill_tokens_per_second']:.0f} tok/s"
    summary += (f"), GPU peak {result['gpu_peak_bytes'] / GiB:.1f} GiB, "
                f"host RSS {result['host_peak_rss_bytes'] / GiB:.1f} GiB, attn {result['attn_implementation']}")
    print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
