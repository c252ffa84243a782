// Softmax attention of query rows over KV caches (decode and prefill alike),
// the kernels the hardware profiler times for the planner's cost model.
// head_dim 64 and 128 run on tensor cores (AttentionMma.cu); this file holds
// the split plan, the merge of splits and the general kernel, which takes
// every other head size on CUDA cores.
//
// General kernel design (memory bound: every K/V byte a row attends to is
// read once):
//  * grid (rows, kvHeads, splits); a block of kWarps warps serves one
//    (row, kv head) and all the query heads that share it (GQA), so K/V are
//    read once per group, not once per query head;
//  * each warp owns a contiguous range of the row's context and walks it in
//    tiles of 32 tokens, double-buffered in shared memory with cp.async
//    (16-byte, coalesced copies: the next tile streams in while this one is
//    used);
//  * fp8 caches (F8) copy their codes and the tile's per-token scales and
//    convert in registers: a token's K scale multiplies its score, its V
//    scale its softmax weight, so each costs one multiply per token;
//  * q·k: one lane per token, reading its K row from shared memory (rows
//    padded by 16 bytes, so the 16-byte reads of a quarter warp hit distinct
//    banks) against q held in shared memory as fp32 (broadcast reads);
//  * online softmax in the log2 domain per tile, fp32 throughout;
//  * p·V: each lane owns headDim / 32 output dims and walks the tile's rows;
//  * the warps of a block merge their (max, sum, acc) in shared memory; when
//    a few rows have long contexts (decode), the context is split over
//    several blocks, partials go to a workspace and a second kernel merges
//    them. A sink joins that final merge as a logit without a value.
#include "runtime/backends/cuda/kernels/AttentionMma.h"
#include "runtime/backends/cuda/kernels/Kernels.cuh"

#include <algorithm>
#include <cmath>

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kWarps = 2;   // warps per block
constexpr int kTile = 32;   // tokens per tile (one per lane in q·k)
constexpr int kRowPad = 16; // bytes of padding per K row in shared memory
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory per stage: K rows (padded), V rows, then for fp8 the tile's
// K scales and V scales.
template <int HD, bool F8> constexpr int kElementBytes = F8 ? 1 : 2;
template <int HD, bool F8>
constexpr int kRowBytes = HD *kElementBytes<HD, F8> + kRowPad;
template <int HD, bool F8> constexpr int vRowBytes = HD *kElementBytes<HD, F8>;
template <int HD, bool F8>
constexpr int stageBytes = kTile *kRowBytes<HD, F8> + kTile *vRowBytes<HD, F8> +
                           (F8 ? 2 * kTile * 4 : 0);
template <int HD, int G, bool F8>
constexpr int warpBytes = 2 * stageBytes<HD, F8> + G *kTile * 4;
template <int HD, int G, bool F8>
constexpr int smemBytes = G *HD * 4 + kWarps *warpBytes<HD, G, F8>;
// Output dims per lane in p·V (lanes ≥ headDim idle when headDim < 32).
template <int HD> constexpr int kDimsPerLane = HD >= 32 ? HD / 32 : 1;

__device__ __forceinline__ float bf16Low(unsigned w) {
  return __uint_as_float(w << 16);
}
__device__ __forceinline__ float bf16High(unsigned w) {
  return __uint_as_float(w & 0xFFFF0000u);
}

