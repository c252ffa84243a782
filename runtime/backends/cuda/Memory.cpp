#include "runtime/backends/cuda/Memory.h"

#include <algorithm>
#include <fstream>
#include <utility>

#include <cuda_runtime.h>

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {
// --- DeviceArena ------------------------------------------------------------

Result<DeviceArena> DeviceArena::create(std::size_t capacity,
                                        std::string name) {
  void *base = nullptr;
  cudaError_t code = cudaMalloc(&base, std::max<std::size_t>(capacity, 1));
  if (code != cudaSuccess)
    return cudaFailure(code, fmt::format("cudaMalloc({}) for device arena '{}'",
                                         formatBytes(capacity), name));
  return DeviceArena(base, capacity, std::move(name));
}

DeviceArena::DeviceArena(DeviceArena &&other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)),
      used_(std::exchange(other.used_, 0)),
      peak_(std::exchange(other.peak_, 0)), name_(std::move(other.name_)) {}

DeviceArena &DeviceArena::operator=(DeviceArena &&other) noexcept {
  if (this != &other) {
    if (base_)
      cudaFree(base_);
    base_ = std::exchange(other.base_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
    used_ = std::exchange(other.used_, 0);
    peak_ = std::exchange(other.peak_, 0);
    name_ = std::move(other.name_);
  }
  return *this;
}

DeviceArena::~DeviceArena() {
  if (base_)
    cudaFree(base_);
}

Result<void *> DeviceArena::allocate(std::size_t bytes, std::string_view what) {
  const std::size_t size = poolAligned(bytes);
  if (size > remaining() || size < bytes)
    return makeError("device arena '{}': '{}' needs {}, only {} of {} left",
                     name_, what, formatBytes(bytes), formatBytes(remaining()),
                     formatBytes(capacity_));
  void *ptr = static_cast<char *>(base_) + used_;
  used_ += size;
  peak_ = std::max(peak_, used_);
  return ptr;
}

// --- host memory checks -----------------------------------------------------

Result<std::size_t> readMemAvailable(const std::string &meminfoPath) {
  std::ifstream meminfo(meminfoPath);
  if (!meminfo)
    return makeError("cannot read {}", meminfoPath);
  std::string key, unit;
  std::size_t value = 0;
  while (meminfo >> key >> value) {
    std::getline(meminfo, unit);
    if (key == "MemAvailable:")
      return value * 1024; // the kernel reports kB (KiB)
  }
  return makeError("{} has no MemAvailable line", meminfoPath);
}

Status checkHostPinning(std::size_t request, std::size_t pinned,
                        std::size_t budget, std::size_t memAvailable,
                        std::size_t headroom) {
  if (request > budget || pinned > budget - request)
    return makeError("host memory: pinning {} would exceed the budget of {} "
                     "({} already pinned)",
                     formatBytes(request), formatBytes(budget),
                     formatBytes(pinned));
  const std::size_t available =
      memAvailable > headroom ? memAvailable - headroom : 0;
  if (request > available)
    return makeError("host memory: pinning {}, only {} available "
                     "(MemAvailable {} less {} kept for the process)",
                     formatBytes(request), formatBytes(available),
                     formatBytes(memAvailable), formatBytes(headroom));
  return Status::success();
}

// --- PinnedHostPool ---------------------------------------------------------

PinnedHostPool::PinnedHostPool(PinnedHostPoolOptions options)
    : options_(std::move(options)) {}

PinnedHostPool::PinnedHostPool(PinnedHostPool &&other) noexcept
    : options_(std::move(other.options_)),
      chunks_(std::exchange(other.chunks_, {})),
      pinned_(std::exchange(other.pinned_, 0)) {}

PinnedHostPool &PinnedHostPool::operator=(PinnedHostPool &&other) noexcept {
  if (this != &other) {
    release();
    options_ = std::move(other.options_);
    chunks_ = std::exchange(other.chunks_, {});
    pinned_ = std::exchange(other.pinned_, 0);
  }
  return *this;
}

PinnedHostPool::~PinnedHostPool() { release(); }

void PinnedHostPool::release() {
  for (Chunk &chunk : chunks_)
    cudaFreeHost(chunk.data);
  chunks_.clear();
  pinned_ = 0;
}

std::size_t PinnedHostPool::usedBytes() const {
  std::size_t used = 0;
  for (const Chunk &chunk : chunks_)
    used += chunk.used;
  return used;
}

Status PinnedHostPool::reserveChunk(std::size_t size) {
  auto available = readMemAvailable(options_.meminfoPath);
  if (!available)
    return available.error().withContext("host memory");
  MOE_RETURN_IF_ERROR(checkHostPinning(size, pinned_, options_.budgetBytes,
                                       *available, options_.headroomBytes));
  void *data = nullptr;
  cudaError_t code = cudaHostAlloc(&data, size, cudaHostAllocDefault);
  if (code != cudaSuccess)
    return cudaFailure(code,
                       fmt::format("cudaHostAlloc({})", formatBytes(size)));
  chunks_.push_back({static_cast<char *>(data), size, 0});
  pinned_ += size;
  return Status::success();
}

Status PinnedHostPool::reserve(std::size_t bytes) {
  if (bytes == 0)
    return Status::success();
  auto available = readMemAvailable(options_.meminfoPath);
  if (!available)
    return available.error().withContext("host memory");
  MOE_RETURN_IF_ERROR(checkHostPinning(bytes, pinned_, options_.budgetBytes,
                                       *available, options_.headroomBytes));
  const std::size_t chunkBytes = std::max(options_.chunkBytes, kPoolAlignment);
  const std::size_t count = (bytes + chunkBytes - 1) / chunkBytes;
  const std::size_t first = chunks_.size();
  std::size_t left = bytes;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t size = std::min(left, chunkBytes);
    void *data = nullptr;
    cudaError_t code = cudaHostAlloc(&data, size, cudaHostAllocDefault);
    if (code != cudaSuccess) {
      // All or nothing: a half-pinned reservation would only mislead.
      for (std::size_t j = first; j < chunks_.size(); ++j) {
        cudaFreeHost(chunks_[j].data);
        pinned_ -= chunks_[j].size;
      }
      chunks_.resize(first);
      return cudaFailure(code, fmt::format("cudaHostAlloc({}) (chunk {} of {})",
                                           formatBytes(size), i + 1, count));
    }
    chunks_.push_back({static_cast<char *>(data), size, 0});
    pinned_ += size;
    left -= size;
  }
  return Status::success();
}

