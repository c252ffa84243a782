#include "runtime/backends/cuda/Memory.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>

#include "CudaTestSupport.h"

namespace moe::cuda {
namespace {

constexpr std::size_t kKiB = std::size_t(1) << 10;
constexpr std::size_t kMiB = std::size_t(1) << 20;
constexpr std::size_t kGiB = std::size_t(1) << 30;

bool aligned(const void *ptr) {
  return reinterpret_cast<std::uintptr_t>(ptr) % kPoolAlignment == 0;
}

// A /proc/meminfo stand-in with the given MemAvailable.
std::string writeMeminfo(const std::string &name, std::size_t availableKiB) {
  std::string path =
      (std::filesystem::temp_directory_path() / ("moe-" + name)).string();
  std::ofstream file(path);
  file << "MemTotal:       131072000 kB\n"
       << "MemFree:         1000000 kB\n"
       << "MemAvailable:   " << availableKiB << " kB\n"
       << "Buffers:          100000 kB\n";
  return path;
}

// --- host-memory checks: they fail before any CUDA call, so no device ------

TEST(PinnedHostPool, BudgetErrorNeedsNoDevice) {
  PinnedHostPoolOptions options;
  options.budgetBytes = 100 * kGiB;
  PinnedHostPool pool(options);
  Status status = pool.reserve(130 * kGiB);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "host memory: pinning 130.0 GiB would exceed the budget of "
            "100.0 GiB (0 B already pinned)");
  EXPECT_EQ(pool.pinnedBytes(), 0u);
  EXPECT_EQ(pool.chunkCount(), 0u);
}

TEST(PinnedHostPool, MemAvailableErrorNeedsNoDevice) {
  PinnedHostPoolOptions options;
  options.budgetBytes = 200 * kGiB;
  options.headroomBytes = 1 * kGiB;
  // 119.2 GiB available, less 1 GiB of headroom.
  options.meminfoPath =
      writeMeminfo("meminfo-small", static_cast<std::size_t>(119.2 * kMiB));
  PinnedHostPool pool(options);
  Status status = pool.reserve(130 * kGiB);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "host memory: pinning 130.0 GiB, only 118.2 GiB available "
            "(MemAvailable 119.2 GiB less 1.0 GiB kept for the process)");
  EXPECT_EQ(pool.pinnedBytes(), 0u);
  std::filesystem::remove(options.meminfoPath);
}

TEST(PinnedHostPool, RealMemAvailableIsChecked) {
  auto available = readMemAvailable("/proc/meminfo");
  ASSERT_TRUE(available.ok()) << available.error().message();
  EXPECT_GT(*available, 0u);
  PinnedHostPoolOptions options;
  options.budgetBytes = std::numeric_limits<std::size_t>::max();
  PinnedHostPool pool(options);
  // More than the host has: refused before anything is pinned (pinning it
  // would summon the OOM killer instead of returning an error).
  Status status = pool.reserve(*available + 4 * kGiB);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("available"), std::string::npos)
      << status.error().message();
  EXPECT_EQ(pool.pinnedBytes(), 0u);
}

TEST(PinnedHostPool, CheckCountsWhatIsAlreadyPinned) {
  EXPECT_TRUE(
      checkHostPinning(6 * kGiB, 4 * kGiB, 10 * kGiB, 64 * kGiB, 0).ok());
  Status over = checkHostPinning(7 * kGiB, 4 * kGiB, 10 * kGiB, 64 * kGiB, 0);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().message(),
            "host memory: pinning 7.0 GiB would exceed the budget of 10.0 GiB "
            "(4.0 GiB already pinned)");
  EXPECT_FALSE(checkHostPinning(2 * kGiB, 0, 10 * kGiB, 2 * kGiB, kGiB).ok());
}

TEST(PinnedHostPool, MeminfoErrors) {
  auto missing = readMemAvailable("/nonexistent/meminfo");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), "cannot read /nonexistent/meminfo");
  std::string path =
      (std::filesystem::temp_directory_path() / "moe-meminfo-none").string();
  std::ofstream(path) << "MemTotal: 1000 kB\n";
  auto none = readMemAvailable(path);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().message(), path + " has no MemAvailable line");
  std::filesystem::remove(path);
}

// --- pinning for real --------------------------------------------------------

