// Widening: each thread widens one 16-byte load of codes of one row: 16
// fp8 codes (16 divides the 128-column block) or 32 mxfp4 codes (one scale
// block), so each shares one scale.
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

// One warp per group of 128 inputs of a row: four values a lane.
__global__ void quantizeInputsKernel(const bf16 *x, int64_t rows, int64_t k,
                                     const int32_t *offsets, int experts,
                                     int64_t microBatch, uint8_t *codes,
                                     float *scales) {
  constexpr float kE4M3Max = 448.0f;
  const int64_t groups = (k + kFp8Block - 1) / kFp8Block;
  const int64_t unit =
      (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / warpSize;
  const int lane = threadIdx.x % warpSize;
  if (unit >= rows * groups)
    return;
  const int64_t row = unit / groups, group = unit % groups;
  const int64_t col = group * kFp8Block + lane * 4;
  float v[4] = {0, 0, 0, 0};
  if (col < k) { // k is a multiple of 16, so a lane's four are all in
    uint2 packed = *reinterpret_cast<const uint2 *>(x + row * k + col);
    float2 low = __bfloat1622float2(
        *reinterpret_cast<const __nv_bfloat162 *>(&packed.x));
    float2 high = __bfloat1622float2(
        *reinterpret_cast<const __nv_bfloat162 *>(&packed.y));
    v[0] = low.x, v[1] = low.y, v[2] = high.x, v[3] = high.y;
  }
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])),
                     fmaxf(fabsf(v[2]), fabsf(v[3])));
  for (int offset = warpSize / 2; offset > 0; offset /= 2)
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  const float inverse = amax > 0 ? kE4M3Max / amax : 0.0f;
  if (col < k) {
    uint32_t word = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      word |= uint32_t(__nv_cvt_float_to_fp8(v[i] * inverse, __NV_SATFINITE,
                                             __NV_E4M3))
              << (8 * i);
    *reinterpret_cast<uint32_t *>(codes + row * k + col) = word;
  }
  if (lane != 0)
    return;
  // The group holding the row: offsets[e] <= row < offsets[e + 1].
  int low = 0, high = experts;
  while (high - low > 1) {
    int mid = (low + high) / 2;
    if (offsets[mid] <= row)
      low = mid;
    else
      high = mid;
  }
  const int64_t start = offsets[low];
  const int64_t first = start + (row - start) / microBatch * microBatch;
  const int64_t m = min(microBatch, int64_t(offsets[low + 1]) - first);
  scales[fp8GemmScalesAt(first, k) + group * fp8GemmRows(m) + (row - first)] =
      amax / kE4M3Max;
}

__global__ void gatherScalesKernel(QuantizedExpertMatrix w, int64_t experts,
                                   float *out) {
  const int64_t blockRows = (w.partRows + kFp8Block - 1) / kFp8Block;
  const int64_t blockCols = (w.cols + kFp8Block - 1) / kFp8Block;
  const int64_t rowLength = fp8GemmScaleRowLength(w.cols);
  const int64_t perExpert = w.parts * blockRows * rowLength;
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= experts * perExpert)
    return;
  const int64_t e = i / perExpert, row = i % perExpert / rowLength,
                c = i % rowLength;
  const float *scales =
      reinterpret_cast<const float *>(expertCodes(w, e) + w.scaleOffset);
  out[i] = c < blockCols ? scales[row * blockCols + c] : 0.0f;
}

} // namespace

cudaError_t quantizeExpertInputs(const bf16 *x, int64_t rows, int64_t k,
                                 const int32_t *offsets, int experts,
                                 int64_t microBatch, uint8_t *codes,
                                 float *scales, cudaStream_t stream) {
  if (k <= 0 || k % 16 != 0 || experts <= 0 || microBatch <= 0 || !offsets ||
      !x || !codes || !scales)
    return cudaErrorInvalidValue;
  const int64_t warps = rows * ((k + kFp8Block - 1) / kFp8Block);
  if (warps == 0)
    return cudaSuccess;
  constexpr int64_t kWarpsPerBlock = kThreads / 32;
  unsigned blocks =
      static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  quantizeInputsKernel<<<blocks, kThreads, 0, stream>>>(
      x, rows, k, offsets, experts, microBatch, codes, scales);
  return cudaGetLastError();
}

cudaError_t gatherFp8GemmScales(const QuantizedExpertMatrix &weight,
                                int64_t experts, float *out,
                                cudaStream_t stream) {
  if (weight.format != ExpertFormat::fp8 ||
      !validQuantizedMatrix(weight, experts) || !out)
    return cudaErrorInvalidValue;
  const int64_t count = experts * weight.parts *
                        ((weight.partRows + kFp8Block - 1) / kFp8Block) *
                        fp8GemmScaleRowLength(weight.cols);
  if (count == 0)
    return cudaSuccess;
  unsigned blocks = static_cast<unsigned>((count + kThreads - 1) / kThreads);
  gatherScalesKernel<<<blocks, kThreads, 0, stream>>>(weight, experts, out);
  return cudaGetLastError();
}

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
