// MLA attention (absorbed form) on tensor cores, for the latent shapes real
// checkpoints declare. A row's heads all read the same latent cache rows, so
// 16 heads are the M of an m16n8k16 MMA and the cache tile is its N (q·k) or
// K (p·V): the row's cache crosses HBM once per 16 heads and the products
// run on tensor cores, where the general kernel's fp32 FMAs on CUDA cores
// bind long before HBM does.
//
// Design (block = 4 warps, one row, 16 heads, a range of the row's context):
//  * grid and context splits as the general kernel's (MlaAttention.cu), so
//    both share the split plan, its workspace and the merge kernel;
//  * tiles of 32 cache rows, double-buffered with cp.async. bf16 rows land
//    in shared memory as stored, padded to an odd number of 16-byte units
//    (ldmatrix conflict-free); fp8 rows land as stored and are widened into
//    one bf16 tile (E4M3 codes are exact in bf16), their scales beside it;
//  * q·k: warp w takes a quarter of the (latent + rope) dimension, holds its
//    A fragments of q in registers for the whole range, and multiplies them
//    by all 32 rows of the tile; the four partial score blocks are summed in
//    shared memory. An fp8 scale (one per ropeDim values of a row) multiplies
//    a chunk's partial product, so codes stay exact in the MMA;
//  * online softmax in fp32, log2 domain: warp w owns heads 4w..4w+3, a lane
//    per cache row, and publishes the probabilities and rescale factors;
//  * p·V: warp w owns a quarter of the latent output (L/4 columns, fp32
//    accumulators in registers); the probabilities are rounded to bf16 as
//    the A operand (times the value's scale for fp8), V's B fragments come
//    from the tile by transposing ldmatrix.
#include "runtime/backends/cuda/kernels/MlaAttentionMma.h"

#include "runtime/backends/cuda/kernels/Kernels.cuh"
#include "runtime/backends/cuda/kernels/Mma.cuh"

namespace moe::cuda::kernels::detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kHeads = 16;              // the MMA's M
constexpr int kTile = kMlaMmaTile;      // cache rows per tile: one per lane
constexpr int kScoreStride = kTile + 8; // floats: float2 stores conflict-free
constexpr float kLog2e = 1.4426950408889634f;

template <int L, int R, bool F8> struct Shape {
  static constexpr int dim = L + R;       // values per cache row
  static constexpr int kSteps = dim / 16; // q·k MMA k-steps
  static constexpr int stepsPerWarp = (kSteps + kWarps - 1) / kWarps;
  static constexpr int tileRowBytes = (dim / 8 + 1) * 16; // odd 16-byte units
  static constexpr int tileBytes = kTile * tileRowBytes;
  static constexpr int chunks = dim / R;         // fp8 scale groups per row
  static constexpr int warpColumns = L / kWarps; // p·V output columns per warp
  static constexpr int warpTiles = warpColumns / 8;
  static_assert(dim % 16 == 0 && warpTiles % 2 == 0 && R % 16 == 0 &&
                (!F8 || L % R == 0));
};

// Byte offsets into dynamic shared memory; rawRowBytes: a cache row as
// stored (fp8 only: those land beside the widened tile).
template <int L, int R, bool F8> struct Layout {
  int raw, partial, probs, corrections, maxima, sums, scales, total;
  __host__ __device__ explicit Layout(int rawRowBytes) {
    using S = Shape<L, R, F8>;
    raw = (F8 ? 1 : 2) * S::tileBytes;
    partial = raw + (F8 ? 2 * kTile * rawRowBytes : 0);
    probs = partial + kWarps * kHeads * kScoreStride * 4;
    corrections = probs + kHeads * kScoreStride * 4;
    maxima = corrections + kHeads * 4;
    sums = maxima + kHeads * 4;
    scales = sums + kHeads * 4;
    total = scales + (F8 ? kTile * S::chunks * 4 : 0);
  }
};

// q's values (dim d, d + 1) of head h of `row` as a bf16 pair; 0 past the
// model's heads.
template <int L>
__device__ __forceinline__ uint32_t queryPair(const MlaAttentionArgs &a,
                                              int64_t row, int h, int d) {
  if (h >= a.heads)
    return 0;
  const int64_t head = row * a.heads + h;
  const bf16 *p =
      d < L ? a.qLatent + head * L + d : a.qRope + head * a.ropeDim + (d - L);
  return *reinterpret_cast<const uint32_t *>(p);
}

