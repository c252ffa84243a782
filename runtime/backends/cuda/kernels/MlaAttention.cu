// Multi-head latent attention (DeepSeek MLA, absorbed form): every query head
// of a row attends over the same latent cache rows [c | k_pe], like MQA with
// a 512-wide value that is the key's own latent part.
//
// Design (the cache is read once per block, and a block serves many heads):
//  * grid (rows · headGroups, splits), head groups fastest so the blocks that
//    share a row's cache rows run together (L2 hits); a block of 8 warps
//    serves a group of G ∈ {4, 8, 16} heads of one row and a range of its
//    context (the whole context unless it is split);
//  * the block walks its range in tiles of 32 cache rows, double-buffered in
//    shared memory with cp.async (rows padded to an odd number of 16-byte
//    units, so eight rows' chunks at one column hit distinct banks); q of
//    the group sits in shared memory as bf16 (fp32 would halve the blocks
//    per SM);
//  * fp8 caches (F8) copy their rows as stored, codes and scales, and
//    convert in registers: a chunk's scale (one per ropeDim elements)
//    multiplies its partial q·k sum, and in p·V the probability, so a
//    scale costs one multiply per chunk of 8 values;
//  * q·k is a G × 32 × (latent + rope) product: each warp takes every 8th
//    8-value column chunk, each lane a 4-token × G/4-head register tile, and
//    the 8 warps' partial scores are summed in shared memory;
//  * online softmax in the log2 domain, fp32: warp w owns heads w and w + 8
//    (lane = token), keeps their running max and sum in registers and
//    publishes the tile's probabilities and rescale factors;
//  * p·V: thread (head set, 8-dim octet) owns G / headSets heads × 8 output
//    dims (16 heads × 512 dims = 32 fp32 accumulators per thread), reading
//    its octet of each latent row (consecutive lanes, consecutive chunks);
//  * long contexts of few rows are split over blocks: partials (acc, max,
//    sum) go to a workspace and a second kernel merges them.
// The math runs on CUDA cores in fp32 (products of bf16 values are exact).
// The latent shapes of real checkpoints run on tensor cores instead
// (MlaAttentionMma.cu) with the same split plan and merge; this kernel is the
// general one.
#include "runtime/backends/cuda/kernels/MlaAttention.h"

#include "runtime/backends/cuda/kernels/Kernels.cuh"
#include "runtime/backends/cuda/kernels/MlaAttentionMma.h"

#include <algorithm>
#include <cmath>

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 32; // cache rows per tile
static_assert(kTile == kMlaMmaTile, "both kernels share one split plan");
constexpr int kQPad = 16; // bytes of padding per head of q in shared memory
constexpr int kMinSplitTokens = 128; // a split's partial is ~1/8 of its reads
constexpr int kMaxHeads = 128;
constexpr int kMaxRope = 64;
constexpr float kLog2e = 1.4426950408889634f;

// A cache row's bytes in shared memory: an odd number of 16-byte units, so
// that eight rows' 16-byte (bf16) or 8-byte (fp8) loads at one column fall
// in distinct banks.
__host__ __device__ constexpr int paddedRowBytes(int rowBytes) {
  int units = (rowBytes + 15) / 16;
  return (units | 1) * 16;
}

// Byte offsets into the dynamic shared memory for cache rows of `rowBytes`
// holding `dim` values and a group of g heads.
struct SmemLayout {
  int rowBytes;    // one cache row of a tile
  int stageBytes;  // one tile
  int qStride;     // elements per head of q
  int q;           // bf16 [g][qStride]
  int partial;     // float [kWarps][g][kTile], swizzled (scoreIndex)
  int probs;       // float [kTile][g], swizzled (probIndex)
  int corrections; // float [g]
  int maxima;      // float [g]
  int sums;        // float [g]
  int total;
};

