// The KV row format and the E4M3 encoding the CPU backend uses as the
// reference for the GPU's fp8 caches.

#include "runtime/model/KvFormat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace moe::model {
namespace {

TEST(KvFormat, RowBytes) {
  EXPECT_EQ(kvRowBytes(KvDtype::bf16, 8, 128), 2048);
  // 1,024 codes and 8 scales.
  EXPECT_EQ(kvRowBytes(KvDtype::fp8, 8, 128), 1056);
  // One head of 4: the scale starts at byte 16, the row is padded to 32.
  EXPECT_EQ(fp8ScalesOffset(1, 4), 16);
  EXPECT_EQ(kvRowBytes(KvDtype::fp8, 1, 4), 32);
  // DeepSeek's latent 512 and k_pe 64: 576 codes and 9 scales.
  EXPECT_EQ(latentRowBytes(KvDtype::bf16, 512, 64), 1152);
  EXPECT_EQ(latentRowBytes(KvDtype::fp8, 512, 64), 624);
}

TEST(KvFormat, DtypeNames) {
  EXPECT_EQ(parseKvDtype("fp8"), KvDtype::fp8);
  EXPECT_EQ(parseKvDtype("bf16"), KvDtype::bf16);
  EXPECT_FALSE(parseKvDtype("f16"));
  EXPECT_EQ(kvDtypeName(KvDtype::fp8), "fp8");
}

TEST(KvFormat, RowScalesEachVectorToItsLargestValue) {
  // Two heads of 16: one of ordinary values, one far smaller.
  const int64_t vectors = 2, width = 16;
  std::vector<float> x(vectors * width);
  for (int64_t i = 0; i < width; ++i) {
    x[i] = std::sin(0.7f * i) * 3.0f;
    x[width + i] = std::cos(1.3f * i) * 1e-3f;
  }
  std::vector<uint8_t> row(kvRowBytes(KvDtype::fp8, vectors, width));
  encodeFp8Row(x.data(), vectors, width, row.data());
  std::vector<float> back(x.size());
  decodeFp8Row(row.data(), vectors, width, back.data());
  for (int64_t h = 0; h < vectors; ++h) {
    float amax = 0.0f;
    for (int64_t i = 0; i < width; ++i)
      amax = std::fmax(amax, std::fabs(x[h * width + i]));
    bool reachesMax = false;
    for (int64_t i = 0; i < width; ++i) {
      uint8_t code = row[h * width + i];
      reachesMax |= (code & 0x7F) == 0x7E;
      // Three mantissa bits: within half a step of 2^-3 of the value, or of
      // the subnormal step for values 2^-6 below the largest.
      float tolerance = std::fmax(std::fabs(x[h * width + i]) / 16.0f,
                                  amax / 448.0f * std::ldexp(1.0f, -10));
      EXPECT_NEAR(back[h * width + i], x[h * width + i], tolerance * 1.0001f)
          << "head " << h << " element " << i;
    }
    EXPECT_TRUE(reachesMax) << "head " << h;
  }
}

TEST(KvFormat, ZeroVectorStaysZero) {
  std::vector<float> x(16, 0.0f), back(16, 1.0f);
  std::vector<uint8_t> row(kvRowBytes(KvDtype::fp8, 1, 16));
  encodeFp8Row(x.data(), 1, 16, row.data());
  decodeFp8Row(row.data(), 1, 16, back.data());
  for (float value : back)
    EXPECT_EQ(value, 0.0f);
}

} // namespace
} // namespace moe::model
