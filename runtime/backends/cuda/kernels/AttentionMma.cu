// Softmax attention of GQA/MHA query rows on tensor cores, flash-attention
// style: scores and probabilities stay in registers and each K/V tile
// crosses shared memory once for all the query vectors a block serves. The
// general kernel (Attention.cu) runs q·k and p·V as fp32 FMAs on CUDA
// cores, which bind long before HBM in prefill and at large groups.
//
// Design (block = 4 warps, one kv head, a range of the context):
//  * the block's M is 64 query vectors (rows × the group's heads). Rows of
//    one sequence that sit together (a prompt's rows) fill it with
//    64 / group rows, every warp 16 vectors over whole tiles; a single row
//    (decode) fills only `group` vectors, so warps split each tile's tokens
//    instead and merge at the end. Rows of different sequences in one block
//    are served one run after another;
//  * tiles of 64 cache tokens, double-buffered with cp.async. bf16 rows land
//    padded to an odd number of 16-byte units (ldmatrix conflict-free); fp8
//    codes land as stored with the tile's per-token scales and are widened
//    into one bf16 tile (E4M3 codes are exact in bf16);
//  * q·k: A fragments of q in registers for the whole run, B from the K
//    tile by ldmatrix; fp8's K scale multiplies a token's score;
//  * online softmax in fp32, log2 domain, on the score fragments: a vector's
//    values sit in four lanes (two shuffles give its maximum), each lane
//    keeps its share of the sum;
//  * p·V: the probability fragments are the A operand as they stand
//    (rounded to bf16, times V's scale for fp8); V's B fragments come from
//    the tile by transposing ldmatrix;
//  * warps merge (max, sum, acc) through shared memory; a sink joins as a
//    logit without a value; with context splits the partials go to the
//    workspace for combineSplits.
#include "runtime/backends/cuda/kernels/AttentionMma.h"

#include "runtime/backends/cuda/kernels/Kernels.cuh"
#include "runtime/backends/cuda/kernels/Mma.cuh"

#include <algorithm>

namespace moe::cuda::kernels::detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kVectors = 16 * kWarps; // query vectors per block: the M
constexpr int kTile = kAttentionMmaTile;
constexpr float kLog2e = 1.4426950408889634f;

// TWARPS: warps sharing one M slice, each taking kTile / TWARPS tokens of
// every tile.
template <int HD, int TWARPS, bool F8> struct Shape {
  static constexpr int mWarps = kWarps / TWARPS;
  static constexpr int tokens = kTile / TWARPS; // a warp's tokens of a tile
  static constexpr int scoreTiles = tokens / 8; // q·k n-tiles
  static constexpr int kSteps = HD / 16;        // q·k k-steps
  static constexpr int outTiles = HD / 8;       // p·V n-tiles
  static constexpr int rowBytes = HD * 2 + 16;  // odd 16-byte units
  static constexpr int tileBytes = kTile * rowBytes;
  static constexpr int codeBytes = kTile * HD; // fp8 codes of K or V
  // A stage: bf16 K and V tiles, or fp8 K codes, V codes, K and V scales.
  static constexpr int stageBytes =
      F8 ? 2 * codeBytes + 2 * kTile * 4 : 2 * tileBytes;
  static constexpr int widenedBytes = F8 ? 2 * tileBytes : 0;
  // After the tiles: every warp's acc, maxima and sums.
  static constexpr int mergeBytes = kWarps * 16 * (HD + 2) * 4;
  static constexpr int smemBytes = widenedBytes + 2 * stageBytes > mergeBytes
                                       ? widenedBytes + 2 * stageBytes
                                       : mergeBytes;
  static_assert(scoreTiles % 2 == 0 && outTiles % 2 == 0);
};

__device__ __forceinline__ float quadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(kFullMask, v, 1));
  return fmaxf(v, __shfl_xor_sync(kFullMask, v, 2));
}
__device__ __forceinline__ float quadSum(float v) {
  v += __shfl_xor_sync(kFullMask, v, 1);
  return v + __shfl_xor_sync(kFullMask, v, 2);
}