__host__ __device__ constexpr SmemLayout smemLayout(int rowBytes, int dim,
                                                    int g) {
  SmemLayout s{};
  s.rowBytes = paddedRowBytes(rowBytes);
  s.stageBytes = kTile * s.rowBytes;
  s.qStride = dim + kQPad / 2;
  s.q = 2 * s.stageBytes;
  s.partial = s.q + g * s.qStride * 2;
  s.probs = s.partial + kWarps * g * kTile * 4;
  s.corrections = s.probs + kTile * g * 4;
  s.maxima = s.corrections + g * 4;
  s.sums = s.maxima + g * 4;
  s.total = s.sums + g * 4;
  return s;
}

__device__ __forceinline__ void unpack8(uint4 w, float (&f)[8]) {
  f[0] = __uint_as_float(w.x << 16);
  f[1] = __uint_as_float(w.x & 0xFFFF0000u);
  f[2] = __uint_as_float(w.y << 16);
  f[3] = __uint_as_float(w.y & 0xFFFF0000u);
  f[4] = __uint_as_float(w.z << 16);
  f[5] = __uint_as_float(w.z & 0xFFFF0000u);
  f[6] = __uint_as_float(w.w << 16);
  f[7] = __uint_as_float(w.w & 0xFFFF0000u);
}

__device__ __forceinline__ uint4 load16(const void *p) {
  return *reinterpret_cast<const uint4 *>(p);
}

// Eight E4M3 codes (8 bytes) as floats.
__device__ __forceinline__ void unpackFp8x8(const void *p, float (&f)[8]) {
  uint2 w = *reinterpret_cast<const uint2 *>(p);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    unsigned word = i < 2 ? w.x : w.y;
    float2 pair =
        fp8x2ToFloat2(static_cast<unsigned short>(word >> (16 * (i & 1))));
    f[2 * i] = pair.x;
    f[2 * i + 1] = pair.y;
  }
}

// Values [8c, 8c + 8) of a cache row in shared memory, as floats: bf16
// elements, or fp8 codes whose scale the caller applies (chunkScale).
template <bool F8>
__device__ __forceinline__ void loadChunk(const char *row, int c,
                                          float (&f)[8]) {
  if constexpr (F8)
    unpackFp8x8(row + c * 8, f);
  else
    unpack8(load16(row + c * 16), f);
}

// The scale of chunk c of an fp8 row (1 for bf16): groups of ropeDim values
// from scalesOffset on.
template <bool F8>
__device__ __forceinline__ float chunkScale(const char *row, int c,
                                            int scalesOffset, int ropeDim) {
  if constexpr (F8)
    return reinterpret_cast<const float *>(row + scalesOffset)[c * 8 / ropeDim];
  else
    return 1.0f;
}

// Score (g, t) in one warp's partial block: the XOR makes a warp's q·k
// stores (heads gq + 4j, tokens tq + 8i) hit 32 distinct banks.
__device__ __forceinline__ int scoreIndex(int g, int t) {
  return g * kTile + (t ^ ((g & 3) << 3));
}

// Probability (t, g) in [kTile][G]: the head quads of a token are permuted
// by token, so a warp storing one head's 32 probabilities spreads them over
// 8 banks (2 unpermuted at G = 16), while ≤ 4 heads of a quad stay one
// vector load.
template <int G> __device__ __forceinline__ int probIndex(int t, int g) {
  int swizzle = (t * G / kTile) % (G / 4);
  return t * G + (((g >> 2) ^ swizzle) << 2) + (g & 3);
}

template <int N>
__device__ __forceinline__ void loadProbs(const float *p, float (&v)[N]) {
  if constexpr (N == 4) {
    float4 x = *reinterpret_cast<const float4 *>(p);
    v[0] = x.x;
    v[1] = x.y;
    v[2] = x.z;
    v[3] = x.w;
  } else if constexpr (N == 2) {
    float2 x = *reinterpret_cast<const float2 *>(p);
    v[0] = x.x;
    v[1] = x.y;
  } else {
    static_assert(N == 1);
    v[0] = *p;
  }
}

