// One thread per element: the embedding gather, scaled residual adds,
// sigmoid gates and dtype conversions.
#include "runtime/backends/cuda/kernels/Kernels.h"

#include <cmath>

namespace moe::cuda::kernels {
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

cudaError_t bf16ToFloat(const bf16 *in, int64_t n, float *out,
                        cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  toFloatKernel<<<blocksFor(n), kThreads, 0, stream>>>(in, n, out);
  return cudaGetLastError();
}

cudaError_t floatToBf16(const float *in, int64_t n, bf16 *out,
                        cudaStream_t stream) {
  if (n == 0)
    return cudaSuccess;
  toBf16Kernel<<<blocksFor(n), kThreads, 0, stream>>>(in, n, out);
  return cudaGetLastError();
}

} // namespace moe::cuda::kernels
