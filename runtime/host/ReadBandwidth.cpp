#include "runtime/host/ReadBandwidth.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <thread>

namespace moe::host {
namespace {

// Sums the words of [begin, end): four independent chains, so loads, not
// adds, bound it; the compiler vectorizes it.
uint64_t sumWords(const uint64_t *begin, const uint64_t *end) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (const uint64_t *p = begin; p + 4 <= end; p += 4) {
    a += p[0];
    b += p[1];
    c += p[2];
    d += p[3];
  }
  return a + b + c + d;
}

struct FreeDeleter {
  void operator()(uint64_t *p) const { std::free(p); }
};

} // namespace

double measureReadBandwidth(int threads, const ReadBandwidthOptions &options) {
  threads = std::max(threads, 1);
  const int repeats = std::max(options.repeats, 1);
  constexpr size_t kAlign = size_t(2) << 20; // huge-page aligned
  size_t words = size_t(options.bufferBytes) / 8 / (4 * threads) * 4 * threads;
  std::unique_ptr<uint64_t, FreeDeleter> buffer(static_cast<uint64_t *>(
      std::aligned_alloc(kAlign, (words * 8 + kAlign - 1) / kAlign * kAlign)));
  size_t share = words / threads;
  std::atomic<uint64_t> sink{0};
  std::vector<double> seconds;
  std::chrono::steady_clock::time_point start;
  std::barrier sync(threads);

  auto reader = [&](int t) {
    uint64_t *part = buffer.get() + t * share;
    for (size_t i = 0; i < share; ++i)
      part[i] = i * 0x9E3779B97F4A7C15ull + t;
    for (int r = 0; r <= repeats; ++r) {
      sync.arrive_and_wait();
      if (t == 0)
        start = std::chrono::steady_clock::now();
      sync.arrive_and_wait();
      sink += sumWords(part, part + share);
      sync.arrive_and_wait();
      // The first pass warms the TLB and the page tables.
      if (t == 0 && r > 0)
        seconds.push_back(std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - start)
                              .count());
    }
  };
  std::vector<std::jthread> helpers;
  for (int t = 1; t < threads; ++t)
    helpers.emplace_back(reader, t);
  reader(0);
  helpers.clear();
  std::sort(seconds.begin(), seconds.end());
  return double(words * 8) / seconds[seconds.size() / 2];
}

std::vector<int> readThreadCounts(int cores) {
  std::vector<int> counts;
  for (int threads = 1; threads < cores; threads *= 2)
    counts.push_back(threads);
  counts.push_back(std::max(cores, 1));
  return counts;
}

} // namespace moe::host
