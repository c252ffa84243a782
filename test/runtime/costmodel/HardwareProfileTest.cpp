#include "runtime/costmodel/HardwareProfile.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "TestSupport.h"
#include "test/runtime/ScratchDirectory.h"

namespace moe::costmodel {
namespace {

using testing::kGiB;
using testing::syntheticProfile;
using testing::syntheticProfileJson;

std::string replaced(std::string text, std::string_view from,
                     std::string_view to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos)
    text.replace(at, from.size(), to);
  return text;
}

std::string profileError(const std::string &json) {
  auto profile = HardwareProfile::fromJson(json);
  EXPECT_FALSE(profile.ok());
  return profile.ok() ? "" : profile.error().message();
}

TEST(HardwareProfileTest, ParsesEveryField) {
  HardwareProfile profile = syntheticProfile(24 * kGiB, 64 * kGiB);
  EXPECT_EQ(profile.device().name, "synthetic");
  EXPECT_EQ(profile.device().memoryBytes, 24 * kGiB);
  EXPECT_EQ(profile.device().smCount, 132);
  EXPECT_EQ(profile.device().computeCapability, "9.0");
  EXPECT_EQ(profile.host().memoryBytes, 64 * kGiB);
  EXPECT_EQ(profile.host().cpuCores, 16);
  EXPECT_DOUBLE_EQ(profile.links().h2dPinnedBytesPerSecond, 1e9);
  EXPECT_DOUBLE_EQ(profile.links().h2dPageableBytesPerSecond, 1e8);
  EXPECT_DOUBLE_EQ(profile.links().hbmBytesPerSecond, 1e12);
  ASSERT_EQ(profile.gemmShapes().size(), 2u);
  // Points come back sorted by m.
  EXPECT_EQ(profile.gemmShapes()[0].points[0].m, 10);
  ASSERT_EQ(profile.attentionShapes().size(), 1u);
  EXPECT_EQ(profile.gpuBudgetBytes(), 24 * kGiB);
  EXPECT_EQ(profile.hostBudgetBytes(), 64 * kGiB);
  EXPECT_DOUBLE_EQ(profile.peakGemmFlopsPerSecond(), 2e13);
}

TEST(HardwareProfileTest, ReservedMemoryIsLeftOutOfTheDefaultBudgets) {
  std::string json = syntheticProfileJson(24 * kGiB, 64 * kGiB);
  json = replaced(json, "\"sm_count\"",
                  "\"reserved_bytes\": 2147483648, \"sm_count\"");
  json = replaced(json, "\"cpu_cores\"",
                  "\"reserved_bytes\": 8589934592, \"cpu_cores\"");
  auto profile = HardwareProfile::fromJson(json);
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  EXPECT_EQ(profile->device().reservedBytes, 2 * kGiB);
  EXPECT_EQ(profile->gpuBudgetBytes(), 22 * kGiB);
  EXPECT_EQ(profile->hostBudgetBytes(), 56 * kGiB);

  EXPECT_EQ(profileError(replaced(json, "\"reserved_bytes\": 2147483648",
                                  "\"reserved_bytes\": 25769803776")),
            "device.reserved_bytes: must be less than memory_bytes");
  EXPECT_EQ(profileError(replaced(json, "\"reserved_bytes\": 8589934592",
                                  "\"reserved_bytes\": -1")),
            "host.reserved_bytes: must be a positive integer");
}

TEST(HardwareProfileTest, GemmUsesMeasuredPoints) {
  HardwareProfile profile = syntheticProfile();
  EXPECT_DOUBLE_EQ(profile.gemmSeconds(10, 1000, 1000), 1e-5);
  EXPECT_DOUBLE_EQ(profile.gemmSeconds(1000, 1000, 1000), 1e-4);
  // Halfway in log m between 10 and 1000: the geometric mean of the times.
  EXPECT_NEAR(profile.gemmSeconds(100, 1000, 1000), std::sqrt(1e-9), 1e-12);
  EXPECT_EQ(profile.gemmSeconds(0, 1000, 1000), 0);
}

TEST(HardwareProfileTest, GemmScalesTheClosestShapeByItsSize) {
  HardwareProfile profile = syntheticProfile();
  // n·k = 2e6 is closest to 1e6: the same FLOP rate, twice the work.
  EXPECT_NEAR(profile.gemmSeconds(1000, 2000, 1000), 2e-4, 1e-12);
  // n·k = 9e6 is closer (in log) to 1.6e7, measured at 2 ms.
  EXPECT_NEAR(profile.gemmSeconds(1000, 3000, 3000), 2e-3 * 9 / 16, 1e-12);
}

TEST(HardwareProfileTest, GemmBeyondMeasuredMKeepsTheRate) {
  HardwareProfile profile = syntheticProfile();
  EXPECT_NEAR(profile.gemmSeconds(4000, 1000, 1000), 4e-4, 1e-12);
}

TEST(HardwareProfileTest, GemmBelowMeasuredMIsBoundByWeightReads) {
  HardwareProfile profile = syntheticProfile();
  // The m = 10 rate would give 1 µs; reading 2 MB of weights (plus 4 kB of
  // activations) at 1 TB/s takes 2.004 µs.
  EXPECT_NEAR(profile.gemmSeconds(1, 1000, 1000), 2.004e-6, 1e-12);
}

TEST(HardwareProfileTest, GemmNeverBeatsThePeakRate) {
  // One shape whose small-m point is faster than its large-m rate allows.
  std::string json =
      replaced(syntheticProfileJson(), R"({"m": 10, "seconds": 1e-5})",
               R"({"m": 10, "seconds": 1e-8})");
  auto profile = HardwareProfile::fromJson(json);
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  double flops = 2.0 * 10 * 1000 * 1000;
  EXPECT_GE(profile->gemmSeconds(10, 1000, 1000),
            flops / profile->peakGemmFlopsPerSecond());
  EXPECT_GE(profile->gemmSeconds(10, 1000, 1000), 2e6 / 1e12);
}

TEST(HardwareProfileTest, AttentionUsesMeasuredPointsOfTheSameShape) {
  HardwareProfile profile = syntheticProfile();
  EXPECT_DOUBLE_EQ(profile.attentionDecodeSeconds(10, 1000, 8, 2, 64), 5e-5);
  EXPECT_NEAR(profile.attentionDecodeSeconds(100, 1000, 8, 2, 64), 5e-4, 1e-12);
  EXPECT_EQ(profile.attentionDecodeSeconds(0, 1000, 8, 2, 64), 0);
}

TEST(HardwareProfileTest, AttentionWithoutMeasurementsReadsKvOnce) {
  HardwareProfile profile = syntheticProfile();
  // K and V, 4 heads of 128, bf16: 2 kB per token; 4000 tokens at 1 TB/s.
  EXPECT_NEAR(profile.attentionDecodeSeconds(4, 1000, 16, 4, 128),
              8.192e6 / 1e12, 1e-15);
}

TEST(HardwareProfileTest, CopiesUseTheirLink) {
  HardwareProfile profile = syntheticProfile();
  EXPECT_DOUBLE_EQ(profile.copySeconds(1e9, CopyDirection::HostToDevicePinned),
                   1.0);
  EXPECT_DOUBLE_EQ(profile.copySeconds(1e9, CopyDirection::DeviceToHostPinned),
                   1.0);
  EXPECT_DOUBLE_EQ(
      profile.copySeconds(1e9, CopyDirection::HostToDevicePageable), 10.0);
}

TEST(HardwareProfileTest, BudgetsOverrideMeasuredMemory) {
  HardwareProfile profile = syntheticProfile(80 * kGiB, 128 * kGiB);
  auto both = profile.withBudgets(24 * kGiB, 100 * kGiB);
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->gpuBudgetBytes(), 24 * kGiB);
  EXPECT_EQ(both->hostBudgetBytes(), 100 * kGiB);
  EXPECT_EQ(both->device().memoryBytes, 80 * kGiB);
  auto gpuOnly = profile.withBudgets(24 * kGiB, std::nullopt);
  ASSERT_TRUE(gpuOnly.ok());
  EXPECT_EQ(gpuOnly->hostBudgetBytes(), 128 * kGiB);
  auto bad = profile.withBudgets(0, std::nullopt);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(),
            "GPU memory budget: must be positive, got 0");
}

