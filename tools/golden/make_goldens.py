#!/usr/bin/env python3
"""Golden fixtures from HuggingFace transformers (the oracle) for the tiny MoE models.

For each tiny model config in models/tiny-*/config.json that has a native HF class
(all but tiny-yi-lightning) this script:

  1. builds the model with AutoConfig / AutoModelForCausalLM.from_config in fp32, eager
     attention and eager experts, eval mode, with a fixed seed;
  2. re-draws the weights so that every path carries signal (matrices N(0, 1/fan_in),
     embeddings N(0, 1)) and perturbs everything that HF initialises to a constant
     (norm weights 1 + 0.1 N, biases 0.1 N, DeepSeek-V3 e_score_correction_bias 0.1 N,
     GPT-OSS sinks N(0, 1) and router bias 0.5 N); see PERTURB below;
  3. saves it with save_pretrained into <out>/<name>/ (config.json + model.safetensors),
     checks the hub tensor names, strips HF-only persistent buffers (MiniMax lightning
     decay tables) when the reloaded model still reproduces the logits, and reloads the
     saved directory with from_pretrained to check it gives the same logits;
  4. runs 4 prompts of mixed lengths (seeded ids in [3, vocab)) one at a time: full prompt
     logits (one forward) and a greedy continuation of 8 tokens with model.generate
     (use_cache=True, EOS disabled) with the raw logits of every generated step;
  5. writes <out>/<name>/golden.json and <out>/<name>/golden_logits.safetensors.

It also writes the variant tiny-minimax-partial-rope: the same MiniMax weights and prompts with HF's
MiniMax patched to honour partial_rotary_factor (HF 5.17 rotates the whole head; see MiniMaxPartialRope),
and variants stored in a quantized hub format (STORED_FORMAT): tiny-gpt-oss-mxfp4 (MXFP4 experts),
tiny-deepseek-v3-fp8 and tiny-qwen3-moe-fp8 (FP8 E4M3 with 128 x 128 block scales).

It checks that greedy decoding is stable (one forward over prompt+continuation gives
the same argmax at every generated position), reports near-ties (top-2 logit gap
< 1e-4) and router near-ties, the expert-usage histogram per layer, and (on a GPU
machine) the CPU-vs-GPU difference of the same model.

Usage (GPU machine, or CPU):  python3 tools/golden/make_goldens.py --out test/golden
"""
import argparse
import copy
import inspect
import json
import math
import os
import re
import shutil
import sys
import time
import traceback
import zlib

import torch
import torch.nn as nn
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file

MODELS = ["tiny-mixtral", "tiny-deepseek-v2", "tiny-deepseek-v3", "tiny-qwen2-moe",
          "tiny-qwen3-moe", "tiny-minimax", "tiny-gpt-oss"]
# Variants: (name, source model dir, seed index of the source, patch). The seed index is the
# source's, so a variant has the same weights and prompts as its source model.
VARIANTS = [("tiny-minimax-partial-rope", "tiny-minimax", MODELS.index("tiny-minimax"), "minimax_partial_rope"),
            ("tiny-gpt-oss-mxfp4", "tiny-gpt-oss", MODELS.index("tiny-gpt-oss"), None),
            ("tiny-deepseek-v3-fp8", "tiny-deepseek-v3", MODELS.index("tiny-deepseek-v3"), None),
            ("tiny-qwen3-moe-fp8", "tiny-qwen3-moe", MODELS.index("tiny-qwen3-moe"), None)]
# Variants stored as hub checkpoints of a quantized format ship: before the oracle runs, the
# model's routed experts become what transformers dequantizes that format to, and the saved
# model.safetensors holds the format itself (config.json its quantization_config), so the
# fixture checks a backend's reading of the format against transformers' own.
STORED_FORMAT = {"tiny-gpt-oss-mxfp4": "mxfp4", "tiny-deepseek-v3-fp8": "fp8", "tiny-qwen3-moe-fp8": "fp8"}
MXFP4_EXPERTS = re.compile(r"mlp\.experts\.(gate_up_proj|down_proj)$")
# FP8 checkpoints (DeepSeek-V3/R1, Qwen3-*-FP8) quantize every Linear of the decoder layers: attention
# projections, dense MLPs, shared and routed experts; not the embeddings, lm_head, norms or the routers
# (`mlp.gate`, kept in full precision by both, listed in Qwen3's modules_to_not_convert).
FP8_WEIGHT = re.compile(r"^model\.layers\.\d+\..+\.weight$")
FP8_ROUTER = re.compile(r"\.mlp\.gate\.weight$")
FP8_EXPERT = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")
FP8_BLOCK = 128
FP8_MAX = 448.0  # largest finite E4M3 (float8_e4m3fn)
PROMPT_LENS = [5, 11, 17, 24]
NEW_TOKENS = 8
SEED = 20261126
NEAR_TIE = 1e-4
# Models whose seed is searched: of this many seeds (SEED + idx + 100 k), the one whose logits
# move least when the same model runs in bf16 (over each prompt and its greedy continuation). A
# bf16 backend legitimately flips an expert choice that fp32 decides by less than bf16's rounding
# noise, which no tolerance on the logits absorbs; tiny Mixtral's first seeds had such near-ties.
BF16_ROBUST_SEARCH = {"tiny-mixtral": 64, "tiny-deepseek-v3-fp8": 64, "tiny-qwen3-moe-fp8": 64}
# FP8 quantization moved the source seeds of these variants into router near-ties (more positions
# than the bf16 tests may leave out) and into greedy picks closer than bf16's noise. Their search
# ranks the candidates (quantized as the fixture is) first by the share of positions whose router
# top-k gap is under ROUTER_TIE, the CUDA tests' routerTieMargin (at most MAX_TIE_SHARE, over
# router_gap_per_position and over each of the tests' views: prompt positions, decode steps), then
# by the smallest greedy top-2 logit margin at the other positions (at least MIN_MARGIN), and only
# then by the bf16 drift.
TIE_ROBUST_SEARCH = {"tiny-deepseek-v3-fp8", "tiny-qwen3-moe-fp8"}
ROUTER_TIE = 1e-2
MAX_TIE_SHARE = 0.25
MIN_MARGIN = 5e-2

PERTURB = {
    "matrix": "N(0, 1/fan_in) for every weight with >= 2 dims (fan_in = input features; "
              "GPT-OSS gate_up_proj x3 so the swiglu clamp at 7 is hit)",
    "embedding": "N(0, 1)",
    "norm": "1 + 0.1 N(0,1)",
    "bias": "0.1 N(0,1) (attention/expert/shared biases)",
    "e_score_correction_bias": "0.1 N(0,1)",
    "sinks": "N(0,1)",
    "router_bias": "0.5 N(0,1) (GPT-OSS router.bias)",
}

HF_ONLY_BUFFERS = re.compile(r"\.(slope_rate|query_decay|key_decay|diagonal_decay)$")


def log(*a):
    print(*a, flush=True)


