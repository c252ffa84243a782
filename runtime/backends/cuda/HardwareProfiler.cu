// Kernels of the hardware profiler: random fill and a GQA decode attention.
//
// Decode attention design (memory bound: every K/V byte is read once):
//  * grid (splits, kvHeads, batch); a block of kWarps warps serves one
//    (sequence, kv head) and all heads / kvHeads query heads that share it,
//    so K/V are read once per group, not once per query head;
//  * each warp owns a contiguous token range and walks it in tiles of 32
//    tokens, double-buffered in shared memory with cp.async (16-byte,
//    coalesced copies; the next tile streams in while this one is used);
//  * q·k: one lane per token, reading its K row from shared memory (rows
//    padded by 16 bytes, so the 16-byte reads of a quarter warp hit distinct
//    banks) against q held in shared memory as fp32 (broadcast reads);
//  * online softmax in the log2 domain per tile, fp32 throughout;
//  * p·V: each lane owns headDim / 32 output dims and walks the tile's rows;
//  * the warps of a block merge their (max, sum, acc) in shared memory; when
//    the context is split over several blocks, partials go to a workspace and
//    a second kernel merges them.
#include "runtime/backends/cuda/ProfilerKernels.h"

#include <algorithm>
#include <cmath>

namespace moe::cuda {
namespace {

// --- random fill ------------------------------------------------------------

__device__ __forceinline__ std::uint64_t splitMix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__global__ void fillRandomBf16Kernel(__nv_bfloat16 *data, std::size_t count,
                                     std::uint64_t seed, float scale) {
  std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i =
           static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < count; i += stride) {
    std::uint64_t bits = splitMix64(seed * 0x632BE59BD9B4E019ull + i);
    float unit = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
    data[i] = __float2bfloat16_rn((2.0f * unit - 1.0f) * scale);
  }
}

__global__ void spinKernel(std::uint64_t nanoseconds) {
  std::uint64_t start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < nanoseconds);
}

// --- decode attention -------------------------------------------------------

constexpr int kWarps = 2;   // warps per block
constexpr int kTile = 32;   // tokens per tile (one per lane in q·k)
constexpr int kRowPad = 16; // bytes of padding per K row in shared memory

template <int HD> constexpr int kRowBytes = HD * 2 + kRowPad;
template <int HD> constexpr int vRowBytes = HD * 2;
template <int HD>
constexpr int stageBytes = kTile *kRowBytes<HD> + kTile *vRowBytes<HD>;
template <int HD, int G>
constexpr int warpBytes = 2 * stageBytes<HD> + G *kTile * 4;
template <int HD, int G>
constexpr int smemBytes = G *HD * 4 + kWarps *warpBytes<HD, G>;

__device__ __forceinline__ void cpAsync16(void *smem, const void *global,
                                          int srcBytes) {
  unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst),
               "l"(global), "r"(srcBytes)
               : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ float bf16Low(unsigned w) {
  return __uint_as_float(w << 16);
}
__device__ __forceinline__ float bf16High(unsigned w) {
  return __uint_as_float(w & 0xFFFF0000u);
}

__device__ __forceinline__ float warpMax(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2)
    x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, o));
  return x;
}
__device__ __forceinline__ float warpSum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2)
    x += __shfl_xor_sync(0xFFFFFFFFu, x, o);
  return x;
}

// Loads this lane's DPL consecutive bf16 values of a V row as floats.
template <int DPL>
__device__ __forceinline__ void loadVSlice(const char *row, int lane,
                                           float (&v)[DPL]) {
  const char *p = row + lane * DPL * 2;
  if constexpr (DPL == 2) {
    unsigned w = *reinterpret_cast<const unsigned *>(p);
    v[0] = bf16Low(w);
    v[1] = bf16High(w);
  } else if constexpr (DPL == 4) {
    uint2 w = *reinterpret_cast<const uint2 *>(p);
    v[0] = bf16Low(w.x);
    v[1] = bf16High(w.x);
    v[2] = bf16Low(w.y);
    v[3] = bf16High(w.y);
  } else {
    static_assert(DPL == 8, "headDim must be 64, 128 or 256");
    uint4 w = *reinterpret_cast<const uint4 *>(p);
    v[0] = bf16Low(w.x);
    v[1] = bf16High(w.x);
    v[2] = bf16Low(w.y);
    v[3] = bf16High(w.y);
    v[4] = bf16Low(w.z);
    v[5] = bf16High(w.z);
    v[6] = bf16Low(w.w);
    v[7] = bf16High(w.w);
  }
}

