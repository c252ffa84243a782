// How fast the host's cores read DRAM: `threads` threads each stream their
// own part of one buffer (first touched by that thread, so a NUMA host
// places it near the reader) at once; the rate is the buffer's bytes over
// the time from the start to the last reader's end, the median of repeats.
// Threads are not pinned: the OS spreads them as it spreads the pool's.
#pragma once

#include <cstdint>
#include <vector>

namespace moe::host {

struct ReadBandwidthOptions {
  int64_t bufferBytes = int64_t(1) << 30; // well beyond any last-level cache
  int repeats = 5;
};

/// Bytes read per second by `threads` threads.
double measureReadBandwidth(int threads, const ReadBandwidthOptions &options);

/// The thread counts a profile measures: 1, 2, 4, ... below `cores`, and
/// `cores`.
std::vector<int> readThreadCounts(int cores);

} // namespace moe::host