def clean(o):
    """JSON-safe: non-finite floats become null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    return o


def rel_l2(a, b):
    a = a.double()
    b = b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ----------------------------------------------------------------------------- patches

class MiniMaxPartialRope:
    """HF 5.17's MiniMax ignores partial_rotary_factor: MiniMaxRotaryEmbedding.compute_default_rope_parameters
    builds inv_freq over the whole head_dim and apply_rotary_pos_emb rotates every dim. The original
    MiniMax code (and vLLM/SGLang) rotate only the first rotary_dim = head_dim * partial_rotary_factor
    dims (rotate_half within them) and pass the rest through. This context manager patches HF to do that."""

    def __enter__(self):
        import transformers.models.minimax.modeling_minimax as mm
        self.mm = mm
        self.orig_apply = mm.apply_rotary_pos_emb
        self.orig_init = mm.MiniMaxRotaryEmbedding.__dict__["compute_default_rope_parameters"]
        rotate_half = mm.rotate_half

        def compute_default_rope_parameters(config=None, device=None, seq_len=None, **kwargs):
            rp = config.rope_parameters
            base = rp["rope_theta"]
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            prf = rp.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0
            dim = int(head_dim * prf)
            inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
            return inv_freq.to(device) if device is not None else inv_freq, 1.0

        def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
            cos = cos.unsqueeze(unsqueeze_dim)
            sin = sin.unsqueeze(unsqueeze_dim)
            rd = cos.shape[-1]
            q_rot, q_pass = q[..., :rd], q[..., rd:]
            k_rot, k_pass = k[..., :rd], k[..., rd:]
            q_embed = torch.cat([(q_rot * cos) + (rotate_half(q_rot) * sin), q_pass], dim=-1)
            k_embed = torch.cat([(k_rot * cos) + (rotate_half(k_rot) * sin), k_pass], dim=-1)
            return q_embed, k_embed

        mm.MiniMaxRotaryEmbedding.compute_default_rope_parameters = staticmethod(compute_default_rope_parameters)
        mm.apply_rotary_pos_emb = apply_rotary_pos_emb
        return self

    def __exit__(self, *exc):
        self.mm.apply_rotary_pos_emb = self.orig_apply
        self.mm.MiniMaxRotaryEmbedding.compute_default_rope_parameters = self.orig_init
        return False


PATCHES = {
    "minimax_partial_rope": (MiniMaxPartialRope,
                             "HF 5.17 MiniMax patched to honour partial_rotary_factor: RoPE (rotate_half, theta from "
                             "rope_parameters) on the first head_dim*partial_rotary_factor dims of q and k, the rest "
                             "passed through, as in the original MiniMax code and vLLM. Unpatched HF 5.17 rotates the "
                             "whole head (see ../tiny-minimax, same weights and prompts)."),
}

# Short statements of what the installed HF code does, read from its source (transformers 5.17.0).
HF_SEMANTICS = {
    "mixtral": "router: softmax(fp32) over E, top-k, renormalised over the k; experts SiLU(x Wg) * (x Wu) Wd; "
               "RoPE rotate_half over head_dim; eager attention scale head_dim^-0.5.",
    "deepseek_v2": "router DeepseekV2TopkRouter: softmax(fp32); group_limited_greedy: group score = max prob in group, "
                   "top topk_group groups, others masked to 0.0, top-k; weights = probs * routed_scaling_factor "
                   "(norm_topk_prob is ignored). Shared experts ungated. RoPE: complex freqs_cis = interleaved "
                   "(GPT-J pairs) over qk_rope_head_dim, on the LAST qk_rope_head_dim dims of each q head and on k_pe. "
                   "Attention scale qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 only when rope_type != "
                   "default and mscale_all_dim is set (yarn_apply_mscale). The tiny config has default RoPE, so no mscale.",
    "deepseek_v3": "router: sigmoid(fp32 logits); choice score = sigmoid + e_score_correction_bias; group score = sum of "
                   "top-2 choice scores; top topk_group groups; others masked to -inf; top-k by choice score; weights = "
                   "unbiased sigmoid gathered, / (sum + 1e-20) if norm_topk_prob, * routed_scaling_factor. "
                   "rope_interleave=True: apply_rotary_pos_emb_interleave (deinterleave evens|odds, then rotate_half). "
                   "Scale as V2 (mscale^2 only for non-default rope with mscale_all_dim).",
    "qwen2_moe": "router softmax(fp32), top-k, renormalised only if norm_topk_prob (false here); shared expert "
                 "gated by sigmoid(x W_sg) [1,H]; q/k/v biases.",
    "qwen3_moe": "router softmax(fp32), top-k, renormalised (norm_topk_prob true); q_norm/k_norm RMSNorm over head_dim "
                 "before RoPE.",
    "minimax": "lightning layers: qkv = SiLU(x Wqkv) viewed [H, 3*hd] per head (q|k|v); slope_h = (2^(-8/H))^h, h=1..H, "
               "times (1 - layer_idx/(num_hidden_layers-1+1e-5) + 1e-5) with layer_idx the absolute layer index; block "
               "prefill (block_size from config) with query decay exp(-s*i), i=1..b, key decay exp(-s*(b-j)), block "
               "decay exp(-s*b); decode recurrence S = exp(-s) S + k^T v, o = q S; then RMSNorm(H*hd, eps 1e-6 — not "
               "rms_norm_eps), * sigmoid(x W_gate), out_proj. Residual: h=RMSNorm_in(x); x1 = alpha*h + beta*attn(h); "
               "h2 = RMSNorm_post(x1); x2 = alpha*h2 + beta*moe(h2). Router softmax(fp32), top-k, renormalised. "
               "Softmax layers: GQA, scale head_dim^-0.5; RoPE: HF 5.17 IGNORES partial_rotary_factor (inv_freq over "
               "the full head_dim, every dim rotated).",
    "gpt_oss": "router: logits = x W^T + b, top-k of raw logits, softmax over the k; experts: gate_up = x @ W_gu[e] + b "
               "(W_gu [E,H,2I], gate = even columns, up = odd columns), gate = min(gate, 7), up = clamp(up, -7, 7), "
               "out = ((up + 1) * gate * sigmoid(1.702 gate)) @ W_d[e] + b_d (W_d [E,I,H]). Attention: biases, "
               "per-head sink logit joins the softmax denominator; layer_types sliding (window W: keys q-W+1..q) / full; "
               "YaRN with truncate=false, attention_scaling 0.1*ln(factor)+1 on cos/sin; the explicit factor (4) is "
               "used even though max_position_embeddings/original_max_position_embeddings = 8 (HF warns).",
}


# ----------------------------------------------------------------------------- config

def load_config(src_dir, notes):
    try:
        cfg = AutoConfig.from_pretrained(src_dir)
    except Exception as e:  # strict dataclass configs may reject legacy keys
        notes.append(f"AutoConfig.from_pretrained failed ({type(e).__name__}: {e}); "
                     "retrying with keys unknown to the config class dropped")
        with open(os.path.join(src_dir, "config.json")) as f:
            d = json.load(f)
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        cls = CONFIG_MAPPING[d["model_type"]]
        known = set(inspect.signature(cls.__init__).parameters)
        if hasattr(cls, "__dataclass_fields__"):
            known |= set(cls.__dataclass_fields__)
        dropped = [k for k in d if k not in known and k != "model_type"]
        for k in dropped:
            d.pop(k)
        notes.append(f"dropped config keys: {dropped}")
        cfg = cls(**d)
    cfg._attn_implementation = "eager"
    try:
        cfg._experts_implementation = "eager"
    except Exception as e:
        notes.append(f"could not set _experts_implementation: {e}")
    return cfg


# ----------------------------------------------------------------------------- perturbation

def fan_in_of(name, p, model_type):
    if p.dim() == 2:
        return p.shape[1]
    if p.dim() == 3:
        if model_type == "gpt_oss":          # [E, in, out] (experts_are_transposed)
            return p.shape[1]
        return p.shape[2]                     # [E, out, in]
    return p.shape[-1]


def perturb(model, model_type, gen, report):
    """Re-draw / perturb every parameter (and the V3 correction-bias buffer) in place."""
    def randn(shape):
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    with torch.no_grad():
        for name, p in model.named_parameters():
            last = name.split(".")[-1]
            kind = None
            if isinstance(p, nn.Parameter) and "embed_tokens" in name:
                p.copy_(randn(p.shape)); kind = "embedding"
            elif last == "sinks":
                p.copy_(randn(p.shape)); kind = "sinks"
            elif model_type == "gpt_oss" and name.endswith("router.bias"):
                p.copy_(0.5 * randn(p.shape)); kind = "router_bias"
            elif "bias" in last:
                p.copy_(0.1 * randn(p.shape)); kind = "bias"
            elif p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.1 * randn(p.shape)); kind = "norm"
            elif p.dim() >= 2:
                fi = fan_in_of(name, p, model_type)
                std = 1.0 / math.sqrt(fi)
                if model_type == "gpt_oss" and last == "gate_up_proj":
                    std *= 3.0
                p.copy_(std * randn(p.shape)); kind = f"matrix(std={std:.4f})"
            else:
                p.copy_(1.0 + 0.1 * randn(p.shape)); kind = "other-1d(1+0.1N)"
            report.append((name, list(p.shape), kind))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * randn(b.shape).to(b.dtype))
                report.append((name, list(b.shape), "e_score_correction_bias(buffer)"))


# ----------------------------------------------------------------------------- routing probes

class RouterProbe:
    """Hooks the MoE blocks: records HF's selected experts (from the experts module's
    arguments) and recomputes router scores to measure the top-k boundary gap."""

    def __init__(self, model, cfg, model_type):
        self.cfg = cfg
        self.mt = model_type
        self.enabled = False
        self.hist = {}          # layer -> counts[E]
        self.min_gap = {}       # layer -> min score gap at the top-k boundary
        self.min_group_gap = {}
        self.disagree = {}      # layer -> tokens where recomputed selection != HF selection
        self.mask_variant_diff = {}  # grouped routers: tokens where masking with 0.0 or -inf would select differently
        self.clamp = {}         # gpt-oss: fraction of gate > 7 / |up| > 7
        self._pending = {}
        self.capture = None     # when a list: each MoE block's per-token top-k gaps of one forward
        self.handles = []
        self.blocks = []
        for name, m in model.named_modules():
            ex = getattr(m, "experts", None)
            if not isinstance(ex, nn.Module):
                continue
            router = getattr(m, "gate", None) if isinstance(getattr(m, "gate", None), nn.Module) else getattr(m, "router", None)
            if router is None or not hasattr(router, "weight"):
                continue
            mm = re.search(r"layers\.(\d+)\.", name)
            layer = int(mm.group(1)) if mm else -1
            self.blocks.append((name, layer, type(m).__name__, type(router).__name__, type(ex).__name__))
            self.handles.append(m.register_forward_pre_hook(self._block_hook(layer, router, ex), with_kwargs=True))
            self.handles.append(ex.register_forward_pre_hook(self._experts_hook(layer, ex), with_kwargs=True))

    def num_experts(self):
        c = self.cfg
        for k in ("num_local_experts", "n_routed_experts", "num_experts"):
            v = getattr(c, k, None)
            if isinstance(v, int):
                return v
        raise RuntimeError("number of experts not found")

    def _select(self, x, router):
        """Returns (indices [T,k], boundary gap [T], group gap [T] or None, alt indices or None)."""
        c, mt = self.cfg, self.mt
        k = c.num_experts_per_tok
        E = self.num_experts()
        x = x.reshape(-1, x.shape[-1]).float()
        z = nn.functional.linear(x, router.weight.float())
        b = getattr(router, "bias", None)
        if isinstance(b, torch.Tensor):
            z = z + b.float()
        if mt == "deepseek_v3":
            s = z.sigmoid() + router.e_score_correction_bias.float()
            G, tg = c.n_group, c.topk_group
            gs = s.view(-1, G, E // G).topk(2, dim=-1)[0].sum(-1)
        elif mt == "deepseek_v2" and getattr(c, "topk_method", "greedy") == "group_limited_greedy":
            s = z.softmax(-1)
            G, tg = c.n_group, c.topk_group
            gs = s.view(-1, G, E // G).max(-1).values
        else:
            s = z if mt == "gpt_oss" else z.softmax(-1)
            G = None
        alt = None
        ggap = None
        if G:
            gsort = gs.sort(-1, descending=True).values
            ggap = gsort[:, tg - 1] - gsort[:, tg]
            gidx = gs.topk(tg, -1).indices
            gmask = torch.zeros_like(gs).scatter_(1, gidx, 1).bool()
            emask = gmask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
            s0 = s.masked_fill(~emask, 0.0)           # HF 5.17 deepseek_v2
            sinf = s.masked_fill(~emask, float("-inf"))  # HF 5.17 deepseek_v3
            if mt == "deepseek_v3":
                alt, s = s0.topk(k, -1).indices, sinf
            else:
                alt, s = sinf.topk(k, -1).indices, s0
        ss = s.sort(-1, descending=True).values
        gap = ss[:, k - 1] - ss[:, k] if k < s.shape[-1] else torch.full_like(ss[:, 0], float("inf"))
        gap = torch.nan_to_num(gap, posinf=float("inf"))
        return s.topk(k, -1).indices, gap, ggap, alt

    def _block_hook(self, layer, router, ex):
        def hook(mod, args, kwargs):
            if not self.enabled:
                return
            x = args[0] if args else kwargs.get("hidden_states")
            idx, gap, ggap, alt = self._select(x.detach(), router)
            if self.capture is not None:
                # A near-tie between groups flips experts as surely as one at
                # the top-k boundary.
                self.capture.append((gap if ggap is None else torch.minimum(gap, ggap)).cpu())
            self._pending[layer] = idx
            self.min_gap[layer] = min(self.min_gap.get(layer, float("inf")), gap.min().item())
            if ggap is not None:
                self.min_group_gap[layer] = min(self.min_group_gap.get(layer, float("inf")), ggap.min().item())
            if alt is not None:
                d = (idx.sort(-1).values != alt.sort(-1).values).any(-1).sum().item()
                self.mask_variant_diff[layer] = self.mask_variant_diff.get(layer, 0) + d
            if self.mt == "gpt_oss":
                xx = x.detach().reshape(-1, x.shape[-1]).float()
                gu = torch.einsum("th,ehf->etf", xx, ex.gate_up_proj.float()) + ex.gate_up_proj_bias.float()[:, None, :]
                g, u = gu[..., 0::2], gu[..., 1::2]
                a = self.clamp.setdefault(layer, [0, 0, 0])
                a[0] += (g > 7).sum().item(); a[1] += (u.abs() > 7).sum().item(); a[2] += g.numel()
        return hook

    def _experts_hook(self, layer, ex):
        def hook(mod, args, kwargs):
            if not self.enabled:
                return
            cand = list(args[1:]) + list(kwargs.values())
            idx = None
            for t in cand:
                if isinstance(t, torch.Tensor) and not t.is_floating_point():
                    idx = t
                    break
            if idx is None:
                return
            idx = idx.reshape(-1, idx.shape[-1]).long()
            E = self.num_experts()
            h = self.hist.setdefault(layer, [0] * E)
            cnt = torch.bincount(idx.flatten().clamp(0, E), minlength=E + 1)[:E].tolist()
            for e in range(E):
                h[e] += cnt[e]
            mine = self._pending.pop(layer, None)
            if mine is not None and mine.shape == idx.shape:
                d = (mine.sort(-1).values.to(idx.device) != idx.sort(-1).values).any(-1).sum().item()
                self.disagree[layer] = self.disagree.get(layer, 0) + d
        return hook


# ----------------------------------------------------------------------------- generation

def greedy_generate(model, ids, notes):
    """model.generate with EOS disabled; returns (new_ids [8], raw logits [8, V], how)."""
    gc = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS, min_new_tokens=0,
                          eos_token_id=None, use_cache=True, output_logits=True, output_scores=True,
                          return_dict_in_generate=True, pad_token_id=0)
    model.generation_config = copy.deepcopy(gc)
    try:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
        new = out.sequences[0, ids.shape[1]:]
        logits = torch.stack([l[0] for l in out.logits]).float()
        if new.numel() == NEW_TOKENS and logits.shape[0] == NEW_TOKENS:
            return new.cpu(), logits.cpu(), "generate"
        notes.append(f"generate returned {new.numel()} tokens; fell back to a manual cached greedy loop")
    except Exception as e:
        notes.append(f"generate failed ({type(e).__name__}: {e}); fell back to a manual cached greedy loop")
    # manual greedy loop with the model's own cache
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    step = out.logits[0, -1].float()
    new, rows = [], []
    for _ in range(NEW_TOKENS):
        rows.append(step.cpu())
        t = int(step.argmax())
        new.append(t)
        out = model(input_ids=torch.tensor([[t]], device=ids.device), past_key_values=past, use_cache=True)
        past = out.past_key_values
        step = out.logits[0, -1].float()
    return torch.tensor(new), torch.stack(rows), "manual-cached-loop"


def run_prompts(model, prompts, device, notes):
    res = []
    for p in prompts:
        ids = torch.tensor([p], device=device)
        with torch.no_grad():
            pl = model(input_ids=ids, use_cache=False).logits[0].float().cpu()
            new, gl, how = greedy_generate(model, ids, notes)
            full = torch.cat([ids[0], new.to(device)])[None]
            fl = model(input_ids=full, use_cache=False).logits[0].float().cpu()
        res.append({"prompt_logits": pl, "new": new, "gen_logits": gl, "how": how, "full_logits": fl})
    return res


# ----------------------------------------------------------------------------- hub names

def expected_names(cfg, mt):
    """A set of names the hub layout must contain (per-expert or fused, per family)."""
    L = cfg.num_hidden_layers
    req = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    forbidden = []
    for l in range(L):
        p = f"model.layers.{l}."
        req += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        if mt in ("mixtral", "minimax"):
            req.append(p + "block_sparse_moe.gate.weight")
            for e in range(cfg.num_local_experts):
                req += [p + f"block_sparse_moe.experts.{e}.w{i}.weight" for i in (1, 2, 3)]
        elif mt in ("deepseek_v2", "deepseek_v3"):
            if l < cfg.first_k_dense_replace:
                req += [p + f"mlp.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
            else:
                req.append(p + "mlp.gate.weight")
                if mt == "deepseek_v3":
                    req.append(p + "mlp.gate.e_score_correction_bias")
                for e in range(cfg.n_routed_experts):
                    req += [p + f"mlp.experts.{e}.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
                req += [p + f"mlp.shared_experts.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
        elif mt in ("qwen2_moe", "qwen3_moe"):
            req.append(p + "mlp.gate.weight")
            for e in range(cfg.num_experts):
                req += [p + f"mlp.experts.{e}.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
            if mt == "qwen2_moe":
                req += [p + f"mlp.shared_expert.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
                req += [p + "mlp.shared_expert_gate.weight"] + [p + f"self_attn.{w}_proj.bias" for w in "qkv"]
            else:
                req += [p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"]
        elif mt == "gpt_oss":
            req += [p + "mlp.router.weight", p + "mlp.router.bias", p + "self_attn.sinks"]
            req += [p + f"mlp.experts.{w}" for w in ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias")]
        if mt != "gpt_oss":
            forbidden += [p + "mlp.experts.gate_up_proj", p + "mlp.experts.down_proj"]
    return req, forbidden


# ----------------------------------------------------------------------------- MXFP4 experts

def mxfp4_quantize(w):
    """GPT-OSS's [E, in, out] expert weight as MXFP4 `_blocks` [E, out, in/32, 16] and `_scales`
    [E, out, in/32] (U8): per 32 inputs the smallest power-of-two scale at least amax / 6 (the rule
    of triton_kernels' downcast_to_mxfp, GPT-OSS's quantizer), E2M1 codes rounded to nearest with
    ties to the even code, the even element in the low nibble (runtime/model/WeightFormat.h)."""
    t = w.detach().float().cpu().transpose(1, 2).contiguous()
    E, O, I = t.shape
    g = t.reshape(E, O, I // 32, 32)
    bits = (g.abs().amax(-1) / 6.0).view(torch.int32)
    codes = ((bits + 0x007FFFFF) & 0x7F800000) >> 23
    q = g * torch.ldexp(torch.ones(codes.shape), 127 - codes).unsqueeze(-1)
    m = q.abs()
    index = sum((m > 0.25, m >= 0.75, m > 1.25, m >= 1.75, m > 2.5, m >= 3.5, m > 5.0),
                torch.zeros(m.shape, dtype=torch.int32))
    e2m1 = (index | (torch.signbit(q).int() << 3)).reshape(E, O, I // 32, 16, 2)
    blocks = (e2m1[..., 0] | (e2m1[..., 1] << 4)).to(torch.uint8)
    return blocks.contiguous(), codes.to(torch.uint8).contiguous()


def mxfp4_dequantize(blocks, scales):
    """transformers' own reading of MXFP4 blocks (the reference), in fp32, on the CPU."""
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    return convert_moe_packed_tensors(blocks, scales, dtype=torch.float32).float().cpu()