// L: latent dims; G: heads per block (heads beyond a.heads are computed on
// zero queries and dropped); F8: the cache holds fp8 rows.
template <int L, int G, bool F8>
__global__ void __launch_bounds__(kThreads, 2)
    mlaAttentionKernel(MlaAttentionArgs a, int groups, int tokensPerSplit,
                       int splits) {
  constexpr int HPL = G / 4;     // heads per lane in q·k
  constexpr int kOctets = L / 8; // 8-dim output slices
  // p·V: head sets × octets threads, each with HPT heads.
  constexpr int HS = kThreads / kOctets < G ? kThreads / kOctets : G;
  constexpr int HPT = G / HS;
  constexpr int SH = (G + kWarps - 1) / kWarps; // heads per warp in softmax

  extern __shared__ __align__(16) char smem[];
  const int dim = L + a.ropeDim;
  const int chunks = dim / 8; // 8-value chunks per cache row
  const int rowUnits = static_cast<int>(a.rowBytes / 16); // as copied
  const int scalesOffset = static_cast<int>(a.scalesOffset);
  const SmemLayout lay = smemLayout(static_cast<int>(a.rowBytes), dim, G);
  bf16 *qs = reinterpret_cast<bf16 *>(smem + lay.q);
  float *partial = reinterpret_cast<float *>(smem + lay.partial);
  float *probs = reinterpret_cast<float *>(smem + lay.probs);
  float *corrections = reinterpret_cast<float *>(smem + lay.corrections);
  float *maxima = reinterpret_cast<float *>(smem + lay.maxima);
  float *sums = reinterpret_cast<float *>(smem + lay.sums);

  const int64_t row = blockIdx.x / groups;
  const int group = blockIdx.x % groups;
  const int split = blockIdx.y;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  for (int i = tid; i < G * dim; i += kThreads) {
    int g = i / dim;
    int d = i - g * dim;
    int h = group * G + g;
    bf16 v = __float2bfloat16(0.0f);
    if (h < a.heads) {
      int64_t head = row * a.heads + h;
      v = d < L ? a.qLatent[head * L + d] : a.qRope[head * a.ropeDim + (d - L)];
    }
    qs[g * lay.qStride + d] = v;
  }

  const int64_t sequence = a.sequences ? a.sequences[row] : row;
  const char *cacheSeq =
      static_cast<const char *>(a.cache) + sequence * a.seqStride;
  const int64_t start = int64_t(split) * tokensPerSplit;
  const int64_t end =
      min(start + tokensPerSplit, int64_t(a.positions[row]) + 1);
  const int numTiles =
      end > start ? static_cast<int>((end - start + kTile - 1) / kTile) : 0;

  auto issue = [&](int tile, int stage) {
    char *dst = smem + stage * lay.stageBytes;
    const int64_t t0 = start + int64_t(tile) * kTile;
    for (int c = tid; c < kTile * rowUnits; c += kThreads) {
      int r = c / rowUnits;
      int col = c - r * rowUnits;
      int64_t tok = t0 + r;
      bool valid = tok < end;
      cpAsync16(dst + r * lay.rowBytes + col * 16,
                cacheSeq + (valid ? tok : start) * a.rowBytes + col * 16,
                valid ? 16 : 0);
    }
    cpAsyncCommit();
  };

  // Softmax state of this warp's heads warp + k·kWarps (all lanes alike).
  float m[SH], l[SH];
#pragma unroll
  for (int k = 0; k < SH; ++k) {
    m[k] = -INFINITY;
    l[k] = 0.0f;
  }
  float acc[HPT][8];
#pragma unroll
  for (int j = 0; j < HPT; ++j)
#pragma unroll
    for (int d = 0; d < 8; ++d)
      acc[j][d] = 0.0f;

  const bool pvThread = tid < kOctets * HS;
  const int octet = tid % kOctets;
  const int headSet = tid / kOctets;
  const float qkScale = a.scale * kLog2e;

  if (numTiles > 0)
    issue(0, 0);
  for (int tile = 0; tile < numTiles; ++tile) {
    cpAsyncWait<0>();
    // The tile (and, on the first, q) is visible, and every thread is done
    // with the previous tile's stage, scores and probabilities.
    __syncthreads();
    if (tile + 1 < numTiles)
      issue(tile + 1, (tile + 1) & 1);
    const char *tileSmem = smem + (tile & 1) * lay.stageBytes;
    const int64_t t0 = start + int64_t(tile) * kTile;

    // q·k: lane (gq, tq) sums heads gq + 4j × tokens tq + 8i over this
    // warp's chunks (eight consecutive rows per load: no bank conflicts).
    {
      const int gq = lane / 8;
      const int tq = lane % 8;
      float s[HPL][4];
#pragma unroll
      for (int j = 0; j < HPL; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          s[j][i] = 0.0f;
      for (int c = warp; c < chunks; c += kWarps) {
        float k[4][8], ks[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const char *kRow = tileSmem + (tq + 8 * i) * lay.rowBytes;
          loadChunk<F8>(kRow, c, k[i]);
          ks[i] = chunkScale<F8>(kRow, c, scalesOffset, a.ropeDim);
        }
#pragma unroll
        for (int j = 0; j < HPL; ++j) {
          float q[8];
          unpack8(load16(qs + (gq + 4 * j) * lay.qStride + c * 8), q);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            if constexpr (F8) {
              float dot = 0.0f;
#pragma unroll
              for (int d = 0; d < 8; ++d)
                dot = fmaf(q[d], k[i][d], dot);
              s[j][i] = fmaf(ks[i], dot, s[j][i]);
            } else {
#pragma unroll
              for (int d = 0; d < 8; ++d)
                s[j][i] = fmaf(q[d], k[i][d], s[j][i]);
            }
          }
        }
      }
      float *mine = partial + warp * G * kTile;
#pragma unroll
      for (int j = 0; j < HPL; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          mine[scoreIndex(gq + 4 * j, tq + 8 * i)] = s[j][i];
    }
    __syncthreads();

    // Online softmax over the tile (its first token is always valid, so each
    // tile maximum is finite).
    const bool valid = t0 + lane < end;
#pragma unroll
    for (int k = 0; k < SH; ++k) {
      const int g = warp + k * kWarps;
      if (g < G) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w)
          s += partial[w * G * kTile + scoreIndex(g, lane)];
        s = valid ? s * qkScale : -INFINITY;
        float mNew = fmaxf(m[k], warpMax(s));
        float corr = exp2f(m[k] - mNew); // m = -inf on the first tile: 0
        float p = exp2f(s - mNew);       // invalid: 0
        l[k] = l[k] * corr + warpSum(p);
        m[k] = mNew;
        probs[probIndex<G>(lane, g)] = p;
        if (lane == 0)
          corrections[g] = corr;
      }
    }
    __syncthreads();

    // p·V over the tile's valid rows.
    if (pvThread) {
#pragma unroll
      for (int j = 0; j < HPT; ++j) {
        float corr = corrections[headSet * HPT + j];
#pragma unroll
        for (int d = 0; d < 8; ++d)
          acc[j][d] *= corr;
      }
      const int nValid = static_cast<int>(min(int64_t(kTile), end - t0));
#pragma unroll 4
      for (int t = 0; t < nValid; ++t) {
        const char *vRow = tileSmem + t * lay.rowBytes;
        float v[8];
        loadChunk<F8>(vRow, octet, v);
        const float vs = chunkScale<F8>(vRow, octet, scalesOffset, a.ropeDim);
        float p[HPT];
        loadProbs<HPT>(probs + probIndex<G>(t, headSet * HPT), p);
#pragma unroll
        for (int j = 0; j < HPT; ++j) {
          const float w = F8 ? p[j] * vs : p[j];
#pragma unroll
          for (int d = 0; d < 8; ++d)
            acc[j][d] = fmaf(w, v[d], acc[j][d]);
        }
      }
    }
  }

