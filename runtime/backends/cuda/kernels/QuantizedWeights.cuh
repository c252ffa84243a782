// Device-side reads of quantized expert weights (QuantizedExperts.h): where
// an expert's codes start, the scale of an element, and codes widened to
// bf16 a 16-byte load at a time.
#pragma once

#include "runtime/backends/cuda/kernels/Kernels.cuh"
#include "runtime/backends/cuda/kernels/QuantizedExperts.h"

namespace moe::cuda::kernels::detail {

constexpr int64_t kFp8Block = 128;
constexpr int64_t kMxfp4Block = 32;

__device__ __forceinline__ const uint8_t *
expertCodes(const QuantizedExpertMatrix &m, int64_t e) {
  return e < m.residentExperts
             ? m.resident + e * m.stride
             : m.streamed + (e - m.residentExperts) * m.stride;
}

// The fp8 scale of element (row, col) of expert e's [parts · partRows,
// cols].
__device__ __forceinline__ float fp8Scale(const QuantizedExpertMatrix &m,
                                          int64_t e, int64_t row,
                                          int64_t col) {
  int64_t part = row / m.partRows, partRow = row % m.partRows;
  int64_t blockRows = (m.partRows + kFp8Block - 1) / kFp8Block;
  int64_t blockCols = (m.cols + kFp8Block - 1) / kFp8Block;
  const float *scales =
      reinterpret_cast<const float *>(expertCodes(m, e) + m.scaleOffset);
  return scales[(part * blockRows + partRow / kFp8Block) * blockCols +
                col / kFp8Block];
}

// The mxfp4 scale, 2^(code − 127), of element (row, col) of expert e.
__device__ __forceinline__ float mxfp4Scale(const QuantizedExpertMatrix &m,
                                            int64_t e, int64_t row,
                                            int64_t col) {
  uint32_t code = expertCodes(m, e)[m.scaleOffset +
                                    row * (m.cols / kMxfp4Block) +
                                    col / kMxfp4Block];
  // Code 0 is 2^-127, below fp32's normals.
  return code == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(code << 23);
}

// 16 fp8 codes (one 16-byte load) times `scale`, as 16 bf16 at `out` (32
// bytes, 16-byte aligned).
__device__ __forceinline__ void widen16(uint4 packed, float scale, bf16 *out) {
  const unsigned short *pairs = reinterpret_cast<const unsigned short *>(&packed);
  __align__(16) bf16 values[16];
#pragma unroll
  for (int p = 0; p < 8; ++p) {
    float2 v = fp8x2ToFloat2(pairs[p]);
    values[2 * p] = __float2bfloat16_rn(v.x * scale);
    values[2 * p + 1] = __float2bfloat16_rn(v.y * scale);
  }
  reinterpret_cast<uint4 *>(out)[0] = reinterpret_cast<const uint4 *>(values)[0];
  reinterpret_cast<uint4 *>(out)[1] = reinterpret_cast<const uint4 *>(values)[1];
}

// An E2M1 code's value (0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6) from its bits,
// without a table a warp would index divergently.
__device__ __forceinline__ float fp4ToFloat(uint32_t code) {
  uint32_t m = code & 7;
  uint32_t bits = m < 2 ? m * 0x3F000000u // 0 or 0.5
                        : ((m >> 1) + 126) << 23 | (m & 1) << 22;
  return __uint_as_float(bits | (code & 8) << 28);
}

// 32 mxfp4 codes (one 16-byte load, one scale block) times `scale`, as 32
// bf16 at `out` (64 bytes, 16-byte aligned). Products are exact in fp32.
__device__ __forceinline__ void widen32Fp4(uint4 packed, float scale,
                                           bf16 *out) {
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    __align__(16) bf16 values[8];
#pragma unroll
    for (int n = 0; n < 8; ++n)
      values[n] = __float2bfloat16_rn(fp4ToFloat(words[w] >> (4 * n)) * scale);
    reinterpret_cast<uint4 *>(out)[w] = *reinterpret_cast<const uint4 *>(values);
  }
}

} // namespace moe::cuda::kernels::detail
