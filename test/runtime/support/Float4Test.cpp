// The host's E2M1 codec and E8M0 scales (MXFP4): every code's value, round
// to nearest with ties to the even code, saturation, and the scale rule.

#include "runtime/support/Float4.h"

#include <gtest/gtest.h>

#include <cmath>

namespace moe {
namespace {

TEST(Float4, EveryCodeRoundTrips) {
  const float values[16] = {0,     0.5f,  1,  1.5f,  2,  3,  4,  6,
                            -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (uint8_t code = 0; code < 16; ++code) {
    EXPECT_EQ(floatFromFp4(code), values[code]) << int(code);
    EXPECT_EQ(std::signbit(floatFromFp4(code)), code >= 8) << int(code);
    EXPECT_EQ(fp4FromFloat(values[code]), code) << int(code);
  }
}

TEST(Float4, RoundsToNearestWithTiesToEven) {
  // Midpoints go to the code with an even magnitude index.
  EXPECT_EQ(fp4FromFloat(0.25f), 0); // 0 | 0.5
  EXPECT_EQ(fp4FromFloat(0.75f), 2); // 0.5 | 1
  EXPECT_EQ(fp4FromFloat(1.25f), 2); // 1 | 1.5
  EXPECT_EQ(fp4FromFloat(1.75f), 4); // 1.5 | 2
  EXPECT_EQ(fp4FromFloat(2.5f), 4);  // 2 | 3
  EXPECT_EQ(fp4FromFloat(3.5f), 6);  // 3 | 4
  EXPECT_EQ(fp4FromFloat(5.0f), 6);  // 4 | 6
  EXPECT_EQ(fp4FromFloat(-5.0f), 14);
  // Off the midpoints, the nearest.
  EXPECT_EQ(fp4FromFloat(0.26f), 1);
  EXPECT_EQ(fp4FromFloat(5.01f), 7);
  EXPECT_EQ(fp4FromFloat(-1.3f), 11);
  // Saturating; NaN becomes zero.
  EXPECT_EQ(fp4FromFloat(100.0f), 7);
  EXPECT_EQ(fp4FromFloat(-INFINITY), 15);
  EXPECT_EQ(fp4FromFloat(NAN), 0);
}

TEST(Float4, ScaleIsTheSmallestPowerOfTwoAtLeastAmaxOverSix) {
  EXPECT_EQ(e8m0ScaleFor(6.0f), 127);  // 2^0
  EXPECT_EQ(e8m0ScaleFor(6.5f), 128);  // 2^1
  EXPECT_EQ(e8m0ScaleFor(3.0f), 126);  // 2^-1
  EXPECT_EQ(e8m0ScaleFor(48.0f), 130); // 2^3
  EXPECT_EQ(e8m0ScaleFor(0.0f), 0);
  EXPECT_EQ(floatFromE8m0(130), 8.0f);
  EXPECT_EQ(floatFromE8m0(0), std::ldexp(1.0f, -127));
  for (float amax : {1e-30f, 0.01f, 0.7f, 5.9f, 1e30f}) {
    float scale = floatFromE8m0(e8m0ScaleFor(amax));
    EXPECT_GE(scale * 6.0f, amax) << amax;
    EXPECT_LT(scale * 3.0f, amax) << amax;
  }
}

} // namespace
} // namespace moe
