// Each thread widens 16 codes of one row (one 16-byte load, two 16-byte
// stores); 16 divides the 128-column block, so they share one scale.
#include "runtime/backends/cuda/kernels/Kernels.cuh"
#include "runtime/backends/cuda/kernels/WidenFp8.h"

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int64_t kBlock = 128;

__global__ void widenFp8Kernel(Fp8ExpertMatrix w, int64_t experts, bf16 *out) {
  const int64_t rows = w.parts * w.partRows, pieces = w.cols / 16;
  const int64_t perExpert = rows * pieces;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= experts * perExpert)
    return;
  int64_t e = i / perExpert, r = i % perExpert / pieces, c = i % pieces * 16;
  int64_t part = r / w.partRows, partRow = r % w.partRows;
  int64_t blockRows = (w.partRows + kBlock - 1) / kBlock;
  int64_t blockCols = (w.cols + kBlock - 1) / kBlock;
  float scale = w.scales[((e * w.parts + part) * blockRows + partRow / kBlock) *
                             blockCols +
                         c / kBlock];
  const uint8_t *codes = e < w.residentExperts
                             ? w.resident + e * rows * w.cols
                             : w.streamed + (e - w.residentExperts) * rows * w.cols;
  uint4 packed = *reinterpret_cast<const uint4 *>(codes + r * w.cols + c);
  const unsigned short *pairs = reinterpret_cast<const unsigned short *>(&packed);
  __align__(16) bf16 values[16];
#pragma unroll
  for (int p = 0; p < 8; ++p) {
    float2 v = fp8x2ToFloat2(pairs[p]);
    values[2 * p] = __float2bfloat16_rn(v.x * scale);
    values[2 * p + 1] = __float2bfloat16_rn(v.y * scale);
  }
  uint4 *to = reinterpret_cast<uint4 *>(out + (e * rows + r) * w.cols + c);
  to[0] = reinterpret_cast<const uint4 *>(values)[0];
  to[1] = reinterpret_cast<const uint4 *>(values)[1];
}

} // namespace

cudaError_t widenFp8Experts(const Fp8ExpertMatrix &weight, int64_t experts,
                            bf16 *out, cudaStream_t stream) {
  bool hasResident = weight.residentExperts > 0,
       hasStreamed = weight.residentExperts < experts;
  if (weight.cols % 16 != 0 || weight.parts <= 0 || weight.partRows < 0 ||
      !weight.scales || (hasResident && !aligned16(weight.resident)) ||
      (hasStreamed && !aligned16(weight.streamed)) || !aligned16(out))
    return cudaErrorInvalidValue;
  int64_t threads = experts * weight.parts * weight.partRows * (weight.cols / 16);
  if (threads == 0)
    return cudaSuccess;
  widenFp8Kernel<<<static_cast<unsigned>((threads + kThreads - 1) / kThreads),
                   kThreads, 0, stream>>>(weight, experts, out);
  return cudaGetLastError();
}

} // namespace moe::cuda::kernels