// This lane's DPL consecutive values of a V row, as floats.
template <int DPL, bool F8>
__device__ __forceinline__ void loadVSlice(const char *row, int lane,
                                           float (&v)[DPL]) {
  if constexpr (F8) {
    const char *p = row + lane * DPL;
    if constexpr (DPL == 1) {
      __half_raw h = __nv_cvt_fp8_to_halfraw(
          *reinterpret_cast<const __nv_fp8_storage_t *>(p), __NV_E4M3);
      v[0] = __half2float(*reinterpret_cast<const __half *>(&h));
    } else {
      static_assert(DPL % 2 == 0, "headDim must be 16, 32, 64, 128 or 256");
      const unsigned short *pairs = reinterpret_cast<const unsigned short *>(p);
#pragma unroll
      for (int j = 0; j < DPL / 2; ++j) {
        float2 f = fp8x2ToFloat2(pairs[j]);
        v[2 * j] = f.x;
        v[2 * j + 1] = f.y;
      }
    }
    return;
  }
  const char *p = row + lane * DPL * 2;
  if constexpr (DPL == 1) {
    v[0] = __uint_as_float(
        unsigned(*reinterpret_cast<const unsigned short *>(p)) << 16);
  } else if constexpr (DPL == 2) {
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
    static_assert(DPL == 8, "headDim must be 16, 32, 64, 128 or 256");
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

// The row's attended positions [first, last].
struct Span {
  int64_t first, last;
};
__device__ __forceinline__ Span spanOf(const AttentionArgs &a, int64_t row) {
  int64_t last = a.positions[row];
  int64_t first = a.window > 0 ? max(int64_t(0), last - a.window + 1) : 0;
  return {first, last};
}

// G is the largest group the instantiation serves; the row's heads / kvHeads
// may be smaller (heads beyond it are computed on zeros and dropped).
template <int HD, int G, bool F8>
__global__ void __launch_bounds__(kWarps * 32)
    attentionKernel(AttentionArgs a, int tokensPerWarp, int splits) {
  constexpr int DPL = kDimsPerLane<HD>;
  constexpr int EB = kElementBytes<HD, F8>;
  constexpr int kChunks = HD * EB / 16; // 16-byte chunks per row
  extern __shared__ __align__(16) char smem[];
  float *qs = reinterpret_cast<float *>(smem);

  const int64_t row = blockIdx.x;
  const int kvh = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int groups = a.heads / a.kvHeads;
  const Span span = spanOf(a, row);

  // q of the heads sharing this kv head, pre-scaled into the log2 domain.
  const float qScale = a.scale * kLog2e;
  for (int i = tid; i < G * HD; i += blockDim.x) {
    int g = i / HD;
    qs[i] = g < groups
                ? __bfloat162float(
                      a.q[(row * a.heads + kvh * groups + g) * HD + i % HD]) *
                      qScale
                : 0.0f;
  }
  __syncthreads();

  char *wbase = smem + G * HD * 4 + warp * warpBytes<HD, G, F8>;
  float *ps = reinterpret_cast<float *>(wbase + 2 * stageBytes<HD, F8>);
  const int64_t sequence = a.sequences ? a.sequences[row] : row;
  const char *kSeq = static_cast<const char *>(a.k) + sequence * a.seqStride;
  const char *vSeq = static_cast<const char *>(a.v) + sequence * a.seqStride;
  // This head's elements, and for fp8 its scale, within a token's row.
  const int64_t headOffset = int64_t(kvh) * HD * EB;
  const int64_t scaleOffset = int64_t(a.kvHeads) * HD + kvh * 4;

  const int64_t start =
      span.first + int64_t(split * kWarps + warp) * tokensPerWarp;
  const int64_t end = min(start + tokensPerWarp, span.last + 1);
  const int numTiles =
      end > start ? static_cast<int>((end - start + kTile - 1) / kTile) : 0;

  auto issue = [&](int tile, int stage) {
    char *kDst = wbase + stage * stageBytes<HD, F8>;
    char *vDst = kDst + kTile * kRowBytes<HD, F8>;
    const int64_t t0 = start + int64_t(tile) * kTile;
#pragma unroll
    for (int c = lane; c < kTile * kChunks; c += 32) {
      int r = c / kChunks;
      int col = c % kChunks;
      int64_t tok = t0 + r;
      bool valid = tok < end;
      int64_t off = (valid ? tok : start) * a.rowBytes + headOffset + col * 16;
      cpAsync16(kDst + r * kRowBytes<HD, F8> + col * 16, kSeq + off,
                valid ? 16 : 0);
      cpAsync16(vDst + r * vRowBytes<HD, F8> + col * 16, vSeq + off,
                valid ? 16 : 0);
    }
    if constexpr (F8) {
      char *scales = vDst + kTile * vRowBytes<HD, F8>;
      int64_t tok = t0 + lane;
      bool valid = tok < end;
      int64_t off = (valid ? tok : start) * a.rowBytes + scaleOffset;
      cpAsync4(scales + lane * 4, kSeq + off, valid ? 4 : 0);
      cpAsync4(scales + (kTile + lane) * 4, vSeq + off, valid ? 4 : 0);
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
      cpAsyncCommit(); // an empty group keeps the wait count uniform
    cpAsyncWait<1>();
    __syncwarp();

    const char *kTileSmem = wbase + (tile & 1) * stageBytes<HD, F8>;
    const char *vTileSmem = kTileSmem + kTile * kRowBytes<HD, F8>;
    // fp8: the tile's K scales, then its V scales.
    const float *tileScales =
        reinterpret_cast<const float *>(vTileSmem + kTile * vRowBytes<HD, F8>);
    const int64_t t0 = start + int64_t(tile) * kTile;
    const bool valid = t0 + lane < end;

    // Scores: lane = token.
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g)
      s[g] = 0.0f;
    const char *kRow = kTileSmem + lane * kRowBytes<HD, F8>;
    // q · (8 K values from 16 bytes at kRow + offset) for dims [d, d + 8).
    auto dot8 = [&](const float(&kf)[8], int d) {
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float4 *q4 = reinterpret_cast<const float4 *>(qs + g * HD + d);
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
    };
#pragma unroll 4
    for (int c = 0; c < kChunks; ++c) {
      uint4 w = *reinterpret_cast<const uint4 *>(kRow + c * 16);
      if constexpr (F8) {
        unsigned words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float kf[8];
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            unsigned word = words[half * 2 + j];
            float2 lo = fp8x2ToFloat2(static_cast<unsigned short>(word));
            float2 hi = fp8x2ToFloat2(static_cast<unsigned short>(word >> 16));
            kf[4 * j] = lo.x;
            kf[4 * j + 1] = lo.y;
            kf[4 * j + 2] = hi.x;
            kf[4 * j + 3] = hi.y;
          }
          dot8(kf, c * 16 + half * 8);
        }
      } else {
        float kf[8] = {bf16Low(w.x),  bf16High(w.x), bf16Low(w.y),
                       bf16High(w.y), bf16Low(w.z),  bf16High(w.z),
                       bf16Low(w.w),  bf16High(w.w)};
        dot8(kf, c * 8);
      }
    }
    if constexpr (F8) {
      const float kScale = tileScales[lane];
#pragma unroll
      for (int g = 0; g < G; ++g)
        s[g] *= kScale;
    }

    // Online softmax over the tile (its first token is always valid, so each
    // tile maximum is finite).
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float sg = valid ? s[g] : -INFINITY;
      float mNew = fmaxf(m[g], warpMax(sg));
      float corr = exp2f(m[g] - mNew); // m = -inf on the first tile: 0
      float p = exp2f(sg - mNew);      // invalid: 0
      l[g] = l[g] * corr + warpSum(p);
#pragma unroll
      for (int j = 0; j < DPL; ++j)
        acc[g][j] *= corr;
      m[g] = mNew;
      ps[g * kTile + lane] = p;
    }
    __syncwarp();

    // p·V: lane owns dims [lane · DPL, lane · DPL + DPL).
    if (lane * DPL < HD) {
      const int nValid = static_cast<int>(min(int64_t(kTile), end - t0));
#pragma unroll 4
      for (int t = 0; t < nValid; ++t) {
        float v[DPL];
        loadVSlice<DPL, F8>(vTileSmem + t * vRowBytes<HD, F8>, lane, v);
        const float vScale = F8 ? tileScales[kTile + t] : 1.0f;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          float p = ps[g * kTile + t] * vScale;
#pragma unroll
          for (int j = 0; j < DPL; ++j)
            acc[g][j] = fmaf(p, v[j], acc[g][j]);
        }
      }
    }
    __syncwarp(); // this stage and ps are overwritten next iteration
  }
  cpAsyncWait<0>();
  __syncthreads(); // all warps done with their stages: reuse shared memory

  // Merge the warps: per warp [G][HD] acc, [G] max, [G] sum.
  constexpr int kWarpState = G * (HD + 2);
  float *state = reinterpret_cast<float *>(smem + G * HD * 4);
  float *mine = state + warp * kWarpState;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (lane * DPL < HD) {
#pragma unroll
      for (int j = 0; j < DPL; ++j)
        mine[g * HD + lane * DPL + j] = acc[g][j];
    }
    if (lane == 0) {
      mine[G * HD + g] = m[g];
      mine[G * HD + G + g] = l[g];
    }
  }
  __syncthreads();

  for (int i = tid; i < groups * HD; i += blockDim.x) {
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
    int h = kvh * groups + g;
    int64_t head = row * a.heads + h;
    if (splits == 1) {
      if (a.sinks)
        value *= addSink(a.sinks[h] * kLog2e, mMax, sum);
      a.out[head * HD + i % HD] =
          __float2bfloat16_rn(sum > 0.0f ? value / sum : 0.0f);
    } else {
      float *part = a.workspace + (head * splits + split) * (HD + 2);
      part[i % HD] = value;
      if (i % HD == 0) {
        part[HD] = mMax;
        part[HD + 1] = sum;
      }
    }
  }
}

