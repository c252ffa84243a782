// Writing tokens into the KV caches: rows already in the cache's format
// scattered to their (slot, position), and bf16 K/V encoded as fp8 rows
// (runtime/model/KvFormat.h); and copies run by the SMs, for pinned host
// memory that must not wait for a copy engine.
#include "runtime/backends/cuda/kernels/Kernels.cuh"

#include <algorithm>

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kThreads = 256;

__global__ void appendKvKernel(const uint4 *k, const uint4 *v,
                               const int32_t *cacheRows, int64_t rows,
                               int64_t chunksPerRow, uint4 *kCache,
                               uint4 *vCache) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows * chunksPerRow)
    return;
  int64_t r = i / chunksPerRow, c = i % chunksPerRow;
  int64_t at = int64_t(cacheRows[r]) * chunksPerRow + c;
  kCache[at] = k[i];
  if (v)
    vCache[at] = v[i];
}

__global__ void copyVectorsKernel(uint4 *to, const uint4 *from, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    to[i] = from[i];
}

__global__ void copyBytesKernel(uint8_t *to, const uint8_t *from, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    to[i] = from[i];
}

// One warp per (row, vector).
__global__ void encodeFp8Kernel(const bf16 *x, int vectors, int width,
                                int64_t scalesOffset, int64_t rowBytes,
                                uint8_t *out) {
  const int64_t row = blockIdx.x;
  const int vector = blockIdx.y;
  const int lane = threadIdx.x;
  const bf16 *in = x + (row * vectors + vector) * width;
  float amax = 0.0f;
  for (int i = lane; i < width; i += 32)
    amax = fmaxf(amax, fabsf(__bfloat162float(in[i])));
  amax = warpMax(amax);
  // Correctly rounded, whatever the compiler's flags: the CPU reference
  // computes the same quotients.
  const float inverse = amax > 0.0f ? __fdiv_rn(448.0f, amax) : 0.0f;
  uint8_t *codes = out + row * rowBytes + int64_t(vector) * width;
  for (int i = lane; i < width; i += 32)
    codes[i] = __nv_cvt_float_to_fp8(
        __fmul_rn(__bfloat162float(in[i]), inverse), __NV_SATFINITE, __NV_E4M3);
  if (lane == 0)
    reinterpret_cast<float *>(out + row * rowBytes + scalesOffset)[vector] =
        __fdiv_rn(amax, 448.0f);
}

} // namespace

cudaError_t appendKv(const void *k, const void *v, const int32_t *cacheRows,
                     int64_t rows, int64_t rowBytes, void *kCache, void *vCache,
                     cudaStream_t stream) {
  if (rowBytes % 16 != 0 || !aligned16(k) || !aligned16(v) ||
      !aligned16(kCache) || !aligned16(vCache))
    return cudaErrorMisalignedAddress;
  int64_t chunks = rows * (rowBytes / 16);
  if (chunks == 0)
    return cudaSuccess;
  appendKvKernel<<<static_cast<unsigned>((chunks + kThreads - 1) / kThreads),
                   kThreads, 0, stream>>>(
      static_cast<const uint4 *>(k), static_cast<const uint4 *>(v), cacheRows,
      rows, rowBytes / 16, static_cast<uint4 *>(kCache),
      static_cast<uint4 *>(vCache));
  return cudaGetLastError();
}

cudaError_t copyOnSms(void *to, const void *from, size_t bytes,
                      cudaStream_t stream) {
  if (bytes == 0)
    return cudaSuccess;
  // Enough blocks to keep many reads in flight over PCIe; the loops stride.
  constexpr int64_t kBlocks = 264;
  bool vectors = aligned16(to) && aligned16(from) && bytes % 16 == 0;
  int64_t n = vectors ? int64_t(bytes / 16) : int64_t(bytes);
  unsigned blocks = static_cast<unsigned>(
      std::min<int64_t>(kBlocks, (n + kThreads - 1) / kThreads));
  if (vectors)
    copyVectorsKernel<<<blocks, kThreads, 0, stream>>>(
        static_cast<uint4 *>(to), static_cast<const uint4 *>(from), n);
  else
    copyBytesKernel<<<blocks, kThreads, 0, stream>>>(
        static_cast<uint8_t *>(to), static_cast<const uint8_t *>(from), n);
  return cudaGetLastError();
}

cudaError_t encodeFp8Rows(const bf16 *x, int64_t rows, int vectors, int width,
                          int64_t scalesOffset, int64_t rowBytes, void *out,
                          cudaStream_t stream) {
  if (vectors <= 0 || vectors > 65535 || width <= 0 || width > 1024 ||
      scalesOffset < int64_t(vectors) * width || scalesOffset % 4 != 0 ||
      rowBytes < scalesOffset + 4 * int64_t(vectors) || rows > INT32_MAX)
    return cudaErrorInvalidValue;
  if (rows == 0)
    return cudaSuccess;
  encodeFp8Kernel<<<dim3(static_cast<unsigned>(rows), vectors), 32, 0,
                    stream>>>(x, vectors, width, scalesOffset, rowBytes,
                              static_cast<uint8_t *>(out));
  return cudaGetLastError();
}

} // namespace moe::cuda::kernels
