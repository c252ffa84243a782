#include "runtime/backends/cuda/backend/Parking.h"

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

Parking::~Parking() {
  if (buffer_)
    cudaFreeHost(buffer_);
}

Status Parking::createStreams() {
  return moe::cuda::createStreams({&park, &restore});
}

Status Parking::createEvents() {
  return moe::cuda::createEvents({&parkReady, &segmentParked, &chunkParked[0],
                                  &chunkParked[1], &restoreReady,
                                  &chunkRestored[0], &chunkRestored[1]});
}

Status Parking::reserve(size_t bytes, int64_t rows) {
  if (bytes <= bytes_)
    return Status::success();
  if (buffer_)
    MOE_CUDA_TRY(cudaFreeHost(buffer_));
  buffer_ = nullptr;
  bytes_ = 0;
  MOE_RETURN_IF_ERROR(
      checkCuda(cudaHostAlloc(&buffer_, bytes, cudaHostAllocDefault),
                fmt::format("cudaHostAlloc({}) for the hidden states of {} "
                            "rows parked between layers",
                            formatBytes(bytes), rows)));
  bytes_ = bytes;
  return Status::success();
}

} // namespace moe::cuda
