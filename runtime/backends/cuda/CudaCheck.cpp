#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

Error cudaFailure(cudaError_t code, std::string_view callSite) {
  // Clear the runtime's last error, so that a later launch check
  // (cudaGetLastError after a kernel) does not report this failure again.
  cudaGetLastError();
  return makeError("{}: {} ({})", callSite, cudaGetErrorString(code),
                   cudaGetErrorName(code));
}

Error cublasFailure(cublasStatus_t code, std::string_view callSite) {
  return makeError("{}: {} ({})", callSite, cublasLtGetStatusString(code),
                   cublasLtGetStatusName(code));
}

std::string formatBytes(std::size_t bytes) {
  constexpr double kKiB = 1024.0;
  const double b = static_cast<double>(bytes);
  if (b >= kKiB * kKiB * kKiB)
    return fmt::format("{:.1f} GiB", b / (kKiB * kKiB * kKiB));
  if (b >= kKiB * kKiB)
    return fmt::format("{:.1f} MiB", b / (kKiB * kKiB));
  if (b >= kKiB)
    return fmt::format("{:.1f} KiB", b / kKiB);
  return fmt::format("{} B", bytes);
}

} // namespace moe::cuda