#pragma unroll
  for (int k = 0; k < SH; ++k) {
    const int g = warp + k * kWarps;
    if (g < G && lane == 0) {
      maxima[g] = m[k];
      sums[g] = l[k];
    }
  }
  __syncthreads();
  if (!pvThread)
    return;
#pragma unroll
  for (int j = 0; j < HPT; ++j) {
    const int g = headSet * HPT + j;
    const int h = group * G + g;
    if (h >= a.heads)
      continue;
    const int64_t head = row * a.heads + h;
    const float sum = sums[g];
    if (splits == 1) {
      bf16 *o = a.out + head * L + octet * 8;
#pragma unroll
      for (int d = 0; d < 8; ++d)
        o[d] = __float2bfloat16_rn(sum > 0.0f ? acc[j][d] / sum : 0.0f);
    } else {
      float *part = a.workspace + (head * splits + split) * (L + 2);
#pragma unroll
      for (int d = 0; d < 8; ++d)
        part[octet * 8 + d] = acc[j][d];
      if (octet == 0) {
        part[L] = maxima[g];
        part[L + 1] = sum;
      }
    }
  }
}

// Merges the per-split partials of one (row, head).
__global__ void __launch_bounds__(512)
    mlaCombineSplitsKernel(MlaAttentionArgs a, int splits) {
  const int64_t head = blockIdx.x * int64_t(a.heads) + blockIdx.y;
  combineSplits(a.workspace + head * splits * (a.latentDim + 2), splits,
                a.latentDim, nullptr, a.out + head * a.latentDim);
}

