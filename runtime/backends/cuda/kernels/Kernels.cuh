// Device helpers shared by the kernel files: warp/block reductions, bf16
// and fp8 vector loads, cp.async copies and the merge of split attention.
// Included only by .cu files.
#pragma once

#include "runtime/backends/cuda/kernels/Kernels.h"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

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
// 4 bytes (both addresses 4-byte aligned); srcBytes 0 zero-fills.
__device__ __forceinline__ void cpAsync4(void *smem, const void *global,
                                         int srcBytes) {
  unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst),
               "l"(global), "r"(srcBytes)
               : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Folds the sink (a logit without a value, log2 domain) into (max, sum) and
// returns the factor the accumulated values are scaled by.
__device__ __forceinline__ float addSink(float sinkLog2, float &m, float &sum) {
  float mNew = fmaxf(m, sinkLog2);
  float keep = m == -INFINITY ? 0.0f : exp2f(m - mNew);
  sum = sum * keep + exp2f(sinkLog2 - mNew);
  m = mNew;
  return keep;
}

// The second kernel of split attention, for one (row, head) per block:
// `parts` holds `splits` records of `width` accumulators, the running
// maximum (log2 domain) and sum; thread d < width writes out[d]. A sink
// (log2 logit, or null) joins as a logit without a value. Needs `splits`
// floats of dynamic shared memory and blockDim.x >= width, a multiple of 32.
// The split weights are computed once, in parallel, so the final loop has
// only independent loads.
__device__ __forceinline__ void combineSplits(const float *parts, int splits,
                                              int width, const float *sinkLog2,
                                              bf16 *out) {
  extern __shared__ float weights[]; // [splits]
  __shared__ float scratch[32];
  const int d = threadIdx.x;
  const int record = width + 2;

  float mMax = -INFINITY;
  for (int s = d; s < splits; s += blockDim.x)
    mMax = fmaxf(mMax, parts[s * record + width]);
  // blockSum's pattern for a maximum: warp, then across warps.
  mMax = warpMax(mMax);
  if (d % 32 == 0)
    scratch[d / 32] = mMax;
  __syncthreads();
  mMax = scratch[0];
  for (int w = 1; w < int(blockDim.x / 32); ++w)
    mMax = fmaxf(mMax, scratch[w]);
  __syncthreads();
  float sum = 0.0f;
  for (int s = d; s < splits; s += blockDim.x) {
    float f =
        mMax == -INFINITY ? 0.0f : exp2f(parts[s * record + width] - mMax);
    weights[s] = f;
    sum += f * parts[s * record + width + 1];
  }
  sum = blockSum(sum, scratch); // its barriers publish weights
  if (d >= width)
    return;
  float value = 0.0f;
#pragma unroll 8
  for (int s = 0; s < splits; ++s)
    value = fmaf(weights[s], parts[s * record + d], value);
  if (sinkLog2)
    value *= addSink(*sinkLog2, mMax, sum);
  out[d] = __float2bfloat16_rn(sum > 0.0f ? value / sum : 0.0f);
}

// Two E4M3 codes (the first in the low byte) as floats: exact, through the
// hardware's fp8x2 → f16x2 conversion.
__device__ __forceinline__ float2 fp8x2ToFloat2(unsigned short codes) {
  __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(codes, __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2 *>(&h));
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
