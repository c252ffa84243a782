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

// Eight E2M1 codes (one word, the even element in the low nibble) as four
// words of bf16 pairs times the power-of-two `scale`. The magnitudes
// (0, 0.5, 1, 1.5, 2, 3, 4, 6) come from byte permutes over their bf16 bytes
// and the signs from shifts: a few instructions for eight codes rather than
// an fp32 conversion for each. The one bf16 product rounds exactly as the
// fp32 product rounded to bf16 would.
__device__ __forceinline__ void widen8Fp4(uint32_t codes, __nv_bfloat162 scale,
                                          uint32_t (&out)[4]) {
  constexpr uint32_t lowBytes0 = 0xC0800000u, lowBytes1 = 0xC0804000u;
  constexpr uint32_t highBytes0 = 0x3F3F3F00u, highBytes1 = 0x40404040u;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    uint32_t q = codes >> (16 * half); // codes 4·half .. 4·half + 3
    uint32_t magnitudes = q & 0x7777u;
    uint32_t low = __byte_perm(lowBytes0, lowBytes1, magnitudes);
    uint32_t high = __byte_perm(highBytes0, highBytes1, magnitudes);
    uint32_t first = __byte_perm(low, high, 0x5140) |
                     ((q << 12) & 0x8000u) | ((q << 24) & 0x80000000u);
    uint32_t second = __byte_perm(low, high, 0x7362) |
                      ((q << 4) & 0x8000u) | ((q << 16) & 0x80000000u);
    auto scaled = [scale](uint32_t pair) {
      __nv_bfloat162 v =
          __hmul2(*reinterpret_cast<const __nv_bfloat162 *>(&pair), scale);
      return *reinterpret_cast<const uint32_t *>(&v);
    };
    out[2 * half] = scaled(first);
    out[2 * half + 1] = scaled(second);
  }
}

// 32 mxfp4 codes (one 16-byte load, one scale block) times `scale`, as 32
// bf16 at `out` (64 bytes, 16-byte aligned).
__device__ __forceinline__ void widen32Fp4(uint4 packed, float scale,
                                           bf16 *out) {
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
  __nv_bfloat162 scales = __float2bfloat162_rn(scale);
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    uint32_t values[4];
    widen8Fp4(words[w], scales, values);
    reinterpret_cast<uint4 *>(out)[w] =
        make_uint4(values[0], values[1], values[2], values[3]);
  }
}

} // namespace moe::cuda::kernels::detail
