// Synthetic hardware profiles and models with round numbers, so expected
// times can be worked out by hand.
#pragma once

#include <cstdint>
#include <string>

#include <gtest/gtest.h>

#include "runtime/costmodel/HardwareProfile.h"
#include "runtime/costmodel/ModelCosts.h"
#include "runtime/costmodel/Plan.h"
#include "runtime/model/ActivationBytes.h"

namespace moe::costmodel::testing {

inline constexpr int64_t kGiB = int64_t(1) << 30;

// 1 GB/s PCIe, 1 TB/s HBM; GEMMs of 1000x1000 weights take 10 µs at m = 10
// and 100 µs at m = 1000 (20 TFLOP/s, the peak); 4000x4000 take 2 ms at
// m = 1000. Decode attention with 8 heads, 2 KV heads of 64 takes 10 µs at
// 1000 KV tokens and 50 µs at 10000.
inline std::string syntheticProfileJson(int64_t gpuBytes = 80 * kGiB,
                                        int64_t hostBytes = 128 * kGiB) {
  return fmt::format(R"({{
  "schema": "moe-hardware-profile/1",
  "device": {{"name": "synthetic", "memory_bytes": {}, "sm_count": 132,
             "compute_capability": "9.0"}},
  "host": {{"memory_bytes": {}, "cpu_cores": 16}},
  "links": {{"h2d_pinned_bytes_per_s": 1e9, "d2h_pinned_bytes_per_s": 1e9,
            "h2d_pageable_bytes_per_s": 1e8, "hbm_bytes_per_s": 1e12}},
  "gemm_bf16": [
    {{"n": 1000, "k": 1000,
      "points": [{{"m": 1000, "seconds": 1e-4}}, {{"m": 10, "seconds": 1e-5}}]}},
    {{"n": 4000, "k": 4000, "points": [{{"m": 1000, "seconds": 2e-3}}]}}
  ],
  "attention_decode_bf16": [
    {{"heads": 8, "kv_heads": 2, "head_dim": 64,
      "points": [{{"batch": 1, "context": 1000, "seconds": 1e-5}},
                 {{"batch": 10, "context": 1000, "seconds": 5e-5}}]}}
  ]
}})",
                     gpuBytes, hostBytes);
}

// The synthetic profile without its decode-attention points.
inline std::string profileJsonWithoutAttention() {
  std::string json = syntheticProfileJson();
  size_t at = json.find(",\n  \"attention_decode_bf16\"");
  EXPECT_NE(at, std::string::npos);
  return json.substr(0, at) + "\n}";
}

// The synthetic profile plus a grouped expert GEMM measurement: 10 experts
// of 1000x1000 take 40 µs at 1 row each (half the HBM rate) and 100 µs at
// 100 rows each (the peak FLOP rate).
inline std::string groupedGemmProfileJson() {
  std::string json = syntheticProfileJson();
  json.insert(json.rfind('}'), R"(,
  "grouped_gemm_bf16": [
    {"n": 1000, "k": 1000, "experts": 10,
     "points": [{"rows_per_expert": 100, "seconds": 1e-4},
                {"rows_per_expert": 1, "seconds": 4e-5}]}
  ]
)");
  return json;
}

// The synthetic profile plus MLA decode measured for 16 heads over a latent
// of 512 and a rope part of 64: 1 ms for 4 sequences at 125 tokens.
inline std::string mlaProfileJson() {
  std::string json = syntheticProfileJson();
  json.insert(json.rfind('}'), R"(,
  "mla_attention_decode_bf16": [
    {"heads": 16, "latent_dim": 512, "rope_dim": 64,
     "points": [{"batch": 4, "context": 125, "seconds": 1e-3}]}
  ]
)");
  return json;
}

inline HardwareProfile syntheticProfile(int64_t gpuBytes = 80 * kGiB,
                                        int64_t hostBytes = 128 * kGiB) {
  auto profile =
      HardwareProfile::fromJson(syntheticProfileJson(gpuBytes, hostBytes));
  EXPECT_TRUE(profile.ok()) << profile.error().message();
  return *profile;
}

