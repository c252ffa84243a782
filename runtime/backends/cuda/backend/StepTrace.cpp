#include "runtime/backends/cuda/backend/StepTrace.h"

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

Status StepTrace::begin(cudaStream_t compute) {
  MOE_CUDA_TRY(cudaDeviceSynchronize());
  if (!origin_) {
    auto event = Event::create(true);
    if (!event)
      return event.error();
    origin_.emplace(std::move(*event));
  }
  MOE_RETURN_IF_ERROR(origin_->record(compute));
  spans_.clear();
  active_ = true;
  return Status::success();
}

Result<size_t> StepTrace::start(cudaStream_t stream) {
  if (!active_)
    return size_t{0};
  size_t id = spans_.size();
  spans_.push_back({});
  while (events_.size() < 2 * spans_.size()) {
    auto event = Event::create(true);
    if (!event)
      return event.error();
    events_.push_back(std::move(*event));
  }
  MOE_RETURN_IF_ERROR(events_[2 * id].record(stream));
  return id;
}

Status StepTrace::record(size_t id, cudaStream_t stream, Span span) {
  spans_[id] = std::move(span);
  return events_[2 * id + 1].record(stream);
}

Status StepTrace::end(ChromeTrace &trace, std::string name) {
  active_ = false;
  int timeline = trace.addTimeline(std::move(name));
  // Tracks in the order of the plan's streams: compute, then copies in.
  trace.addTrack(timeline, "compute");
  for (size_t i = 0; i < spans_.size(); ++i) {
    MOE_RETURN_IF_ERROR(events_[2 * i + 1].synchronize());
    auto start = elapsedSeconds(*origin_, events_[2 * i]);
    if (!start)
      return start.error();
    auto seconds = elapsedSeconds(events_[2 * i], events_[2 * i + 1]);
    if (!seconds)
      return seconds.error();
    Span &span = spans_[i];
    trace.addSpan(
        timeline, span.track,
        {std::move(span.name), std::move(span.category), *start, *seconds, {}});
  }
  spans_.clear();
  return Status::success();
}

} // namespace moe::cuda
