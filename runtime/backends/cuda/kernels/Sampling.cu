// Greedy sampling: the first maximum of each logits row.
#include "runtime/backends/cuda/kernels/Kernels.cuh"

#include <climits>

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kThreads = 512;

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(bf16 v) { return __bfloat162float(v); }

// One block per row. Each thread walks its columns in ascending order, so a
// strict comparison keeps its first maximum; the reductions break ties by
// the lower index. A NaN or Inf anywhere in the row makes it
// kArgmaxNotFinite: such a row has no meaningful pick.
template <typename T>
__global__ void argmaxKernel(const T *__restrict__ logits, int64_t vocab,
                             int32_t *out) {
  __shared__ float values[kThreads / 32];
  __shared__ int32_t indices[kThreads / 32];
  const T *row = logits + blockIdx.x * vocab;
  float best = -INFINITY;
  int32_t bestIndex = INT32_MAX;
  bool notFinite = false;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    float v = toFloat(row[i]);
    notFinite |= !isfinite(v);
    if (better(v, static_cast<int32_t>(i), best, bestIndex)) {
      best = v;
      bestIndex = static_cast<int32_t>(i);
    }
  }
  warpArgmax(best, bestIndex);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    values[warp] = best;
    indices[warp] = bestIndex;
  }
  notFinite = __syncthreads_or(notFinite);
  if (warp == 0) {
    best = lane < kThreads / 32 ? values[lane] : -INFINITY;
    bestIndex = lane < kThreads / 32 ? indices[lane] : INT32_MAX;
    warpArgmax(best, bestIndex);
    if (lane == 0)
      out[blockIdx.x] = notFinite ? kArgmaxNotFinite : bestIndex;
  }
}

template <typename T>
cudaError_t launch(const T *logits, int64_t rows, int64_t vocab, int32_t *out,
                   cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || vocab > INT32_MAX || !logits || !out)
    return cudaErrorInvalidValue;
  if (rows == 0)
    return cudaSuccess;
  argmaxKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      logits, vocab, out);
  return launched();
}

} // namespace

cudaError_t argmaxRows(const float *logits, int64_t rows, int64_t vocab,
                       int32_t *out, cudaStream_t stream) {
  return launch(logits, rows, vocab, out, stream);
}

cudaError_t argmaxRows(const bf16 *logits, int64_t rows, int64_t vocab,
                       int32_t *out, cudaStream_t stream) {
  return launch(logits, rows, vocab, out, stream);
}

} // namespace moe::cuda::kernels