// The synthetic profile with a host of 16 threads that attends bf16 KV
// (8 heads over 2 KV heads) at `attentionBytesPerSecond` alone and reads
// DRAM at 20 GB/s alone, at `readBesideCopies` while the GPU copies.
inline HardwareProfile withHostAttention(double attentionBytesPerSecond,
                                         double readBesideCopies = 20e9,
                                         int64_t gpuBytes = 80 * kGiB,
                                         int64_t hostBytes = 128 * kGiB) {
  HostCpuProfile host;
  host.isa = {true, true, false, false, false};
  host.kernelIsa = "avx512";
  host.readBandwidth = {{1, 5e9}, {16, 20e9}};
  host.readWithH2d = {{16, readBesideCopies, 1e9}};
  host.attention = {
      {8,
       2,
       64,
       "bf16",
       16,
       {{int64_t(1) << 20, double(1 << 20) / attentionBytesPerSecond},
        {int64_t(1) << 30,
         double(int64_t(1) << 30) / attentionBytesPerSecond}}}};
  std::string json = syntheticProfileJson(gpuBytes, hostBytes);
  json.insert(json.rfind('}'),
              ",\n  \"host_cpu\": " + hostCpuProfileJson(host));
  auto profile = HardwareProfile::fromJson(json);
  EXPECT_TRUE(profile.ok()) << profile.error().message();
  return *profile;
}

// A small MoE: hidden 1000; per layer a norm, attention (8 heads, 2 KV heads
// of 64: 512 KV bytes per token), a router and `experts` gated experts of
// width 1000 (6 MB each); plus a leading embedding and a trailing LM head.
inline ModelCosts tinyMoe(int layers = 4, int64_t experts = 8,
                          int64_t topK = 2) {
  constexpr int64_t hidden = 1000;
  constexpr int64_t vocab = 4000;
  ModelCosts model;
  model.hiddenSize = hidden;
  model.vocabSize = vocab;

  ModuleCosts embedding;
  embedding.kind = ModuleKind::Embedding;
  embedding.weightBytes = 2 * vocab * hidden;
  embedding.activationRowBytes = model::rowOfWidthBytes(hidden);
  model.layers.push_back({{embedding}});

  for (int l = 0; l < layers; ++l) {
    ModuleCosts norm;
    norm.kind = ModuleKind::Norm;
    norm.weightBytes = 2 * hidden;
    norm.flopsPerToken = 4 * hidden;
    norm.activationRowBytes = model::rowOfWidthBytes(hidden);

    ModuleCosts attention;
    attention.kind = ModuleKind::Attention;
    attention.gemms = {{768, hidden}, {hidden, 512}};
    attention.weightBytes = 2 * (768 * hidden + hidden * 512);
    attention.flopsPerToken = 2.0 * (768 * hidden + hidden * 512);
    attention.flopsPerContextToken = 4.0 * 8 * 64;
    attention.kvBytesPerToken = 2 * 2 * 2 * 64;
    attention.attentionHeads = AttentionHeads{8, 2, 64};
    attention.activationRowBytes =
        model::attentionRowBytes(hidden, 8, 2, 64, model::KvDtype::bf16);

    ModuleCosts router;
    router.kind = ModuleKind::Router;
    router.gemms = {{experts, hidden}};
    router.weightBytes = 2 * experts * hidden;
    router.flopsPerToken = 2.0 * experts * hidden;
    router.activationRowBytes = model::routerRowBytes(experts, topK);

    ModuleCosts routed;
    routed.kind = ModuleKind::RoutedExperts;
    routed.numExperts = experts;
    routed.topK = topK;
    routed.gemms = {{2 * hidden, hidden}, {hidden, hidden}};
    routed.expertWeightBytes = 2 * 3 * hidden * hidden;
    routed.weightBytes = experts * routed.expertWeightBytes;
    routed.flopsPerToken = double(topK) * 2.0 * 3 * hidden * hidden;
    routed.activationRowBytes =
        model::routedExpertsRowBytes(hidden, hidden, topK);

    model.layers.push_back({{norm, attention, router, routed}});
  }

  ModuleCosts lmHead;
  lmHead.kind = ModuleKind::LmHead;
  lmHead.gemms = {{vocab, hidden}};
  lmHead.weightBytes = 2 * vocab * hidden;
  lmHead.flopsPerToken = 2.0 * vocab * hidden;
  lmHead.activationRowBytes = model::rowOfWidthBytes(hidden);
  model.layers.push_back({{lmHead}});
  return model;
}

// B 10 with all KV in host memory and nothing resident: the decode step
// tests' plan, which a test edits for the case it checks.
inline Plan decodePlan(const ModelCosts &model) {
  Plan plan;
  plan.residentBatch = 10;
  plan.attentionMicroBatchPrefill = 4;
  plan.attentionMicroBatchDecode = 4;
  plan.expertMicroBatch = 64;
  plan.prefetchDepth = 2;
  plan.kvGpuFraction = 0;
  plan.lengths = GenerationLengths::spread(100, 50);
  plan.resident = residentPrefix(model, 0);
  return plan;
}

} // namespace moe::costmodel::testing