def quantize_experts_mxfp4(model, notes):
    """Each routed expert weight replaced by what transformers dequantizes its MXFP4 form to."""
    worst = 0.0
    for name, p in model.named_parameters():
        if MXFP4_EXPERTS.search(name):
            dq = mxfp4_dequantize(*mxfp4_quantize(p))
            worst = max(worst, rel_l2(dq, p.detach().cpu()))
            with torch.no_grad():
                p.copy_(dq.to(p.device))
    notes.append(f"STORED MXFP4: experts quantized (E2M1, E8M0 scale per 32 inputs) and replaced by "
                 f"transformers' dequantization (convert_moe_packed_tensors); weights moved by rel-L2 up "
                 f"to {worst:.3g}")


def store_mxfp4(out_dir, notes):
    """model.safetensors' expert weights as `_blocks` / `_scales`, config.json with GPT-OSS's
    quantization_config; the stored form must dequantize to the saved values exactly."""
    st = os.path.join(out_dir, "model.safetensors")
    sd = load_file(st)
    for k in [k for k in sd if MXFP4_EXPERTS.search(k)]:
        w = sd.pop(k)
        blocks, scales = mxfp4_quantize(w)
        if not torch.equal(mxfp4_dequantize(blocks, scales), w.float()):
            raise RuntimeError(f"{k}: its MXFP4 form does not dequantize to the saved values")
        sd[k + "_blocks"], sd[k + "_scales"] = blocks, scales
    save_file(sd, st, metadata={"format": "pt"})
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["quantization_config"] = {
        "quant_method": "mxfp4",
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                   "model.embed_tokens", "lm_head"]}
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    notes.append("model.safetensors stores the experts as MXFP4 _blocks/_scales (U8), config.json "
                 "quantization_config mxfp4; transformers reloads them with Mxfp4Config(dequantize=True)")