TEST(HardwareProfileTest, GroupedGemmUsesMeasuredPointsPerExpert) {
  auto profile = HardwareProfile::fromJson(testing::groupedGemmProfileJson());
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  EXPECT_DOUBLE_EQ(*profile->groupedGemmSeconds(1, 10, 1000, 1000), 4e-5);
  // Half the experts, half the time; twice the weight, twice the time.
  EXPECT_NEAR(*profile->groupedGemmSeconds(1, 5, 1000, 1000), 2e-5, 1e-15);
  EXPECT_NEAR(*profile->groupedGemmSeconds(1, 10, 2000, 1000), 8e-5, 1e-15);
  // Halfway in log rows between 1 and 100: the geometric mean of the times.
  EXPECT_NEAR(*profile->groupedGemmSeconds(10, 10, 1000, 1000),
              std::sqrt(4e-5 * 1e-4), 1e-15);
  // Never faster than reading the 10 experts' 20 MB of weights at 1 TB/s.
  EXPECT_GE(*profile->groupedGemmSeconds(1, 10, 1000, 1000), 2e-5);
  EXPECT_EQ(*profile->groupedGemmSeconds(0, 10, 1000, 1000), 0);
}

TEST(HardwareProfileTest, GroupedGemmMeasurementsAreOptional) {
  HardwareProfile profile = syntheticProfile();
  EXPECT_TRUE(profile.groupedGemmShapes().empty());
  EXPECT_FALSE(profile.groupedGemmSeconds(1, 10, 1000, 1000).has_value());
  std::string json = testing::groupedGemmProfileJson();
  EXPECT_EQ(profileError(replaced(json, R"("rows_per_expert": 1,)", "")),
            "grouped_gemm_bf16[0].points[1].rows_per_expert: missing");
  EXPECT_EQ(profileError(replaced(json, R"("experts": 10)", R"("experts": 0)")),
            "grouped_gemm_bf16[0].experts: must be a positive integer");
}

