// The quantized expert weight formats (fp8, mxfp4): their sizes, the block
// quantization both backends compute from the same values, the CPU
// backend's round trip, and the CUDA backend's block layout.

#include "runtime/model/WeightFormat.h"

#include <gtest/gtest.h>

#include <algorithm>
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

TEST(WeightFormat, Mxfp4Sizes) {
  // GPT-OSS-120B's gate_up of one expert: [5760, 2880], 90 blocks a row.
  EXPECT_EQ(mxfp4MatrixBytes(5760, 2880), 5760 * 1440 + 5760 * 90);
  EXPECT_EQ(expertMatrixBytes(WeightDtype::mxfp4, 5760, 2880),
            mxfp4MatrixBytes(5760, 2880));
  EXPECT_EQ(expertMatrixBytes(WeightDtype::bf16, 3, 5), 30);
  EXPECT_EQ(parseWeightDtype("mxfp4"), WeightDtype::mxfp4);
  EXPECT_EQ(weightDtypeName(WeightDtype::mxfp4), "mxfp4");
  EXPECT_EQ(unsupportedExpertColumns(WeightDtype::mxfp4, 64), nullptr);
  EXPECT_NE(unsupportedExpertColumns(WeightDtype::mxfp4, 48), nullptr);
  EXPECT_NE(unsupportedExpertColumns(WeightDtype::fp8, 24), nullptr);
}

