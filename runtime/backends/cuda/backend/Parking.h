// Hidden states parked in pinned host memory between segments when a pass
// runs in several chunks: the buffer (grown as passes need it), the park
// stream (device to host, while the next chunk computes) and the restore
// stream (host to device, the next chunk's states while a chunk computes),
// and their events.
#pragma once

#include "runtime/backends/cuda/Stream.h"

#include <array>
#include <cstdint>
#include <optional>

namespace moe::cuda {

struct Parking {
  std::optional<Stream> park, restore;
  // A chunk's values ready to park; a segment's parked values stored.
  std::optional<Event> parkReady, segmentParked;
  std::array<std::optional<Event>, 2> chunkParked; // by chunk parity
  // Buffers for a chunk's parked values allocated; the values copied in.
  std::optional<Event> restoreReady;
  std::array<std::optional<Event>, 2> chunkRestored; // by chunk parity

  Parking() = default;
  Parking(const Parking &) = delete;
  Parking &operator=(const Parking &) = delete;
  ~Parking();

  Status createStreams();
  Status createEvents();
  // A buffer of at least `bytes` for the hidden states of `rows` rows.
  Status reserve(size_t bytes, int64_t rows);
  char *buffer() const { return static_cast<char *>(buffer_); }

private:
  void *buffer_ = nullptr;
  size_t bytes_ = 0;
};

} // namespace moe::cuda
