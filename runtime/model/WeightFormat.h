// How a plan's routed experts hold their weights: the format the compiler's
// cost model prices, the CPU backend computes with as the reference and the
// CUDA backend stores, streams and widens.
//
//  * bf16: every weight as bf16 (the CUDA backend's format for all weights).
//  * fp8:  each expert matrix [rows, cols] (gate, up, down: a Linear's
//    [out, in]) as E4M3 codes, one byte each, and one fp32 scale per block
//    of 128 × 128 elements, amax / 448 of the block: the layout of
//    DeepSeek-V3's and Qwen3's FP8 checkpoints (`weight_scale_inv`), so
//    their blocks are what a shipped checkpoint holds, and a bf16
//    checkpoint quantized at load costs 4 bytes of scale per 16,384
//    weights. Biases and every other module's weights stay bf16.
// Header-only: the compiler's cost model prices expert bytes with it.
#pragma once

#include "runtime/support/Float8.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moe::model {

enum class WeightDtype : uint8_t { bf16 = 0, fp8 = 1 };

inline constexpr std::string_view weightDtypeName(WeightDtype dtype) {
  return dtype == WeightDtype::fp8 ? "fp8" : "bf16";
}

inline std::optional<WeightDtype> parseWeightDtype(std::string_view name) {
  if (name == "bf16")
    return WeightDtype::bf16;
  if (name == "fp8")
    return WeightDtype::fp8;
  return std::nullopt;
}

/// Rows and columns of one scale's block.
inline constexpr int64_t kFp8WeightBlock = 128;

/// Scales of an fp8 [rows, cols] matrix: ⌈rows/128⌉ × ⌈cols/128⌉, row-major.
inline constexpr int64_t fp8ScaleCount(int64_t rows, int64_t cols) {
  return (rows + kFp8WeightBlock - 1) / kFp8WeightBlock *
         ((cols + kFp8WeightBlock - 1) / kFp8WeightBlock);
}

/// Bytes of an fp8 [rows, cols] matrix: its codes and its fp32 scales.
inline constexpr int64_t fp8MatrixBytes(int64_t rows, int64_t cols) {
  return rows * cols + 4 * fp8ScaleCount(rows, cols);
}

/// Calls encode(index, code) for every element (r, c) of the row-major
/// [rows, cols] matrix `values` (index r · cols + c) and scale(block,
/// scale) for each block (row-major over the ⌈rows/128⌉ × ⌈cols/128⌉
/// blocks): amax / 448 of the block, which a block of zeros gets as 0.
template <typename Encode, typename Scale>
inline void forEachFp8Code(const float *values, int64_t rows, int64_t cols,
                           Encode &&encode, Scale &&scale) {
  int64_t blockCols = (cols + kFp8WeightBlock - 1) / kFp8WeightBlock;
  for (int64_t r0 = 0; r0 < rows; r0 += kFp8WeightBlock) {
    int64_t r1 = std::min(rows, r0 + kFp8WeightBlock);
    for (int64_t c0 = 0; c0 < cols; c0 += kFp8WeightBlock) {
      int64_t c1 = std::min(cols, c0 + kFp8WeightBlock);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          amax = std::fmax(amax, std::fabs(values[r * cols + c]));
      float inverse = amax > 0.0f ? kFp8Max / amax : 0.0f;
      scale(r0 / kFp8WeightBlock * blockCols + c0 / kFp8WeightBlock,
            amax / kFp8Max);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          encode(r * cols + c, fp8FromFloat(values[r * cols + c] * inverse));
    }
  }
}

/// The row-major [rows, cols] matrix `values` as E4M3 codes (`codes`, the
/// same shape) and block scales (`scales`, fp8ScaleCount of them).
inline void quantizeFp8Matrix(const float *values, int64_t rows, int64_t cols,
                              uint8_t *codes, float *scales) {
  forEachFp8Code(
      values, rows, cols, [&](int64_t i, uint8_t code) { codes[i] = code; },
      [&](int64_t block, float scale) { scales[block] = scale; });
}

/// `values` replaced by what its quantized form stands for: the CPU
/// backend computes with these. The blocks of a matrix and of its transpose
/// hold the same elements, so a stacked expert weight quantized as stored
/// ([in, out] or [out, in]) gives the codes and scales the CUDA backend
/// computes from its [out, in] copy.
inline void roundTripFp8Matrix(float *values, int64_t rows, int64_t cols) {
  // A block's codes are all encoded after its scale is reported.
  float blockScale = 0.0f;
  forEachFp8Code(
      values, rows, cols,
      [&](int64_t i, uint8_t code) {
        values[i] = floatFromFp8(code) * blockScale;
      },
      [&](int64_t, float scale) { blockScale = scale; });
}

/// Element (r, c) of a quantized matrix.
inline float fp8MatrixValue(const uint8_t *codes, const float *scales,
                            int64_t cols, int64_t r, int64_t c) {
  int64_t blockCols = (cols + kFp8WeightBlock - 1) / kFp8WeightBlock;
  return floatFromFp8(codes[r * cols + c]) *
         scales[r / kFp8WeightBlock * blockCols + c / kFp8WeightBlock];
}

} // namespace moe::model
