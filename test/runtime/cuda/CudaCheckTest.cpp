#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/Memory.h"

#include "CudaTestSupport.h"

namespace moe::cuda {
namespace {

// The message tables need no device: these run everywhere.
TEST(CudaCheck, CudaErrorNamesCallSite) {
  Status status = checkCuda(cudaErrorMemoryAllocation, "cudaMalloc(1.5 GiB)");
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "cudaMalloc(1.5 GiB): out of memory (cudaErrorMemoryAllocation)");
  EXPECT_TRUE(checkCuda(cudaSuccess, "anything").ok());
}

TEST(CudaCheck, CublasErrorNamesCallSite) {
  Status status = checkCublas(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul");
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message().rfind("cublasLtMatmul: ", 0), 0u)
      << status.error().message();
  EXPECT_NE(status.error().message().find("CUBLAS_STATUS_NOT_SUPPORTED"),
            std::string::npos)
      << status.error().message();
  EXPECT_TRUE(checkCublas(CUBLAS_STATUS_SUCCESS, "anything").ok());
}

Status failingCall() {
  MOE_CUDA_TRY(cudaErrorInvalidValue);
  return Status::success();
}

TEST(CudaCheck, TryMacroUsesExpressionAsCallSite) {
  Status status = failingCall();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "cudaErrorInvalidValue: invalid argument (cudaErrorInvalidValue)");
}

TEST(CudaCheck, FormatsBytes) {
  EXPECT_EQ(formatBytes(0), "0 B");
  EXPECT_EQ(formatBytes(1023), "1023 B");
  EXPECT_EQ(formatBytes(3 << 10), "3.0 KiB");
  EXPECT_EQ(formatBytes(std::size_t(3) << 29), "1.5 GiB");
  EXPECT_EQ(formatBytes(std::size_t(130) << 30), "130.0 GiB");
}

TEST(CudaCheck, RealAllocationFailureReadsClearly) {
  MOE_REQUIRE_CUDA_DEVICE();
  auto arena = DeviceArena::create(std::size_t(1) << 50, "huge");
  ASSERT_FALSE(arena.ok());
  EXPECT_EQ(arena.error().message(),
            "cudaMalloc(1048576.0 GiB) for device arena 'huge': out of memory "
            "(cudaErrorMemoryAllocation)");
  // The failed allocation leaves no sticky error behind.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

} // namespace
} // namespace moe::cuda