template <int L, int R, bool F8>
__global__ void __launch_bounds__(kThreads, 2)
    mlaMmaKernel(MlaAttentionArgs a, int groups, int tokensPerSplit,
                 int splits) {
  using S = Shape<L, R, F8>;
  extern __shared__ __align__(16) char smem[];
  const int rawRowBytes = static_cast<int>(a.rowBytes);
  const Layout<L, R, F8> lay(rawRowBytes);
  float *partial = reinterpret_cast<float *>(smem + lay.partial);
  float *probs = reinterpret_cast<float *>(smem + lay.probs);
  float *corrections = reinterpret_cast<float *>(smem + lay.corrections);
  float *maxima = reinterpret_cast<float *>(smem + lay.maxima);
  float *sums = reinterpret_cast<float *>(smem + lay.sums);
  float *scales = reinterpret_cast<float *>(smem + lay.scales);

  const int64_t row = blockIdx.x / groups;
  const int group = blockIdx.x % groups;
  const int split = blockIdx.y;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4; // fragment row (head g and g + 8)
  const int t = lane % 4; // fragment column pair
  const int firstHead = group * kHeads;

  // This warp's q·k k-steps and their A fragments (q of the 16 heads).
  const int firstStep = warp * S::stepsPerWarp;
  uint32_t qa[S::stepsPerWarp][4];
#pragma unroll
  for (int i = 0; i < S::stepsPerWarp; ++i) {
    const int k0 = 16 * (firstStep + i);
    const bool inRange = firstStep + i < S::kSteps;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int h = firstHead + g + 8 * (j & 1);
      const int d = k0 + 2 * t + 8 * (j >> 1);
      qa[i][j] = inRange ? queryPair<L>(a, row, h, d) : 0u;
    }
  }

  const int64_t sequence = a.sequences ? a.sequences[row] : row;
  const char *cacheSeq =
      static_cast<const char *>(a.cache) + sequence * a.seqStride;
  const int64_t start = int64_t(split) * tokensPerSplit;
  const int64_t end =
      min(start + tokensPerSplit, int64_t(a.positions[row]) + 1);
  const int numTiles =
      end > start ? static_cast<int>((end - start + kTile - 1) / kTile) : 0;

  // Rows past the range are zero-filled: their probabilities are 0 and
  // their values finite.
  auto issue = [&](int tile, int stage) {
    const int units = rawRowBytes / 16;
    const int stride = F8 ? rawRowBytes : S::tileRowBytes;
    char *dst = F8 ? smem + lay.raw + stage * kTile * rawRowBytes
                   : smem + stage * S::tileBytes;
    const int64_t t0 = start + int64_t(tile) * kTile;
    for (int c = tid; c < kTile * units; c += kThreads) {
      const int r = c / units;
      const int col = c - r * units;
      const int64_t token = t0 + r;
      const bool valid = token < end;
      cpAsync16(dst + r * stride + col * 16,
                cacheSeq + (valid ? token : start) * a.rowBytes + col * 16,
                valid ? 16 : 0);
    }
    cpAsyncCommit();
  };

  float m[4], l[4]; // softmax state of heads 4·warp + k (lanes alike)
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    m[k] = -INFINITY;
    l[k] = 0.0f;
  }
  float acc[S::warpTiles][4];