TEST(HardwareProfileTest, MlaDecodeUsesMeasuredPointsOfItsShape) {
  auto profile = HardwareProfile::fromJson(testing::mlaProfileJson());
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  ASSERT_EQ(profile->mlaShapes().size(), 1u);
  EXPECT_DOUBLE_EQ(*profile->mlaDecodeSeconds(4, 125, 16, 512, 64), 1e-3);
  // Beyond the one point its rate carries on: twice the tokens, twice the
  // time.
  EXPECT_DOUBLE_EQ(*profile->mlaDecodeSeconds(8, 125, 16, 512, 64), 2e-3);
  EXPECT_EQ(*profile->mlaDecodeSeconds(0, 125, 16, 512, 64), 0);
  // Never below reading the 576-wide latent rows once at 1 TB/s.
  auto fast = HardwareProfile::fromJson(replaced(
      testing::mlaProfileJson(), R"("seconds": 1e-3)", R"("seconds": 1e-9)"));
  ASSERT_TRUE(fast.ok()) << fast.error().message();
  EXPECT_DOUBLE_EQ(*fast->mlaDecodeSeconds(4, 125, 16, 512, 64),
                   2.0 * 4 * 125 * 576 / 1e12);
  // Another shape, or no measurements: none.
  EXPECT_FALSE(profile->mlaDecodeSeconds(4, 125, 128, 512, 64).has_value());
  EXPECT_FALSE(
      syntheticProfile().mlaDecodeSeconds(4, 125, 16, 512, 64).has_value());
  std::string json = testing::mlaProfileJson();
  EXPECT_EQ(profileError(
                replaced(json, R"("latent_dim": 512)", R"("latent_dim": 0)")),
            "mla_attention_decode_bf16[0].latent_dim: must be a positive "
            "integer");
  EXPECT_EQ(profileError(replaced(json, R"("context": 125, )", "")),
            "mla_attention_decode_bf16[0].points[0].context: missing");
}

