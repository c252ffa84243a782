// Stream-ordered device memory for one forward's values and scratch
// (cudaMallocAsync from the device's pool, which keeps what is freed for
// reuse): scratch returns when its op has run, a value's buffers when its
// last reader has. `limit` is what the plan's GPU budget leaves for it.
//
// Chunks of a pass differ in rows a little (they end at slot boundaries),
// so a freed buffer is often a few bytes short for the next chunk's and the
// pool maps more memory. Sizes are therefore rounded up to one of 16 classes
// per power of two, and when the pool cannot grow, the streams that free
// step memory are drained and its unused memory returned (the pool's and the
// captured decode graphs') before one retry.
//
// While a decode pass is captured as a CUDA graph, allocations become the
// graph's memory nodes: counted here like any other, and forgotten if the
// capture is abandoned.
#pragma once

#include "runtime/support/Result.h"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moe::cuda {

class StepMemory {
public:
  size_t limit = 0, inUse = 0, peak = 0;
  int64_t trims = 0; // times the pool was drained to satisfy an allocation
  cudaMemPool_t pool = nullptr;
  std::vector<cudaStream_t> freeingStreams;

  // At most 1/16 more than `bytes`.
  static size_t roundUp(size_t bytes);

  Result<void *> allocate(size_t bytes, std::string_view what,
                          cudaStream_t stream);
  Status free(void *ptr, cudaStream_t stream);
  // Frees on `stream` but keeps the bytes counted until release(): for
  // buffers freed on a side stream, which allocations on the compute stream
  // reuse only once that stream is ordered after the free.
  Result<size_t> freeLater(void *ptr, cudaStream_t stream);
  void release(size_t bytes) { inUse -= bytes; }

  // Allocations from here to endCapture() belong to the stream capture in
  // progress; endCapture(false) forgets those not freed in it.
  void beginCapture();
  void endCapture(bool kept);

private:
  std::unordered_map<void *, size_t> sizes_;
  bool capturing_ = false;
  size_t inUseBeforeCapture_ = 0;
  std::vector<void *> captured_;
};

} // namespace moe::cuda
