// The profiler's JSON is what the cost model reads: every section written by
// profileToJson parses back with costmodel::HardwareProfile (here, on a
// hand-made profile, without a GPU), and a quick real profile does too (on a
// GPU).
#include "runtime/backends/cuda/HardwareProfiler.h"
#include "runtime/costmodel/HardwareProfile.h"
#include "test/runtime/cuda/CudaTestSupport.h"

#include <gtest/gtest.h>

namespace moe::cuda {
namespace {

HardwareProfile handMade() {
  HardwareProfile p;
  p.device = {"a card", 80ll << 30, 2ll << 30, 132, "9.0"};
  p.host = {128ll << 30, 8ll << 30, 16};
  p.links = {5e10, 5e10, 8e9, 3e12};
  p.gemmBf16 = {{4096, 4096, {{1, 2e-5}, {1024, 1e-4}}}};
  p.groupedGemmBf16 = {{1536, 2048, 128, {{1, 3e-4}, {64, 4e-4}}}};
  p.attentionDecodeBf16 = {{32, 8, 128, {{1, 512, 1e-5}, {64, 4096, 3e-4}}}};
  p.mlaAttentionDecodeBf16 = {
      {16, 512, 64, {{1, 512, 2e-5}, {64, 4096, 1e-3}}}};
  costmodel::HostCpuProfile host;
  host.kernelIsa = "avx512";
  host.readBandwidth = {{1, 1.2e10}, {16, 9.7e10}};
  host.attention = {{32, 8, 128, "bf16", 16, {{1 << 30, 2e-2}}}};
  p.hostCpu = host;
  return p;
}

TEST(HardwareProfiler, JsonReadsBackIntoTheCostModel) {
  auto parsed = costmodel::HardwareProfile::fromJson(profileToJson(handMade()));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_EQ(parsed->device().name, "a card");
  EXPECT_EQ(parsed->gemmShapes().size(), 1u);
  ASSERT_EQ(parsed->groupedGemmShapes().size(), 1u);
  EXPECT_EQ(parsed->groupedGemmShapes()[0].experts, 128);
  ASSERT_EQ(parsed->attentionShapes().size(), 1u);
  EXPECT_EQ(parsed->attentionShapes()[0].kvHeads, 8);
  ASSERT_EQ(parsed->mlaShapes().size(), 1u);
  EXPECT_EQ(parsed->mlaShapes()[0].latentDim, 512);
  EXPECT_DOUBLE_EQ(*parsed->mlaDecodeSeconds(64, 4096, 16, 512, 64), 1e-3);
  ASSERT_TRUE(parsed->hostCpu().has_value());
  EXPECT_DOUBLE_EQ(parsed->hostCpu()->readBandwidth[1].bytesPerSecond, 9.7e10);
  EXPECT_EQ(parsed->hostCpu()->attention[0].points[0].kvBytes, 1 << 30);
}

TEST(HardwareProfiler, QuickProfileReadsBackIntoTheCostModel) {
  MOE_REQUIRE_CUDA_DEVICE();
  auto profile = profileHardware({.quick = true});
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  auto parsed = costmodel::HardwareProfile::fromJson(profileToJson(*profile));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_FALSE(parsed->groupedGemmShapes().empty());
  EXPECT_FALSE(parsed->attentionShapes().empty());
  ASSERT_FALSE(parsed->mlaShapes().empty());
  const auto &mla = parsed->mlaShapes()[0];
  EXPECT_GT(*parsed->mlaDecodeSeconds(64, 4096, mla.heads, mla.latentDim,
                                      mla.ropeDim),
            0);
  ASSERT_TRUE(parsed->hostCpu().has_value());
  EXPECT_FALSE(parsed->hostCpu()->readBandwidth.empty());
  EXPECT_FALSE(parsed->hostCpu()->attention.empty());
}

} // namespace
} // namespace moe::cuda
