#include "runtime/backends/cuda/backend/StepMemory.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <algorithm>
#include <bit>

namespace moe::cuda {

size_t StepMemory::roundUp(size_t bytes) {
  size_t step = std::bit_floor(std::max<size_t>(bytes, 16 * 256)) / 16;
  return (bytes + step - 1) / step * step;
}

Result<void *> StepMemory::allocate(size_t bytes, std::string_view what,
                                    cudaStream_t stream) {
  bytes = roundUp(bytes);
  if (inUse + bytes > limit)
    return makeError("activations: '{}' needs {} more bytes, {} of the {} "
                     "that the GPU budget leaves are in use",
                     what, bytes, inUse, limit);
  void *ptr = nullptr;
  cudaError_t allocated = cudaMallocAsync(&ptr, bytes, stream);
  if (allocated == cudaErrorMemoryAllocation && !capturing_) {
    (void)cudaGetLastError();
    for (cudaStream_t freeing : freeingStreams)
      MOE_CUDA_TRY(cudaStreamSynchronize(freeing));
    MOE_CUDA_TRY(cudaMemPoolTrimTo(pool, 0));
    int device = 0;
    MOE_CUDA_TRY(cudaGetDevice(&device));
    MOE_CUDA_TRY(cudaDeviceGraphMemTrim(device));
    ++trims;
    allocated = cudaMallocAsync(&ptr, bytes, stream);
  }
  if (allocated != cudaSuccess) {
    (void)cudaGetLastError();
    size_t freeBytes = 0, totalBytes = 0;
    uint64_t pooled = 0;
    (void)cudaMemGetInfo(&freeBytes, &totalBytes);
    (void)cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent,
                                  &pooled);
    return makeError("activations: cudaMallocAsync of {} bytes for '{}' "
                     "failed ({}): {} of the {} bytes the GPU budget leaves "
                     "are in use, the pool holds {}, the device has {} free",
                     bytes, what, cudaGetErrorString(allocated), inUse, limit,
                     pooled, freeBytes);
  }
  sizes_[ptr] = bytes;
  if (capturing_)
    captured_.push_back(ptr);
  inUse += bytes;
  peak = std::max(peak, inUse);
  return ptr;
}

Status StepMemory::free(void *ptr, cudaStream_t stream) {
  auto bytes = freeLater(ptr, stream);
  if (!bytes)
    return bytes.error();
  release(*bytes);
  return Status::success();
}

Result<size_t> StepMemory::freeLater(void *ptr, cudaStream_t stream) {
  auto it = sizes_.find(ptr);
  if (it == sizes_.end())
    return makeError("step memory: freeing an unknown pointer");
  size_t bytes = it->second;
  sizes_.erase(it);
  MOE_CUDA_TRY(cudaFreeAsync(ptr, stream));
  return bytes;
}

void StepMemory::beginCapture() {
  capturing_ = true;
  inUseBeforeCapture_ = inUse;
  captured_.clear();
}

void StepMemory::endCapture(bool kept) {
  capturing_ = false;
  if (!kept) {
    for (void *ptr : captured_)
      sizes_.erase(ptr);
    inUse = inUseBeforeCapture_;
  }
  captured_.clear();
}

} // namespace moe::cuda