// A block's scale is the smallest power of two at least amax / 6, so its
// largest value codes near ±6 and none saturates; each value is the E2M1
// value nearest to it (ties to even) times the scale.
TEST(WeightFormat, Mxfp4BlocksScaleToTheirLargestValue) {
  const int64_t rows = 3, cols = 64;
  std::vector<float> values(size_t(rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i)
    values[size_t(i)] =
        std::ldexp(std::sin(0.7f * float(i) + 0.3f), int(i / 32) - 3);
  std::vector<uint8_t> codes(size_t(rows * cols / 2)),
      scales(size_t(rows * cols / 32));
  quantizeMxfp4Matrix(values.data(), rows, cols, codes.data(), scales.data());
  constexpr float kGrid[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / 32; ++b) {
      float amax = 0.0f;
      for (int64_t c = b * 32; c < b * 32 + 32; ++c)
        amax = std::fmax(amax, std::fabs(values[size_t(r * cols + c)]));
      float scale = floatFromE8m0(scales[size_t(r * 2 + b)]);
      EXPECT_GE(scale * 6.0f, amax);
      EXPECT_LT(scale * 3.0f, amax);
      for (int64_t c = b * 32; c < b * 32 + 32; ++c) {
        float x = values[size_t(r * cols + c)] / scale;
        float got =
            mxfp4MatrixValue(codes.data(), scales.data(), cols, r, c) / scale;
        for (float g : kGrid) // no grid value is nearer to x
          EXPECT_LE(std::fabs(got - x), std::fabs(std::copysign(g, x) - x))
              << r << ", " << c;
      }
    }
}

// The CPU backend's round trip equals the codes' values, whichever way
// round the matrix is stored (blocks run along the input).
TEST(WeightFormat, Mxfp4RoundTripIsWhatTheCodesStandFor) {
  const int64_t outs = 5, ins = 96;
  std::vector<float> values(size_t(outs * ins));
  for (int64_t i = 0; i < outs * ins; ++i)
    values[size_t(i)] = std::cos(1.3f * float(i)) * float(1 + i % 7);
  std::vector<uint8_t> codes(size_t(outs * ins / 2)),
      scales(size_t(outs * ins / 32));
  quantizeMxfp4Matrix(values.data(), outs, ins, codes.data(), scales.data());
  std::vector<float> rowMajor = values, transposed(values.size());
  for (int64_t o = 0; o < outs; ++o)
    for (int64_t i = 0; i < ins; ++i)
      transposed[size_t(i * outs + o)] = values[size_t(o * ins + i)];
  roundTripMxfp4Matrix(rowMajor.data(), outs, ins, ins, 1);
  roundTripMxfp4Matrix(transposed.data(), outs, ins, 1, outs);
  for (int64_t o = 0; o < outs; ++o)
    for (int64_t i = 0; i < ins; ++i) {
      float want = mxfp4MatrixValue(codes.data(), scales.data(), ins, o, i);
      ASSERT_EQ(rowMajor[size_t(o * ins + i)], want) << o << ", " << i;
      ASSERT_EQ(transposed[size_t(i * outs + o)], want) << o << ", " << i;
    }
}

// transformers' convert_moe_packed_tensors: FP4_VALUES[low nibble] is the
// even element, [high nibble] the odd one, times 2^(scale - 127).
TEST(WeightFormat, Mxfp4ReadsAsTransformersDoes) {
  std::vector<uint8_t> codes(16), scales = {127 + 3};
  codes[0] = 0x91; // element 0: code 1 (0.5), element 1: code 9 (-0.5)
  codes[1] = 0x7F; // element 2: code 15 (-6), element 3: code 7 (6)
  EXPECT_EQ(mxfp4MatrixValue(codes.data(), scales.data(), 32, 0, 0), 4.0f);
  EXPECT_EQ(mxfp4MatrixValue(codes.data(), scales.data(), 32, 0, 1), -4.0f);
  EXPECT_EQ(mxfp4MatrixValue(codes.data(), scales.data(), 32, 0, 2), -48.0f);
  EXPECT_EQ(mxfp4MatrixValue(codes.data(), scales.data(), 32, 0, 3), 48.0f);
  // Values an mxfp4 checkpoint holds re-quantize to the same values.
  std::vector<float> values(32);
  for (int64_t c = 0; c < 32; ++c)
    values[size_t(c)] = mxfp4MatrixValue(codes.data(), scales.data(), 32, 0, c);
  std::vector<float> roundTrip = values;
  roundTripMxfp4Matrix(roundTrip.data(), 1, 32, 32, 1);
  EXPECT_EQ(roundTrip, values);
}

// An expert's block holds each part's codes, then each part's scales, from
// 16-byte boundaries; quantizing by slabs equals quantizing each part.
TEST(WeightFormat, QuantizedExpertLayout) {
  QuantizedExpertLayout fp8 =
      quantizedExpertLayout(WeightDtype::fp8, 2, 200, 272);
  EXPECT_EQ(fp8.partCodeBytes, 200 * 272);
  EXPECT_EQ(fp8.partScaleBytes, 4 * 2 * 3);
  EXPECT_EQ(fp8.scaleOffset, 2 * 200 * 272);
  EXPECT_EQ(fp8.bytes, 2 * 200 * 272 + 48);
  QuantizedExpertLayout fp4 =
      quantizedExpertLayout(WeightDtype::mxfp4, 1, 5, 96);
  EXPECT_EQ(fp4.partCodeBytes, 240);
  EXPECT_EQ(fp4.scaleOffset, 240);
  EXPECT_EQ(fp4.bytes, 240 + 16); // 15 scales, padded
  for (WeightDtype dtype : {WeightDtype::fp8, WeightDtype::mxfp4}) {
    const int64_t parts = 2, partRows = 150, cols = 64;
    QuantizedExpertLayout layout =
        quantizedExpertLayout(dtype, parts, partRows, cols);
    std::vector<float> values(size_t(parts * partRows * cols));
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = std::sin(0.1f * float(i)) * float(1 + i % 5);
    std::vector<uint8_t> block(size_t(layout.bytes));
    quantizeExpert(dtype, layout, values.data(), parts, partRows, cols,
                   block.data());
    for (int64_t part = 0; part < parts; ++part) {
      const float *matrix = values.data() + part * partRows * cols;
      std::vector<uint8_t> codes(size_t(layout.partCodeBytes)),
          scales(size_t(layout.partScaleBytes));
      if (dtype == WeightDtype::fp8)
        quantizeFp8Matrix(matrix, partRows, cols, codes.data(),
                          reinterpret_cast<float *>(scales.data()));
      else
        quantizeMxfp4Matrix(matrix, partRows, cols, codes.data(),
                            scales.data());
      EXPECT_TRUE(std::equal(codes.begin(), codes.end(),
                             block.begin() + part * layout.partCodeBytes));
      EXPECT_TRUE(std::equal(scales.begin(), scales.end(),
                             block.begin() + layout.scaleOffset +
                                 part * layout.partScaleBytes));
    }
  }
}

} // namespace
} // namespace moe::model
