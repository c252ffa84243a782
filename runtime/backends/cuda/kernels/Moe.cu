// The expert path around the grouped GEMMs: gated activations, dispatch of
// (token, choice) pairs to experts, the gather of expert inputs and the
// weighted combine of expert outputs.
#include "runtime/backends/cuda/kernels/Kernels.cuh"

#include <algorithm>
#include <climits>

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kElementwiseThreads = 256;

unsigned gridFor(int64_t items) {
  // Grid-stride loops: enough blocks to fill the GPU, no more.
  int64_t blocks = (items + kElementwiseThreads - 1) / kElementwiseThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, 4096));
}

// The CPU's silu: x · (1 / (1 + e^−x)).
__device__ __forceinline__ float silu(float x) {
  return x * (1.0f / (1.0f + expf(-x)));
}

template <int N>
__global__ void siluMulKernel(const bf16 *__restrict__ gu,
                              bf16 *__restrict__ out, int64_t rows,
                              int64_t width) {
  int64_t perRow = width / N, items = rows * perRow;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
       item < items; item += int64_t(gridDim.x) * blockDim.x) {
    int64_t row = item / perRow, col = (item % perRow) * N;
    float g[N], u[N];
    loadBf16<N>(gu + row * 2 * width + col, g);
    loadBf16<N>(gu + row * 2 * width + width + col, u);
#pragma unroll
    for (int i = 0; i < N; ++i)
      g[i] = silu(g[i]) * u[i];
    storeBf16<N>(out + row * width + col, g);
  }
}

// N outputs per item from 2N interleaved inputs.
template <int N>
__global__ void swigluClampedKernel(const bf16 *__restrict__ gu,
                                    bf16 *__restrict__ out, int64_t rows,
                                    int64_t width, float limit, float alpha) {
  int64_t perRow = width / N, items = rows * perRow;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
       item < items; item += int64_t(gridDim.x) * blockDim.x) {
    int64_t row = item / perRow, col = (item % perRow) * N;
    float in[2 * N], y[N];
    loadBf16<2 * N>(gu + row * 2 * width + 2 * col, in);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float g = fminf(in[2 * i], limit);
      float u = fminf(fmaxf(in[2 * i + 1], -limit), limit);
      y[i] = (u + 1.0f) * (g * (1.0f / (1.0f + expf(-(g * alpha)))));
    }
    storeBf16<N>(out + row * width + col, y);
  }
}

// One block: the per-expert histogram in shared memory, then its exclusive
// prefix sum (one thread per expert, warp scans plus a scan of warp totals).
__global__ void countKernel(const int32_t *__restrict__ indices, int64_t pairs,
                            int experts, int32_t *counts, int32_t *offsets) {
  extern __shared__ int32_t histogram[];
  __shared__ int32_t warpTotals[32];
  for (int e = threadIdx.x; e < experts; e += blockDim.x)
    histogram[e] = 0;
  __syncthreads();
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x)
    atomicAdd(&histogram[indices[p]], 1);
  __syncthreads();

  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int count = threadIdx.x < experts ? histogram[threadIdx.x] : 0;
  int inclusive = count;
  for (int offset = 1; offset < 32; offset <<= 1) {
    int up = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= offset)
      inclusive += up;
  }
  if (lane == 31)
    warpTotals[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int total = lane < (blockDim.x >> 5) ? warpTotals[lane] : 0;
    for (int offset = 1; offset < 32; offset <<= 1) {
      int up = __shfl_up_sync(kFullMask, total, offset);
      if (lane >= offset)
        total += up;
    }
    warpTotals[lane] = total; // inclusive over warps
  }
  __syncthreads();
  inclusive += warp > 0 ? warpTotals[warp - 1] : 0;
  if (threadIdx.x < experts) {
    counts[threadIdx.x] = count;
    offsets[threadIdx.x] = inclusive - count;
    if (threadIdx.x == experts - 1)
      offsets[experts] = inclusive;
  }
}

