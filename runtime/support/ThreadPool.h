// A small fixed pool of worker threads for hot data-parallel loops (the CPU
// backend's kernels, weight re-layout at load). Work is split into index
// ranges; which thread runs a range never changes what is computed there, so
// results do not depend on the pool size.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace moe {

class ThreadPool {
public:
  /// `threads` counts the calling thread; 0 means hardware_concurrency.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  /// Calls body(begin, end) over disjoint ranges covering [0, n) and returns
  /// when all are done. Ranges hold at least `grain` indices (but the last).
  /// Not reentrant: a body must not call parallelFor.
  void parallelFor(int64_t n, const std::function<void(int64_t, int64_t)> &body,
                   int64_t grain = 1);

private:
  void workerLoop();
  void runChunks();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t, int64_t)> *body_ = nullptr;
  int64_t count_ = 0;
  int64_t chunk_ = 1;
  std::atomic<int64_t> next_{0};
  int busyWorkers_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

} // namespace moe
