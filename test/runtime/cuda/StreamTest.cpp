#include "runtime/backends/cuda/Stream.h"

#include <cstdint>
#include <vector>

#include "CudaTestSupport.h"

namespace moe::cuda {
namespace {

constexpr std::size_t kBytes = std::size_t(256) << 20;

struct DeviceBuffers {
  void *a = nullptr;
  void *b = nullptr;
  ~DeviceBuffers() {
    cudaFree(a);
    cudaFree(b);
  }
};

TEST(Stream, EventTimesDeviceWork) {
  MOE_REQUIRE_CUDA_DEVICE();
  auto stream = Stream::create();
  ASSERT_TRUE(stream.ok()) << stream.error().message();
  auto start = Event::create();
  auto stop = Event::create();
  ASSERT_TRUE(start.ok() && stop.ok());
  DeviceBuffers buffers;
  ASSERT_EQ(cudaMalloc(&buffers.a, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&buffers.b, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(buffers.a, 1, kBytes, stream->get()), cudaSuccess);

  // Seconds for `copies` device-to-device copies of 256 MiB, back to back.
  auto timeCopies = [&](int copies) -> double {
    EXPECT_TRUE(start->record(*stream).ok());
    for (int i = 0; i < copies; ++i)
      EXPECT_EQ(cudaMemcpyAsync(buffers.b, buffers.a, kBytes,
                                cudaMemcpyDeviceToDevice, stream->get()),
                cudaSuccess);
    EXPECT_TRUE(stop->record(*stream).ok());
    EXPECT_TRUE(stop->synchronize().ok());
    auto complete = stop->isComplete();
    EXPECT_TRUE(complete.ok() && *complete);
    auto seconds = elapsedSeconds(*start, *stop);
    EXPECT_TRUE(seconds.ok());
    return seconds.ok() ? *seconds : -1.0;
  };
  timeCopies(1); // warm-up
  double one = timeCopies(1);
  double eight = timeCopies(8);
  // 512 MiB of traffic per copy: tens of microseconds at least on any GPU,
  // and well under a second.
  EXPECT_GT(one, 20e-6);
  EXPECT_LT(one, 1.0);
  // Eight copies take about eight times as long.
  EXPECT_GT(eight, 4.0 * one);
  EXPECT_LT(eight, 16.0 * one);
}

TEST(Stream, WaitOrdersWorkAcrossStreams) {
  MOE_REQUIRE_CUDA_DEVICE();
  auto producer = Stream::create();
  auto consumer = Stream::create();
  ASSERT_TRUE(producer.ok() && consumer.ok());
  auto ready = Event::create(/*timing=*/false);
  ASSERT_TRUE(ready.ok());
  DeviceBuffers buffers;
  ASSERT_EQ(cudaMalloc(&buffers.a, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&buffers.b, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(buffers.a, 0, kBytes), cudaSuccess);

  for (int round = 1; round <= 3; ++round) {
    // The producer rewrites a (several passes, so it takes a while); the
    // consumer copies a to b only once the producer's event has completed.
    for (int pass = 0; pass < 4; ++pass)
      ASSERT_EQ(cudaMemsetAsync(buffers.a, round * 16 + pass, kBytes,
                                producer->get()),
                cudaSuccess);
    ASSERT_TRUE(ready->record(*producer).ok());
    ASSERT_TRUE(consumer->wait(*ready).ok());
    ASSERT_EQ(cudaMemcpyAsync(buffers.b, buffers.a, kBytes,
                              cudaMemcpyDeviceToDevice, consumer->get()),
              cudaSuccess);
    ASSERT_TRUE(consumer->synchronize().ok());
    std::vector<std::uint8_t> tail(4096);
    ASSERT_EQ(cudaMemcpy(tail.data(),
                         static_cast<char *>(buffers.b) + kBytes - tail.size(),
                         tail.size(), cudaMemcpyDeviceToHost),
              cudaSuccess);
    for (std::uint8_t byte : tail)
      ASSERT_EQ(byte, round * 16 + 3);
  }
}

TEST(Stream, MovesOwnership) {
  MOE_REQUIRE_CUDA_DEVICE();
  auto created = Stream::create();
  ASSERT_TRUE(created.ok());
  Stream first = std::move(*created);
  cudaStream_t handle = first.get();
  ASSERT_NE(handle, nullptr);
  Stream second = std::move(first);
  EXPECT_EQ(first.get(), nullptr);
  EXPECT_EQ(second.get(), handle);
  EXPECT_TRUE(second.synchronize().ok());

  auto event = Event::create();
  ASSERT_TRUE(event.ok());
  Event moved = std::move(*event);
  EXPECT_EQ(event->get(), nullptr);
  EXPECT_TRUE(moved.record(second).ok());
  EXPECT_TRUE(moved.synchronize().ok());
}

} // namespace
} // namespace moe::cuda
