// The host's E4M3 conversions: every code round-trips, fp32 rounds to
// nearest even and saturates as CUDA's __NV_SATFINITE conversion does.

#include "runtime/support/Float8.h"

#include <gtest/gtest.h>

#include <cmath>

namespace moe {
namespace {

TEST(Float8, EveryCodeRoundTrips) {
  for (int code = 0; code < 256; ++code) {
    float value = floatFromFp8(static_cast<uint8_t>(code));
    if ((code & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(value)) << code;
      continue;
    }
    EXPECT_EQ(fp8FromFloat(value), code) << code << " = " << value;
  }
  EXPECT_EQ(floatFromFp8(0x7E), 448.0f);
  EXPECT_EQ(floatFromFp8(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(floatFromFp8(0x08), std::ldexp(1.0f, -6));
}

TEST(Float8, RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(fp8FromFloat(1.0625f), 0x38); // between 1 and 1.125: to 1
  EXPECT_EQ(fp8FromFloat(1.1875f), 0x3A); // between 1.125 and 1.25: to 1.25
  EXPECT_EQ(fp8FromFloat(1.05f), 0x38);   // nearer 1
  EXPECT_EQ(fp8FromFloat(15.5f), 0x58);   // between 15 and 16: carries to 16
  EXPECT_EQ(fp8FromFloat(460.0f), 0x7E);  // beyond 448: saturates
  EXPECT_EQ(fp8FromFloat(-1e30f), 0xFE);  // to -448
  EXPECT_EQ(fp8FromFloat(std::ldexp(1.0f, -10)), 0x00); // half of 2^-9: even
  EXPECT_EQ(fp8FromFloat(std::ldexp(3.0f, -10)), 0x02); // 1.5 · 2^-9: to 2
  EXPECT_EQ(fp8FromFloat(-0.0f), 0x80);
  EXPECT_EQ(fp8FromFloat(NAN) & 0x7F, 0x7F);
}

} // namespace
} // namespace moe