// The smallest instantiated head group that holds all heads, else 16.
int groupSize(int heads) { return heads <= 4 ? 4 : heads <= 8 ? 8 : 16; }
int headGroups(int heads) {
  int g = groupSize(heads);
  return (heads + g - 1) / g;
}

struct SplitPlan {
  int splits;
  int tokensPerSplit;
};

// Enough blocks for about two waves of two per SM; long contexts of few rows
// are split, no split shorter than kMinSplitTokens.
SplitPlan planSplits(int64_t rows, int heads, int maxSpan, int smCount) {
  const int64_t units = std::max<int64_t>(1, rows * headGroups(heads));
  const int64_t targetBlocks = std::max(1, smCount) * 4;
  const int span = std::max(1, maxSpan);
  const int maxSplits = (span + kMinSplitTokens - 1) / kMinSplitTokens;
  int splits = static_cast<int>(
      std::clamp<int64_t>((targetBlocks + units - 1) / units, 1, maxSplits));
  int perSplit = (span + splits - 1) / splits;
  perSplit = (perSplit + kTile - 1) / kTile * kTile;
  splits = (span + perSplit - 1) / perSplit;
  return {splits, perSplit};
}

template <int L, int G, bool F8>
cudaError_t launchMla(const MlaAttentionArgs &a, SplitPlan plan,
                      cudaStream_t stream) {
  // The widest row is bf16's at the largest rope part: an fp8 row of any
  // rope part is narrower.
  static const cudaError_t attr = cudaFuncSetAttribute(
      mlaAttentionKernel<L, G, F8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      smemLayout(2 * (L + kMaxRope), L + kMaxRope, G).total);
  if (attr != cudaSuccess)
    return attr;
  const int groups = headGroups(a.heads);
  dim3 grid(static_cast<unsigned>(a.rows * groups), plan.splits);
  mlaAttentionKernel<L, G, F8>
      <<<grid, kThreads,
         smemLayout(static_cast<int>(a.rowBytes), L + a.ropeDim, G).total,
         stream>>>(a, groups, plan.tokensPerSplit, plan.splits);
  return cudaGetLastError();
}

template <int L, bool F8>
cudaError_t launchForGroup(const MlaAttentionArgs &a, SplitPlan plan,
                           cudaStream_t stream) {
  switch (groupSize(a.heads)) {
  case 4:
    return launchMla<L, 4, F8>(a, plan, stream);
  case 8:
    return launchMla<L, 8, F8>(a, plan, stream);
  default:
    return launchMla<L, 16, F8>(a, plan, stream);
  }
}

template <int L>
cudaError_t launchForFormat(const MlaAttentionArgs &a, SplitPlan plan,
                            cudaStream_t stream) {
  return a.fp8 ? launchForGroup<L, true>(a, plan, stream)
               : launchForGroup<L, false>(a, plan, stream);
}

