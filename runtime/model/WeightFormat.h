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
//    weights.
//  * mxfp4: each expert matrix as E2M1 codes, two a byte (element c of a
//    row in byte c / 2, the low nibble for even c), and one E8M0 scale per
//    32 elements of a row (a Linear's input): the layout of GPT-OSS's
//    `*_blocks` and `*_scales`, 4.25 bits a weight.
// Biases and every other module's weights stay bf16.
// Header-only: the compiler's cost model prices expert bytes with it.
#pragma once

#include "runtime/support/Align.h"
#include "runtime/support/Float4.h"
#include "runtime/support/Float8.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moe::model {

enum class WeightDtype : uint8_t { bf16 = 0, fp8 = 1, mxfp4 = 2 };

inline constexpr std::string_view weightDtypeName(WeightDtype dtype) {
  switch (dtype) {
  case WeightDtype::fp8:
    return "fp8";
  case WeightDtype::mxfp4:
    return "mxfp4";
  default:
    return "bf16";
  }
}

inline std::optional<WeightDtype> parseWeightDtype(std::string_view name) {
  for (WeightDtype dtype :
       {WeightDtype::bf16, WeightDtype::fp8, WeightDtype::mxfp4})
    if (name == weightDtypeName(dtype))
      return dtype;
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

/// Elements of a row that share one mxfp4 scale.
inline constexpr int64_t kMxfp4Block = 32;

/// Bytes of an mxfp4 [rows, cols] matrix (cols a multiple of 32): its codes
/// and its E8M0 scales.
inline constexpr int64_t mxfp4MatrixBytes(int64_t rows, int64_t cols) {
  return rows * cols / 2 + rows * (cols / kMxfp4Block);
}

/// The row-major [rows, cols] matrix `values` (cols a multiple of 32) as
/// mxfp4 codes ([rows, cols / 2] bytes) and scales ([rows, cols / 32]).
inline void quantizeMxfp4Matrix(const float *values, int64_t rows, int64_t cols,
                                uint8_t *codes, uint8_t *scales) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c0 = 0; c0 < cols; c0 += kMxfp4Block) {
      const float *block = values + r * cols + c0;
      float amax = 0.0f;
      for (int64_t c = 0; c < kMxfp4Block; ++c)
        amax = std::fmax(amax, std::fabs(block[c]));
      uint8_t scale = e8m0ScaleFor(amax);
      scales[r * (cols / kMxfp4Block) + c0 / kMxfp4Block] = scale;
      float inverse = std::ldexp(1.0f, 127 - int(scale));
      for (int64_t c = 0; c < kMxfp4Block; c += 2)
        codes[(r * cols + c0 + c) / 2] =
            static_cast<uint8_t>(fp4FromFloat(block[c] * inverse) |
                                 fp4FromFloat(block[c + 1] * inverse) << 4);
    }
}

/// `values` replaced by what its mxfp4 form stands for: a Linear's [out,
/// in] (ins a multiple of 32) with element (o, i) at values[o · outStride +
/// i · inStride]. Blocks run along the input, so a stacked expert stored
/// [in, out] is rounded as its [out, in] copy on the GPU is.
inline void roundTripMxfp4Matrix(float *values, int64_t outs, int64_t ins,
                                 int64_t outStride, int64_t inStride) {
  for (int64_t o = 0; o < outs; ++o)
    for (int64_t i0 = 0; i0 < ins; i0 += kMxfp4Block) {
      float *block = values + o * outStride + i0 * inStride;
      float amax = 0.0f;
      for (int64_t i = 0; i < kMxfp4Block; ++i)
        amax = std::fmax(amax, std::fabs(block[i * inStride]));
      uint8_t code = e8m0ScaleFor(amax);
      float scale = floatFromE8m0(code);
      float inverse = std::ldexp(1.0f, 127 - int(code));
      for (int64_t i = 0; i < kMxfp4Block; ++i)
        block[i * inStride] =
            floatFromFp4(fp4FromFloat(block[i * inStride] * inverse)) * scale;
    }
}

/// Element (r, c) of an mxfp4 matrix.
inline float mxfp4MatrixValue(const uint8_t *codes, const uint8_t *scales,
                              int64_t cols, int64_t r, int64_t c) {
  uint8_t pair = codes[(r * cols + c) / 2];
  return floatFromFp4(c % 2 ? pair >> 4 : pair & 15) *
         floatFromE8m0(scales[r * (cols / kMxfp4Block) + c / kMxfp4Block]);
}