TEST(HardwareProfileTest, Fp8GemmCurveIsOptionalAndKeepsItsFloors) {
  EXPECT_FALSE(syntheticProfile().fp8GemmSeconds(1000, 1000, 1000));
  std::string json = syntheticProfileJson();
  json.insert(json.rfind('}'), R"(,
  "gemm_fp8_block": [
    {"n": 1000, "k": 1000,
     "points": [{"m": 1000, "seconds": 5e-5}, {"m": 10, "seconds": 1e-6}]}
  ]
)");
  auto profile = HardwareProfile::fromJson(json);
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  EXPECT_DOUBLE_EQ(*profile->fp8GemmSeconds(1000, 1000, 1000), 5e-5);
  // The closest shape scaled by size, as for bf16.
  EXPECT_DOUBLE_EQ(*profile->fp8GemmSeconds(1000, 2000, 1000), 1e-4);
  EXPECT_EQ(*profile->fp8GemmSeconds(0, 1000, 1000), 0);
  // Never below a byte a weight read once (1 MB at 1 TB/s) ...
  EXPECT_GE(*profile->fp8GemmSeconds(1, 1000, 1000), 1e-6);
  // ... nor below FLOPs at twice the bf16 peak (2e13 FLOP/s).
  EXPECT_GE(*profile->fp8GemmSeconds(100000, 1000, 1000),
            2.0 * 100000 * 1000 * 1000 / (2 * 2e13));
  EXPECT_EQ(profileError(replaced(json, R"("gemm_fp8_block": [
    {"n": 1000, "k": 1000,
     "points": [{"m": 1000, "seconds": 5e-5}, {"m": 10, "seconds": 1e-6}]}
  ])",
                                  R"("gemm_fp8_block": [])")),
            "gemm_fp8_block: needs at least one measured shape");
}

