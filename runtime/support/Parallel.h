// One-off data-parallel work on all cores: job(i) for every i in [0, count),
// handed out one index at a time to the calling thread and helper threads
// that live for this call only. For work done once or per step (weight
// conversion, sampling); hot loops of many small calls keep a thread pool
// (runtime/support/ThreadPool.h).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <system_error>
#include <thread>
#include <vector>

namespace moe {

template <typename Job> void runOnAllCores(std::size_t count, const Job &job) {
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t i = next++; i < count; i = next++)
      job(i);
  };
  std::size_t threads = std::min<std::size_t>(
      std::max(1u, std::thread::hardware_concurrency()), count);
  std::vector<std::jthread> helpers;
  for (std::size_t t = 1; t < threads; ++t) {
    try {
      helpers.emplace_back(work);
    } catch (const std::system_error &) {
      break; // fewer threads only make it slower
    }
  }
  work();
}

} // namespace moe