template <int HD, int TWARPS, bool F8>
__global__ void __launch_bounds__(kThreads, 2)
    attentionMmaKernel(AttentionArgs a, int rowsPerBlock, int tokensPerSplit,
                       int splits) {
  using S = Shape<HD, TWARPS, F8>;
  extern __shared__ __align__(16) char smem[];
  char *widened = smem; // fp8: the current tile's K then V in bf16
  char *stages = smem + S::widenedBytes;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4; // fragment rows g and g + 8
  const int t = lane % 4; // fragment column pair
  const int mi = lane / 8; // the 8×8 matrix whose row address this lane gives
  const int mWarp = warp / TWARPS;
  const int firstToken = (warp % TWARPS) * S::tokens; // within a tile
  const int kvh = blockIdx.y;
  const int split = blockIdx.z;
  const int group = a.heads / a.kvHeads;
  const int64_t r0 = int64_t(blockIdx.x) * rowsPerBlock;
  const int64_t rEnd = min(r0 + rowsPerBlock, a.rows);
  const float qkScale = a.scale * kLog2e;
  constexpr int kEB = F8 ? 1 : 2;
  const int64_t headOffset = int64_t(kvh) * HD * kEB;
  const int64_t scaleOffset = int64_t(a.kvHeads) * HD + kvh * 4;
  auto sequenceOf = [&](int64_t r) -> int64_t {
    return a.sequences ? a.sequences[r] : r;
  };
  auto firstOf = [&](int64_t last) -> int64_t {
    return a.window > 0 ? max(int64_t(0), last - a.window + 1) : 0;
  };

  for (int64_t runStart = r0; runStart < rEnd;) {
    const int64_t sequence = sequenceOf(runStart);
    int64_t runEnd = runStart + 1;
    while (runEnd < rEnd && sequenceOf(runEnd) == sequence)
      ++runEnd;
    // The run's context, and the spans of this lane's two vectors
    // (v = 16·mWarp + g + 8i: row r0 + v / group, head v % group of the kv
    // head's group); an idle vector attends nothing.
    int64_t lo = INT64_MAX, hi = -1;
    for (int64_t r = runStart; r < runEnd; ++r) {
      const int64_t last = a.positions[r];
      lo = min(lo, firstOf(last));
      hi = max(hi, last);
    }
    int64_t first[2], last[2], rowOf[2];
    int headOf[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int v = 16 * mWarp + g + 8 * i;
      rowOf[i] = r0 + v / group;
      headOf[i] = kvh * group + v % group;
      const bool active = v / group < rowsPerBlock && rowOf[i] >= runStart &&
                          rowOf[i] < runEnd;
      last[i] = active ? int64_t(a.positions[rowOf[i]]) : -1;
      first[i] = active ? firstOf(last[i]) : 0;
    }
    const bool warpServes = __any_sync(kFullMask, last[0] >= 0 || last[1] >= 0);

    uint32_t qa[S::kSteps][4];
#pragma unroll
    for (int kk = 0; kk < S::kSteps; ++kk)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int i = j & 1;
        const int d = 16 * kk + 2 * t + 8 * (j >> 1);
        qa[kk][j] = last[i] >= 0
                        ? *reinterpret_cast<const uint32_t *>(
                              a.q + (rowOf[i] * a.heads + headOf[i]) * HD + d)
                        : 0u;
      }

    const int64_t start = lo + int64_t(split) * tokensPerSplit;
    const int64_t end = split + 1 == splits
                            ? hi + 1
                            : min(start + tokensPerSplit, hi + 1);
    const int numTiles =
        end > start ? static_cast<int>((end - start + kTile - 1) / kTile) : 0;
    const char *kSeq = static_cast<const char *>(a.k) + sequence * a.seqStride;
    const char *vSeq = static_cast<const char *>(a.v) + sequence * a.seqStride;

    // Tokens past the range are zero-filled: finite, and masked below.
    auto issue = [&](int tile, int stage) {
      char *dst = stages + stage * S::stageBytes;
      const int64_t t0 = start + int64_t(tile) * kTile;
      constexpr int units = HD * kEB / 16; // 16-byte units of a head's row
      constexpr int dstRow = F8 ? HD : S::rowBytes;
      constexpr int vOffset = F8 ? S::codeBytes : S::tileBytes;
      for (int c = tid; c < kTile * units; c += kThreads) {
        const int r = c / units;
        const int col = c - r * units;
        const int64_t token = t0 + r;
        const bool valid = token < end;
        const int64_t off =
            (valid ? token : start) * a.rowBytes + headOffset + col * 16;
        cpAsync16(dst + r * dstRow + col * 16, kSeq + off, valid ? 16 : 0);
        cpAsync16(dst + vOffset + r * dstRow + col * 16, vSeq + off,
                  valid ? 16 : 0);
      }
      if constexpr (F8) {
        char *scales = dst + 2 * S::codeBytes;
        for (int r = tid; r < kTile; r += kThreads) {
          const int64_t token = t0 + r;
          const bool valid = token < end;
          const int64_t off = (valid ? token : start) * a.rowBytes + scaleOffset;
          cpAsync4(scales + r * 4, kSeq + off, valid ? 4 : 0);
          cpAsync4(scales + (kTile + r) * 4, vSeq + off, valid ? 4 : 0);
        }
      }
      cpAsyncCommit();
    };

    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float acc[S::outTiles][4];
#pragma unroll
    for (int n = 0; n < S::outTiles; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        acc[n][e] = 0.0f;

    if (numTiles > 0)
      issue(0, 0);
    for (int tile = 0; tile < numTiles; ++tile) {
      cpAsyncWait<0>();
      // The tile is visible, and every thread is done with the previous one.
      __syncthreads();
      if (tile + 1 < numTiles)
        issue(tile + 1, (tile + 1) & 1);
      const char *stage = stages + (tile & 1) * S::stageBytes;
      const char *kTileSmem = F8 ? widened : stage;
      const char *vTileSmem = kTileSmem + S::tileBytes;
      const float *kScales =
          reinterpret_cast<const float *>(stage + 2 * S::codeBytes);
      const float *vScales = kScales + kTile;
      if constexpr (F8) {
        constexpr int octets = HD / 8;
        for (int c = tid; c < 2 * kTile * octets; c += kThreads) {
          const int which = c / (kTile * octets); // 0: K, 1: V
          const int rest = c - which * kTile * octets;
          const int r = rest / octets;
          const int o = rest - r * octets;
          *reinterpret_cast<uint4 *>(widened + which * S::tileBytes +
                                     r * S::rowBytes + o * 16) =
              widenFp8x8(*reinterpret_cast<const uint2 *>(
                  stage + which * S::codeBytes + r * HD + o * 8));
        }
        __syncthreads();
      }
      const int64_t t0 = start + int64_t(tile) * kTile + firstToken;
      if (!warpServes || t0 >= end)
        continue;

      // Scores of this warp's 16 vectors × its tokens of the tile.
      float s[S::scoreTiles][4];
#pragma unroll
      for (int j = 0; j < S::scoreTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          s[j][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < S::kSteps; ++kk)
#pragma unroll
        for (int jj = 0; jj < S::scoreTiles / 2; ++jj) {
          // Matrices: tokens 16jj + 8(mi / 2) .., dims 16kk + 8(mi % 2).
          uint32_t b[4];
          const int r = firstToken + 16 * jj + 8 * (mi >> 1) + (lane & 7);
          ldmatrixX4(b, kTileSmem + r * S::rowBytes +
                            (16 * kk + 8 * (mi & 1)) * 2);
          mma16816(s[2 * jj], qa[kk], {b[0], b[1]});
          mma16816(s[2 * jj + 1], qa[kk], {b[2], b[3]});
        }

      // Online softmax; out of a vector's span (or the range): -inf.
      float tileMax[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < S::scoreTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = e >> 1;
          const int column = 8 * j + 2 * t + (e & 1);
          const int64_t token = t0 + column;
          float x = s[j][e] * qkScale;
          if constexpr (F8)
            x *= kScales[firstToken + column];
          const bool inSpan =
              token >= first[i] && token <= last[i] && token < end;
          s[j][e] = inSpan ? x : -INFINITY;
          tileMax[i] = fmaxf(tileMax[i], s[j][e]);
        }
      float base[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float mNew = fmaxf(m[i], quadMax(tileMax[i]));
        base[i] = mNew == -INFINITY ? 0.0f : mNew;
        const float corr = exp2f(m[i] - base[i]); // m = -inf: 0
        m[i] = mNew;
        l[i] *= corr;
#pragma unroll
        for (int n = 0; n < S::outTiles; ++n) {
          acc[n][2 * i] *= corr;
          acc[n][2 * i + 1] *= corr;
        }
      }
#pragma unroll
      for (int j = 0; j < S::scoreTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = exp2f(s[j][e] - base[e >> 1]); // -inf: 0
          l[e >> 1] += p;
          s[j][e] = p;
        }

      // p·V: k = this warp's tokens, 16 at a time.
#pragma unroll
      for (int kk = 0; kk < S::tokens / 16; ++kk) {
        const int c0 = firstToken + 16 * kk + 2 * t; // A columns c0, +1, +8, +9
        float v0 = 1.0f, v1 = 1.0f, v8 = 1.0f, v9 = 1.0f;
        if constexpr (F8) {
          v0 = vScales[c0];
          v1 = vScales[c0 + 1];
          v8 = vScales[c0 + 8];
          v9 = vScales[c0 + 9];
        }
        const uint32_t pa[4] = {
            packBf16x2(s[2 * kk][0] * v0, s[2 * kk][1] * v1),
            packBf16x2(s[2 * kk][2] * v0, s[2 * kk][3] * v1),
            packBf16x2(s[2 * kk + 1][0] * v8, s[2 * kk + 1][1] * v9),
            packBf16x2(s[2 * kk + 1][2] * v8, s[2 * kk + 1][3] * v9)};
#pragma unroll
        for (int np = 0; np < S::outTiles / 2; ++np) {
          // Matrices: tokens 16kk + 8(mi % 2) .., dims 16np + 8(mi / 2).
          uint32_t b[4];
          const int r = firstToken + 16 * kk + 8 * (mi & 1) + (lane & 7);
          ldmatrixX4Trans(b, vTileSmem + r * S::rowBytes +
                                 (16 * np + 8 * (mi >> 1)) * 2);
          mma16816(acc[2 * np], pa, {b[0], b[1]});
          mma16816(acc[2 * np + 1], pa, {b[2], b[3]});
        }
      }
    }
    cpAsyncWait<0>();
    __syncthreads(); // every warp is done with the tiles: reuse the memory

    // Each warp's state: acc [16][HD], then maxima [16] and sums [16].
    float *state = reinterpret_cast<float *>(smem);
    float *mine = state + warp * 16 * (HD + 2);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int v = g + 8 * i;
#pragma unroll
      for (int n = 0; n < S::outTiles; ++n)
        *reinterpret_cast<float2 *>(mine + v * HD + 8 * n + 2 * t) =
            make_float2(acc[n][2 * i], acc[n][2 * i + 1]);
      const float sum = quadSum(l[i]);
      if (t == 0) {
        mine[16 * HD + v] = m[i];
        mine[16 * HD + 16 + v] = sum;
      }
    }
    __syncthreads();

    for (int i = tid; i < S::mWarps * 16 * HD; i += kThreads) {
      const int v = i / HD; // 16·mWarp + fragment row
      const int d = i - v * HD;
      const int64_t row = r0 + v / group;
      if (v / group >= rowsPerBlock || row < runStart || row >= runEnd)
        continue;
      const float *warps = state + (v / 16) * TWARPS * 16 * (HD + 2);
      const int local = v % 16;
      float mMax = -INFINITY;
#pragma unroll
      for (int w = 0; w < TWARPS; ++w)
        mMax = fmaxf(mMax, warps[w * 16 * (HD + 2) + 16 * HD + local]);
      float sum = 0.0f, value = 0.0f;
      if (mMax != -INFINITY) {
#pragma unroll
        for (int w = 0; w < TWARPS; ++w) {
          const float *ws = warps + w * 16 * (HD + 2);
          const float f = exp2f(ws[16 * HD + local] - mMax);
          sum += f * ws[16 * HD + 16 + local];
          value += f * ws[local * HD + d];
        }
      }
      const int h = kvh * group + v % group;
      const int64_t head = row * a.heads + h;
      if (splits == 1) {
        if (a.sinks)
          value *= addSink(a.sinks[h] * kLog2e, mMax, sum);
        a.out[head * HD + d] =
            __float2bfloat16_rn(sum > 0.0f ? value / sum : 0.0f);
      } else {
        float *part = a.workspace + (head * splits + split) * (HD + 2);
        part[d] = value;
        if (d == 0) {
          part[HD] = mMax;
          part[HD + 1] = sum;
        }
      }
    }
    __syncthreads(); // the next run's tiles reuse the memory
    runStart = runEnd;
  }
}