#pragma unroll
  for (int j = 0; j < S::warpTiles; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i)
      acc[j][i] = 0.0f;
  const float qkScale = a.scale * kLog2e;
  const int columns0 = warp * S::warpColumns;
  const int mi = lane / 8; // the 8×8 tile whose row address this lane gives

  if (numTiles > 0)
    issue(0, 0);
  for (int tile = 0; tile < numTiles; ++tile) {
    cpAsyncWait<0>();
    // The tile is visible, and every thread is done with the previous one.
    __syncthreads();
    if (tile + 1 < numTiles)
      issue(tile + 1, (tile + 1) & 1);
    const int64_t t0 = start + int64_t(tile) * kTile;
    const char *kv = smem + (F8 ? 0 : (tile & 1) * S::tileBytes);
    if constexpr (F8) {
      const char *raw = smem + lay.raw + (tile & 1) * kTile * rawRowBytes;
      constexpr int octets = S::dim / 8;
      for (int c = tid; c < kTile * octets; c += kThreads) {
        const int r = c / octets;
        const int o = c - r * octets;
        *reinterpret_cast<uint4 *>(smem + r * S::tileRowBytes + o * 16) =
            widenFp8x8(*reinterpret_cast<const uint2 *>(raw + r * rawRowBytes +
                                                        o * 8));
      }
      for (int c = tid; c < kTile * S::chunks; c += kThreads) {
        const int r = c / S::chunks;
        scales[c] = reinterpret_cast<const float *>(
            raw + r * rawRowBytes + a.scalesOffset)[c - r * S::chunks];
      }
      __syncthreads();
    }

    // q·k over this warp's k-steps for all 32 rows (4 n-tiles of 8).
    {
      float s[4][4], c[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          s[j][i] = c[j][i] = 0.0f;
#pragma unroll
      for (int i = 0; i < S::stepsPerWarp; ++i) {
        const int step = firstStep + i;
        if (step < S::kSteps) {
          float(&target)[4][4] = *(F8 ? &c : &s);
#pragma unroll
          for (int jj = 0; jj < 2; ++jj) {
            // Tiles: rows 16jj + 8(mi / 2) .., columns 16·step + 8(mi % 2).
            uint32_t b[4];
            const int r = 16 * jj + 8 * (mi >> 1) + (lane & 7);
            ldmatrixX4(b, kv + r * S::tileRowBytes +
                              (16 * step + 8 * (mi & 1)) * 2);
            mma16816(target[2 * jj], qa[i], {b[0], b[1]});
            mma16816(target[2 * jj + 1], qa[i], {b[2], b[3]});
          }
          if constexpr (F8) {
            // A chunk's products times its rows' scales, at the chunk's end
            // or the warp's.
            const bool chunkEnds = (16 * (step + 1)) % R == 0 ||
                                   i + 1 == S::stepsPerWarp ||
                                   step + 1 == S::kSteps;
            if (chunkEnds) {
              const int chunk = 16 * step / R;
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                const int r = 8 * j + 2 * t;
                const float s0 = scales[r * S::chunks + chunk];
                const float s1 = scales[(r + 1) * S::chunks + chunk];
                s[j][0] = fmaf(s0, c[j][0], s[j][0]);
                s[j][1] = fmaf(s1, c[j][1], s[j][1]);
                s[j][2] = fmaf(s0, c[j][2], s[j][2]);
                s[j][3] = fmaf(s1, c[j][3], s[j][3]);
#pragma unroll
                for (int e = 0; e < 4; ++e)
                  c[j][e] = 0.0f;
              }
            }
          }
        }
      }
      float *mine = partial + warp * kHeads * kScoreStride;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = 8 * j + 2 * t;
        *reinterpret_cast<float2 *>(mine + g * kScoreStride + col) =
            make_float2(s[j][0], s[j][1]);
        *reinterpret_cast<float2 *>(mine + (g + 8) * kScoreStride + col) =
            make_float2(s[j][2], s[j][3]);
      }
    }
    __syncthreads();

    // Online softmax: heads 4·warp + k, lane = cache row (the tile's first
    // row is always in range, so each tile maximum is finite).
    const bool valid = t0 + lane < end;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int h = 4 * warp + k;
      float x = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w)
        x += partial[(w * kHeads + h) * kScoreStride + lane];
      x = valid ? x * qkScale : -INFINITY;
      const float mNew = fmaxf(m[k], warpMax(x));
      const float corr = exp2f(m[k] - mNew); // m = -inf on the first tile: 0
      const float p = exp2f(x - mNew);       // out of range: 0
      l[k] = l[k] * corr + warpSum(p);
      m[k] = mNew;
      probs[h * kScoreStride + lane] = p;
      if (lane == 0)
        corrections[h] = corr;
    }
    __syncthreads();

    // p·V: this warp's L/4 output columns, k = the tile's rows.
    {
      const float c0 = corrections[g], c1 = corrections[g + 8];
#pragma unroll
      for (int j = 0; j < S::warpTiles; ++j) {
        acc[j][0] *= c0;
        acc[j][1] *= c0;
        acc[j][2] *= c1;
        acc[j][3] *= c1;
      }
      const int inRange = static_cast<int>(min(int64_t(kTile), end - t0));
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        if (16 * kk >= inRange)
          break;
        const int r0 = 16 * kk + 2 * t; // A columns r0, r0 + 1, r0 + 8, r0 + 9
        const float2 p00 =
            *reinterpret_cast<const float2 *>(probs + g * kScoreStride + r0);
        const float2 p10 = *reinterpret_cast<const float2 *>(
            probs + (g + 8) * kScoreStride + r0);
        const float2 p01 = *reinterpret_cast<const float2 *>(
            probs + g * kScoreStride + r0 + 8);
        const float2 p11 = *reinterpret_cast<const float2 *>(
            probs + (g + 8) * kScoreStride + r0 + 8);
        uint32_t pa[4];
        int paChunk = -1;
#pragma unroll
        for (int jp = 0; jp < S::warpTiles / 2; ++jp) {
          const int n0 = columns0 + 16 * jp;
          if constexpr (F8) {
            // The probabilities times the rows' scales of this chunk.
            const int chunk = n0 / R;
            if (chunk != paChunk) {
              paChunk = chunk;
              const float *sc = scales + chunk;
              const float s0 = sc[r0 * S::chunks],
                          s1 = sc[(r0 + 1) * S::chunks],
                          s8 = sc[(r0 + 8) * S::chunks],
                          s9 = sc[(r0 + 9) * S::chunks];
              pa[0] = packBf16x2(p00.x * s0, p00.y * s1);
              pa[1] = packBf16x2(p10.x * s0, p10.y * s1);
              pa[2] = packBf16x2(p01.x * s8, p01.y * s9);
              pa[3] = packBf16x2(p11.x * s8, p11.y * s9);
            }
          } else if (jp == 0) {
            pa[0] = packBf16x2(p00.x, p00.y);
            pa[1] = packBf16x2(p10.x, p10.y);
            pa[2] = packBf16x2(p01.x, p01.y);
            pa[3] = packBf16x2(p11.x, p11.y);
          }
          // Tiles: rows 16kk + 8(mi % 2) .., columns n0 + 8(mi / 2).
          uint32_t b[4];
          const int r = 16 * kk + 8 * (mi & 1) + (lane & 7);
          ldmatrixX4Trans(b,
                          kv + r * S::tileRowBytes + (n0 + 8 * (mi >> 1)) * 2);
          mma16816(acc[2 * jp], pa, {b[0], b[1]});
          mma16816(acc[2 * jp + 1], pa, {b[2], b[3]});
        }
      }
    }
  }

  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      maxima[4 * warp + k] = m[k];
      sums[4 * warp + k] = l[k];
    }
  }
  __syncthreads();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int local = g + 8 * half;
    const int h = firstHead + local;
    if (h >= a.heads)
      continue;
    const int64_t head = row * a.heads + h;
    const float sum = sums[local];
    if (splits == 1) {
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
      for (int j = 0; j < S::warpTiles; ++j)
        *reinterpret_cast<uint32_t *>(a.out + head * L + columns0 + 8 * j +
                                      2 * t) =
            packBf16x2(acc[j][2 * half] * inv, acc[j][2 * half + 1] * inv);
    } else {
      float *part = a.workspace + (head * splits + split) * (L + 2);
#pragma unroll
      for (int j = 0; j < S::warpTiles; ++j)
        *reinterpret_cast<float2 *>(part + columns0 + 8 * j + 2 * t) =
            make_float2(acc[j][2 * half], acc[j][2 * half + 1]);
      if (warp == 0 && t == 0) {
        part[L] = maxima[local];
        part[L + 1] = sum;
      }
    }
  }
}

