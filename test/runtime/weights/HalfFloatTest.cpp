// The 16-bit conversions are exact where the value is representable and
// round to nearest even everywhere else, subnormals included.

#include "runtime/weights/HalfFloat.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

namespace moe {
namespace {

bool isF16NaN(uint16_t bits) {
  return (bits & 0x7c00u) == 0x7c00u && (bits & 0x3ffu);
}

TEST(HalfFloat, Bf16Exact) {
  EXPECT_EQ(bf16ToFloat(floatToBf16(1.5f)), 1.5f);
  EXPECT_EQ(floatToBf16(1.5f), 0x3fc0);
  EXPECT_EQ(bf16ToFloat(0xbf80), -1.0f);
  EXPECT_EQ(bf16ToFloat(0x7f80), std::numeric_limits<float>::infinity());
}

TEST(HalfFloat, Bf16RoundsToNearestEven) {
  // The bf16 spacing at 1 is 2^-7: 1 + 2^-8 is a tie between mantissas 0
  // and 1, 1 + 3 * 2^-8 one between 1 and 2.
  EXPECT_EQ(bf16ToFloat(floatToBf16(1.0f + 0x1p-8f)), 1.0f);
  EXPECT_EQ(bf16ToFloat(floatToBf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  EXPECT_EQ(bf16ToFloat(floatToBf16(1.0f + 0x1p-8f + 0x1p-20f)),
            1.0f + 0x1p-7f);
  EXPECT_TRUE(std::isnan(
      bf16ToFloat(floatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload lies only in the dropped bits must stay a NaN.
  EXPECT_TRUE(
      std::isnan(bf16ToFloat(floatToBf16(std::bit_cast<float>(0x7f800001u)))));
}

TEST(HalfFloat, F16Values) {
  EXPECT_EQ(f16ToFloat(0x3e00), 1.5f);
  EXPECT_EQ(f16ToFloat(0x0001), 0x1p-24f); // smallest subnormal
  EXPECT_EQ(f16ToFloat(0x8001), -0x1p-24f);
  EXPECT_EQ(f16ToFloat(0x03ff), 1023 * 0x1p-24f); // largest subnormal
  EXPECT_EQ(f16ToFloat(0x0400), 0x1p-14f);        // smallest normal
  EXPECT_EQ(f16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(f16ToFloat(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(f16ToFloat(0x8000)));
  EXPECT_TRUE(std::isnan(f16ToFloat(0x7e00)));
}

TEST(HalfFloat, EveryF16RoundTrips) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    uint16_t half = static_cast<uint16_t>(bits);
    if (isF16NaN(half))
      EXPECT_TRUE(isF16NaN(floatToF16(f16ToFloat(half)))) << bits;
    else
      EXPECT_EQ(floatToF16(f16ToFloat(half)), half) << bits;
  }
}

TEST(HalfFloat, F16RoundsToNearestEvenBetweenEveryPair) {
  // Between each pair of neighbouring positive f16 values (subnormal and
  // normal), the exact midpoint goes to the even one and a hair off it
  // goes to the nearer one. Midpoints need 12 bits: exact in fp32.
  for (uint16_t low = 0; low < 0x7bff; ++low) {
    uint16_t high = low + 1;
    float midpoint = (f16ToFloat(low) + f16ToFloat(high)) / 2;
    uint16_t even = (low & 1) ? high : low;
    ASSERT_EQ(floatToF16(midpoint), even) << low;
    ASSERT_EQ(floatToF16(-midpoint), even | 0x8000) << low;
    ASSERT_EQ(floatToF16(std::nextafter(midpoint, 0.0f)), low) << low;
    ASSERT_EQ(floatToF16(std::nextafter(midpoint, 1e9f)), high) << low;
  }
}

TEST(HalfFloat, F16Overflow) {
  EXPECT_EQ(floatToF16(65519.0f), 0x7bff);
  EXPECT_EQ(floatToF16(65520.0f), 0x7c00); // the tie rounds up to infinity
  EXPECT_EQ(floatToF16(-1e9f), 0xfc00);
  EXPECT_EQ(floatToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(isF16NaN(floatToF16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(isF16NaN(floatToF16(std::bit_cast<float>(0x7f800001u))));
  EXPECT_EQ(floatToF16(0x1p-26f), 0x0000); // below half the smallest subnormal
  EXPECT_EQ(floatToF16(-0.0f), 0x8000);
}

} // namespace
} // namespace moe
