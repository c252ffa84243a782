// The spans of one traced step on the backend's streams: a pair of timing
// events around each op, copy and wait, read once the step has finished and
// placed relative to an origin recorded on the compute stream while every
// stream was idle (the traced step therefore starts on a drained device and
// does not overlap the step before it). Off, every call does nothing.
#pragma once

#include "runtime/backends/cuda/Stream.h"
#include "runtime/trace/ChromeTrace.h"

#include <optional>
#include <string>
#include <vector>

namespace moe::cuda {

class StepTrace {
public:
  bool active() const { return active_; }
  // Drains the device and records the origin on `compute`: the step's work
  // is issued after this.
  Status begin(cudaStream_t compute);
  // Work on `stream` from here to stop(id, ...) is one span; the id is
  // meaningless when off.
  Result<size_t> start(cudaStream_t stream);
  // The span's name is made by `name()` only while tracing: untraced steps,
  // every step but one, format nothing.
  template <typename Name>
  Status stop(size_t id, cudaStream_t stream, std::string_view track,
              Name &&name, std::string_view category) {
    if (!active_)
      return Status::success();
    return record(id, stream,
                  {std::string(track), name(), std::string(category)});
  }
  // Waits for the step's spans, adds them to `trace` as the timeline
  // `name`, and turns tracing off.
  Status end(ChromeTrace &trace, std::string name);
  // Turns tracing off without a timeline (the traced step failed).
  void cancel() {
    active_ = false;
    spans_.clear();
  }

private:
  struct Span {
    std::string track, name, category;
  };

  bool active_ = false;
  std::optional<Event> origin_;
  std::vector<Event> events_; // start and stop of span i at 2i, 2i + 1
  std::vector<Span> spans_;

  Status record(size_t id, cudaStream_t stream, Span span);
};

} // namespace moe::cuda
