// Device helpers shared by the kernel files: warp/block reductions, bf16
// vector loads and cp.async copies. Included only by .cu files.
#pragma once

#include "runtime/backends/cuda/kernels/Kernels.h"

#include <cstdint>

namespace moe::cuda::kernels::detail {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float warpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// (value, index) is better when larger, or equal with a lower index: the
// CPU reference's tie rule. NaN values never win.
__device__ __forceinline__ bool better(float v, int32_t i, float bv,
                                       int32_t bi) {
  return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ void warpArgmax(float &v, int32_t &i) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    float ov = __shfl_xor_sync(kFullMask, v, offset);
    int32_t oi = __shfl_xor_sync(kFullMask, i, offset);
    if (better(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
}

// Sum over the block, returned to every thread. blockDim.x is a multiple of
// 32 and ≤ 1024; `scratch` holds 32 floats.
__device__ __forceinline__ float blockSum(float v, float *scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warpSum(v);
  if (lane == 0)
    scratch[warp] = v;
  __syncthreads();
  int warps = blockDim.x >> 5;
  v = lane < warps ? scratch[lane] : 0.0f;
  v = warpSum(v);
  __syncthreads(); // scratch is free again for the caller's next reduction
  return v;
}

// N consecutive bf16 values as floats; N = 8 needs 16-byte alignment.
template <int N>
__device__ __forceinline__ void loadBf16(const bf16 *p, float (&f)[N]) {
  if constexpr (N == 8) {
    uint4 raw = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float2 t = __bfloat1622float2(h[i]);
      f[2 * i] = t.x;
      f[2 * i + 1] = t.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i)
      f[i] = __bfloat162float(p[i]);
  }
}

template <int N>
__device__ __forceinline__ void storeBf16(bf16 *p, const float (&f)[N]) {
  if constexpr (N == 8) {
    uint4 raw;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<uint4 *>(p) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i)
      p[i] = __float2bfloat16_rn(f[i]);
  }
}

__device__ __forceinline__ float roundBf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

// 16-byte global → shared copies that bypass L1; srcBytes 0 zero-fills.
__device__ __forceinline__ void cpAsync16(void *smem, const void *global,
                                          int srcBytes) {
  unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst),
               "l"(global), "r"(srcBytes)
               : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

inline bool aligned16(const void *p) {
  return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0;
}

// Threads for one block per row of `items` work items: a warp multiple,
// 32..1024.
inline int threadsFor(int64_t items) {
  int64_t t = (items + 31) / 32 * 32;
  return static_cast<int>(t < 32 ? 32 : (t > 1024 ? 1024 : t));
}

inline cudaError_t launched() { return cudaGetLastError(); }

} // namespace moe::cuda::kernels::detail
