#include "runtime/backends/cuda/Stream.h"

#include <utility>

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

Result<Stream> Stream::create() {
  cudaStream_t stream = nullptr;
  MOE_CUDA_TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return Stream(stream);
}

Stream::Stream(Stream &&other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)) {}

Stream &Stream::operator=(Stream &&other) noexcept {
  if (this != &other) {
    if (stream_)
      cudaStreamDestroy(stream_);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

Stream::~Stream() {
  if (stream_)
    cudaStreamDestroy(stream_);
}

Status Stream::wait(const Event &event) const {
  return checkCuda(cudaStreamWaitEvent(stream_, event.get(), 0),
                   "cudaStreamWaitEvent");
}

Status Stream::synchronize() const {
  return checkCuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

Result<Event> Event::create(bool timing) {
  cudaEvent_t event = nullptr;
  MOE_CUDA_TRY(cudaEventCreateWithFlags(
      &event, timing ? cudaEventDefault : cudaEventDisableTiming));
  return Event(event);
}

Event::Event(Event &&other) noexcept
    : event_(std::exchange(other.event_, nullptr)) {}

Event &Event::operator=(Event &&other) noexcept {
  if (this != &other) {
    if (event_)
      cudaEventDestroy(event_);
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

Event::~Event() {
  if (event_)
    cudaEventDestroy(event_);
}

Status Event::record(cudaStream_t stream) const {
  return checkCuda(cudaEventRecord(event_, stream), "cudaEventRecord");
}

Status Event::recordInGraph(cudaStream_t stream) const {
  // The external flag is refused on a stream that is not capturing.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  MOE_RETURN_IF_ERROR(checkCuda(cudaStreamIsCapturing(stream, &capture),
                                "cudaStreamIsCapturing"));
  if (capture != cudaStreamCaptureStatusActive)
    return record(stream);
  return checkCuda(
      cudaEventRecordWithFlags(event_, stream, cudaEventRecordExternal),
      "cudaEventRecordWithFlags");
}

Status Event::synchronize() const {
  return checkCuda(cudaEventSynchronize(event_), "cudaEventSynchronize");
}

Result<bool> Event::isComplete() const {
  cudaError_t code = cudaEventQuery(event_);
  if (code == cudaSuccess)
    return true;
  if (code == cudaErrorNotReady)
    return false;
  return cudaFailure(code, "cudaEventQuery");
}

Status createStreams(std::initializer_list<std::optional<Stream> *> targets) {
  for (std::optional<Stream> *target : targets) {
    auto created = Stream::create();
    if (!created)
      return created.error();
    target->emplace(std::move(*created));
  }
  return Status::success();
}

Status createEvents(std::initializer_list<std::optional<Event> *> targets) {
  for (std::optional<Event> *target : targets) {
    auto created = Event::create(false);
    if (!created)
      return created.error();
    target->emplace(std::move(*created));
  }
  return Status::success();
}

Status appendEvents(std::vector<Event> &events, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    auto created = Event::create(false);
    if (!created)
      return created.error();
    events.push_back(std::move(*created));
  }
  return Status::success();
}

Result<double> elapsedSeconds(const Event &start, const Event &stop) {
  float ms = 0;
  MOE_CUDA_TRY(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  return 1e-3 * ms;
}

} // namespace moe::cuda