template <int HD, int G>
__global__ void __launch_bounds__(kWarps * 32)
    decodeAttentionKernel(DecodeAttentionArgs a, int tokensPerWarp,
                          int splits) {
  constexpr int DPL = HD / 32;    // output dims per lane in p·V
  constexpr int kChunks = HD / 8; // 16-byte chunks per row
  extern __shared__ __align__(16) char smem[];
  float *qs = reinterpret_cast<float *>(smem);

  const int b = blockIdx.z;
  const int kvh = blockIdx.y;
  const int split = blockIdx.x;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int len = a.contextLens ? min(max(a.contextLens[b], 0), a.maxContext)
                                : a.maxContext;

  // q of the G heads sharing this kv head, pre-scaled into the log2 domain.
  const float qScale = a.scale * 1.4426950408889634f;
  for (int i = tid; i < G * HD; i += blockDim.x) {
    int h = kvh * G + i / HD;
    qs[i] =
        __bfloat162float(
            a.q[(static_cast<std::int64_t>(b) * a.heads + h) * HD + i % HD]) *
        qScale;
  }
  __syncthreads();

  char *wbase = smem + G * HD * 4 + warp * warpBytes<HD, G>;
  float *ps = reinterpret_cast<float *>(wbase + 2 * stageBytes<HD>);
  const std::int64_t tokenStride = static_cast<std::int64_t>(a.kvHeads) * HD;
  const __nv_bfloat16 *kSeq =
      a.k + static_cast<std::int64_t>(b) * a.seqStride + kvh * HD;
  const __nv_bfloat16 *vSeq =
      a.v + static_cast<std::int64_t>(b) * a.seqStride + kvh * HD;

  const int start = (split * kWarps + warp) * tokensPerWarp;
  const int end = min(start + tokensPerWarp, len);
  const int numTiles = end > start ? (end - start + kTile - 1) / kTile : 0;

  auto issue = [&](int tile, int stage) {
    char *kDst = wbase + stage * stageBytes<HD>;
    char *vDst = kDst + kTile * kRowBytes<HD>;
    const int t0 = start + tile * kTile;
#pragma unroll
    for (int c = lane; c < kTile * kChunks; c += 32) {
      int row = c / kChunks;
      int col = c % kChunks;
      int tok = t0 + row;
      bool valid = tok < end;
      std::int64_t off = (valid ? tok : start) * tokenStride + col * 8;
      cpAsync16(kDst + row * kRowBytes<HD> + col * 16, kSeq + off,
                valid ? 16 : 0);
      cpAsync16(vDst + row * vRowBytes<HD> + col * 16, vSeq + off,
                valid ? 16 : 0);
    }
    cpAsyncCommit();
  };

  float m[G], l[G], acc[G][DPL];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int j = 0; j < DPL; ++j)
      acc[g][j] = 0.0f;
  }

  if (numTiles > 0)
    issue(0, 0);
  for (int tile = 0; tile < numTiles; ++tile) {
    if (tile + 1 < numTiles)
      issue(tile + 1, (tile + 1) & 1);
    else
      cpAsyncCommit(); // empty group keeps the wait count uniform
    cpAsyncWait<1>();
    __syncwarp();

    const char *kTileSmem = wbase + (tile & 1) * stageBytes<HD>;
    const char *vTileSmem = kTileSmem + kTile * kRowBytes<HD>;
    const int t0 = start + tile * kTile;
    const bool valid = t0 + lane < end;

    // Scores: lane = token.
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g)
      s[g] = 0.0f;
    const char *kRow = kTileSmem + lane * kRowBytes<HD>;
#pragma unroll 4
    for (int c = 0; c < kChunks; ++c) {
      uint4 w = *reinterpret_cast<const uint4 *>(kRow + c * 16);
      float kf[8] = {bf16Low(w.x), bf16High(w.x), bf16Low(w.y), bf16High(w.y),
                     bf16Low(w.z), bf16High(w.z), bf16Low(w.w), bf16High(w.w)};
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float4 *q4 =
            reinterpret_cast<const float4 *>(qs + g * HD + c * 8);
        float4 qa = q4[0];
        float4 qb = q4[1];
        s[g] = fmaf(qa.x, kf[0], s[g]);
        s[g] = fmaf(qa.y, kf[1], s[g]);
        s[g] = fmaf(qa.z, kf[2], s[g]);
        s[g] = fmaf(qa.w, kf[3], s[g]);
        s[g] = fmaf(qb.x, kf[4], s[g]);
        s[g] = fmaf(qb.y, kf[5], s[g]);
        s[g] = fmaf(qb.z, kf[6], s[g]);
        s[g] = fmaf(qb.w, kf[7], s[g]);
      }
    }

    // Online softmax over the tile (the tile's first token is always valid,
    // so each tile maximum is finite).
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float sg = valid ? s[g] : -INFINITY;
      float mNew = fmaxf(m[g], warpMax(sg));
      float corr = exp2f(m[g] - mNew); // m = -inf on the first tile -> 0
      float p = exp2f(sg - mNew);      // invalid -> 0
      l[g] = l[g] * corr + warpSum(p);
