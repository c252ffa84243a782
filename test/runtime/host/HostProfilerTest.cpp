// The host profiler on this machine, quickly: every section filled, and the
// profile it makes loads.
#include "runtime/host/HostProfiler.h"

#include "runtime/host/CpuFeatures.h"
#include "runtime/host/ReadBandwidth.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace moe::host {
namespace {

TEST(ReadBandwidthTest, ThreadCountsDoubleUpToAllCores) {
  EXPECT_EQ(readThreadCounts(1), (std::vector<int>{1}));
  EXPECT_EQ(readThreadCounts(16), (std::vector<int>{1, 2, 4, 8, 16}));
  EXPECT_EQ(readThreadCounts(12), (std::vector<int>{1, 2, 4, 8, 12}));
}

TEST(HostProfilerTest, MeasuresEverySectionAndLoads) {
  if (!bestVectorIsa())
    GTEST_SKIP() << "no AVX2 on this CPU";
  HostProfileOptions options;
  options.quick = true;
  auto host = profileHost(options);
  ASSERT_TRUE(host.ok()) << host.error().message();
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  ASSERT_EQ(host->readBandwidth.size(), readThreadCounts(cores).size());
  for (const costmodel::HostReadPoint &point : host->readBandwidth)
    EXPECT_GT(point.bytesPerSecond, 1e8) << point.threads << " threads";
  EXPECT_TRUE(host->readWithH2d.empty()); // needs a GPU
  EXPECT_EQ(host->isa.avx512f, cpuFeatures().avx512f);
  EXPECT_EQ(host->kernelIsa, vectorIsaName(*bestVectorIsa()));
  // bf16 at group sizes 1, 4, 8 and 16; fp8 at 4 and 8.
  ASSERT_EQ(host->attention.size(), 6u);
  std::vector<std::pair<int64_t, std::string>> shapes;
  for (const auto &shape : host->attention)
    shapes.push_back({shape.heads / shape.kvHeads, shape.kvDtype});
  EXPECT_EQ(shapes, (std::vector<std::pair<int64_t, std::string>>{{1, "bf16"},
                                                                  {4, "bf16"},
                                                                  {8, "bf16"},
                                                                  {16, "bf16"},
                                                                  {4, "fp8"},
                                                                  {8, "fp8"}}));
  ASSERT_EQ(host->mla.size(), 1u);
  for (const auto &shape : host->attention) {
    EXPECT_EQ(shape.threads, cores);
    // Four times the tokens read four times the bytes.
    ASSERT_EQ(shape.points.size(), 2u);
    EXPECT_EQ(shape.points[1].kvBytes, 4 * shape.points[0].kvBytes);
  }

  std::string json = R"({"schema": "moe-hardware-profile/1",
    "device": {"name": "gpu", "memory_bytes": 1000, "sm_count": 1,
               "compute_capability": "9.0"},
    "host": {"memory_bytes": 1000, "cpu_cores": 1},
    "links": {"h2d_pinned_bytes_per_s": 1, "d2h_pinned_bytes_per_s": 1,
              "h2d_pageable_bytes_per_s": 1, "hbm_bytes_per_s": 1},
    "gemm_bf16": [{"n": 1, "k": 1, "points": [{"m": 1, "seconds": 1}]}],
    "host_cpu": )" + costmodel::hostCpuProfileJson(*host) +
                     "}";
  auto profile = costmodel::HardwareProfile::fromJson(json);
  ASSERT_TRUE(profile.ok()) << profile.error().message();
  ASSERT_TRUE(profile->hostCpu().has_value());
  EXPECT_EQ(profile->hostCpu()->mla[0].points.size(), 2u);
}

} // namespace
} // namespace moe::host
