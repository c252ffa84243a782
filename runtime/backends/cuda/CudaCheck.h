// CUDA runtime and cuBLASLt return codes as moe::Error values. Every error
// names its call site, so a failure reads "cudaMalloc(1.5 GiB): out of memory
// (cudaErrorMemoryAllocation)" rather than a bare code. Host code only: this
// header pulls in fmt through Result.h, which nvcc's front end rejects.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "runtime/support/Result.h"

namespace moe::cuda {

// "<callSite>: <description> (<code name>)". cudaFailure also resets the
// runtime's (non-sticky) last error, which the failed call has set.
Error cudaFailure(cudaError_t code, std::string_view callSite);
Error cublasFailure(cublasStatus_t code, std::string_view callSite);

inline Status checkCuda(cudaError_t code, std::string_view callSite) {
  if (code == cudaSuccess)
    return Status::success();
  return cudaFailure(code, callSite);
}
inline Status checkCublas(cublasStatus_t code, std::string_view callSite) {
  if (code == CUBLAS_STATUS_SUCCESS)
    return Status::success();
  return cublasFailure(code, callSite);
}

// Bytes for people: "512 B", "3.0 KiB", "1.5 GiB" (binary units).
std::string formatBytes(std::size_t bytes);

} // namespace moe::cuda

// Return the failure of a CUDA runtime / cuBLASLt call from the enclosing
// function (which returns Status or Result<T>); the call's text is its site.
#define MOE_CUDA_TRY(expr)                                                     \
  do {                                                                         \
    cudaError_t moeCudaCode_ = (expr);                                         \
    if (moeCudaCode_ != cudaSuccess)                                           \
      return ::moe::cuda::cudaFailure(moeCudaCode_, #expr);                    \
  } while (false)

#define MOE_CUBLAS_TRY(expr)                                                   \
  do {                                                                         \
    cublasStatus_t moeCublasCode_ = (expr);                                    \
    if (moeCublasCode_ != CUBLAS_STATUS_SUCCESS)                               \
      return ::moe::cuda::cublasFailure(moeCublasCode_, #expr);                \
  } while (false)