/// Bytes of an expert matrix [rows, cols] held as `dtype`.
inline constexpr int64_t expertMatrixBytes(WeightDtype dtype, int64_t rows,
                                           int64_t cols) {
  switch (dtype) {
  case WeightDtype::fp8:
    return fp8MatrixBytes(rows, cols);
  case WeightDtype::mxfp4:
    return mxfp4MatrixBytes(rows, cols);
  default:
    return 2 * rows * cols;
  }
}

/// Why an expert matrix with rows of `cols` elements cannot be held as
/// `dtype` (the GPU reads fp8 rows 16 codes at a time, mxfp4 rows by whole
/// scale blocks), or null.
inline const char *unsupportedExpertColumns(WeightDtype dtype, int64_t cols) {
  if (dtype == WeightDtype::fp8 && cols % 16 != 0)
    return "fp8 expert weights need rows of a multiple of 16 elements";
  if (dtype == WeightDtype::mxfp4 && cols % kMxfp4Block != 0)
    return "mxfp4 expert weights need rows of a multiple of 32 elements";
  return nullptr;
}

/// One quantized expert as the CUDA backend holds it: `parts` matrices of
/// [partRows, cols] one under the other (gate then up), all their codes,
/// then all their scales (fp8: fp32 [parts, ⌈partRows/128⌉, ⌈cols/128⌉];
/// mxfp4: E8M0 [parts · partRows, cols / 32]), each from a 16-byte
/// boundary, so that an expert streams as one block with its scales.
struct QuantizedExpertLayout {
  int64_t partCodeBytes = 0, partScaleBytes = 0; // of one part
  int64_t scaleOffset = 0; // bytes from the expert's first code
  int64_t bytes = 0;       // the whole expert, a multiple of 16
};

inline QuantizedExpertLayout quantizedExpertLayout(WeightDtype dtype,
                                                   int64_t parts,
                                                   int64_t partRows,
                                                   int64_t cols) {
  QuantizedExpertLayout layout;
  if (dtype == WeightDtype::fp8) {
    layout.partCodeBytes = partRows * cols;
    layout.partScaleBytes = 4 * fp8ScaleCount(partRows, cols);
  } else {
    layout.partCodeBytes = partRows * cols / 2;
    layout.partScaleBytes = partRows * (cols / kMxfp4Block);
  }
  layout.scaleOffset = alignTo16(parts * layout.partCodeBytes);
  layout.bytes = layout.scaleOffset + alignTo16(parts * layout.partScaleBytes);
  return layout;
}

/// Rows [row, row + rows) of part `part` of an expert (`values`: those
/// rows, [rows, cols] row-major) quantized into `block`, the expert laid
/// out by `layout`. fp8 takes whole 128-row blocks (row a multiple of 128,
/// rows ≤ 128), so slabs of an expert can be quantized in parallel.
inline void quantizeExpertRows(WeightDtype dtype,
                               const QuantizedExpertLayout &layout,
                               const float *values, int64_t part, int64_t row,
                               int64_t rows, int64_t cols, uint8_t *block) {
  uint8_t *codes = block + part * layout.partCodeBytes;
  uint8_t *scales = block + layout.scaleOffset + part * layout.partScaleBytes;
  if (dtype == WeightDtype::fp8) {
    int64_t blockCols = (cols + kFp8WeightBlock - 1) / kFp8WeightBlock;
    quantizeFp8Matrix(values, rows, cols, codes + row * cols,
                      reinterpret_cast<float *>(scales) +
                          row / kFp8WeightBlock * blockCols);
    return;
  }
  quantizeMxfp4Matrix(values, rows, cols, codes + row * cols / 2,
                      scales + row * (cols / kMxfp4Block));
}

/// A whole expert (`values`: [parts · partRows, cols]) into `block`.
inline void quantizeExpert(WeightDtype dtype,
                           const QuantizedExpertLayout &layout,
                           const float *values, int64_t parts, int64_t partRows,
                           int64_t cols, uint8_t *block) {
  for (int64_t part = 0; part < parts; ++part)
    for (int64_t row = 0; row < partRows; row += kFp8WeightBlock)
      quantizeExpertRows(dtype, layout, values + (part * partRows + row) * cols,
                         part, row, std::min(kFp8WeightBlock, partRows - row),
                         cols, block);
}

} // namespace moe::model
