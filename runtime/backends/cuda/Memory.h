// Device and pinned host memory for the CUDA backend. Both are planned up
// front: the plan says how many bytes each pool needs, the pool takes them at
// start-up and then only sub-allocates, so a plan that does not fit fails
// before the run starts, with an error that names the request.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/support/Result.h"

namespace moe::cuda {

// All pool allocations are aligned to this: cuBLASLt's fastest kernels want
// 16-byte operands, and 256 matches what cudaMalloc itself guarantees.
inline constexpr std::size_t kPoolAlignment = 256;
// `bytes` rounded up to kPoolAlignment: what an allocation takes of a pool.
inline constexpr std::size_t poolAligned(std::size_t bytes) {
  return (bytes + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment;
}

// One cudaMalloc of a planned size, handed out by bumping an offset. There is
// no per-allocation free: reset() releases everything at once (per run, or per
// phase of one).
class DeviceArena {
public:
  // `name` appears in every error ("device arena 'kv': ...").
  static Result<DeviceArena> create(std::size_t capacity, std::string name);

  DeviceArena(DeviceArena &&other) noexcept;
  DeviceArena &operator=(DeviceArena &&other) noexcept;
  DeviceArena(const DeviceArena &) = delete;
  DeviceArena &operator=(const DeviceArena &) = delete;
  ~DeviceArena();

  // `bytes` (rounded up to kPoolAlignment) from the arena; `what` names the
  // request in the error when it does not fit.
  Result<void *> allocate(std::size_t bytes, std::string_view what);
  template <typename T>
  Result<T *> allocateArray(std::size_t count, std::string_view what) {
    auto ptr = allocate(count * sizeof(T), what);
    if (!ptr)
      return ptr.error();
    return static_cast<T *>(*ptr);
  }

  void reset() { used_ = 0; }

  void *base() const { return base_; }
  std::size_t capacity() const { return capacity_; }
  std::size_t used() const { return used_; }
  std::size_t remaining() const { return capacity_ - used_; }
  // Most bytes ever in use at once (for the run's memory statistics).
  std::size_t peak() const { return peak_; }

private:
  DeviceArena(void *base, std::size_t capacity, std::string name)
      : base_(base), capacity_(capacity), name_(std::move(name)) {}

  void *base_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t used_ = 0;
  std::size_t peak_ = 0;
  std::string name_;
};

// MemAvailable of a /proc/meminfo-format file, in bytes.
Result<std::size_t> readMemAvailable(const std::string &meminfoPath);

// Whether pinning `request` more bytes is safe: pinned + request must stay
// within `budget`, and request within memAvailable - headroom. Pinning past
// what the host has does not fail with an error: the kernel's OOM killer ends
// the process, so this check must come before any cudaHostAlloc.
Status checkHostPinning(std::size_t request, std::size_t pinned,
                        std::size_t budget, std::size_t memAvailable,
                        std::size_t headroom);

struct PinnedHostPoolOptions {
  std::size_t budgetBytes = 0; // most bytes the pool may pin in all
  // Pinning happens in chunks of at most this size, so a large reservation
  // needs no single contiguous pin; a larger allocation is pinned alone.
  std::size_t chunkBytes = std::size_t(4) << 30;
  // MemAvailable left unpinned for the process's own pageable memory.
  std::size_t headroomBytes = std::size_t(1) << 30;
  std::string meminfoPath = "/proc/meminfo";
};

// Pinned (page-locked) host memory for streamed weights and host-side KV:
// reserve() pins chunks after checking budget and MemAvailable, allocate()
// bumps within the chunks (an allocation never straddles two).
class PinnedHostPool {
public:
  explicit PinnedHostPool(PinnedHostPoolOptions options);

  PinnedHostPool(PinnedHostPool &&other) noexcept;
  PinnedHostPool &operator=(PinnedHostPool &&other) noexcept;
  PinnedHostPool(const PinnedHostPool &) = delete;
  PinnedHostPool &operator=(const PinnedHostPool &) = delete;
  ~PinnedHostPool();

  // Pins `bytes` more, in chunks of at most chunkBytes; all or nothing.
  Status reserve(std::size_t bytes);
  // Pins one chunk of exactly `size` bytes (checked like reserve), which
  // the allocations that follow fill first: allocations whose total is
  // known leave no chunk tails unused.
  Status reserveChunk(std::size_t size);

  // `bytes` (rounded up to kPoolAlignment) of pinned memory; pins one more
  // chunk when no reserved chunk has room: exactly `bytes` for a large
  // request, a full chunk for a small one.
  Result<void *> allocate(std::size_t bytes, std::string_view what);

  std::size_t pinnedBytes() const { return pinned_; }
  std::size_t usedBytes() const;
  std::size_t chunkCount() const { return chunks_.size(); }
  const PinnedHostPoolOptions &options() const { return options_; }

private:
  struct Chunk {
    char *data = nullptr;
    std::size_t size = 0;
    std::size_t used = 0;
  };
  void release();
  // Requests of at least chunkBytes / kDedicatedShare get a chunk of their
  // own.
  static constexpr std::size_t kDedicatedShare = 16;

  PinnedHostPoolOptions options_;
  std::vector<Chunk> chunks_;
  std::size_t pinned_ = 0;
};

} // namespace moe::cuda
