#include "runtime/backends/cuda/backend/BackendKernels.h"

#include <cmath>

namespace moe::cuda::backend {
namespace {

constexpr int kThreads = 256;

int blocksFor(int64_t n) {
  return static_cast<int>((n + kThreads - 1) / kThreads);
}

__global__ void embedKernel(const bf16 *table, const int32_t *ids, int64_t rows,
                            int64_t hidden, float *out) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows * hidden)
    return;
  int64_t r = i / hidden;
  out[i] = __bfloat162float(table[int64_t(ids[r]) * hidden + i % hidden]);
}

__global__ void scaledAddKernel(const float *skip, const float *update,
                                float skipScale, float updateScale, int64_t n,
                                float *out) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n)
    out[i] = skipScale * skip[i] + updateScale * update[i];
}

// One block per row: a block-wide sum of squares, then the scaled row.
__global__ void rmsNormF32Kernel(const float *x, const bf16 *weight,
                                 int64_t width, float eps, bf16 *out,
                                 float *outF32) {
  __shared__ float partials[kThreads / 32];
  const float *xr = x + blockIdx.x * width;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x)
    sum += xr[i] * xr[i];
  for (int offset = 16; offset > 0; offset /= 2)
    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0)
    partials[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w)
    total += partials[w];
  float inverse = rsqrtf(total / float(width) + eps);
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    float y = __bfloat162float(weight[i]) * (xr[i] * inverse);
    out[blockIdx.x * width + i] = __float2bfloat16_rn(y);
    if (outF32)
      outF32[blockIdx.x * width + i] = y;
  }
}

// One warp per (row, expert).
__global__ void routerLogitsKernel(const float *x, const float *w,
                                   const float *bias, int64_t rows,
                                   int64_t hidden, int64_t experts,
                                   float *out) {
  int64_t task = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (task >= rows * experts)
    return;
  int64_t r = task / experts, e = task % experts;
  float sum = 0.0f;
  for (int64_t i = lane; i < hidden; i += 32)
    sum += x[r * hidden + i] * w[e * hidden + i];
  for (int offset = 16; offset > 0; offset /= 2)
    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0)
    out[task] = sum + (bias ? bias[e] : 0.0f);
}

__global__ void appendKvKernel(const bf16 *k, const bf16 *v,
                               const int32_t *cacheRows, int64_t rows,
                               int64_t width, bf16 *kCache, bf16 *vCache) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows * width)
    return;
  int64_t r = i / width, c = i % width;
  int64_t at = int64_t(cacheRows[r]) * width + c;
  kCache[at] = k[i];
  if (v)
    vCache[at] = v[i];
}

__global__ void swapLeadingKernel(const bf16 *in, int64_t a, int64_t b,
                                  int64_t inWidth, int64_t offset,
                                  int64_t width, bf16 *out) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= a * b * width)
    return;
  int64_t c = i % width, j = (i / width) % b, k = i / (width * b);
  out[(j * a + k) * width + c] = in[(k * b + j) * inWidth + offset + c];
}

__global__ void sigmoidGateKernel(const bf16 *gate, int64_t gateWidth,
                                  int64_t rows, int64_t width, bf16 *x) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows * width)
    return;
  float g = __bfloat162float(
      gate[gateWidth == 1 ? i / width : i]); // else gateWidth == width
  float s = 1.0f / (1.0f + expf(-g));
  x[i] = __float2bfloat16_rn(s * __bfloat162float(x[i]));
}

__global__ void toFloatKernel(const bf16 *in, int64_t n, float *out) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n)
    out[i] = __bfloat162float(in[i]);
}

__global__ void toBf16Kernel(const float *in, int64_t n, bf16 *out) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n)
    out[i] = __float2bfloat16_rn(in[i]);
}

} // namespace

cudaError_t embedRows(const bf16 *table, const int32_t *ids, int64_t rows,
                      int64_t hidden, float *out, cudaStream_t stream) {
  if (rows * hidden == 0)
    return cudaSuccess;
  embedKernel<<<blocksFor(rows * hidden), kThreads, 0, stream>>>(
      table, ids, rows, hidden, out);
  return cudaGetLastError();
}

cudaError_t scaledAdd(const float *skip, const float *update, float skipScale,
                      float updateScale, int64_t n, float *out,
                      cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  scaledAddKernel<<<blocksFor(n), kThreads, 0, stream>>>(
      skip, update, skipScale, updateScale, n, out);
  return cudaGetLastError();
}

cudaError_t rmsNormF32(const float *x, const bf16 *weight, int64_t rows,
                       int64_t width, float eps, bf16 *out, float *outF32,
                       cudaStream_t stream) {
  if (rows == 0)
    return cudaSuccess;
  rmsNormF32Kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      x, weight, width, eps, out, outF32);
  return cudaGetLastError();
}

cudaError_t routerLogits(const float *x, const float *w, const float *bias,
                         int64_t rows, int64_t hidden, int64_t experts,
                         float *out, cudaStream_t stream) {
  if (rows * experts == 0)
    return cudaSuccess;
  routerLogitsKernel<<<blocksFor(rows * experts * 32), kThreads, 0, stream>>>(
      x, w, bias, rows, hidden, experts, out);
  return cudaGetLastError();
}

cudaError_t appendKv(const bf16 *k, const bf16 *v, const int32_t *cacheRows,
                     int64_t rows, int64_t width, bf16 *kCache, bf16 *vCache,
                     cudaStream_t stream) {
  if (rows * width == 0)
    return cudaSuccess;
  appendKvKernel<<<blocksFor(rows * width), kThreads, 0, stream>>>(
      k, v, cacheRows, rows, width, kCache, vCache);
  return cudaGetLastError();
}

cudaError_t swapLeadingDims(const bf16 *in, int64_t a, int64_t b,
                            int64_t inWidth, int64_t offset, int64_t width,
                            bf16 *out, cudaStream_t stream) {
  if (a * b * width == 0)
    return cudaSuccess;
  swapLeadingKernel<<<blocksFor(a * b * width), kThreads, 0, stream>>>(
      in, a, b, inWidth, offset, width, out);
  return cudaGetLastError();
}

cudaError_t sigmoidGate(const bf16 *gate, int64_t gateWidth, int64_t rows,
                        int64_t width, bf16 *x, cudaStream_t stream) {
  if (gateWidth != 1 && gateWidth != width)
    return cudaErrorInvalidValue;
  if (rows * width == 0)
    return cudaSuccess;
  sigmoidGateKernel<<<blocksFor(rows * width), kThreads, 0, stream>>>(
      gate, gateWidth, rows, width, x);
  return cudaGetLastError();
}

cudaError_t toFloat(const bf16 *in, int64_t n, float *out,
                    cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  toFloatKernel<<<blocksFor(n), kThreads, 0, stream>>>(in, n, out);
  return cudaGetLastError();
}

cudaError_t toBf16(const float *in, int64_t n, bf16 *out, cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  toBf16Kernel<<<blocksFor(n), kThreads, 0, stream>>>(in, n, out);
  return cudaGetLastError();
}

} // namespace moe::cuda::backend
