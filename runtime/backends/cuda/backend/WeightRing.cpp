#include "runtime/backends/cuda/backend/WeightRing.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <algorithm>

namespace moe::cuda {

Status WeightRing::allocate() {
  if (slotBytes == 0)
    return Status::success();
  auto created = DeviceArena::create(size_t(slots) * slotBytes, "weight ring");
  if (!created)
    return created.error();
  arena.emplace(std::move(*created));
  return Status::success();
}

Status WeightRing::createStreams() {
  return moe::cuda::createStreams({&copyStream_});
}

Status WeightRing::createEvents() {
  MOE_RETURN_IF_ERROR(appendEvents(copied_, streamed.size()));
  return appendEvents(slotFree_, size_t(slots));
}

Status WeightRing::copy(int j, BackendCounters &counters) {
  MOE_RETURN_IF_ERROR(copyStream_->wait(slotFree_[j % slots]));
  MOE_ASSIGN_OR_RETURN(size_t span, trace->start(copyStream_->get()));
  for (const CopyPart &part : streamed[j].parts) {
    MOE_CUDA_TRY(cudaMemcpyAsync(part.device, part.host, part.bytes,
                                 cudaMemcpyHostToDevice, copyStream_->get()));
    counters.weightBytesToDevice += int64_t(part.bytes);
  }
  MOE_RETURN_IF_ERROR(trace->stop(
      span, copyStream_->get(), "h2d weights",
      [&] { return streamed[j].name + " weights"; }, "weight copy"));
  return copied_[j].record(*copyStream_);
}

Status WeightRing::beginPass(BackendCounters &counters) {
  for (int j = 0; j < std::min(int(streamed.size()), slots); ++j)
    MOE_RETURN_IF_ERROR(copy(j, counters));
  return Status::success();
}

Status WeightRing::waitForWeights(int j, const Stream &compute) const {
  return compute.wait(copied_[j]);
}

Status WeightRing::releaseSlot(int j, cudaStream_t compute,
                               BackendCounters &counters) {
  MOE_RETURN_IF_ERROR(slotFree_[j % slots].record(compute));
  if (j + slots < int(streamed.size()))
    MOE_RETURN_IF_ERROR(copy(j + slots, counters));
  return Status::success();
}

} // namespace moe::cuda
