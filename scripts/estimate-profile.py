#!/usr/bin/env python3
"""A hardware profile for a card we cannot measure here, estimated from its
published specifications and the efficiency measured on our H100.

    scripts/estimate-profile.py CARD [--from PROFILE] > models/hardware/CARD-estimated.json
    scripts/estimate-profile.py --list

Each measured point of the source profile (GEMMs, FP8 GEMMs, the grouped
expert kernel, decode and prefill attention, MLA) is priced on both cards by
its roofline, the larger
of FLOPs over the peak and bytes over the memory bandwidth; the estimate
keeps the fraction of the roofline the source card reached there:
t_card = roofline_card(point) * t_source / roofline_source(point). The
peaks are the source's measured ones scaled by the ratio of the published
dense bf16 tensor rates (FP32 accumulation) and memory bandwidths; PCIe
copies scale with the link generation. The device name says "estimated", so
every plan and explanation priced on it says so too, and the file records
the specifications it came from. `moe-run --profile-hardware` measures a
real card instead.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "models/hardware/h100-sxm-80gb.json"

# The card the source profile measured, by its published specifications.
SOURCE_SPEC = {"bf16_tflops": 989.4, "memory_gb_per_s": 3350, "pcie_gen": 5}

# Published specifications: dense bf16 tensor TFLOP/s with FP32
# accumulation, memory bandwidth, PCIe generation, memory as nvidia-smi
# reports it (MiB), SMs, compute capability.
CARDS = {
    "rtx-4090": {"name": "NVIDIA GeForce RTX 4090", "bf16_tflops": 165.2,
                 "memory_gb_per_s": 1008, "pcie_gen": 4, "memory_mib": 24564,
                 "sm_count": 128, "compute_capability": "8.9"},
    "rtx-5090": {"name": "NVIDIA GeForce RTX 5090", "bf16_tflops": 209.5,
                 "memory_gb_per_s": 1792, "pcie_gen": 5, "memory_mib": 32607,
                 "sm_count": 170, "compute_capability": "12.0"},
    "l40s": {"name": "NVIDIA L40S", "bf16_tflops": 362.05,
             "memory_gb_per_s": 864, "pcie_gen": 4, "memory_mib": 46068,
             "sm_count": 142, "compute_capability": "8.9"},
    "a100-sxm-80gb": {"name": "NVIDIA A100-SXM4-80GB", "bf16_tflops": 312,
                      "memory_gb_per_s": 2039, "pcie_gen": 4,
                      "memory_mib": 81920, "sm_count": 108,
                      "compute_capability": "8.0"},
    "h200": {"name": "NVIDIA H200", "bf16_tflops": 989.4,
             "memory_gb_per_s": 4800, "pcie_gen": 5, "memory_mib": 143771,
             "sm_count": 132, "compute_capability": "9.0"},
}

BF16 = 2


def gemm_work(shape, point):
    m, n, k = point["m"], shape["n"], shape["k"]
    return 2.0 * m * n * k, BF16 * (m * k + n * k + m * n)


def grouped_work(shape, point):
    rows, e, n, k = point["rows_per_expert"], shape["experts"], shape["n"], shape["k"]
    return 2.0 * rows * e * n * k, BF16 * e * (n * k + rows * (n + k))


def attention_work(shape, point):
    b, c = point["batch"], point["context"]
    h, kv, d = shape["heads"], shape["kv_heads"], shape["head_dim"]
    return 4.0 * b * h * c * d, BF16 * 2 * b * c * kv * d


def mla_work(shape, point):
    b, c = point["batch"], point["context"]
    h, latent, rope = shape["heads"], shape["latent_dim"], shape["rope_dim"]
    return 2.0 * b * h * c * (2 * latent + rope), BF16 * b * c * (latent + rope)


def causal_pairs(point):
    c = point["context"]
    return point["batch"] * c * (c + 1) / 2


def attention_prefill_work(shape, point):
    b, c = point["batch"], point["context"]
    h, kv, d = shape["heads"], shape["kv_heads"], shape["head_dim"]
    return 4.0 * causal_pairs(point) * h * d, BF16 * 2 * b * c * kv * d


def mla_prefill_work(shape, point):
    b, c = point["batch"], point["context"]
    h, latent, rope = shape["heads"], shape["latent_dim"], shape["rope_dim"]
    return (2.0 * causal_pairs(point) * h * (2 * latent + rope),
            BF16 * b * c * (latent + rope))


def gemm_fp8_work(shape, point):
    # FP8 tensor cores run at twice bf16's rate: half the bf16-equivalent
    # FLOPs; a byte a code, bf16 outputs.
    m, n, k = point["m"], shape["n"], shape["k"]
    return 1.0 * m * n * k, m * k + n * k + BF16 * m * n


CURVES = {"gemm_bf16": gemm_work, "grouped_gemm_bf16": grouped_work,
          "attention_decode_bf16": attention_work,
          "mla_attention_decode_bf16": mla_work,
          "attention_prefill_bf16": attention_prefill_work,
          "mla_attention_prefill_bf16": mla_prefill_work,
          "gemm_fp8_block": gemm_fp8_work}

# FP8 tensor cores: compute capability 8.9 (Ada) and later.
def has_fp8(spec):
    major, minor = (int(v) for v in spec["compute_capability"].split("."))
    return (major, minor) >= (8, 9)


def estimate(source, source_path, card):
    spec = CARDS[card]
    flops_ratio = spec["bf16_tflops"] / SOURCE_SPEC["bf16_tflops"]
    bytes_ratio = spec["memory_gb_per_s"] / SOURCE_SPEC["memory_gb_per_s"]
    link_ratio = 2.0 ** (spec["pcie_gen"] - SOURCE_SPEC["pcie_gen"])
    hbm = source["links"]["hbm_bytes_per_s"]
    # The source's measured peak: the best FLOP rate of its GEMM points.
    peak = max(gemm_work(s, p)[0] / p["seconds"]
               for s in source["gemm_bf16"] for p in s["points"])

    def roofline(flops, nbytes, scale_flops, scale_bytes):
        return max(flops / (peak * scale_flops), nbytes / (hbm * scale_bytes))

    out = json.loads(json.dumps(source))
    # Another machine's cores are not the source's: no host attention is priced
    # on an estimate until moe-host-profile measures its host into it.
    out.pop("host_cpu", None)
    if not has_fp8(spec):
        out.pop("gemm_fp8_block", None)
    out["device"] = {
        "name": spec["name"] + " (estimated)",
        "memory_bytes": spec["memory_mib"] << 20,
        "reserved_bytes": source["device"]["reserved_bytes"],
        "sm_count": spec["sm_count"],
        "compute_capability": spec["compute_capability"],
    }
    links = out["links"]
    for key in ("h2d_pinned_bytes_per_s", "d2h_pinned_bytes_per_s",
                "h2d_pageable_bytes_per_s"):
        links[key] = source["links"][key] * link_ratio
    links["hbm_bytes_per_s"] = hbm * bytes_ratio
    for curve, work in CURVES.items():
        for shape in out.get(curve, []):
            for point in shape["points"]:
                flops, nbytes = work(shape, point)
                efficiency = roofline(flops, nbytes, 1, 1) / point["seconds"]
                point["seconds"] = (roofline(flops, nbytes, flops_ratio,
                                             bytes_ratio) / min(efficiency, 1.0))
    out["estimated"] = {
        "from": Path(source_path).name,
        "specifications": {k: spec[k] for k in ("bf16_tflops", "memory_gb_per_s",
                                                  "pcie_gen")},
        "source_specifications": SOURCE_SPEC,
        "note": "not measured: every time is the source's scaled by the "
                "roofline ratio of the two cards' published specifications "
                "(scripts/estimate-profile.py); the host section is the "
                "source machine's. Measure a real card with moe-run "
                "--profile-hardware.",
    }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", nargs="?", choices=sorted(CARDS))
    parser.add_argument("--from", dest="source", default=str(SOURCE))
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list or not args.card:
        for card, spec in sorted(CARDS.items()):
            print(f"{card}: {spec['name']}, {spec['bf16_tflops']} bf16 TFLOP/s, "
                  f"{spec['memory_gb_per_s']} GB/s, PCIe {spec['pcie_gen']}")
        return 0 if args.list else 2
    with open(args.source) as f:
        source = json.load(f)
    json.dump(estimate(source, args.source, args.card), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
