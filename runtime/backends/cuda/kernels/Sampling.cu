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
// kArgmaxNotFinite: such a row has no meaningful pick. The row is columns
// [offset, offset + width) of a logits row; with `running` (argmaxRowsOfSlice)
// a slice after the first merges into the maximum so far, which an equal
// later one does not displace.
template <typename T>
__global__ void argmaxKernel(const T *__restrict__ logits, int64_t width,
                             int64_t offset, float *running, int32_t *out) {
  __shared__ float values[kThreads / 32];
  __shared__ int32_t indices[kThreads / 32];
  const T *row = logits + blockIdx.x * width;
  float best = -INFINITY;
  int32_t bestIndex = INT32_MAX;
  bool notFinite = false;
  for (int64_t i = threadIdx.x; i < width; i += kThreads) {
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
    if (lane != 0)
      return;
    int32_t pick =
        notFinite ? kArgmaxNotFinite : static_cast<int32_t>(bestIndex + offset);
    if (running && offset > 0) {
      int32_t before = out[blockIdx.x];
      if (before == kArgmaxNotFinite)
        pick = kArgmaxNotFinite;
      else if (pick != kArgmaxNotFinite && !(best > running[blockIdx.x])) {
        pick = before;
        best = running[blockIdx.x];
      }
    }
    if (running)
      running[blockIdx.x] = best;
    out[blockIdx.x] = pick;
  }
}

template <typename T>
cudaError_t launch(const T *logits, int64_t rows, int64_t width,
                   int64_t offset, float *running, int32_t *out,
                   cudaStream_t stream) {
  if (rows < 0 || width <= 0 || offset < 0 || offset + width > INT32_MAX ||
      !logits || !out)
    return cudaErrorInvalidValue;
  if (rows == 0)
    return cudaSuccess;
  argmaxKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      logits, width, offset, running, out);
  return launched();
}

} // namespace

cudaError_t argmaxRows(const float *logits, int64_t rows, int64_t vocab,
                       int32_t *out, cudaStream_t stream) {
  return launch(logits, rows, vocab, 0, nullptr, out, stream);
}

cudaError_t argmaxRows(const bf16 *logits, int64_t rows, int64_t vocab,
                       int32_t *out, cudaStream_t stream) {
  return launch(logits, rows, vocab, 0, nullptr, out, stream);
}

cudaError_t argmaxRowsOfSlice(const bf16 *logits, int64_t rows, int64_t width,
                              int64_t offset, float *best, int32_t *out,
                              cudaStream_t stream) {
  if (!best)
    return cudaErrorInvalidValue;
  return launch(logits, rows, width, offset, best, out, stream);
}

} // namespace moe::cuda::kernels
