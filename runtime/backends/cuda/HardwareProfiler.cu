// Kernels of the hardware profiler: random fill and a spin to queue timed
// batches behind (the attention it times is kernels::attention).
#include "runtime/backends/cuda/ProfilerKernels.h"

#include <algorithm>

namespace moe::cuda {
namespace {

// --- random fill ------------------------------------------------------------

__device__ __forceinline__ std::uint64_t splitMix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__global__ void fillRandomBf16Kernel(__nv_bfloat16 *data, std::size_t count,
                                     std::uint64_t seed, float scale) {
  std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i =
           static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < count; i += stride) {
    std::uint64_t bits = splitMix64(seed * 0x632BE59BD9B4E019ull + i);
    float unit = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
    data[i] = __float2bfloat16_rn((2.0f * unit - 1.0f) * scale);
  }
}

__global__ void spinKernel(std::uint64_t nanoseconds) {
  std::uint64_t start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < nanoseconds);
}

} // namespace

cudaError_t fillRandomBf16(__nv_bfloat16 *data, std::size_t count,
                           std::uint64_t seed, float scale,
                           cudaStream_t stream) {
  if (count == 0)
    return cudaSuccess;
  std::size_t blocks = std::min<std::size_t>((count + 255) / 256, 65536);
  fillRandomBf16Kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      data, count, seed, scale);
  return cudaGetLastError();
}

cudaError_t spinFor(std::uint64_t nanoseconds, cudaStream_t stream) {
  spinKernel<<<1, 1, 0, stream>>>(nanoseconds);
  return cudaGetLastError();
}

} // namespace moe::cuda