// One block per expert scans every pair in order and compacts its own:
// ballots rank the matches, so the lists keep ascending pair order without
// atomics (deterministic), and the scan stops once the count is reached.
constexpr int kPlaceThreads = 256;
__global__ void placeKernel(const int32_t *__restrict__ indices, int64_t pairs,
                            const int32_t *__restrict__ counts,
                            const int32_t *__restrict__ offsets,
                            int32_t *slotToPair, int32_t *pairToSlot) {
  __shared__ int32_t warpCounts[kPlaceThreads / 32];
  int expert = blockIdx.x;
  int32_t wanted = counts[expert];
  if (wanted == 0)
    return;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int32_t base = offsets[expert], placed = 0;
  for (int64_t chunk = 0; chunk < pairs && placed < wanted;
       chunk += kPlaceThreads) {
    int64_t p = chunk + threadIdx.x;
    bool match = p < pairs && indices[p] == expert;
    unsigned ballot = __ballot_sync(kFullMask, match);
    if (lane == 0)
      warpCounts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < kPlaceThreads / 32; ++w) {
      before += w < warp ? warpCounts[w] : 0;
      total += warpCounts[w];
    }
    if (match) {
      int32_t slot =
          base + placed + before + __popc(ballot & ((1u << lane) - 1u));
      slotToPair[slot] = static_cast<int32_t>(p);
      pairToSlot[p] = slot;
    }
    placed += total;
    __syncthreads(); // warpCounts is rewritten by the next chunk
  }
}

template <int N>
__global__ void
gatherKernel(const bf16 *__restrict__ x, const int32_t *__restrict__ slotToPair,
             int64_t pairs, int topK, int64_t width, bf16 *__restrict__ out) {
  int64_t perRow = width / N, items = pairs * perRow;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
       item < items; item += int64_t(gridDim.x) * blockDim.x) {
    int64_t slot = item / perRow, col = (item % perRow) * N;
    int64_t row = slotToPair[slot] / topK;
    if constexpr (N == 8)
      *reinterpret_cast<uint4 *>(out + slot * width + col) =
          *reinterpret_cast<const uint4 *>(x + row * width + col);
    else
      out[slot * width + col] = x[row * width + col];
  }
}

// One block per row; the row's k picks are ordered by expert index once,
// then every thread sums its columns in that order with explicit roundings
// (no fused multiply-add), as the CPU does.
template <int N> __global__ void combineKernel(CombineArgs a) {
  constexpr int kMaxTopK = 8;
  __shared__ int32_t slot[kMaxTopK];
  __shared__ float weight[kMaxTopK];
  int64_t row = blockIdx.x;
  if (threadIdx.x == 0) {
    int32_t expert[kMaxTopK];
    for (int j = 0; j < a.topK; ++j) {
      int64_t pair = row * a.topK + j;
      int32_t e = a.indices[pair], s = a.pairToSlot[pair];
      float w = a.weights[pair];
      int i = j;
      for (; i > 0 && expert[i - 1] > e; --i) {
        expert[i] = expert[i - 1];
        slot[i] = slot[i - 1];
        weight[i] = weight[i - 1];
      }
      expert[i] = e;
      slot[i] = s;
      weight[i] = w;
    }
  }
  __syncthreads();
  int64_t vectors = a.width / N;
  for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
    float sum[N];
#pragma unroll
    for (int i = 0; i < N; ++i)
      sum[i] = 0.0f;
    for (int j = 0; j < a.topK; ++j) {
      float term[N];
      loadBf16<N>(a.expertOut + int64_t(slot[j]) * a.width + v * N, term);
#pragma unroll
      for (int i = 0; i < N; ++i)
        sum[i] = __fadd_rn(sum[i], __fmul_rn(term[i], weight[j]));
    }
    float *dst = a.out + row * a.width + v * N;
    if constexpr (N == 8) {
      reinterpret_cast<float4 *>(dst)[0] =
          make_float4(sum[0], sum[1], sum[2], sum[3]);
      reinterpret_cast<float4 *>(dst)[1] =
          make_float4(sum[4], sum[5], sum[6], sum[7]);
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i)
        dst[i] = sum[i];
    }
  }
}

} // namespace