TEST(HardwareProfileTest, PrefillCurvesInterpolateOverCausalPairs) {
  std::string json = testing::syntheticProfileJson();
  // Listed out of pair order: one prompt of 2048 (2,098,176 pairs) before
  // four of 512 (525,312 each); both are 2048 rows.
  json.insert(json.rfind('}'), R"(,
  "attention_prefill_bf16": [
    {"heads": 32, "kv_heads": 8, "head_dim": 128,
     "points": [{"batch": 1, "context": 2048, "seconds": 4e-3},
                {"batch": 4, "context": 512, "seconds": 1e-3}]}
  ],
  "mla_attention_prefill_bf16": [
    {"heads": 16, "latent_dim": 512, "rope_dim": 64,
     "points": [{"batch": 2, "context": 100, "seconds": 2e-3}]}
  ]
)");
  auto profile = HardwareProfile::fromJson(json);
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  ASSERT_EQ(profile->attentionPrefillShapes().size(), 1u);
  EXPECT_EQ(profile->attentionPrefillShapes()[0].points[0].context, 512);
  const double pairs512 = 512.0 * 513 / 2, pairs2048 = 2048.0 * 2049 / 2;
  EXPECT_DOUBLE_EQ(*profile->attentionPrefillSeconds(4, pairs512, 32, 8, 128),
                   1e-3);
  EXPECT_DOUBLE_EQ(*profile->attentionPrefillSeconds(1, pairs2048, 32, 8, 128),
                   4e-3);
  // Half way between the points in log pairs: half way in log seconds.
  const double middle = std::sqrt(4 * pairs512 * pairs2048);
  EXPECT_NEAR(*profile->attentionPrefillSeconds(1, middle, 32, 8, 128),
              std::sqrt(1e-3 * 4e-3), 1e-12);
  EXPECT_EQ(*profile->attentionPrefillSeconds(0, pairs512, 32, 8, 128), 0);
  EXPECT_FALSE(
      profile->attentionPrefillSeconds(4, pairs512, 32, 4, 128).has_value());
  // MLA: one point, its rate carried on (twice the pairs, twice the time).
  EXPECT_DOUBLE_EQ(*profile->mlaPrefillSeconds(4, 5050, 16, 512, 64), 4e-3);
  EXPECT_FALSE(profile->mlaPrefillSeconds(4, 5050, 128, 512, 64).has_value());
  // Profiles measured before these curves have none.
  EXPECT_FALSE(syntheticProfile()
                   .attentionPrefillSeconds(4, pairs512, 32, 8, 128)
                   .has_value());
  EXPECT_EQ(profileError(replaced(json, R"("kv_heads": 8, "head_dim": 128,
     "points": [{"batch": 1)",
                                  R"("kv_heads": 3, "head_dim": 128,
     "points": [{"batch": 1)")),
            "attention_prefill_bf16[0].kv_heads: 3 does not divide heads = 32");
}

TEST(HardwareProfileTest, AttentionMeasurementsAreOptional) {
  auto profile =
      HardwareProfile::fromJson(testing::profileJsonWithoutAttention());
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  EXPECT_TRUE(profile->attentionShapes().empty());
}

// A host measured with every field, GPU copies included.
HostCpuProfile measuredHost() {
  HostCpuProfile host;
  host.isa = {true, true, true, false, true};
  host.kernelIsa = "avx512";
  host.numaNodes = {{0, {0, 1, 2, 3}, 64 * kGiB}, {1, {4, 5, 6, 7}, 0}};
  host.readBandwidth = {{8, 4.6e10}, {1, 1.2e10}, {16, 9.7e10}};
  host.readWithH2d = {{16, 5.8e10, 5.1e10}};
  host.attention = {
      {32, 8, 128, "fp8", 16, {{1 << 30, 0.02}, {1 << 20, 3e-5}}}};
  host.mla = {{16, 512, 64, "bf16", 16, {{1 << 28, 0.01}}}};
  return host;
}

std::string withHost(const HostCpuProfile &host) {
  std::string json = syntheticProfileJson();
  json.insert(json.rfind('}'),
              ",\n  \"host_cpu\": " + hostCpuProfileJson(host));
  return json;
}

TEST(HardwareProfileTest, HostCpuRoundTrips) {
  auto profile = HardwareProfile::fromJson(withHost(measuredHost()));
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  ASSERT_TRUE(profile->hostCpu().has_value());
  const HostCpuProfile &host = *profile->hostCpu();
  EXPECT_TRUE(host.isa.avx512bf16);
  EXPECT_FALSE(host.isa.avx512fp16);
  EXPECT_TRUE(host.isa.amxBf16);
  EXPECT_EQ(host.kernelIsa, "avx512");
  ASSERT_EQ(host.numaNodes.size(), 2u);
  EXPECT_EQ(host.numaNodes[0].cpus, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(host.numaNodes[1].memoryBytes, 0);
  // Sorted by threads.
  ASSERT_EQ(host.readBandwidth.size(), 3u);
  EXPECT_EQ(host.readBandwidth[0].threads, 1);
  EXPECT_DOUBLE_EQ(host.readBandwidth[2].bytesPerSecond, 9.7e10);
  ASSERT_EQ(host.readWithH2d.size(), 1u);
  EXPECT_DOUBLE_EQ(host.readWithH2d[0].h2dBytesPerSecond, 5.1e10);
  ASSERT_EQ(host.attention.size(), 1u);
  EXPECT_EQ(host.attention[0].kvDtype, "fp8");
  EXPECT_EQ(host.attention[0].points[0].kvBytes, 1 << 20);
  ASSERT_EQ(host.mla.size(), 1u);
  EXPECT_EQ(host.mla[0].latentDim, 512);
}

TEST(HardwareProfileTest, HostCpuAndItsConcurrentCopiesAreOptional) {
  auto profile = HardwareProfile::fromJson(syntheticProfileJson());
  ASSERT_TRUE(profile.ok());
  EXPECT_FALSE(profile->hostCpu().has_value());
  // Measured without a GPU: no concurrent copies.
  HostCpuProfile host = measuredHost();
  host.readWithH2d.clear();
  std::string json = withHost(host);
  EXPECT_EQ(json.find("read_with_h2d"), std::string::npos);
  profile = HardwareProfile::fromJson(json);
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  EXPECT_TRUE(profile->hostCpu()->readWithH2d.empty());
}

// The host's attention is priced from the measured shape closest in query
// heads per KV head; more heads a KV head than that shape costs
// proportionally more work per byte, fewer the same.
TEST(HardwareProfileTest, HostAttentionScalesWithTheGroupBeyondTheMeasured) {
  HardwareProfile profile = testing::withHostAttention(10e9); // 8 over 2
  double bytes = double(int64_t(1) << 30);
  auto at = [&](int64_t headsPerKvHead) {
    return profile
        .hostAttentionSeconds(bytes, model::KvDtype::bf16, headsPerKvHead,
                              false)
        .value_or(-1);
  };
  EXPECT_NEAR(at(4), bytes / 10e9, 1e-9);
  EXPECT_NEAR(at(8), 2 * at(4), 1e-9);
  EXPECT_NEAR(at(16), 4 * at(4), 1e-9);
  EXPECT_NEAR(at(1), at(4), 1e-9);
  EXPECT_FALSE(
      profile.hostAttentionSeconds(bytes, model::KvDtype::fp8, 4, false));
}

// Every profile in the tree, measured or estimated, from before the host was
// measured, still loads.
TEST(HardwareProfileTest, ShippedProfilesLoad) {
  int loaded = 0;
  for (const char *folder : {"models/hardware", "test/Transforms/Inputs"})
    for (const auto &entry : std::filesystem::directory_iterator(
             std::filesystem::path(MOE_SOURCE_DIR) / folder)) {
      if (entry.path().extension() != ".json")
        continue;
      auto profile = HardwareProfile::load(entry.path().string());
      EXPECT_TRUE(profile.ok()) << profile.error().message();
      ++loaded;
    }
  EXPECT_GE(loaded, 8);
}

TEST(HardwareProfileTest, HostCpuErrorsNameTheField) {
  std::string json = withHost(measuredHost());
  EXPECT_EQ(profileError(replaced(json, "\"avx512\"", "\"sse2\"")),
            "host_cpu.kernel_isa: expected \"avx2\", \"avx512\" or "
            "\"avx512_amx\", got \"sse2\"");
  EXPECT_EQ(
      profileError(replaced(json, "\"amx_bf16\": true", "\"amx_bf16\": 1")),
      "host_cpu.isa.amx_bf16: must be true or false");
  EXPECT_EQ(profileError(replaced(json, "\"threads\": 8", "\"threads\": 1")),
            "host_cpu.read_bandwidth: threads = 1 is measured twice");
  EXPECT_EQ(profileError(replaced(json, "\"fp8\"", "\"int4\"")),
            "host_cpu.attention_decode[0].kv_dtype: expected \"bf16\" or "
            "\"fp8\", got \"int4\"");
  EXPECT_EQ(profileError(replaced(json, "\"h2d_bytes_per_s\": 51000000000.0",
                                  "\"h2d_bytes_per_s\": 0")),
            "host_cpu.read_with_h2d[0].h2d_bytes_per_s: must be a positive "
            "number");
  EXPECT_EQ(profileError(replaced(json, "\"read_bandwidth\"", "\"reads\"")),
            "host_cpu.read_bandwidth: missing");
}

TEST(HardwareProfileTest, ErrorsNameTheField) {
  std::string json = syntheticProfileJson();
  EXPECT_EQ(profileError("{"), "hardware profile: not valid JSON");
  EXPECT_EQ(profileError("[]"),
            "hardware profile: top level must be an object");
  EXPECT_EQ(profileError(replaced(json, "moe-hardware-profile/1", "other/2")),
            "schema: expected \"moe-hardware-profile/1\", got \"other/2\"");
  EXPECT_EQ(
      profileError(replaced(json, "\"sm_count\": 132", "\"sm_count\": -1")),
      "device.sm_count: must be a positive integer");
  EXPECT_EQ(
      profileError(replaced(json, "\"cpu_cores\": 16", "\"cpu_cores\": 1.5")),
      "host.cpu_cores: must be a positive integer");
  EXPECT_EQ(profileError(replaced(json, "\"hbm_bytes_per_s\": 1e12",
                                  "\"hbm_per_s\": 1e12")),
            "links.hbm_bytes_per_s: missing");
  EXPECT_EQ(profileError(replaced(json, "\"compute_capability\": \"9.0\"",
                                  "\"compute_capability\": 9")),
            "device.compute_capability: must be a string");
  EXPECT_EQ(profileError(replaced(json, "\"9.0\"", "\"sm90\"")),
            "device.compute_capability: expected \"major.minor\" such as "
            "\"9.0\", got \"sm90\"");
  EXPECT_EQ(profileError(replaced(json, R"({"m": 10, "seconds": 1e-5})",
                                  R"({"m": 10, "seconds": "fast"})")),
            "gemm_bf16[0].points[1].seconds: must be a positive number");
  EXPECT_EQ(profileError(replaced(json, R"({"m": 10, "seconds": 1e-5})",
                                  R"({"m": 1000, "seconds": 1e-5})")),
            "gemm_bf16[0].points: m = 1000 is measured twice");
  EXPECT_EQ(
      profileError(replaced(json, R"("kv_heads": 2)", R"("kv_heads": 3)")),
      "attention_decode_bf16[0].kv_heads: 3 does not divide heads = 8");
  EXPECT_EQ(profileError(replaced(json, R"("context": 1000, "seconds": 1e-5)",
                                  R"("seconds": 1e-5)")),
            "attention_decode_bf16[0].points[0].context: missing");
  std::string noGemm = json;
  size_t from = noGemm.find("\"gemm_bf16\": [");
  size_t to = noGemm.find("\"attention_decode_bf16\"");
  noGemm.replace(from, to - from, "\"gemm_bf16\": [],\n  ");
  EXPECT_EQ(profileError(noGemm),
            "gemm_bf16: needs at least one measured shape");
}

TEST(HardwareProfileTest, LoadNamesTheFile) {
  moe::testing::ScratchDirectory scratch;
  std::string path = scratch.file("profile.json");
  {
    std::ofstream file(path);
    file << replaced(syntheticProfileJson(), "\"name\": \"synthetic\", ", "");
  }
  auto profile = HardwareProfile::load(path);
  ASSERT_FALSE(profile.ok());
  EXPECT_EQ(profile.error().message(), path + ": device.name: missing");
  std::remove(path.c_str());
  auto absent = HardwareProfile::load(path);
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.error().message(), path + ": cannot open hardware profile");
}

// A section measured again replaces the profile's, one the measurement
// lacks is left out, and a result that does not load is not written.
TEST(HardwareProfileTest, SectionsMeasuredAgainReplaceTheProfiles) {
  moe::testing::ScratchDirectory scratch;
  const std::string in = scratch.file("in.json"),
                    out = scratch.file("out.json");
  {
    std::ofstream file(in);
    file << withHost(measuredHost());
  }
  std::string mla = testing::mlaProfileJson();
  mla = replaced(mla, R"("seconds": 1e-3)", R"("seconds": 5e-4)");
  Status written = writeProfileWithSections(
      in, out, mla, {"mla_attention_decode_bf16", "host_cpu"});
  ASSERT_TRUE(written.ok()) << written.error().message();
  auto profile = HardwareProfile::load(out);
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  EXPECT_DOUBLE_EQ(*profile->mlaDecodeSeconds(4, 125, 16, 512, 64), 5e-4);
  EXPECT_FALSE(profile->hostCpu().has_value());

  std::remove(out.c_str());
  Status refused = writeProfileWithSections(
      in, out, replaced(mla, R"("latent_dim": 512)", R"("latent_dim": 0)"),
      {"mla_attention_decode_bf16"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            in + ": mla_attention_decode_bf16[0].latent_dim: must be a "
                 "positive integer");
  EXPECT_FALSE(std::filesystem::exists(out));
}

} // namespace
} // namespace moe::costmodel
