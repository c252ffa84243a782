// The measured profile written as JSON, schema "moe-hardware-profile/1",
// the format costmodel::HardwareProfile::fromJson reads.
#include "runtime/backends/cuda/HardwareProfiler.h"

#include <fstream>

#include <nlohmann/json.hpp>

namespace moe::cuda {

std::string profileToJson(const HardwareProfile &p) {
  using nlohmann::ordered_json;
  ordered_json j;
  j["schema"] = "moe-hardware-profile/1";
  j["device"] = {{"name", p.device.name},
                 {"memory_bytes", p.device.memoryBytes},
                 {"reserved_bytes", p.device.reservedBytes},
                 {"sm_count", p.device.smCount},
                 {"compute_capability", p.device.computeCapability}};
  j["host"] = {{"memory_bytes", p.host.memoryBytes},
               {"reserved_bytes", p.host.reservedBytes},
               {"cpu_cores", p.host.cpuCores}};
  j["links"] = {{"h2d_pinned_bytes_per_s", p.links.h2dPinned},
                {"d2h_pinned_bytes_per_s", p.links.d2hPinned},
                {"h2d_pageable_bytes_per_s", p.links.h2dPageable},
                {"hbm_bytes_per_s", p.links.hbm}};
  auto gemmShapes = [](const std::vector<GemmProfile> &measured) {
    ordered_json shapes = ordered_json::array();
    for (const GemmProfile &g : measured) {
      ordered_json points = ordered_json::array();
      for (const GemmPoint &pt : g.points)
        points.push_back({{"m", pt.m}, {"seconds", pt.seconds}});
      shapes.push_back({{"n", g.n}, {"k", g.k}, {"points", std::move(points)}});
    }
    return shapes;
  };
  j["gemm_bf16"] = gemmShapes(p.gemmBf16);
  if (!p.gemmFp8Block.empty())
    j["gemm_fp8_block"] = gemmShapes(p.gemmFp8Block);
  ordered_json grouped = ordered_json::array();
  for (const GroupedGemmProfile &g : p.groupedGemmBf16) {
    ordered_json points = ordered_json::array();
    for (const GroupedGemmPoint &pt : g.points)
      points.push_back(
          {{"rows_per_expert", pt.rowsPerExpert}, {"seconds", pt.seconds}});
    grouped.push_back({{"n", g.n},
                       {"k", g.k},
                       {"experts", g.experts},
                       {"points", std::move(points)}});
  }
  if (!grouped.empty())
    j["grouped_gemm_bf16"] = std::move(grouped);
  auto attentionPoints = [](const std::vector<AttentionPoint> &measured) {
    ordered_json points = ordered_json::array();
    for (const AttentionPoint &pt : measured)
      points.push_back({{"batch", pt.batch},
                        {"context", pt.context},
                        {"seconds", pt.seconds}});
    return points;
  };
  ordered_json attention = ordered_json::array();
  for (const AttentionProfile &a : p.attentionDecodeBf16)
    attention.push_back({{"heads", a.heads},
                         {"kv_heads", a.kvHeads},
                         {"head_dim", a.headDim},
                         {"points", attentionPoints(a.points)}});
  j["attention_decode_bf16"] = std::move(attention);
  ordered_json mla = ordered_json::array();
  for (const MlaAttentionProfile &a : p.mlaAttentionDecodeBf16)
    mla.push_back({{"heads", a.heads},
                   {"latent_dim", a.latentDim},
                   {"rope_dim", a.ropeDim},
                   {"points", attentionPoints(a.points)}});
  if (!mla.empty())
    j["mla_attention_decode_bf16"] = std::move(mla);
  ordered_json attentionPrefill = ordered_json::array();
  for (const AttentionProfile &a : p.attentionPrefillBf16)
    attentionPrefill.push_back({{"heads", a.heads},
                                {"kv_heads", a.kvHeads},
                                {"head_dim", a.headDim},
                                {"points", attentionPoints(a.points)}});
  if (!attentionPrefill.empty())
    j["attention_prefill_bf16"] = std::move(attentionPrefill);
  ordered_json mlaPrefill = ordered_json::array();
  for (const MlaAttentionProfile &a : p.mlaAttentionPrefillBf16)
    mlaPrefill.push_back({{"heads", a.heads},
                          {"latent_dim", a.latentDim},
                          {"rope_dim", a.ropeDim},
                          {"points", attentionPoints(a.points)}});
  if (!mlaPrefill.empty())
    j["mla_attention_prefill_bf16"] = std::move(mlaPrefill);
  if (p.hostCpu)
    j["host_cpu"] =
        ordered_json::parse(costmodel::hostCpuProfileJson(*p.hostCpu));
  return j.dump(2) + "\n";
}

Status writeProfileJson(const HardwareProfile &profile,
                        const std::string &path) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file)
    return makeError("cannot open {} for writing", path);
  file << profileToJson(profile);
  file.close();
  if (!file)
    return makeError("cannot write {}", path);
  return Status::success();
}

} // namespace moe::cuda