// Merges the per-split partials of one (row, head).
template <int HD>
__global__ void __launch_bounds__(HD < 32 ? 32 : HD)
    combineSplitsKernel(AttentionArgs a, int splits) {
  const int64_t head = blockIdx.x * int64_t(a.heads) + blockIdx.y;
  const float sink = a.sinks ? a.sinks[blockIdx.y] * kLog2e : 0.0f;
  combineSplits(a.workspace + head * splits * (HD + 2), splits, HD,
                a.sinks ? &sink : nullptr, a.out + head * HD);
}

struct SplitPlan {
  int splits;
  int tokensPerWarp;
};
// Both kernels take the same splits: a split is whole tensor-core tiles.
static_assert(kWarps * kTile % detail::kAttentionMmaTile == 0);

// Enough blocks for about two waves; long contexts of few rows are split.
SplitPlan planSplits(int64_t rows, int kvHeads, int maxSpan, int smCount) {
  const int64_t units = std::max<int64_t>(1, rows * kvHeads);
  const int64_t targetBlocks = std::max(1, smCount) * 6; // ~2 waves of 3/SM
  const int span = std::max(1, maxSpan);
  const int maxSplits = (span + kWarps * kTile - 1) / (kWarps * kTile);
  int splits = static_cast<int>(
      std::clamp<int64_t>((targetBlocks + units - 1) / units, 1, maxSplits));
  int perWarp = (span + splits * kWarps - 1) / (splits * kWarps);
  perWarp = std::max(kTile, (perWarp + kTile - 1) / kTile * kTile);
  splits = std::max(1, (span + perWarp * kWarps - 1) / (perWarp * kWarps));
  return {splits, perWarp};
}

