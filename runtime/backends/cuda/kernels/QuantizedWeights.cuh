// Device-side reads of fp8 expert weights (WidenFp8.h's Fp8ExpertMatrix):
// where an expert's codes start and the scale of a 128 x 128 block.
#pragma once

#include "runtime/backends/cuda/kernels/Kernels.cuh"
#include "runtime/backends/cuda/kernels/WidenFp8.h"

namespace moe::cuda::kernels::detail {

constexpr int64_t kFp8Block = 128;

__device__ __forceinline__ const uint8_t *fp8Codes(const Fp8ExpertMatrix &m,
                                                   int64_t e) {
  int64_t stride = m.parts * m.partRows * m.cols;
  return e < m.residentExperts ? m.resident + e * stride
                               : m.streamed + (e - m.residentExperts) * stride;
}

// The scale of element (row, col) of expert e's [parts · partRows, cols].
__device__ __forceinline__ float fp8Scale(const Fp8ExpertMatrix &m, int64_t e,
                                          int64_t row, int64_t col) {
  int64_t part = row / m.partRows, partRow = row % m.partRows;
  int64_t blockRows = (m.partRows + kFp8Block - 1) / kFp8Block;
  int64_t blockCols = (m.cols + kFp8Block - 1) / kFp8Block;
  return m.scales[((e * m.parts + part) * blockRows + partRow / kFp8Block) *
                      blockCols +
                  col / kFp8Block];
}

// 16 codes (one 16-byte load) times `scale`, as 16 bf16 at `out` (32 bytes,
// 16-byte aligned).
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

} // namespace moe::cuda::kernels::detail