# ----------------------------------------------------------------------------- FP8 block-scaled weights

def fp8_quantized(name, shape):
    return len(shape) == 2 and FP8_WEIGHT.match(name) and not FP8_ROUTER.search(name)


def fp8_block_scales(scale, rows, cols):
    """Each element's scale: scale [⌈rows/128⌉, ⌈cols/128⌉] expanded over its blocks, the last ones cut."""
    return scale.repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)[:rows, :cols]


def fp8_quantize(w):
    """A Linear weight [out, in] as E4M3 codes [out, in] and fp32 `weight_scale_inv` [⌈out/128⌉, ⌈in/128⌉]:
    per 128 x 128 block (the last ones partial) the dequantization multiplier amax / 448, codes = w /
    scale clamped to ±448 and rounded to nearest even by the cast (how DeepSeek-V3's inference code
    quantizes activations; its checkpoints' scales are such multipliers); an all-zero block gets scale 1."""
    w = w.detach().float().cpu()
    rows, cols = w.shape
    pad = nn.functional.pad(w, (0, -cols % FP8_BLOCK, 0, -rows % FP8_BLOCK))
    amax = pad.reshape(pad.shape[0] // FP8_BLOCK, FP8_BLOCK, pad.shape[1] // FP8_BLOCK, FP8_BLOCK).abs().amax(dim=(1, 3))
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    codes = (w / fp8_block_scales(scale, rows, cols)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return codes.contiguous(), scale.contiguous()


def fp8_dequantize_reference(codes, scale):
    """codes x their block's scale, one fp32 product each: the reading this repo's loader implements."""
    rows, cols = codes.shape
    return codes.float() * fp8_block_scales(scale.float(), rows, cols)


def fp8_dequantize(codes, scale):
    """transformers' own reading of FP8 codes + weight_scale_inv (its Fp8Dequantize conversion op, what
    from_pretrained with FineGrainedFP8Config(dequantize=True) applies), in fp32, on the CPU."""
    import types
    from transformers import FineGrainedFP8Config
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize
    config = FineGrainedFP8Config(weight_block_size=[FP8_BLOCK, FP8_BLOCK], dequantize=True)
    op = Fp8Dequantize(types.SimpleNamespace(quantization_config=config))
    # Its step for one (weight, scale) pair, with the dtype the loader passes for an fp32 model.
    return op._dequantize_one(codes, scale, output_dtype=torch.float32).float().cpu()


def fp8_hf_quantize_agreement(w, codes, scale):
    """How transformers' own quantizer (Fp8Quantize, the reverse of its dequantization) would store w,
    given the whole matrix as its block (it leaves shapes the configured block does not divide
    unquantized): (codes that differ, largest relative scale difference), or a string if it fails."""
    import types
    try:
        from transformers.integrations.finegrained_fp8 import Fp8Quantize
        config = types.SimpleNamespace(weight_block_size=tuple(w.shape), scale_fmt="float")
        out = Fp8Quantize(types.SimpleNamespace(quantization_config=config)).convert({"x.weight": w.float().cpu()})
        q, s = out["x.weight"], out["x.weight_scale_inv"]
        differ = (q.view(torch.uint8) != codes.view(torch.uint8)).sum().item()
        return differ, ((s.float() - scale) / scale).abs().max().item()
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def fp8_hub_view(model, name):
    """The slice of the in-memory model that save_pretrained writes as hub tensor `name`: per-expert
    weights live in v5's fused experts (gate_up_proj [E, 2I, H] = gate rows then up rows, down_proj
    [E, H, I]); every other name is the parameter itself."""
    m = FP8_EXPERT.match(name)
    if not m:
        return model.get_parameter(name)
    prefix, expert, which = m.group(1), int(m.group(2)), m.group(3)
    if which == "down":
        return model.get_parameter(prefix + ".down_proj")[expert]
    gate_up = model.get_parameter(prefix + ".gate_up_proj")[expert]
    half = gate_up.shape[0] // 2
    return gate_up[:half] if which == "gate" else gate_up[half:]


def quantize_fp8(model, notes, verbose=True):
    """Each quantized hub matrix (as save_pretrained names and shapes it) replaced in the model by what
    transformers dequantizes its FP8 form to; returns {hub name: (codes, scale)} for store_fp8.
    verbose=False (the seed search) skips the comparison with transformers' quantizer and the log."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        hub = load_file(os.path.join(tmp, "model.safetensors"))
    stored, worst, moved, total, hf_rule = {}, 0.0, 0.0, 0.0, []
    for name in sorted(k for k, v in hub.items() if fp8_quantized(k, v.shape)):
        w = hub[name]
        view = fp8_hub_view(model, name)
        if not torch.equal(view.detach().cpu(), w):
            raise RuntimeError(f"{name}: the in-memory slice is not what save_pretrained writes")
        codes, scale = fp8_quantize(w)
        dq = fp8_dequantize(codes, scale)
        if not torch.equal(dq, fp8_dequantize_reference(codes, scale)):
            raise RuntimeError(f"{name}: transformers dequantizes FP8 otherwise than codes x block scale in fp32")
        if verbose:
            hf_rule.append((name, fp8_hf_quantize_agreement(w, codes, scale)))
        worst = max(worst, rel_l2(dq, w))
        moved += (dq.double() - w.double()).norm().item() ** 2
        total += w.double().norm().item() ** 2
        with torch.no_grad():
            view.copy_(dq.to(view.dtype))
        stored[name] = (codes, scale)
    if not verbose:
        return stored
    unquantized = sorted(k for k, v in hub.items() if v.dim() == 2 and k not in stored)
    log(f"FP8: {len(stored)} matrices quantized, left in fp32: {unquantized}")
    for name, agreement in hf_rule:
        log(f"  {name:64s} transformers' Fp8Quantize vs amax/448: {agreement}")
    differ = [a[0] for _, a in hf_rule if not isinstance(a, str)]
    hf_note = (f"transformers' own Fp8Quantize (scale 448/amax multiplied, weight_scale_inv its reciprocal), given "
               f"each whole matrix as its block, gives {sum(differ)} different codes over {len(differ)} matrices"
               if len(differ) == len(hf_rule) else f"transformers' Fp8Quantize could not be compared: {hf_rule[0][1]}")
    notes.append(f"STORED FP8: {len(stored)} decoder-layer Linear weights quantized (E4M3, one fp32 scale amax/448 "
                 f"per 128 x 128 block) and replaced by transformers' dequantization (Fp8Dequantize); each matrix "
                 f"moved by rel-L2 up to {worst:.3g} ({math.sqrt(moved / total):.3g} over all of them); {hf_note}; "
                 f"not quantized: {', '.join(sorted(set(re.sub(r'layers[.][0-9]+', 'layers.L', k) for k in unquantized)))}")
    return stored


def store_fp8(out_dir, notes, stored, model_type, num_layers):
    """model.safetensors' quantized weights as F8_E4M3 `<name>.weight` + F32 `<name>.weight_scale_inv`,
    config.json with the hub's quantization_config; the stored form must dequantize to the saved values
    exactly."""
    st = os.path.join(out_dir, "model.safetensors")
    sd = load_file(st)
    if sorted(k for k, v in sd.items() if fp8_quantized(k, v.shape)) != sorted(stored):
        raise RuntimeError("save_pretrained wrote other quantizable weights than were quantized")
    for k, (codes, scale) in stored.items():
        if not torch.equal(fp8_dequantize(codes, scale), sd[k].float()):
            raise RuntimeError(f"{k}: its FP8 form does not dequantize to the saved values")
        sd[k], sd[k + "_scale_inv"] = codes, scale
    save_file(sd, st, metadata={"format": "pt"})
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    # As DeepSeek-V3's and Qwen3-30B-A3B-FP8's config.json hold it; Qwen3 also lists its routers.
    quantization = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                    "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    if model_type == "qwen3_moe":
        quantization["modules_to_not_convert"] = ["lm_head"] + [f"model.layers.{l}.mlp.gate" for l in range(num_layers)]
    config["quantization_config"] = quantization
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    notes.append("model.safetensors stores those weights as F8_E4M3 <name>.weight + F32 <name>.weight_scale_inv "
                 "(hub names, per expert), config.json quantization_config fp8 with weight_block_size [128, 128]; "
                 "transformers reloads them with FineGrainedFP8Config(dequantize=True)")


def strip_tensors(path, pattern):
    sd = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    drop = [k for k in sd if pattern.search(k)]
    if drop:
        for k in drop:
            sd.pop(k)
        meta = dict(meta)
        meta.setdefault("format", "pt")
        save_file(sd, path, metadata=meta)
    return drop


def reload_logits(out_dir, prompts, device, notes, stored_format=None):
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    if stored_format == "mxfp4":  # dequantized by transformers, not run by its MXFP4 kernels
        from transformers import Mxfp4Config
        kw["quantization_config"] = Mxfp4Config(dequantize=True)
    elif stored_format == "fp8":  # likewise: Fp8Dequantize at load, plain Linear modules
        from transformers import FineGrainedFP8Config
        kw["quantization_config"] = FineGrainedFP8Config(weight_block_size=[FP8_BLOCK, FP8_BLOCK], dequantize=True)
    try:
        m, info = AutoModelForCausalLM.from_pretrained(out_dir, output_loading_info=True,
                                                       experts_implementation="eager", **kw)
    except TypeError:
        m, info = AutoModelForCausalLM.from_pretrained(out_dir, output_loading_info=True, **kw)
    m = m.float().to(device).eval()  # a dequantized format may load in bf16: exact in fp32
    info = {k: sorted(v) if isinstance(v, (set, list)) else str(v) for k, v in info.items()}
    with torch.no_grad():
        ls = [m(input_ids=torch.tensor([p], device=device), use_cache=False).logits[0].float().cpu() for p in prompts]
    del m
    return ls, info


# ----------------------------------------------------------------------------- one model

def build_model(cfg, mt, seed, src_name):
    """The fp32 eval model of one seed, perturbed; returns (model, perturbation report)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.eval()
    gen = torch.Generator().manual_seed(zlib.crc32(src_name.encode()) ^ seed)
    rep = []
    perturb(model, mt, gen, rep)
    return model, rep


def bf16_drift(model, prompts, device, res=None):
    """Largest rel-L2 between the fp32 model's logits and those of a bf16 copy, over each prompt
    followed by its fp32 greedy continuation (res: run_prompts' results, if already run)."""
    res = res or run_prompts(model, prompts, device, [])
    low = copy.deepcopy(model).to(torch.bfloat16)
    worst = 0.0
    with torch.no_grad():
        for p, r in zip(prompts, res):
            full = torch.cat([torch.tensor(p), r["new"]])[None].to(device)
            logits = low(input_ids=full, use_cache=False).logits[0].float().cpu()
            worst = max(worst, rel_l2(logits, r["full_logits"]))
    return worst


def router_gaps_per_position(model, probe, prompts, res, device):
    """Per position of each prompt and its continuation: the smallest top-k (or group) router gap
    over the layers, from one forward over the whole sequence."""
    position_gaps = []
    probe.enabled = True
    with torch.no_grad():
        for p, r in zip(prompts, res):
            probe.capture = []
            full = torch.cat([torch.tensor(p), r["new"]])[None].to(device)
            model(input_ids=full, use_cache=False)
            position_gaps.append(torch.stack(probe.capture).min(0).values.tolist())
    probe.capture = None
    probe.enabled = False
    return position_gaps


def tie_robustness(prompts, res, position_gaps):
    """(share of positions under ROUTER_TIE: the largest of router_gap_per_position's own and the
    CUDA tests' two views, prompt positions and decode steps (step s reads position len-1+s); the
    smallest greedy top-2 logit margin over the positions the tests compare, those not under it)."""
    ties = [[g < ROUTER_TIE for g in gaps] for gaps in position_gaps]
    recorded = sum(map(sum, ties)) / sum(map(len, ties))
    prompt_view = sum(sum(t[:len(p)]) for t, p in zip(ties, prompts)) / sum(len(p) for p in prompts)
    decode_view = (sum(sum(t[len(p) - 1:len(p) - 1 + NEW_TOKENS]) for t, p in zip(ties, prompts))
                   / (NEW_TOKENS * len(prompts)))
    margin = float("inf")
    for p, r, t in zip(prompts, res, ties):
        top2 = r["full_logits"][:len(p) - 1 + NEW_TOKENS].topk(2, -1).values
        for pos, g in enumerate((top2[:, 0] - top2[:, 1]).tolist()):
            if not t[pos]:
                margin = min(margin, g)
    return max(recorded, prompt_view, decode_view), margin


def search_candidate(name, src_name, seed, models_dir, device):
    """One candidate seed of a searched model, built (and quantized) as the fixture would be."""
    cfg = load_config(os.path.join(models_dir, src_name), [])
    mt = cfg.model_type
    m, _ = build_model(cfg, mt, seed, src_name)
    if STORED_FORMAT.get(name) == "fp8":
        quantize_fp8(m, [], verbose=False)
    elif STORED_FORMAT.get(name):
        raise RuntimeError(f"{name}: the seed search does not quantize {STORED_FORMAT[name]}")
    prompts = make_prompts(cfg, seed)
    if name not in TIE_ROBUST_SEARCH:
        return {"seed": seed, "drift": bf16_drift(m.to(device), prompts, device)}
    m.to(device)
    res = run_prompts(m, prompts, device, [])
    drift = bf16_drift(m, prompts, device, res)
    gaps = router_gaps_per_position(m, RouterProbe(m, cfg, mt), prompts, res, device)
    share, margin = tie_robustness(prompts, res, gaps)
    return {"seed": seed, "drift": drift, "tie_share": share, "min_margin": margin}


def search_rank(c):
    """Sort key of a candidate: the smaller, the better."""
    if "tie_share" not in c:
        return (c["drift"],)
    over, thin = c["tie_share"] > MAX_TIE_SHARE, c["min_margin"] < MIN_MARGIN
    return (over, c["tie_share"] if over else 0.0, thin, -c["min_margin"] if thin else c["drift"])


def _search_worker_init(threads):
    set_precision(quiet=True)
    torch.set_num_threads(threads)


def search_seed(name, src_name, idx, trials, args, device):
    """Evaluates the candidate seeds SEED + idx + 100 k (k < trials), in parallel processes (each
    candidate is built from its seed alone, so the result does not depend on the split); returns
    (the candidates best first, the candidates in order)."""
    seeds = [SEED + idx + 100 * k for k in range(trials)]
    jobs = ([name] * trials, [src_name] * trials, seeds, [args.models] * trials, [device] * trials)
    workers = min(args.search_workers, trials)
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_search_worker_init,
                                 initargs=(max(1, (os.cpu_count() or 1) // workers),)) as pool:
            found = list(pool.map(search_candidate, *jobs))
    else:
        found = list(map(search_candidate, *jobs))
    for c in found:
        log("  candidate " + " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items()))
    return sorted(found, key=search_rank), found


def make_prompts(cfg, seed):
    pg = torch.Generator().manual_seed(seed + 1000)
    return [torch.randint(3, cfg.vocab_size, (L,), generator=pg).tolist() for L in PROMPT_LENS]


def make_one(name, idx, args, device, summary, src_name=None, patch=None):
    if patch:
        cls, desc = PATCHES[patch]
        with cls():
            return _make_one(name, idx, args, device, summary, src_name, desc)
    return _make_one(name, idx, args, device, summary, src_name, None)


def _make_one(name, idx, args, device, summary, src_name, patch_desc):
    src_name = src_name or name
    src = os.path.join(args.models, src_name)
    out_dir = os.path.join(args.out, name)
    notes = []
    if patch_desc:
        notes.append("PATCHED ORACLE: " + patch_desc)
    log(f"\n======================== {name} ({src_name}) ========================")
    cfg = load_config(src, notes)
    mt = cfg.model_type
    seed = SEED + idx
    trials = BF16_ROBUST_SEARCH.get(name, 1)
    seed_search = None
    if trials > 1:
        ranked, found = search_seed(name, src_name, idx, trials, args, device)
        best, seed, drift = ranked[0], ranked[0]["seed"], ranked[0]["drift"]
        median = sorted(c["drift"] for c in found)[trials // 2]
        log(f"bf16 robustness search over {trials} seeds: best seed {seed}, bf16 vs fp32 logits rel-L2 "
            f"{drift:.4g} (first seed's: {found[0]['drift']:.4g}, median {median:.4g})")
        if name in TIE_ROBUST_SEARCH:
            eligible = [c for c in found if c["tie_share"] <= MAX_TIE_SHARE]
            wide = [c for c in eligible if c["min_margin"] >= MIN_MARGIN]
            log(f"  router near-ties (< {ROUTER_TIE:g}) at {best['tie_share']:.1%} of positions, smallest greedy "
                f"margin elsewhere {best['min_margin']:.4g}; {len(eligible)} candidates at most "
                f"{MAX_TIE_SHARE:.0%} near-ties, {len(wide)} of them with margins >= {MIN_MARGIN:g}; first seed's: "
                f"{found[0]['tie_share']:.1%}, {found[0]['min_margin']:.4g}")
            notes.append(f"seed chosen from {trials} candidates (quantized as stored): router top-k gaps under "
                         f"{ROUTER_TIE:g} at {best['tie_share']:.1%} of positions (at most {MAX_TIE_SHARE:.0%}; "
                         f"{len(eligible)} candidates qualified), smallest greedy top-2 logit margin at the other "
                         f"positions {best['min_margin']:.3g} (at least {MIN_MARGIN:g}: {len(wide)} of them), then the "
                         f"smallest bf16 vs fp32 logits drift ({drift:.4g}; median {median:.4g})")
            seed_search = {"candidates": trials, "router_tie": ROUTER_TIE, "max_tie_share": MAX_TIE_SHARE,
                           "min_margin": MIN_MARGIN, "qualified": len(eligible), "qualified_margin": len(wide),
                           "chosen": best, "first": found[0], "median_bf16_drift": median}
        else:
            notes.append(f"seed chosen from {trials} for the smallest bf16 vs fp32 logits drift ({drift:.4g})")
    model, rep = build_model(cfg, mt, seed, src_name)
    stored_format = STORED_FORMAT.get(name)
    unquantized_logits, fp8_stored = None, None
    if stored_format == "fp8":  # to say how far the quantization moved the outputs
        with torch.no_grad():
            unquantized_logits = [model(input_ids=torch.tensor([p]), use_cache=False).logits[0].float()
                                  for p in make_prompts(cfg, seed)]
    if stored_format == "mxfp4":
        quantize_experts_mxfp4(model, notes)
    elif stored_format == "fp8":
        fp8_stored = quantize_fp8(model, notes)
    log(f"class {type(model).__name__}  model_type {mt}  seed {seed}")
    log(f"attn_implementation={getattr(model.config, '_attn_implementation', None)} "
        f"experts_implementation={getattr(model.config, '_experts_implementation', None)}")
    for k in ("rope_parameters", "rope_scaling", "head_dim", "norm_topk_prob", "topk_method", "scoring_func",
              "routed_scaling_factor", "n_group", "topk_group", "rope_interleave", "layer_types", "sliding_window",
              "block_size", "partial_rotary_factor", "postnorm", "full_attn_alpha_factor", "linear_attn_alpha_factor",
              "mlp_alpha_factor", "swiglu_limit", "router_jitter_noise", "pad_token_id", "tie_word_embeddings"):
        if hasattr(model.config, k):
            log(f"  config.{k} = {getattr(model.config, k)!r}")
    seen = set()
    for mn, m in model.named_modules():
        tn = type(m).__name__
        if hasattr(m, "scaling") and tn not in seen:
            seen.add(tn)
            log(f"  {tn}.scaling = {m.scaling!r} (module {mn})")
        if hasattr(m, "inv_freq") and tn + ".rope" not in seen:
            seen.add(tn + ".rope")
            log(f"  {tn} ({mn}) inv_freq len {m.inv_freq.numel()} attention_scaling={getattr(m, 'attention_scaling', None)} rope_type={getattr(m, 'rope_type', None)}")
    for mn, m in model.named_modules():
        for attr in ("norm_topk_prob", "routed_scaling_factor", "top_k", "topk_method"):
            if attr in m.__dict__ and f"{type(m).__name__}.{attr}" not in seen:
                seen.add(f"{type(m).__name__}.{attr}")
                log(f"  {type(m).__name__}.{attr} = {getattr(m, attr)!r}")

    nparams = sum(p.numel() for p in model.parameters())
    log(f"params {nparams}")
    for n_, s_, k_ in rep:
        log(f"  perturb {n_:70s} {str(s_):18s} {k_}")
    model.to(device)

    # prompts
    prompts = make_prompts(cfg, seed)

    # oracle run (device) with routing probes on the prompt forwards only
    probe = RouterProbe(model, cfg, mt)
    log(f"MoE blocks: {probe.blocks}")
    probe.enabled = True
    with torch.no_grad():
        for p in prompts:
            model(input_ids=torch.tensor([p], device=device), use_cache=False)
    probe.enabled = False
    res = run_prompts(model, prompts, device, notes)
    # Per position of each prompt and its continuation: the smallest top-k (or group) router gap
    # over the layers, so a test can tell the positions whose routing a bf16 backend may flip.
    position_gaps = router_gaps_per_position(model, probe, prompts, res, device)
    if seed_search:
        share, margin = tie_robustness(prompts, res, position_gaps)
        log(f"router near-ties at {share:.1%} of positions, smallest greedy margin elsewhere {margin:.4g} "
            f"(search: {seed_search['chosen']['tie_share']:.1%}, {seed_search['chosen']['min_margin']:.4g})")

    # stability / near-tie checks
    unstable, ties, min_gap_gen, max_step_diff = 0, [], float("inf"), 0.0
    for i, (p, r) in enumerate(zip(prompts, res)):
        L = len(p)
        if not torch.equal(r["gen_logits"].argmax(-1), r["new"]):
            notes.append(f"prompt {i}: generated ids differ from the argmax of the returned logits")
            unstable += 1
        fl = r["full_logits"][L - 1:L - 1 + NEW_TOKENS]
        if not torch.equal(fl.argmax(-1), r["new"]):
            unstable += 1
            notes.append(f"prompt {i}: full-sequence forward argmax {fl.argmax(-1).tolist()} != generated {r['new'].tolist()}")
        max_step_diff = max(max_step_diff, (fl - r["gen_logits"]).abs().max().item())
        pre = (r["full_logits"][:L] - r["prompt_logits"]).abs().max().item()
        max_step_diff = max(max_step_diff, pre)
        top2 = r["gen_logits"].topk(2, -1).values
        gaps = (top2[:, 0] - top2[:, 1])
        min_gap_gen = min(min_gap_gen, gaps.min().item())
        for s, g in enumerate(gaps.tolist()):
            if g < NEAR_TIE:
                ties.append({"prompt": i, "step": s, "gap": g})
    log(f"greedy: how={[r['how'] for r in res]} unstable={unstable} min top-2 gap={min_gap_gen:.4g} "
        f"max |cached - full| logits={max_step_diff:.3g}")

    if unquantized_logits is not None:
        d = max(rel_l2(r["prompt_logits"], u) for r, u in zip(res, unquantized_logits))
        log(f"{stored_format}: prompt logits moved by rel-L2 up to {d:.3g} from the unquantized model's (CPU)")
        notes.append(f"quantization moved the prompt logits by rel-L2 up to {d:.3g} from those of the unquantized "
                     f"{src_name} weights")

    # a patched variant must differ from its unpatched source (generated earlier in this run)
    if patch_desc and src_name != name:
        ref = os.path.join(args.out, src_name, "golden_logits.safetensors")
        if os.path.exists(ref):
            rt = load_file(ref)
            d = max(rel_l2(r["prompt_logits"], rt[f"prompt_logits_{i}"]) for i, r in enumerate(res))
            log(f"variant vs unpatched {src_name}: max prompt-logits rel-L2 {d:.3g}")
            notes.append(f"prompt logits differ from the unpatched {src_name} by rel-L2 up to {d:.3g}")

    # CPU cross-check (only when the oracle ran on a GPU)
    cpu_rel, cpu_same = None, None
    if device != "cpu":
        mc = copy.deepcopy(model).to("cpu")
        rc = run_prompts(mc, prompts, "cpu", [])
        cpu_rel = max(max(rel_l2(a["prompt_logits"], b["prompt_logits"]), rel_l2(a["gen_logits"], b["gen_logits"]))
                      for a, b in zip(rc, res))
        cpu_same = all(torch.equal(a["new"], b["new"]) for a, b in zip(rc, res))
        del mc
        log(f"cpu vs {device}: max rel-L2 {cpu_rel:.3g}, same greedy ids {cpu_same}")

    # save
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    mcpu = model.to("cpu")
    try:
        mcpu.save_pretrained(out_dir, safe_serialization=True)
    except TypeError:
        mcpu.save_pretrained(out_dir)
    model.to(device)
    extra = sorted(set(os.listdir(out_dir)) - {"config.json", "model.safetensors"})
    for f in extra:
        if f == "generation_config.json":
            os.remove(os.path.join(out_dir, f))
    if extra:
        notes.append(f"save_pretrained also wrote {extra}; generation_config.json removed")
    st = os.path.join(out_dir, "model.safetensors")
    if not os.path.exists(st):
        raise RuntimeError(f"save_pretrained wrote no model.safetensors: {os.listdir(out_dir)}")

    if stored_format == "mxfp4":
        store_mxfp4(out_dir, notes)
    elif stored_format == "fp8":
        store_fp8(out_dir, notes, fp8_stored, mt, cfg.num_hidden_layers)

    # strip HF-only buffers, then verify a reload reproduces the logits
    backup = st + ".bak"
    shutil.copy(st, backup)
    dropped = strip_tensors(st, HF_ONLY_BUFFERS)
    try:
        rl, info = reload_logits(out_dir, prompts, device, notes, stored_format)
        reload_diff = max(rel_l2(a, r["prompt_logits"]) for a, r in zip(rl, res))
    except Exception as e:
        # The oracle does not depend on transformers' loader reading the stored format: the fixture
        # stands, its reload_rel_l2 null and the failure in its notes.
        if not stored_format:
            raise
        log(traceback.format_exc())
        notes.append(f"reload through transformers' {stored_format} loader failed: {type(e).__name__}: {e}")
        info, reload_diff = {}, float("nan")
    if dropped and reload_diff > 1e-5:
        notes.append(f"reload without {len(dropped)} HF-only buffers gave rel-L2 {reload_diff:.3g}; buffers kept")
        shutil.move(backup, st)
        dropped = []
        rl, info = reload_logits(out_dir, prompts, device, notes, stored_format)
        reload_diff = max(rel_l2(a, r["prompt_logits"]) for a, r in zip(rl, res))
    elif os.path.exists(backup):
        os.remove(backup)
    if dropped:
        notes.append(f"removed HF-only persistent buffers from model.safetensors (not hub tensors; HF recomputes "
                     f"them on load): {sorted(set(d.split('.')[-1] for d in dropped))} x{len(dropped)}")
    log(f"reload from {out_dir}: rel-L2 vs oracle {reload_diff:.3g}; loading info {info}")

    # tensor names
    with safe_open(st, "pt") as f:
        names = sorted(f.keys())
        shapes = {k: list(f.get_slice(k).get_shape()) for k in names}
        dtype_of = {k: f.get_slice(k).get_dtype() for k in names}
        dtypes = set(dtype_of.values())
    log(f"model.safetensors: {len(names)} tensors, dtypes {dtypes}")
    for k in names:
        log(f"  {k:72s} {dtype_of[k]:8s} {shapes[k]}")
    req, forb = expected_names(cfg, mt)
    if stored_format == "mxfp4":
        req = [k + s for k in req for s in (("_blocks", "_scales") if MXFP4_EXPERTS.search(k) else ("",))]
    elif stored_format == "fp8":
        req = req + [k + "_scale_inv" for k in fp8_stored]
    missing = [k for k in req if k not in shapes]
    present_forbidden = [k for k in forb if k in shapes]
    if missing or present_forbidden:
        notes.append(f"hub-name check FAILED: missing {missing[:10]} (+{max(0, len(missing) - 10)}), "
                     f"unexpected fused {present_forbidden[:5]}")
    log(f"hub-name check: missing {len(missing)} unexpected {len(present_forbidden)}")

    # outputs
    tensors = {}
    for i, r in enumerate(res):
        tensors[f"prompt_logits_{i}"] = r["prompt_logits"].contiguous()
        tensors[f"generated_logits_{i}"] = r["gen_logits"].contiguous()
    save_file(tensors, os.path.join(out_dir, "golden_logits.safetensors"), metadata={"format": "pt"})
    E = probe.num_experts()
    hist = {str(l): probe.hist[l] for l in sorted(probe.hist)}
    golden = {
        "model": name,
        "model_type": mt,
        "hf_class": type(model).__name__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": args.card,
        "dtype": "float32",
        "attn_implementation": "eager",
        "experts_implementation": "eager",
        "seed": seed,
        "params": nparams,
        "source_config": f"models/{src_name}/config.json",
        "patch": patch_desc,
        "hf_semantics": HF_SEMANTICS.get(mt),
        "perturbation": PERTURB,
        "prompts": [{"input_ids": p, "generated_ids": r["new"].tolist()} for p, r in zip(prompts, res)],
        "logits_file": "golden_logits.safetensors",
        "logits_tensors": "prompt_logits_<i> [len_i, vocab] (one forward over prompt i alone, no padding); "
                          "generated_logits_<i> [8, vocab] (raw logits from which generated_ids[i][s] was chosen "
                          "by argmax: step 0 = last prompt position)",
        "generation": "model.generate(do_sample=False, num_beams=1, max_new_tokens=8, use_cache=True, eos_token_id=None)",
        "expert_histogram_prompt_tokens": hist,
        "router_min_topk_gap": {str(l): v for l, v in sorted(probe.min_gap.items())},
        "router_gap_per_position": position_gaps,
        "router_min_group_gap": {str(l): v for l, v in sorted(probe.min_group_gap.items())} or None,
        "greedy_min_top2_gap": min_gap_gen,
        "near_ties": ties,
        "greedy_stable": unstable == 0,
        "max_abs_cached_vs_full_logits": max_step_diff,
        "cpu_vs_oracle_max_rel_l2": cpu_rel,
        "cpu_same_greedy_ids": cpu_same,
        "reload_rel_l2": reload_diff,
        "notes": notes,
    }
    if seed_search:
        golden["seed_search"] = seed_search
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(clean(golden), f, indent=1)
        f.write("\n")
    for l in sorted(probe.hist):
        log(f"  layer {l} expert histogram {probe.hist[l]}  min top-k gap {probe.min_gap.get(l, float('nan')):.3g}"
            + (f"  min group gap {probe.min_group_gap[l]:.3g}" if l in probe.min_group_gap else "")
            + f"  recompute disagreements {probe.disagree.get(l, 'n/a')}"
            + (f"  mask(0.0 vs -inf) diffs {probe.mask_variant_diff[l]}" if l in probe.mask_variant_diff else "")
            + (f"  clamp gate>7 {probe.clamp[l][0]}/{probe.clamp[l][2]} |up|>7 {probe.clamp[l][1]}" if l in probe.clamp else ""))
    for n in notes:
        log(f"  note: {n}")
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    used = {l: sum(1 for c in h if c > 0) for l, h in probe.hist.items()}
    summary.append({
        "model": name, "params": nparams, "bytes": size, "experts": E,
        "used": " ".join(f"{used[l]}/{E}" for l in sorted(used)),
        "router_gap": min(probe.min_gap.values()) if probe.min_gap else float("nan"),
        "disagree": sum(probe.disagree.values()),
        "gen_gap": min_gap_gen, "ties": len(ties), "stable": unstable == 0,
        "cpu_rel": cpu_rel, "cpu_same": cpu_same, "reload": reload_diff,
        "names_ok": not missing and not present_forbidden, "gen": res[0]["how"], "patched": bool(patch_desc),
    })


def dump_sources(dest):
    """Copies the HF modeling sources used (for reading the exact semantics offline)."""
    os.makedirs(dest, exist_ok=True)
    import importlib
    mods = ["mixtral", "deepseek_v2", "deepseek_v3", "qwen2_moe", "qwen3_moe", "minimax", "gpt_oss"]
    for m in mods:
        for kind in ("modeling", "configuration"):
            try:
                mod = importlib.import_module(f"transformers.models.{m}.{kind}_{m}")
                shutil.copy(inspect.getsourcefile(mod), dest)
            except Exception as e:
                log(f"source {m}/{kind}: {e}")
    for extra in ("transformers.integrations.moe", "transformers.modeling_rope_utils", "transformers.masking_utils",
                  "transformers.conversion_mapping", "transformers.core_model_loading",
                  "transformers.integrations.finegrained_fp8", "transformers.quantizers.quantizer_finegrained_fp8",
                  "transformers.utils.quantization_config"):
        try:
            mod = importlib.import_module(extra)
            shutil.copy(inspect.getsourcefile(mod), dest)
        except Exception as e:
            log(f"source {extra}: {e}")


def set_precision(quiet=False):
    for fn in (lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", False),
               lambda: setattr(torch.backends.cudnn, "allow_tf32", False),
               lambda: torch.set_float32_matmul_precision("highest")):
        try:
            fn()
        except Exception as e:  # newer torch may refuse mixing the old and new precision APIs
            if not quiet:
                log(f"tf32 setting: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="test/golden")
    ap.add_argument("--models", default="models")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dump-sources", default=None, help="copy the HF modeling sources into this folder")
    ap.add_argument("--search-workers", type=int, default=8, help="processes for the seed searches")
    args = ap.parse_args()

    set_precision()
    args.card = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    log(f"transformers {transformers.__version__}  torch {torch.__version__}  device {args.device} ({args.card})  "
        f"python {sys.version.split()[0]}")
    if args.dump_sources:
        dump_sources(args.dump_sources)

    os.makedirs(args.out, exist_ok=True)
    summary, failed = [], []
    t0 = time.time()
    for i, name in enumerate(MODELS):
        if args.only and name not in args.only:
            continue
        try:
            make_one(name, i, args, args.device, summary)
        except Exception:
            failed.append(name)
            log(f"!!! {name} FAILED\n{traceback.format_exc()}")
    for name, src_name, i, patch in VARIANTS:
        if args.only and name not in args.only:
            continue
        try:
            make_one(name, i, args, args.device, summary, src_name, patch)
        except Exception:
            failed.append(name)
            log(f"!!! {name} FAILED\n{traceback.format_exc()}")
    manifest = {
        "transformers": transformers.__version__, "torch": torch.__version__, "device": args.card,
        "command": "python3 tools/golden/make_goldens.py --out " + args.out,
        "models": summary, "failed": failed, "seconds": round(time.time() - t0, 1),
    }
    path = os.path.join(args.out, "MANIFEST.json")
    if args.only and os.path.exists(path):  # the other models' rows stay as they were made
        with open(path) as f:
            previous = json.load(f)
        made = {s["model"] for s in summary}
        for s in summary:  # the top level names the card of the first run; a row made on another says so
            if args.card != previous["device"]:
                s["device"] = args.card
        manifest["device"] = previous["device"]
        manifest["models"] = [s for s in previous["models"] if s["model"] not in made] + summary
        manifest["command"] = previous["command"] + "; then --only " + " ".join(args.only)
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump(clean(manifest), f, indent=2)
        f.write("\n")

    log("\n===== summary (transformers %s, torch %s, %s) =====" % (transformers.__version__, torch.__version__, args.card))
    log(f"{'model':25s} {'params':>7s} {'KiB':>6s} {'experts used/layer':22s} {'rtrgap':>8s} {'dis':>3s} "
        f"{'gengap':>8s} {'ties':>4s} {'stbl':>4s} {'cpu_rel':>8s} {'cpu=':>4s} {'reload':>8s} {'names':>5s} gen")
    for s in summary:
        log(f"{s['model']:25s} {s['params']:7d} {s['bytes'] / 1024:6.0f} {s['used']:22s} {s['router_gap']:8.2g} "
            f"{s['disagree']:3d} {s['gen_gap']:8.2g} {s['ties']:4d} {str(s['stable'])[0]:>4s} "
            f"{(s['cpu_rel'] if s['cpu_rel'] is not None else float('nan')):8.2g} {str(s['cpu_same'])[0]:>4s} "
            f"{s['reload']:8.2g} {str(s['names_ok'])[0]:>5s} {s['gen']}")
    log(f"failed: {failed}   total {time.time() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