#pragma unroll
      for (int j = 0; j < DPL; ++j)
        acc[g][j] *= corr;
      m[g] = mNew;
      ps[g * kTile + lane] = p;
    }
    __syncwarp();

    // p·V: lane owns dims [lane * DPL, lane * DPL + DPL).
    const int nValid = min(kTile, end - t0);
#pragma unroll 4
    for (int t = 0; t < nValid; ++t) {
      float v[DPL];
      loadVSlice<DPL>(vTileSmem + t * vRowBytes<HD>, lane, v);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float p = ps[g * kTile + t];
#pragma unroll
        for (int j = 0; j < DPL; ++j)
          acc[g][j] = fmaf(p, v[j], acc[g][j]);
      }
    }
    __syncwarp(); // this stage and ps are overwritten next iteration
  }
  cpAsyncWait<0>();
  __syncthreads(); // all warps done with their stages: reuse shared memory

  // Merge the warps: per warp [G] max, [G] sum, [G][HD] acc.
  constexpr int kWarpState = G * (HD + 2);
  float *state = reinterpret_cast<float *>(smem + G * HD * 4);
  float *mine = state + warp * kWarpState;
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int j = 0; j < DPL; ++j)
      mine[g * HD + lane * DPL + j] = acc[g][j];
    if (lane == 0) {
      mine[G * HD + g] = m[g];
      mine[G * HD + G + g] = l[g];
    }
  }
  __syncthreads();

  for (int i = tid; i < G * HD; i += blockDim.x) {
    int g = i / HD;
    float mMax = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w)
      mMax = fmaxf(mMax, state[w * kWarpState + G * HD + g]);
    float sum = 0.0f, value = 0.0f;
    if (mMax != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        float f = exp2f(state[w * kWarpState + G * HD + g] - mMax);
        sum += f * state[w * kWarpState + G * HD + G + g];
        value += f * state[w * kWarpState + i];
      }
    }
    int h = kvh * G + g;
    std::int64_t row = static_cast<std::int64_t>(b) * a.heads + h;
    if (splits == 1) {
      a.out[row * HD + i % HD] =
          __float2bfloat16_rn(sum > 0.0f ? value / sum : 0.0f);
    } else {
      float *part = a.workspace + (row * splits + split) * (HD + 2);
      part[i % HD] = value;
      if (i % HD == 0) {
        part[HD] = mMax;
        part[HD + 1] = sum;
      }
    }
  }
}

// Block-wide max / sum over the HD threads of a combine block.
template <int HD, bool kMax>
__device__ __forceinline__ float blockReduce(float x, float *scratch) {
  x = kMax ? warpMax(x) : warpSum(x);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads(); // scratch may still be read from a previous reduction
  if (lane == 0)
    scratch[warp] = x;
  __syncthreads();
  float r = scratch[0];
#pragma unroll
  for (int w = 1; w < HD / 32; ++w)
    r = kMax ? fmaxf(r, scratch[w]) : r + scratch[w];
  return r;
}

// Merges the per-split partials of one (sequence, head); one thread per dim.
// The split weights are computed once, in parallel, into shared memory, so
// the final loop has only independent loads.
template <int HD>
__global__ void __launch_bounds__(HD)
    decodeAttentionCombineKernel(const float *workspace, __nv_bfloat16 *out,
                                 int heads, int splits) {
  extern __shared__ float weights[]; // [splits]
  __shared__ float scratch[HD / 32];
  const std::int64_t row =
      static_cast<std::int64_t>(blockIdx.y) * heads + blockIdx.x;
  const float *parts = workspace + row * splits * (HD + 2);
  const int d = threadIdx.x;

  float mMax = -INFINITY;
  for (int s = d; s < splits; s += HD)
    mMax = fmaxf(mMax, parts[s * (HD + 2) + HD]);
  mMax = blockReduce<HD, true>(mMax, scratch);
  float sum = 0.0f;
  for (int s = d; s < splits; s += HD) {
    float f = mMax == -INFINITY ? 0.0f : exp2f(parts[s * (HD + 2) + HD] - mMax);
    weights[s] = f;
    sum += f * parts[s * (HD + 2) + HD + 1];
  }
  sum = blockReduce<HD, false>(sum, scratch); // its barriers publish weights
  float value = 0.0f;
#pragma unroll 8
  for (int s = 0; s < splits; ++s)
    value = fmaf(weights[s], parts[s * (HD + 2) + d], value);
  out[row * HD + d] = __float2bfloat16_rn(sum > 0.0f ? value / sum : 0.0f);
}