TEST(PinnedHostPool, ReservesInChunks) {
  MOE_REQUIRE_CUDA_DEVICE();
  PinnedHostPoolOptions options;
  options.budgetBytes = 16 * kMiB;
  options.chunkBytes = 1 * kMiB;
  PinnedHostPool pool(options);
  ASSERT_TRUE(pool.reserve(3 * kMiB + 512 * kKiB).ok());
  EXPECT_EQ(pool.chunkCount(), 4u);
  EXPECT_EQ(pool.pinnedBytes(), 3 * kMiB + 512 * kKiB);

  // 600 KiB: one per 1 MiB chunk; the 512 KiB chunk is too small, so the
  // fourth allocation pins a fifth chunk, of its own size (a large request).
  std::vector<char *> ptrs;
  for (int i = 0; i < 4; ++i) {
    auto ptr = pool.allocate(600 * kKiB, "expert");
    ASSERT_TRUE(ptr.ok()) << ptr.error().message();
    EXPECT_TRUE(aligned(*ptr));
    cudaPointerAttributes attributes{};
    ASSERT_EQ(cudaPointerGetAttributes(&attributes, *ptr), cudaSuccess);
    EXPECT_EQ(attributes.type, cudaMemoryTypeHost) << "not pinned";
    ptrs.push_back(static_cast<char *>(*ptr));
  }
  EXPECT_EQ(pool.chunkCount(), 5u);
  EXPECT_EQ(pool.pinnedBytes(), 3 * kMiB + 1112 * kKiB);
  EXPECT_EQ(pool.usedBytes(), 4 * 600 * kKiB);

  // Small requests fill the tails of existing chunks first.
  auto small = pool.allocate(100 * kKiB, "norm");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(pool.chunkCount(), 5u);

  // Larger than a chunk: pinned alone.
  auto big = pool.allocate(2 * kMiB, "embedding");
  ASSERT_TRUE(big.ok()) << big.error().message();
  EXPECT_EQ(pool.chunkCount(), 6u);
  EXPECT_EQ(pool.pinnedBytes(), 5 * kMiB + 1112 * kKiB);

  // The memory works as a copy source and target.
  void *device = nullptr;
  ASSERT_EQ(cudaMalloc(&device, 600 * kKiB), cudaSuccess);
  for (std::size_t i = 0; i < 600 * kKiB; ++i)
    ptrs[0][i] = static_cast<char>(i * 7);
  ASSERT_EQ(cudaMemcpy(device, ptrs[0], 600 * kKiB, cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(ptrs[3], device, 600 * kKiB, cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(std::memcmp(ptrs[0], ptrs[3], 600 * kKiB), 0);
  cudaFree(device);
}

// Small allocations whose total is known fill one chunk pinned for them:
// the budget left after them is exactly what they did not take.
TEST(PinnedHostPool, AReservedChunkTakesSmallAllocationsWithoutTails) {
  MOE_REQUIRE_CUDA_DEVICE();
  PinnedHostPoolOptions options;
  options.budgetBytes = 8 * kMiB;
  options.chunkBytes = 16 * kMiB; // small requests: under 1 MiB
  PinnedHostPool pool(options);
  ASSERT_TRUE(pool.reserveChunk(5 * 300 * kKiB).ok());
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(pool.allocate(300 * kKiB, "attention weights").ok());
  EXPECT_EQ(pool.chunkCount(), 1u);
  EXPECT_EQ(pool.usedBytes(), pool.pinnedBytes());
  // A large request then pins exactly the rest of the budget.
  auto pages = pool.allocate(8 * kMiB - 5 * 300 * kKiB, "host k pages");
  ASSERT_TRUE(pages.ok()) << pages.error().message();
  EXPECT_EQ(pool.pinnedBytes(), 8 * kMiB);
}

TEST(PinnedHostPool, GrowsOnlyWithinBudget) {
  MOE_REQUIRE_CUDA_DEVICE();
  PinnedHostPoolOptions options;
  options.budgetBytes = 2 * kMiB;
  options.chunkBytes = 1 * kMiB;
  PinnedHostPool pool(options);
  ASSERT_TRUE(pool.allocate(kMiB, "a").ok());
  ASSERT_TRUE(pool.allocate(kMiB, "b").ok());
  EXPECT_EQ(pool.pinnedBytes(), 2 * kMiB);
  auto third = pool.allocate(kKiB, "c");
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.error().message(),
            "pinned host pool: 'c' (1.0 KiB): host memory: pinning 1.0 KiB "
            "would exceed the budget of 2.0 MiB (2.0 MiB already pinned)");
}

// --- device arena
// --------------------------------------------------------------

TEST(DeviceArena, AlignsEveryAllocation) {
  MOE_REQUIRE_CUDA_DEVICE();
  auto arena = DeviceArena::create(kMiB, "scratch");
  ASSERT_TRUE(arena.ok()) << arena.error().message();
  char *base = static_cast<char *>(arena->base());
  std::size_t expectedUsed = 0;
  for (std::size_t bytes : {1, 3, 1000, 256, 4097, 0, 255}) {
    auto ptr = arena->allocate(bytes, "piece");
    ASSERT_TRUE(ptr.ok()) << ptr.error().message();
    EXPECT_TRUE(aligned(*ptr)) << bytes;
    EXPECT_EQ(*ptr, base + expectedUsed) << bytes;
    expectedUsed += (bytes + 255) / 256 * 256;
    EXPECT_EQ(arena->used(), expectedUsed);
    if (bytes > 0) {
      ASSERT_EQ(cudaMemset(*ptr, 0x5A, bytes), cudaSuccess);
    }
  }
  auto floats = arena->allocateArray<float>(10, "floats");
  ASSERT_TRUE(floats.ok());
  EXPECT_TRUE(aligned(*floats));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(DeviceArena, ExhaustionNamesTheRequest) {
  MOE_REQUIRE_CUDA_DEVICE();
  auto arena = DeviceArena::create(kMiB, "kv");
  ASSERT_TRUE(arena.ok()) << arena.error().message();
  ASSERT_TRUE(arena->allocate(900 * kKiB, "block 6").ok());
  auto full = arena->allocate(200 * kKiB, "block 7");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().message(),
            "device arena 'kv': 'block 7' needs 200.0 KiB, only 124.0 KiB of "
            "1.0 MiB left");
  EXPECT_EQ(arena->used(), 900 * kKiB); // a failed request takes nothing
  arena->reset();
  EXPECT_EQ(arena->used(), 0u);
  EXPECT_EQ(arena->peak(), 900 * kKiB);
  auto again = arena->allocate(200 * kKiB, "block 7");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, arena->base());
}

} // namespace
} // namespace moe::cuda