// A row of the cache's format holds its values, and for fp8 its scales
// after them; it is copied in 16-byte units.
bool rowFits(const MlaAttentionArgs &a) {
  const int64_t dim = a.latentDim + a.ropeDim;
  if (a.rowBytes % 16 != 0 || a.rowBytes > 2 * (a.latentDim + kMaxRope))
    return false;
  if (!a.fp8)
    return a.rowBytes == 2 * dim;
  return a.scalesOffset >= dim && a.scalesOffset % 4 == 0 &&
         a.scalesOffset + 4 * (dim / a.ropeDim) <= a.rowBytes;
}

// The merge of a split launch's partials (either kernel's).
cudaError_t mergeSplits(const MlaAttentionArgs &a, int splits,
                        cudaStream_t stream) {
  mlaCombineSplitsKernel<<<dim3(static_cast<unsigned>(a.rows), a.heads),
                           std::max(a.latentDim, 32), splits * sizeof(float),
                           stream>>>(a, splits);
  return cudaGetLastError();
}

cudaError_t launchGeneral(const MlaAttentionArgs &a, SplitPlan plan,
                          cudaStream_t stream) {
  switch (a.latentDim) {
  case 16:
    return launchForFormat<16>(a, plan, stream);
  case 32:
    return launchForFormat<32>(a, plan, stream);
  case 64:
    return launchForFormat<64>(a, plan, stream);
  case 128:
    return launchForFormat<128>(a, plan, stream);
  case 256:
    return launchForFormat<256>(a, plan, stream);
  default:
    return launchForFormat<512>(a, plan, stream);
  }
}

} // namespace

bool mlaAttentionOnTensorCores(int latentDim, int ropeDim) {
  return mlaMmaApplies(latentDim, ropeDim, 0, false);
}

bool mlaAttentionSupports(int heads, int latentDim, int ropeDim, bool fp8) {
  bool latent = latentDim == 16 || latentDim == 32 || latentDim == 64 ||
                latentDim == 128 || latentDim == 256 || latentDim == 512;
  bool rope = ropeDim == 8 || ropeDim == 16 || ropeDim == 32 || ropeDim == 64;
  bool groups = !fp8 || (rope && latentDim % ropeDim == 0);
  return latent && rope && groups && heads >= 1 && heads <= kMaxHeads;
}

size_t mlaAttentionWorkspaceBytes(int64_t rows, int heads, int latentDim,
                                  int maxSpan, int smCount) {
  SplitPlan plan = planSplits(rows, heads, maxSpan, smCount);
  if (plan.splits == 1)
    return 0;
  return size_t(rows) * heads * plan.splits * (latentDim + 2) * sizeof(float);
}

cudaError_t mlaAttention(const MlaAttentionArgs &a, int smCount,
                         cudaStream_t stream) {
  if (!mlaAttentionSupports(a.heads, a.latentDim, a.ropeDim, a.fp8) ||
      a.rows < 0 || a.rows * headGroups(a.heads) > INT32_MAX || a.maxSpan < 0 ||
      !rowFits(a))
    return cudaErrorInvalidValue;
  if (!aligned16(a.cache) || a.seqStride % 16 != 0)
    return cudaErrorMisalignedAddress;
  if (a.rows == 0)
    return cudaSuccess;
  SplitPlan plan = planSplits(a.rows, a.heads, a.maxSpan, smCount);
  if (plan.splits > 1 && a.workspace == nullptr)
    return cudaErrorInvalidValue;
  const bool tensorCores =
      !a.generalKernel &&
      mlaMmaApplies(a.latentDim, a.ropeDim, a.rowBytes, a.fp8);
  cudaError_t err = tensorCores
                        ? launchMlaMma(a, headGroups(a.heads),
                                       plan.tokensPerSplit, plan.splits, stream)
                        : launchGeneral(a, plan, stream);
  if (err != cudaSuccess || plan.splits == 1)
    return err;
  return mergeSplits(a, plan.splits, stream);
}

} // namespace moe::cuda::kernels
