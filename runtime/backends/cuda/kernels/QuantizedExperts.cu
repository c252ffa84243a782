// Each thread widens one 16-byte load of codes of one row: 16 fp8 codes
// (16 divides the 128-column block) or 32 mxfp4 codes (one scale block),
// so each shares one scale.
#include "runtime/backends/cuda/kernels/QuantizedWeights.cuh"

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kThreads = 256;

template <ExpertFormat F>
__global__ void widenKernel(QuantizedExpertMatrix w, int64_t experts,
                            bf16 *out) {
  constexpr int64_t codesPerLoad = F == ExpertFormat::fp8 ? 16 : 32;
  const int64_t rows = w.parts * w.partRows, pieces = w.cols / codesPerLoad;
  const int64_t perExpert = rows * pieces;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= experts * perExpert)
    return;
  int64_t e = i / perExpert, r = i % perExpert / pieces,
          c = i % pieces * codesPerLoad;
  bf16 *to = out + (e * rows + r) * w.cols + c;
  if constexpr (F == ExpertFormat::fp8) {
    uint4 packed =
        *reinterpret_cast<const uint4 *>(expertCodes(w, e) + r * w.cols + c);
    widen16(packed, fp8Scale(w, e, r, c), to);
  } else {
    uint4 packed = *reinterpret_cast<const uint4 *>(expertCodes(w, e) +
                                                    (r * w.cols + c) / 2);
    widen32Fp4(packed, mxfp4Scale(w, e, r, c), to);
  }
}

} // namespace

cudaError_t widenExperts(const QuantizedExpertMatrix &weight, int64_t experts,
                         bf16 *out, cudaStream_t stream) {
  if (!validQuantizedMatrix(weight, experts) || !aligned16(out))
    return cudaErrorInvalidValue;
  bool fp8 = weight.format == ExpertFormat::fp8;
  int64_t threads = experts * weight.parts * weight.partRows *
                    (weight.cols / (fp8 ? 16 : 32));
  if (threads == 0)
    return cudaSuccess;
  unsigned blocks = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  if (fp8)
    widenKernel<ExpertFormat::fp8><<<blocks, kThreads, 0, stream>>>(
        weight, experts, out);
  else
    widenKernel<ExpertFormat::mxfp4><<<blocks, kThreads, 0, stream>>>(
        weight, experts, out);
  return cudaGetLastError();
}

bool validQuantizedMatrix(const QuantizedExpertMatrix &weight,
                          int64_t experts) {
  bool fp8 = weight.format == ExpertFormat::fp8;
  if (!fp8 && weight.format != ExpertFormat::mxfp4)
    return false;
  int64_t codeBytes = weight.parts * weight.partRows * weight.cols / (fp8 ? 1 : 2);
  bool hasResident = weight.residentExperts > 0,
       hasStreamed = weight.residentExperts < experts;
  return weight.cols % (fp8 ? 16 : 32) == 0 && weight.parts > 0 &&
         weight.partRows > 0 && weight.scaleOffset >= codeBytes &&
         weight.scaleOffset % 16 == 0 && weight.stride > weight.scaleOffset &&
         weight.stride % 16 == 0 && weight.residentExperts >= 0 &&
         weight.residentExperts <= experts &&
         (!hasResident || (weight.resident && aligned16(weight.resident))) &&
         (!hasStreamed || (weight.streamed && aligned16(weight.streamed)));
}

} // namespace moe::cuda::kernels
