// RMSNorm over rows (plain, with the pre-norm residual add, and of the fp32
// residual stream), and RoPE with the optional per-head QK norm before it.
#include "runtime/backends/cuda/kernels/Kernels.cuh"

namespace moe::cuda::kernels {
namespace {

using namespace detail;

// One block per row; each thread owns whole N-wide vectors. The second pass
// re-reads the row (an L1/L2 hit) instead of holding it in registers, so one
// kernel serves every width.
template <int N>
__global__ void rmsNormKernel(const bf16 *__restrict__ x,
                              bf16 *__restrict__ residual,
                              const bf16 *__restrict__ weight, bf16 *out,
                              int64_t width, float eps, bool weightAfterCast) {
  __shared__ float scratch[32];
  int64_t row = blockIdx.x;
  const bf16 *xr = x + row * width;
  bf16 *rr = residual ? residual + row * width : nullptr;
  int64_t vectors = width / N;
  float squares = 0.0f;
  for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
    float a[N];
    loadBf16<N>(xr + v * N, a);
    if (rr) {
      float r[N];
      loadBf16<N>(rr + v * N, r);
#pragma unroll
      for (int i = 0; i < N; ++i)
        a[i] = roundBf16(a[i] + r[i]);
      storeBf16<N>(rr + v * N, a);
    }
#pragma unroll
    for (int i = 0; i < N; ++i)
      squares += a[i] * a[i];
  }
  squares = blockSum(squares, scratch);
  float inverse = 1.0f / sqrtf(squares / static_cast<float>(width) + eps);
  // The same thread wrote these residual values above: no barrier needed.
  const bf16 *src = rr ? rr : xr;
  bf16 *dst = out + row * width;
  for (int64_t v = threadIdx.x; v < vectors; v += blockDim.x) {
    float a[N], w[N];
    loadBf16<N>(src + v * N, a);
    loadBf16<N>(weight + v * N, w);
#pragma unroll
    for (int i = 0; i < N; ++i)
      a[i] = weightAfterCast ? roundBf16(a[i] * inverse) * w[i]
                             : w[i] * (a[i] * inverse);
    storeBf16<N>(dst + v * N, a);
  }
}

// One warp per head vector of q then k. Each lane rotates pairs i = lane,
// lane + 32, ...; the norm's sum of squares runs over the whole head first.
__global__ void ropeKernel(RopeArgs a) {
  int64_t warpId =
      (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  int perRow = a.heads + a.kvHeads;
  if (warpId >= a.rows * perRow)
    return;
  int64_t row = warpId / perRow;
  int head = static_cast<int>(warpId % perRow);
  bool isQ = head < a.heads;
  bf16 *x = isQ ? a.q + (row * a.heads + head) * a.headDim
                : a.k + (row * a.kvHeads + (head - a.heads)) * a.headDim;
  const bf16 *norm = isQ ? a.qNorm : a.kNorm;

  float inverse = 1.0f;
  if (norm) {
    float squares = 0.0f;
    for (int i = lane; i < a.headDim; i += 32) {
      float v = __bfloat162float(x[i]);
      squares += v * v;
    }
    squares = warpSum(squares);
    inverse = 1.0f / sqrtf(squares / static_cast<float>(a.headDim) + a.normEps);
  }
  auto normed = [&](int i) {
    float v = __bfloat162float(x[i]);
    return norm ? __bfloat162float(norm[i]) * (v * inverse) : v;
  };

  int rotary = a.positions ? a.rotaryDim : 0;
  int half = rotary / 2;
  if (rotary) {
    int64_t position = a.positions[row];
    const float *c = a.cos + position * half;
    const float *s = a.sin + position * half;
    bool neox = a.style == RopeStyle::neox;
    for (int i = lane; i < half; i += 32) {
      int first = neox ? i : 2 * i, second = neox ? i + half : 2 * i + 1;
      float u = normed(first), v = normed(second);
      float ci = c[i], si = s[i];
      x[first] = __float2bfloat16_rn(u * ci - v * si);
      x[second] = __float2bfloat16_rn(v * ci + u * si);
    }
  }
  if (norm)
    for (int i = rotary + lane; i < a.headDim; i += 32)
      x[i] = __float2bfloat16_rn(normed(i));
}

constexpr int kF32NormThreads = 256;

// One block per row: a block-wide sum of squares, then the scaled row.
__global__ void rmsNormF32Kernel(const float *x, const bf16 *weight,
                                 int64_t width, float eps, bf16 *out,
                                 float *outF32) {
  __shared__ float partials[kF32NormThreads / 32];
  const float *xr = x + blockIdx.x * width;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x)
    sum += xr[i] * xr[i];
  for (int offset = 16; offset > 0; offset /= 2)
    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0)
    partials[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kF32NormThreads / 32; ++w)
    total += partials[w];
  float inverse = rsqrtf(total / float(width) + eps);
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    float y = __bfloat162float(weight[i]) * (xr[i] * inverse);
    out[blockIdx.x * width + i] = __float2bfloat16_rn(y);
    if (outF32)
      outF32[blockIdx.x * width + i] = y;
  }
}

} // namespace