Result<void *> PinnedHostPool::allocate(std::size_t bytes,
                                        std::string_view what) {
  const std::size_t size = poolAligned(bytes);
  if (size < bytes)
    return makeError("pinned host pool: '{}' needs {}", what,
                     formatBytes(bytes));
  auto fits = [&](const Chunk &c) { return c.size - c.used >= size; };
  auto chunk = std::find_if(chunks_.begin(), chunks_.end(), fits);
  if (chunk == chunks_.end()) {
    // A large request pins exactly its size, so no chunk tail is wasted on
    // it (host KV and streamed weights nearly fill the host); small ones
    // share a full chunk where the budget allows, so they do not each pin
    // (and check /proc/meminfo) again.
    const std::size_t room =
        options_.budgetBytes > pinned_ ? options_.budgetBytes - pinned_ : 0;
    const bool large = size >= options_.chunkBytes / kDedicatedShare;
    Status grown = reserveChunk(
        large ? size : std::max(size, std::min(options_.chunkBytes, room)));
    if (!grown)
      return grown.error().withContext(
          fmt::format("pinned host pool: '{}' ({})", what, formatBytes(bytes)));
    chunk = chunks_.end() - 1;
  }
  void *ptr = chunk->data + chunk->used;
  chunk->used += size;
  return ptr;
}

} // namespace moe::cuda
