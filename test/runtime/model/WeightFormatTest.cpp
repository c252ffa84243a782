// The fp8 expert weight format: its sizes, the block quantization both
// backends compute from the same values, and the CPU backend's round trip.

#include "runtime/model/WeightFormat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace moe::model {
namespace {

TEST(WeightFormat, Sizes) {
  // A 200 x 300 matrix has 2 x 3 blocks, the last ones partial.
  EXPECT_EQ(fp8ScaleCount(200, 300), 6);
  EXPECT_EQ(fp8MatrixBytes(200, 300), 200 * 300 + 6 * 4);
  // DeepSeek-V3's expert gate [2048, 7168]: 16 x 56 scales.
  EXPECT_EQ(fp8ScaleCount(2048, 7168), 896);
  EXPECT_EQ(parseWeightDtype("fp8"), WeightDtype::fp8);
  EXPECT_EQ(parseWeightDtype("bf16"), WeightDtype::bf16);
  EXPECT_FALSE(parseWeightDtype("f16"));
  EXPECT_EQ(weightDtypeName(WeightDtype::fp8), "fp8");
}

// Values whose magnitude differs by block, with one block of zeros.
std::vector<float> blockyMatrix(int64_t rows, int64_t cols) {
  std::vector<float> values(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      int64_t block = r / 128 * 3 + c / 128;
      float magnitude = block == 4 ? 0.0f : std::ldexp(1.0f, int(block) - 3);
      values[size_t(r * cols + c)] = magnitude * std::sin(0.37f * r + 1.1f * c);
    }
  return values;
}

TEST(WeightFormat, EachBlockIsScaledToItsLargestValue) {
  const int64_t rows = 200, cols = 300;
  std::vector<float> values = blockyMatrix(rows, cols);
  std::vector<uint8_t> codes(size_t(rows * cols));
  std::vector<float> scales(size_t(fp8ScaleCount(rows, cols)));
  quantizeFp8Matrix(values.data(), rows, cols, codes.data(), scales.data());
  for (int64_t br = 0; br < 2; ++br)
    for (int64_t bc = 0; bc < 3; ++bc) {
      float amax = 0.0f;
      bool reachesMax = false;
      for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r)
        for (int64_t c = bc * 128; c < std::min(cols, bc * 128 + 128); ++c) {
          amax = std::fmax(amax, std::fabs(values[size_t(r * cols + c)]));
          reachesMax |= (codes[size_t(r * cols + c)] & 0x7F) == 0x7E;
        }
      EXPECT_EQ(scales[size_t(br * 3 + bc)], amax / kFp8Max)
          << "block " << br << ", " << bc;
      EXPECT_EQ(reachesMax, amax > 0.0f) << "block " << br << ", " << bc;
    }
  // Every value within half a step of E4M3's 3 mantissa bits (or of its
  // subnormal step) of its block's scale.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float scale = scales[size_t(r / 128 * 3 + c / 128)];
      float x = values[size_t(r * cols + c)];
      float tolerance =
          std::fmax(std::fabs(x) / 16.0f, scale * std::ldexp(1.0f, -10));
      EXPECT_NEAR(fp8MatrixValue(codes.data(), scales.data(), cols, r, c), x,
                  tolerance * 1.0001f)
          << r << ", " << c;
    }
}

TEST(WeightFormat, RoundTripIsWhatTheCodesStandFor) {
  const int64_t rows = 200, cols = 300;
  std::vector<float> values = blockyMatrix(rows, cols);
  std::vector<uint8_t> codes(size_t(rows * cols));
  std::vector<float> scales(size_t(fp8ScaleCount(rows, cols)));
  quantizeFp8Matrix(values.data(), rows, cols, codes.data(), scales.data());
  std::vector<float> roundTrip = values;
  roundTripFp8Matrix(roundTrip.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      ASSERT_EQ(roundTrip[size_t(r * cols + c)],
                fp8MatrixValue(codes.data(), scales.data(), cols, r, c))
          << r << ", " << c;
}

// The CPU backend quantizes a weight as stored ([in, out] for GPT-OSS), the
// CUDA backend its [out, in] copy: the same blocks, so the same values.
TEST(WeightFormat, TransposingCommutesWithTheRoundTrip) {
  const int64_t rows = 200, cols = 300;
  std::vector<float> values = blockyMatrix(rows, cols);
  std::vector<float> transposed(values.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      transposed[size_t(c * rows + r)] = values[size_t(r * cols + c)];
  roundTripFp8Matrix(values.data(), rows, cols);
  roundTripFp8Matrix(transposed.data(), cols, rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      ASSERT_EQ(transposed[size_t(c * rows + r)], values[size_t(r * cols + c)])
          << r << ", " << c;
}

} // namespace
} // namespace moe::model
