#include "runtime/backends/cuda/kernels/LightningAttention.h"

namespace moe::cuda::kernels {
namespace {

__device__ inline float silu(float x) { return x / (1.0f + __expf(-x)); }

// One block per (sequence run, head), one thread per state column: thread b
// keeps S[:, b] in registers across the run's rows, so a row costs 2·D
// FMAs per thread and the state crosses memory once per call. Blocks are
// launched for every row and those that do not start a run return at once:
// decode rows are all run starts, and a prefill's idle blocks cost less than
// a host-built run table would.
template <int D>
__global__ void __launch_bounds__(D) lightningKernel(LightningAttentionArgs a) {
  const int64_t first = blockIdx.x;
  const int head = blockIdx.y;
  const int b = threadIdx.x;
  const int32_t sequence = a.sequences[first];
  if (first > 0 && a.sequences[first - 1] == sequence)
    return;
  const int64_t width = int64_t(a.heads) * D;
  float *state = a.state + (int64_t(sequence) * a.heads + head) * D * D;
  const bool fresh = a.positions[first] == 0;
  float s[D];
#pragma unroll
  for (int i = 0; i < D; ++i)
    s[i] = fresh ? 0.0f : state[i * D + b];
  const float ratio = expf(-a.decay[head]); // once a block: the exact one

  __shared__ float q[D], k[D];
  for (int64_t row = first; row < a.rows && a.sequences[row] == sequence;
       ++row) {
    const bf16 *in = a.qkv + row * 3 * width + int64_t(head) * 3 * D;
    q[b] = silu(__bfloat162float(in[b]));
    k[b] = silu(__bfloat162float(in[D + b]));
    const float v = silu(__bfloat162float(in[2 * D + b]));
    __syncthreads();
    float o = 0.0f;
#pragma unroll
    for (int i = 0; i < D; ++i) {
      s[i] = fmaf(ratio, s[i], k[i] * v);
      o = fmaf(q[i], s[i], o);
    }
    a.out[row * width + int64_t(head) * D + b] = __float2bfloat16_rn(o);
    __syncthreads(); // q and k are rewritten for the next row
  }
#pragma unroll
  for (int i = 0; i < D; ++i)
    state[i * D + b] = s[i];
}

template <int D>
cudaError_t launch(const LightningAttentionArgs &a, cudaStream_t stream) {
  dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>(a.heads));
  lightningKernel<D><<<grid, D, 0, stream>>>(a);
  return cudaGetLastError();
}

} // namespace

bool lightningAttentionSupports(int heads, int headDim) {
  return heads >= 1 && heads <= 65535 &&
         (headDim == 16 || headDim == 32 || headDim == 64 || headDim == 128);
}

cudaError_t lightningAttention(const LightningAttentionArgs &a,
                               cudaStream_t stream) {
  if (!lightningAttentionSupports(a.heads, a.headDim) || a.rows < 0 ||
      a.rows > INT32_MAX)
    return cudaErrorInvalidValue;
  if (a.rows == 0)
    return cudaSuccess;
  if (!a.qkv || !a.state || !a.decay || !a.sequences || !a.positions || !a.out)
    return cudaErrorInvalidValue;
  switch (a.headDim) {
  case 16:
    return launch<16>(a, stream);
  case 32:
    return launch<32>(a, stream);
  case 64:
    return launch<64>(a, stream);
  default:
    return launch<128>(a, stream);
  }
}

} // namespace moe::cuda::kernels
