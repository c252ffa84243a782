// Owning wrappers for CUDA streams and events. Creation returns Result, every
// operation returns Status; moving transfers ownership, destruction releases
// the handle (without synchronising: callers order their work with events).
#pragma once

#include <cuda_runtime.h>

#include "runtime/support/Result.h"

#include <initializer_list>
#include <optional>
#include <vector>

namespace moe::cuda {

class Event;

class Stream {
public:
  // A stream that does not synchronise with the legacy default stream, so
  // copies and kernels of different streams can overlap.
  static Result<Stream> create();

  Stream(Stream &&other) noexcept;
  Stream &operator=(Stream &&other) noexcept;
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;
  ~Stream();

  cudaStream_t get() const { return stream_; }

  // Later work on this stream waits until `event` has completed (device-side;
  // the host does not block).
  Status wait(const Event &event) const;
  // Blocks the host until all work queued on this stream has finished.
  Status synchronize() const;

private:
  explicit Stream(cudaStream_t stream) : stream_(stream) {}
  cudaStream_t stream_ = nullptr;
};

class Event {
public:
  // Timing events cost a little more to record; plain ones are for ordering.
  static Result<Event> create(bool timing = true);

  Event(Event &&other) noexcept;
  Event &operator=(Event &&other) noexcept;
  Event(const Event &) = delete;
  Event &operator=(const Event &) = delete;
  ~Event();

  cudaEvent_t get() const { return event_; }

  Status record(const Stream &stream) const { return record(stream.get()); }
  Status record(cudaStream_t stream) const;
  // record(), and where `stream` is being captured into a CUDA graph, a node
  // of that graph: each replay records the event again.
  Status recordInGraph(cudaStream_t stream) const;
  // Blocks the host until the work before the last record() has finished.
  Status synchronize() const;
  // Whether that work has finished, without blocking.
  Result<bool> isComplete() const;

private:
  explicit Event(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_ = nullptr;
};

// A new stream into each of `targets`, in order.
Status createStreams(std::initializer_list<std::optional<Stream> *> targets);
// A new ordering (non-timing) event into each of `targets`, in order.
Status createEvents(std::initializer_list<std::optional<Event> *> targets);
// `count` new ordering events appended to `events`.
Status appendEvents(std::vector<Event> &events, size_t count);

// Seconds of device time between two recorded timing events (after `stop`
// has completed; call stop.synchronize() first).
Result<double> elapsedSeconds(const Event &start, const Event &stop);

} // namespace moe::cuda