template <int HD, int TWARPS, bool F8>
cudaError_t launch(const AttentionArgs &a, int rowsPerBlock,
                   int tokensPerSplit, int splits, cudaStream_t stream) {
  constexpr int smem = Shape<HD, TWARPS, F8>::smemBytes;
  static const cudaError_t attr = cudaFuncSetAttribute(
      attentionMmaKernel<HD, TWARPS, F8>,
      cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (attr != cudaSuccess)
    return attr;
  dim3 grid(static_cast<unsigned>((a.rows + rowsPerBlock - 1) / rowsPerBlock),
            a.kvHeads, splits);
  attentionMmaKernel<HD, TWARPS, F8><<<grid, kThreads, smem, stream>>>(
      a, rowsPerBlock, tokensPerSplit, splits);
  return cudaGetLastError();
}

template <int HD, int TWARPS>
cudaError_t launchForFormat(const AttentionArgs &a, int rowsPerBlock,
                            int tokensPerSplit, int splits,
                            cudaStream_t stream) {
  return a.fp8 ? launch<HD, TWARPS, true>(a, rowsPerBlock, tokensPerSplit,
                                          splits, stream)
               : launch<HD, TWARPS, false>(a, rowsPerBlock, tokensPerSplit,
                                           splits, stream);
}

template <int HD>
cudaError_t launchForWarps(const AttentionArgs &a, int rowsPerBlock,
                           int tokensPerSplit, int splits,
                           cudaStream_t stream) {
  // Warps along M: enough for the block's vectors; the rest split tokens.
  const int group = a.heads / a.kvHeads;
  const int mWarps = (rowsPerBlock * group + 15) / 16;
  if (mWarps == 1)
    return launchForFormat<HD, 4>(a, rowsPerBlock, tokensPerSplit, splits,
                                  stream);
  if (mWarps == 2)
    return launchForFormat<HD, 2>(a, rowsPerBlock, tokensPerSplit, splits,
                                  stream);
  return launchForFormat<HD, 1>(a, rowsPerBlock, tokensPerSplit, splits,
                                stream);
}

} // namespace

bool attentionMmaApplies(int heads, int kvHeads, int headDim) {
  return (headDim == 64 || headDim == 128) && kvHeads > 0 &&
         heads % kvHeads == 0 && heads / kvHeads <= kVectors;
}

cudaError_t launchAttentionMma(const AttentionArgs &a, int tokensPerSplit,
                               int splits, cudaStream_t stream) {
  const int group = a.heads / a.kvHeads;
  const int rowsPerBlock = static_cast<int>(std::clamp<int64_t>(
      std::min<int64_t>(a.rowsPerSequence, kVectors / group), 1, kVectors));
  return a.headDim == 64 ? launchForWarps<64>(a, rowsPerBlock, tokensPerSplit,
                                              splits, stream)
                         : launchForWarps<128>(a, rowsPerBlock,
                                               tokensPerSplit, splits, stream);
}

} // namespace moe::cuda::kernels::detail
