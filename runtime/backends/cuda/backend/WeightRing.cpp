#include "runtime/backends/cuda/backend/WeightRing.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <algorithm>

namespace moe::cuda {

Status WeightRing::allocate() {
  if (schedule.buffers == 0 || schedule.bufferBytes == 0)
    return Status::success();
  auto created = DeviceArena::create(
      size_t(schedule.buffers) * poolAligned(size_t(schedule.bufferBytes)),
      "weight ring");
  if (!created)
    return created.error();
  arena.emplace(std::move(*created));
  return Status::success();
}

Status WeightRing::createStreams() {
  return moe::cuda::createStreams({&copyStream_});
}

Result<char *> WeightRing::place(int op, size_t used, size_t bytes,
                                 const char *what) const {
  int buffer = schedule.bufferOf[size_t(op)];
  if (buffer < 0)
    return makeError("'{}' is streamed, but the plan's schedule copies none "
                     "of this op's weights into the weight ring",
                     what);
  size_t bufferBytes = poolAligned(size_t(schedule.bufferBytes));
  if (!arena || used + bytes > bufferBytes)
    return makeError("ring buffer {} ({} bytes) has no room for '{}' ({} "
                     "bytes, {} already taken by its turn)",
                     buffer, bufferBytes, what, bytes, used);
  return static_cast<char *>(arena->base()) + size_t(buffer) * bufferBytes +
         used;
}

Status WeightRing::finishBinding() {
  size_t ops = schedule.bufferOf.size();
  streamed.resize(ops);
  awaited_.assign(ops, 0);
  copied_.clear();
  done_.clear();
  copied_.reserve(ops);
  done_.reserve(ops);
  for (size_t op = 0; op < ops; ++op) {
    bool copied = schedule.bufferOf[op] >= 0;
    awaited_[op] = schedule.awaited(int(op));
    copied_.emplace_back();
    done_.emplace_back();
    if (copied) {
      MOE_ASSIGN_OR_RETURN(copied_.back(), Event::create(false));
    }
    if (awaited_[op]) {
      MOE_ASSIGN_OR_RETURN(done_.back(), Event::create(false));
    }
  }
  return Status::success();
}

// An op whose streamed params the backend keeps in fp32 on the GPU
// (Fp32Params: a router's weights) has nothing to copy; its copy still
// happens in the schedule's order, so the op waits where the plan says.
Status WeightRing::copy(int op, BackendCounters &counters) {
  const StreamedOp &weights = streamed[size_t(op)];
  MOE_ASSIGN_OR_RETURN(size_t span, trace->start(copyStream_->get()));
  for (const CopyPart &part : weights.parts) {
    MOE_CUDA_TRY(cudaMemcpyAsync(part.device, part.host, part.bytes,
                                 cudaMemcpyHostToDevice, copyStream_->get()));
    counters.weightBytesToDevice += int64_t(part.bytes);
  }
  MOE_RETURN_IF_ERROR(trace->stop(
      span, copyStream_->get(), "h2d weights",
      [&] {
        return fmt::format("{} weights (ring buffer {})", weights.name,
                           schedule.bufferOf[size_t(op)]);
      },
      "weight copy"));
  issued_[size_t(op)] = 1;
  return copied_[size_t(op)]->record(*copyStream_);
}

Status WeightRing::issueReady(BackendCounters &counters) {
  for (; next_ < step_->loads.size(); ++next_) {
    const model::RingLoad &load = step_->loads[next_];
    for (int op : load.after)
      if (!ran_[size_t(op)])
        return Status::success();
    for (int op : load.after)
      MOE_RETURN_IF_ERROR(copyStream_->wait(*done_[size_t(op)]));
    MOE_RETURN_IF_ERROR(copy(load.op, counters));
  }
  return Status::success();
}

Status WeightRing::beginPass(bool prefill, BackendCounters &counters) {
  step_ = &schedule.step(prefill);
  next_ = 0;
  ran_.assign(schedule.bufferOf.size(), 0);
  issued_.assign(schedule.bufferOf.size(), 0);
  return issueReady(counters);
}

Status WeightRing::waitForWeights(int op, const Stream &compute) const {
  if (!issued_[size_t(op)])
    return makeError("op {} ({}) would run before the plan's schedule copies "
                     "its weights",
                     op, streamed[size_t(op)].name);
  return compute.wait(*copied_[size_t(op)]);
}

Status WeightRing::finished(int op, cudaStream_t compute,
                            BackendCounters &counters) {
  MOE_RETURN_IF_ERROR(done_[size_t(op)]->record(compute));
  ran_[size_t(op)] = 1;
  return issueReady(counters);
}

} // namespace moe::cuda
