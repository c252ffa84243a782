#include "runtime/support/ThreadPool.h"

#include <algorithm>

namespace moe {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0)
    threads =
        static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this] { workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread &worker : workers_)
    worker.join();
}

void ThreadPool::runChunks() {
  for (;;) {
    int64_t begin = next_.fetch_add(chunk_);
    if (begin >= count_)
      return;
    (*body_)(begin, std::min(count_, begin + chunk_));
  }
}

void ThreadPool::workerLoop() {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_)
      return;
    seen = generation_;
    lock.unlock();
    runChunks();
    lock.lock();
    if (--busyWorkers_ == 0)
      done_.notify_one();
  }
}

void ThreadPool::parallelFor(int64_t n,
                             const std::function<void(int64_t, int64_t)> &body,
                             int64_t grain) {
  if (n <= 0)
    return;
  grain = std::max<int64_t>(grain, 1);
  if (workers_.empty() || n <= grain) {
    body(0, n);
    return;
  }
  // A few chunks per thread balance uneven ranges (causal attention rows).
  int64_t chunk = std::max(grain, (n + 4 * size() - 1) / (4 * size()));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    count_ = n;
    chunk_ = chunk;
    next_.store(0);
    busyWorkers_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  runChunks();
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return busyWorkers_ == 0; });
  body_ = nullptr;
}

} // namespace moe