cudaError_t rmsNorm(const RmsNormArgs &a, cudaStream_t stream) {
  if (a.rows < 0 || a.width <= 0 || !a.x || !a.weight || !a.out ||
      (a.residual && a.out == a.x))
    return cudaErrorInvalidValue;
  if (a.rows == 0)
    return cudaSuccess;
  bool vector = a.width % 8 == 0 && aligned16(a.x) && aligned16(a.weight) &&
                aligned16(a.out) && (!a.residual || aligned16(a.residual));
  if (vector)
    rmsNormKernel<8><<<a.rows, threadsFor(a.width / 8), 0, stream>>>(
        a.x, a.residual, a.weight, a.out, a.width, a.eps, a.weightAfterCast);
  else
    rmsNormKernel<1><<<a.rows, threadsFor(a.width), 0, stream>>>(
        a.x, a.residual, a.weight, a.out, a.width, a.eps, a.weightAfterCast);
  return launched();
}

cudaError_t applyRope(const RopeArgs &a, cudaStream_t stream) {
  if (a.rows < 0 || a.heads < 0 || a.kvHeads < 0 || a.headDim <= 0 ||
      (a.heads && !a.q) || (a.kvHeads && !a.k))
    return cudaErrorInvalidValue;
  if (a.positions && (a.rotaryDim <= 0 || a.rotaryDim % 2 != 0 ||
                      a.rotaryDim > a.headDim || !a.cos || !a.sin))
    return cudaErrorInvalidValue;
  int64_t warps = a.rows * (a.heads + a.kvHeads);
  if (warps == 0)
    return cudaSuccess;
  constexpr int kThreads = 256; // 8 head vectors per block
  int64_t blocks = (warps * 32 + kThreads - 1) / kThreads;
  ropeKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  return launched();
}

cudaError_t headRmsNorm(bf16 *x, const bf16 *weight, int64_t vectors,
                        int headDim, float eps, cudaStream_t stream) {
  if (!weight)
    return cudaErrorInvalidValue;
  RopeArgs a;
  a.q = x;
  a.rows = vectors;
  a.heads = 1;
  a.headDim = headDim;
  a.qNorm = weight;
  a.normEps = eps;
  return applyRope(a, stream);
}

cudaError_t rmsNormF32(const float *x, const bf16 *weight, int64_t rows,
                       int64_t width, float eps, bf16 *out, float *outF32,
                       cudaStream_t stream) {
  if (rows == 0)
    return cudaSuccess;
  rmsNormF32Kernel<<<static_cast<unsigned>(rows), kF32NormThreads, 0, stream>>>(
      x, weight, width, eps, out, outF32);
  return cudaGetLastError();
}

} // namespace moe::cuda::kernels
