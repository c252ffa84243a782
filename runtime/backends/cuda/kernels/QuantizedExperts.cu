// Each thread widens 16 codes of one row (one 16-byte load, two 16-byte
// stores); 16 divides the 128-column block, so they share one scale.
#include "runtime/backends/cuda/kernels/Fp8Weights.cuh"

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kThreads = 256;

__global__ void widenFp8Kernel(Fp8ExpertMatrix w, int64_t experts, bf16 *out) {
  const int64_t rows = w.parts * w.partRows, pieces = w.cols / 16;
  const int64_t perExpert = rows * pieces;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= experts * perExpert)
    return;
  int64_t e = i / perExpert, r = i % perExpert / pieces, c = i % pieces * 16;
  uint4 packed =
      *reinterpret_cast<const uint4 *>(fp8Codes(w, e) + r * w.cols + c);
  widen16(packed, fp8Scale(w, e, r, c), out + (e * rows + r) * w.cols + c);
}

} // namespace

cudaError_t widenFp8Experts(const Fp8ExpertMatrix &weight, int64_t experts,
                            bf16 *out, cudaStream_t stream) {
  if (!validFp8Matrix(weight, experts) || !aligned16(out))
    return cudaErrorInvalidValue;
  int64_t threads =
      experts * weight.parts * weight.partRows * (weight.cols / 16);
  if (threads == 0)
    return cudaSuccess;
  widenFp8Kernel<<<static_cast<unsigned>((threads + kThreads - 1) / kThreads),
                   kThreads, 0, stream>>>(weight, experts, out);
  return cudaGetLastError();
}

bool validFp8Matrix(const Fp8ExpertMatrix &weight, int64_t experts) {
  auto aligned = [](const void *p) {
    return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0;
  };
  bool hasResident = weight.residentExperts > 0,
       hasStreamed = weight.residentExperts < experts;
  return weight.cols % 16 == 0 && weight.parts > 0 && weight.partRows > 0 &&
         weight.scales && weight.residentExperts >= 0 &&
         weight.residentExperts <= experts &&
         (!hasResident || (weight.resident && aligned(weight.resident))) &&
         (!hasStreamed || (weight.streamed && aligned(weight.streamed)));
}

} // namespace moe::cuda::kernels