template <int HD, int G, bool F8>
cudaError_t launchAttention(const AttentionArgs &a, SplitPlan plan,
                            cudaStream_t stream) {
  constexpr int smem = smemBytes<HD, G, F8>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(attentionKernel<HD, G, F8>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (attr != cudaSuccess)
    return attr;
  dim3 grid(static_cast<unsigned>(a.rows), a.kvHeads, plan.splits);
  attentionKernel<HD, G, F8>
      <<<grid, kWarps * 32, smem, stream>>>(a, plan.tokensPerWarp, plan.splits);
  return cudaGetLastError();
}

// The smallest instantiated group size ≥ heads / kvHeads; 0 when none.
// headDim 256 stops at 8 (16 would not fit the registers).
int groupBound(int heads, int kvHeads, int headDim) {
  int groups = heads / kvHeads;
  int limit = headDim == 256 ? 8 : 16;
  for (int g = 1; g <= limit; g *= 2)
    if (groups <= g)
      return g;
  return 0;
}

template <int HD, bool F8>
cudaError_t launchForGroup(const AttentionArgs &a, SplitPlan plan,
                           cudaStream_t stream) {
  switch (groupBound(a.heads, a.kvHeads, HD)) {
  case 1:
    return launchAttention<HD, 1, F8>(a, plan, stream);
  case 2:
    return launchAttention<HD, 2, F8>(a, plan, stream);
  case 4:
    return launchAttention<HD, 4, F8>(a, plan, stream);
  case 8:
    return launchAttention<HD, 8, F8>(a, plan, stream);
  case 16:
    if constexpr (HD != 256)
      return launchAttention<HD, 16, F8>(a, plan, stream);
    [[fallthrough]];
  default:
    return cudaErrorInvalidValue;
  }
}

template <int HD>
cudaError_t launchForDtype(const AttentionArgs &a, SplitPlan plan,
                           cudaStream_t stream) {
  return a.fp8 ? launchForGroup<HD, true>(a, plan, stream)
               : launchForGroup<HD, false>(a, plan, stream);
}

template <int HD>
cudaError_t combine(const AttentionArgs &a, int splits, cudaStream_t stream) {
  combineSplitsKernel<HD><<<dim3(static_cast<unsigned>(a.rows), a.heads),
                            std::max(HD, 32), splits * sizeof(float),
                            stream>>>(a, splits);
  return cudaGetLastError();
}

bool generalSupports(int heads, int kvHeads, int headDim) {
  bool dim = headDim == 16 || headDim == 32 || headDim == 64 ||
             headDim == 128 || headDim == 256;
  return dim && kvHeads > 0 && heads % kvHeads == 0 &&
         groupBound(heads, kvHeads, headDim) > 0;
}

} // namespace