struct SplitPlan {
  int splits;
  int tokensPerWarp;
};

SplitPlan planSplits(int batch, int kvHeads, int maxContext, int smCount) {
  const int units = std::max(1, batch * kvHeads);
  const int targetBlocks = std::max(1, smCount) * 6; // ~2 waves of 3/SM
  const int maxSplits =
      std::max(1, (maxContext + kWarps * kTile - 1) / (kWarps * kTile));
  int splits = std::clamp((targetBlocks + units - 1) / units, 1, maxSplits);
  int perWarp = (maxContext + splits * kWarps - 1) / (splits * kWarps);
  perWarp = std::max(kTile, (perWarp + kTile - 1) / kTile * kTile);
  splits =
      std::max(1, (maxContext + perWarp * kWarps - 1) / (perWarp * kWarps));
  return {splits, perWarp};
}

template <int HD, int G>
cudaError_t launchDecode(const DecodeAttentionArgs &a, SplitPlan plan,
                         cudaStream_t stream) {
  constexpr int smem = smemBytes<HD, G>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(decodeAttentionKernel<HD, G>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (attr != cudaSuccess)
    return attr;
  dim3 grid(plan.splits, a.kvHeads, a.batch);
  decodeAttentionKernel<HD, G>
      <<<grid, kWarps * 32, smem, stream>>>(a, plan.tokensPerWarp, plan.splits);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || plan.splits == 1)
    return err;
  decodeAttentionCombineKernel<HD>
      <<<dim3(a.heads, a.batch), HD, plan.splits * sizeof(float), stream>>>(
          a.workspace, a.out, a.heads, plan.splits);
  return cudaGetLastError();
}

template <int HD>
cudaError_t launchForGroup(const DecodeAttentionArgs &a, SplitPlan plan,
                           cudaStream_t stream) {
  switch (a.heads / a.kvHeads) {
  case 1:
    return launchDecode<HD, 1>(a, plan, stream);
  case 2:
    return launchDecode<HD, 2>(a, plan, stream);
  case 4:
    return launchDecode<HD, 4>(a, plan, stream);
  case 8:
    return launchDecode<HD, 8>(a, plan, stream);
  default:
    return cudaErrorInvalidValue;
  }
}

} // namespace

cudaError_t fillRandomBf16(__nv_bfloat16 *data, std::size_t count,
                           std::uint64_t seed, float scale,
                           cudaStream_t stream) {
  if (count == 0)
    return cudaSuccess;
  std::size_t blocks = std::min<std::size_t>((count + 255) / 256, 65536);
  fillRandomBf16Kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      data, count, seed, scale);
  return cudaGetLastError();
}

cudaError_t spinFor(std::uint64_t nanoseconds, cudaStream_t stream) {
  spinKernel<<<1, 1, 0, stream>>>(nanoseconds);
  return cudaGetLastError();
}

std::size_t decodeAttentionWorkspaceBytes(int batch, int heads, int kvHeads,
                                          int headDim, int maxContext,
                                          int smCount) {
  SplitPlan plan = planSplits(batch, kvHeads, maxContext, smCount);
  if (plan.splits == 1)
    return 0;
  return static_cast<std::size_t>(batch) * heads * plan.splits * (headDim + 2) *
         sizeof(float);
}

cudaError_t decodeAttention(const DecodeAttentionArgs &a, int smCount,
                            cudaStream_t stream) {
  if (a.batch <= 0 || a.heads <= 0 || a.kvHeads <= 0 || a.maxContext <= 0 ||
      a.heads % a.kvHeads != 0 || a.batch > 65535 || a.kvHeads > 65535)
    return cudaErrorInvalidValue;
  if (reinterpret_cast<std::uintptr_t>(a.k) % 16 != 0 ||
      reinterpret_cast<std::uintptr_t>(a.v) % 16 != 0 || a.seqStride % 8 != 0)
    return cudaErrorMisalignedAddress;
  SplitPlan plan = planSplits(a.batch, a.kvHeads, a.maxContext, smCount);
  if (plan.splits > 1 && a.workspace == nullptr)
    return cudaErrorInvalidValue;
  switch (a.headDim) {
  case 64:
    return launchForGroup<64>(a, plan, stream);
  case 128:
    return launchForGroup<128>(a, plan, stream);
  case 256:
    return launchForGroup<256>(a, plan, stream);
  default:
    return cudaErrorInvalidValue;
  }
}

} // namespace moe::cuda