cudaError_t siluMul(const bf16 *gateUp, bf16 *out, int64_t rows, int64_t width,
                    cudaStream_t stream) {
  if (rows < 0 || width <= 0 || !gateUp || !out)
    return cudaErrorInvalidValue;
  if (rows == 0)
    return cudaSuccess;
  if (width % 8 == 0 && aligned16(gateUp) && aligned16(out))
    siluMulKernel<8>
        <<<gridFor(rows * width / 8), kElementwiseThreads, 0, stream>>>(
            gateUp, out, rows, width);
  else
    siluMulKernel<1><<<gridFor(rows * width), kElementwiseThreads, 0, stream>>>(
        gateUp, out, rows, width);
  return launched();
}

cudaError_t swigluClamped(const bf16 *gateUp, bf16 *out, int64_t rows,
                          int64_t width, float limit, float alpha,
                          cudaStream_t stream) {
  if (rows < 0 || width <= 0 || !gateUp || !out)
    return cudaErrorInvalidValue;
  if (rows == 0)
    return cudaSuccess;
  if (width % 4 == 0 && aligned16(gateUp))
    swigluClampedKernel<4>
        <<<gridFor(rows * width / 4), kElementwiseThreads, 0, stream>>>(
            gateUp, out, rows, width, limit, alpha);
  else
    swigluClampedKernel<1>
        <<<gridFor(rows * width), kElementwiseThreads, 0, stream>>>(
            gateUp, out, rows, width, limit, alpha);
  return launched();
}

cudaError_t buildDispatch(const DispatchArgs &a, cudaStream_t stream) {
  int64_t pairs = a.rows * a.topK;
  if (a.rows < 0 || a.topK < 1 || a.experts < 1 || a.experts > 1024 ||
      pairs > INT32_MAX || !a.indices || !a.counts || !a.offsets ||
      !a.slotToPair || !a.pairToSlot)
    return cudaErrorInvalidValue;
  countKernel<<<1, 1024, a.experts * sizeof(int32_t), stream>>>(
      a.indices, pairs, a.experts, a.counts, a.offsets);
  if (cudaError_t code = launched(); code != cudaSuccess)
    return code;
  if (pairs == 0)
    return cudaSuccess;
  placeKernel<<<a.experts, kPlaceThreads, 0, stream>>>(
      a.indices, pairs, a.counts, a.offsets, a.slotToPair, a.pairToSlot);
  return launched();
}

cudaError_t gatherRows(const bf16 *x, const int32_t *slotToPair, int64_t pairs,
                       int topK, int64_t width, bf16 *out,
                       cudaStream_t stream) {
  if (pairs < 0 || topK < 1 || width <= 0 || !x || !slotToPair || !out)
    return cudaErrorInvalidValue;
  if (pairs == 0)
    return cudaSuccess;
  if (width % 8 == 0 && aligned16(x) && aligned16(out))
    gatherKernel<8>
        <<<gridFor(pairs * width / 8), kElementwiseThreads, 0, stream>>>(
            x, slotToPair, pairs, topK, width, out);
  else
    gatherKernel<1><<<gridFor(pairs * width), kElementwiseThreads, 0, stream>>>(
        x, slotToPair, pairs, topK, width, out);
  return launched();
}

cudaError_t combineExperts(const CombineArgs &a, cudaStream_t stream) {
  if (a.rows < 0 || a.topK < 1 || a.topK > 8 || a.width <= 0 || !a.expertOut ||
      !a.weights || !a.indices || !a.pairToSlot || !a.out)
    return cudaErrorInvalidValue;
  if (a.rows == 0)
    return cudaSuccess;
  if (a.width % 8 == 0 && aligned16(a.expertOut) && aligned16(a.out))
    combineKernel<8><<<a.rows, threadsFor(a.width / 8), 0, stream>>>(a);
  else
    combineKernel<1><<<a.rows, threadsFor(a.width), 0, stream>>>(a);
  return launched();
}

} // namespace moe::cuda::kernels