template <int L, int R, bool F8>
cudaError_t launch(const MlaAttentionArgs &a, int groups, int tokensPerSplit,
                   int splits, cudaStream_t stream) {
  // The widest raw row an fp8 cache of this shape can have (codes, scales,
  // padding) sizes the attribute; a launch asks for its own row's size.
  static const cudaError_t attr = cudaFuncSetAttribute(
      mlaMmaKernel<L, R, F8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      Layout<L, R, F8>(2 * (L + R)).total);
  if (attr != cudaSuccess)
    return attr;
  dim3 grid(static_cast<unsigned>(a.rows * groups), splits);
  mlaMmaKernel<L, R, F8>
      <<<grid, kThreads, Layout<L, R, F8>(static_cast<int>(a.rowBytes)).total,
         stream>>>(a, groups, tokensPerSplit, splits);
  return cudaGetLastError();
}

template <int L, int R>
cudaError_t launchForFormat(const MlaAttentionArgs &a, int groups,
                            int tokensPerSplit, int splits,
                            cudaStream_t stream) {
  return a.fp8 ? launch<L, R, true>(a, groups, tokensPerSplit, splits, stream)
               : launch<L, R, false>(a, groups, tokensPerSplit, splits, stream);
}

template <int L>
cudaError_t launchForRope(const MlaAttentionArgs &a, int groups,
                          int tokensPerSplit, int splits, cudaStream_t stream) {
  return a.ropeDim == 32
             ? launchForFormat<L, 32>(a, groups, tokensPerSplit, splits, stream)
             : launchForFormat<L, 64>(a, groups, tokensPerSplit, splits,
                                      stream);
}

} // namespace

bool mlaMmaApplies(int latentDim, int ropeDim, int64_t rowBytes, bool fp8) {
  const bool latent = latentDim == 128 || latentDim == 256 || latentDim == 512;
  const bool rope = ropeDim == 32 || ropeDim == 64;
  // An fp8 row as stored must fit the smem sized for a bf16 row.
  return latent && rope && (!fp8 || rowBytes <= 2 * (latentDim + ropeDim));
}

cudaError_t launchMlaMma(const MlaAttentionArgs &a, int groups,
                         int tokensPerSplit, int splits, cudaStream_t stream) {
  switch (a.latentDim) {
  case 128:
    return launchForRope<128>(a, groups, tokensPerSplit, splits, stream);
  case 256:
    return launchForRope<256>(a, groups, tokensPerSplit, splits, stream);
  default:
    return launchForRope<512>(a, groups, tokensPerSplit, splits, stream);
  }
}

} // namespace moe::cuda::kernels::detail