bool attentionSupports(int heads, int kvHeads, int headDim) {
  return kvHeads > 0 && kvHeads <= 65535 && heads <= 65535 &&
         (generalSupports(heads, kvHeads, headDim) ||
          detail::attentionMmaApplies(heads, kvHeads, headDim));
}

size_t attentionWorkspaceBytes(int64_t rows, int heads, int kvHeads,
                               int headDim, int maxSpan, int smCount) {
  SplitPlan plan = planSplits(rows, kvHeads, maxSpan, smCount);
  if (plan.splits == 1)
    return 0;
  return size_t(rows) * heads * plan.splits * (headDim + 2) * sizeof(float);
}

cudaError_t attention(const AttentionArgs &a, int smCount,
                      cudaStream_t stream) {
  if (!attentionSupports(a.heads, a.kvHeads, a.headDim) || a.rows < 0 ||
      a.rows > INT32_MAX || a.maxSpan < 0)
    return cudaErrorInvalidValue;
  // A token's row holds the heads' elements (and for fp8 their scales).
  int64_t headBytes = int64_t(a.kvHeads) * a.headDim * (a.fp8 ? 1 : 2);
  if (a.rowBytes < headBytes + (a.fp8 ? 4 * int64_t(a.kvHeads) : 0))
    return cudaErrorInvalidValue;
  if (!aligned16(a.k) || !aligned16(a.v) || a.seqStride % 16 != 0 ||
      a.rowBytes % 16 != 0)
    return cudaErrorMisalignedAddress;
  if (a.rows == 0)
    return cudaSuccess;
  SplitPlan plan = planSplits(a.rows, a.kvHeads, a.maxSpan, smCount);
  if (plan.splits > 1 && a.workspace == nullptr)
    return cudaErrorInvalidValue;
  const bool tensorCores =
      !a.generalKernel &&
      detail::attentionMmaApplies(a.heads, a.kvHeads, a.headDim);
  if (!tensorCores && !generalSupports(a.heads, a.kvHeads, a.headDim))
    return cudaErrorInvalidValue;
  cudaError_t err = cudaSuccess;
  if (tensorCores) {
    err = detail::launchAttentionMma(a, plan.tokensPerWarp * kWarps,
                                     plan.splits, stream);
  } else {
    switch (a.headDim) {
    case 16:
      err = launchForDtype<16>(a, plan, stream);
      break;
    case 32:
      err = launchForDtype<32>(a, plan, stream);
      break;
    case 64:
      err = launchForDtype<64>(a, plan, stream);
      break;
    case 128:
      err = launchForDtype<128>(a, plan, stream);
      break;
    default:
      err = launchForDtype<256>(a, plan, stream);
    }
  }
  if (err != cudaSuccess || plan.splits == 1)
    return err;
  switch (a.headDim) {
  case 16:
    return combine<16>(a, plan.splits, stream);
  case 32:
    return combine<32>(a, plan.splits, stream);
  case 64:
    return combine<64>(a, plan.splits, stream);
  case 128:
    return combine<128>(a, plan.splits, stream);
  default:
    return combine<256>(a, plan.splits, stream);
  }
}

} // namespace moe::cuda::kernels
