// Warp-level tensor-core helpers (sm_80+): ldmatrix loads of 8×8 bf16 tiles
// from shared memory, the m16n8k16 bf16 MMA with fp32 accumulators, and
// fp8 codes widened into its bf16 operands.
// Fragment layout (lane = 4·g + t): A [16×16] row-major, a[0] = (g, 2t..2t+1),
// a[1] = (g + 8, ..), a[2] = (g, 2t + 8..), a[3] = (g + 8, 2t + 8..);
// B [16×8] as b[0] = (k 2t..2t+1, n g), b[1] = (k 2t + 8.., n g);
// C [16×8] as c[0..1] = (g, 2t..2t+1), c[2..3] = (g + 8, 2t..2t+1).
// Included only by .cu files.
#pragma once

#include "runtime/backends/cuda/kernels/Kernels.cuh"

#include <cuda_bf16.h>

#include <cstdint>

namespace moe::cuda::kernels::detail {

// Four 8×8 tiles; lanes 8i..8i+7 give the addresses of tile i's rows.
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4],
                                           const void *rowAddress) {
  unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(rowAddress));
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(addr));
}

// The same, each tile transposed: from rows of k (n along a row) it gives
// B fragments.
__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4],
                                                const void *rowAddress) {
  unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(rowAddress));
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(addr));
}

// d += a · b for one 16×8×16 step (a row-major, b "col" = [n][k]).
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Two floats as a bf16 pair (lo in the low half), rounded to nearest.
__device__ __forceinline__ uint32_t packBf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&v);
}

// Eight E4M3 codes as eight bf16 (exact).
__device__ __forceinline__ uint4 widenFp8x8(uint2 codes) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const unsigned word = i < 2 ? codes.x : codes.y;
    float2 f =
        fp8x2ToFloat2(static_cast<unsigned short>(word >> (16 * (i & 1))));
    w[i] = packBf16x2(f.x, f.y);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

} // namespace moe::cuda::kernels::detail
