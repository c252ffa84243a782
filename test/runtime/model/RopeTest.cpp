// RoPE inverse frequencies against double-precision references, and the YaRN
// numbers of models.md §3.1.

#include "runtime/model/Rope.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>

namespace moe::model {
namespace {

/// models.md §3.1 in double: inv_freq with the YaRN ramp between low, high.
std::vector<double> referenceInverse(const RopeParams &rope, double low,
                                     double high) {
  int64_t half = rope.rotaryDim / 2;
  std::vector<double> inverse(half);
  for (int64_t i = 0; i < half; ++i) {
    double base =
        std::pow(rope.theta, -2.0 * static_cast<double>(i) / rope.rotaryDim);
    if (!rope.yarn) {
      inverse[i] = base;
      continue;
    }
    double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    inverse[i] = (1 - ramp) * base + ramp * base / rope.factor;
  }
  return inverse;
}

double correctionDim(const RopeParams &rope, double rotations) {
  return rope.rotaryDim *
         std::log(rope.originalMaxPosition /
                  (rotations * 2 * std::numbers::pi)) /
         (2 * std::log(rope.theta));
}

void expectInverse(const RopeParams &rope, double low, double high) {
  std::vector<float> actual = ropeInverseFrequencies(rope);
  std::vector<double> expected = referenceInverse(rope, low, high);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i)
    EXPECT_NEAR(actual[i], expected[i], 2e-6 * expected[i]) << "dim " << i;
}

TEST(Rope, DefaultAndPartialInverseFrequencies) {
  RopeParams rope;
  rope.theta = 10000;
  rope.rotaryDim = 64;
  expectInverse(rope, 0, 0);
  rope.theta = 1e7; // MiniMax: 64 of 128 dims rotate
  expectInverse(rope, 0, 0);
}

TEST(Rope, YarnDeepSeekV3) {
  RopeParams rope;
  rope.style = plan::RopeStyle::interleaved;
  rope.theta = 10000;
  rope.rotaryDim = 64;
  rope.yarn = true;
  rope.factor = 40;
  rope.originalMaxPosition = 4096;
  EXPECT_NEAR(correctionDim(rope, 32), 10.47, 0.01);
  EXPECT_NEAR(correctionDim(rope, 1), 22.51, 0.01);
  YarnRange range = yarnCorrectionRange(rope);
  EXPECT_EQ(range.low, 10);
  EXPECT_EQ(range.high, 23);
  expectInverse(rope, 10, 23);
  std::vector<float> inverse = ropeInverseFrequencies(rope);
  // Below low: original frequency; above high: divided by the factor.
  EXPECT_NEAR(inverse[5], std::pow(10000.0, -10.0 / 64), 1e-7);
  EXPECT_NEAR(inverse[30], std::pow(10000.0, -60.0 / 64) / 40, 1e-12);
}

TEST(Rope, YarnGptOssWithoutTruncation) {
  RopeParams rope;
  rope.theta = 150000;
  rope.rotaryDim = 64;
  rope.yarn = true;
  rope.factor = 32;
  rope.originalMaxPosition = 4096;
  rope.truncate = false;
  YarnRange range = yarnCorrectionRange(rope);
  EXPECT_NEAR(range.low, 8.09, 0.01);
  EXPECT_NEAR(range.high, 17.40, 0.01);
  EXPECT_DOUBLE_EQ(range.low, correctionDim(rope, 32));
  expectInverse(rope, correctionDim(rope, 32), correctionDim(rope, 1));
  // HF's default attention factor without mscale fields.
  EXPECT_NEAR(0.1 * std::log(32.0) + 1.0, 1.3466, 1e-4);
}

} // namespace
} // namespace moe::model
