// Router logits in fp32, one warp per (row, expert); top-k routing, one warp
// per token row: the row's ≤ 256 scores live in registers (expert e = lane +
// 32·t), group scores go through shared memory.
#include "runtime/backends/cuda/kernels/Kernels.cuh"

#include <cmath>

namespace moe::cuda::kernels {
namespace {

using namespace detail;

constexpr int kMaxExperts = 256, kPerLane = kMaxExperts / 32, kMaxTopK = 8,
              kMaxGroups = 8, kWarps = 4;

__global__ void routerKernel(RouterArgs a) {
  __shared__ float choiceShared[kWarps][kMaxExperts];
  __shared__ float groupShared[kWarps][kMaxGroups];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= a.rows)
    return; // whole warps leave together: the kernel has no block barrier
  const float *logits = a.logits + row * a.experts;

  float score[kPerLane], choice[kPerLane];
  float rowMax = -INFINITY;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    int e = lane + 32 * t;
    score[t] = e < a.experts ? logits[e] : -INFINITY;
    rowMax = fmaxf(rowMax, score[t]);
  }
  if (a.scoring == RouterScoring::softmax) {
    rowMax = warpMax(rowMax);
    float sum = 0.0f;
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) {
      score[t] = lane + 32 * t < a.experts ? expf(score[t] - rowMax) : 0.0f;
      sum += score[t];
    }
    sum = warpSum(sum);
#pragma unroll
    for (int t = 0; t < kPerLane; ++t)
      score[t] /= sum;
  } else {
#pragma unroll
    for (int t = 0; t < kPerLane; ++t)
      score[t] = 1.0f / (1.0f + expf(-score[t]));
  }
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    int e = lane + 32 * t;
    choice[t] = e < a.experts
                    ? score[t] + (a.correctionBias ? a.correctionBias[e] : 0.0f)
                    : -INFINITY;
  }

  if (a.selection != RouterSelection::greedy && a.groups > 1) {
    int size = a.experts / a.groups;
#pragma unroll
    for (int t = 0; t < kPerLane; ++t)
      if (lane + 32 * t < a.experts)
        choiceShared[warp][lane + 32 * t] = choice[t];
    __syncwarp();
    if (lane < a.groups) {
      float first = -INFINITY, second = -INFINITY;
      for (int i = 0; i < size; ++i) {
        float v = choiceShared[warp][lane * size + i];
        if (v > first) {
          second = first;
          first = v;
        } else if (v > second) {
          second = v;
        }
      }
      groupShared[warp][lane] = a.selection == RouterSelection::noauxTc
                                    ? first + (size > 1 ? second : 0.0f)
                                    : first;
    }
    __syncwarp();
    // A group is kept when fewer than keptGroups groups rank above it.
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) {
      int e = lane + 32 * t;
      if (e >= a.experts)
        continue;
      int g = e / size, above = 0;
      float mine = groupShared[warp][g];
      for (int h = 0; h < a.groups; ++h) {
        float other = groupShared[warp][h];
        above += other > mine || (other == mine && h < g);
      }
      if (above >= a.keptGroups)
        choice[t] = 0.0f; // HF masks with 0, not −inf
    }
  }

  float weight[kMaxTopK];
  int32_t index[kMaxTopK];
  unsigned taken = 0; // bit t: this lane's expert lane + 32·t is chosen
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j) {
    weight[j] = 0.0f;
    index[j] = 0;
    if (j >= a.topK)
      continue;
    float best = -INFINITY, bestScore = 0.0f;
    int32_t bestIndex = INT32_MAX;
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) {
      int e = lane + 32 * t;
      if (e < a.experts && !(taken >> t & 1u) &&
          better(choice[t], e, best, bestIndex)) {
        best = choice[t];
        bestIndex = e;
        bestScore = score[t];
      }
    }
    int32_t candidate = bestIndex;
    warpArgmax(best, bestIndex);
    // The owner of the winner marks it and hands over its unbiased score.
    int owner = bestIndex & 31;
    if (lane == owner)
      taken |= 1u << (bestIndex >> 5);
    weight[j] = __shfl_sync(kFullMask,
                            candidate == bestIndex ? bestScore : 0.0f, owner);
    index[j] = bestIndex;
  }

  // The CPU's order of operations: the sum, the division, then the scale.
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j)
    if (j < a.topK)
      sum = __fadd_rn(sum, weight[j]);
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j) {
    if (j >= a.topK)
      continue;
    float w =
        a.normalize ? __fdiv_rn(weight[j], __fadd_rn(sum, 1e-20f)) : weight[j];
    w = __fmul_rn(w, a.scaling);
    if (lane == j) {
      a.weights[row * a.topK + j] = w;
      a.indices[row * a.topK + j] = index[j];
    }
  }
}

// Router logits in fp32 without TF32 (expert choices hinge on near-ties),
// by one of two kernels. Many rows (prefill): a tiled GEMM, a block
// computing 64 rows × 64 experts from 32-wide k slices of x and w in shared
// memory (a thread 4 × 4 of them, each summing its k in order), so x is read
// once per 64 experts and w once per 64 rows. Few rows (decode): those
// tiles are too few blocks to fill the GPU, and a warp per (row, expert)
// is faster, though it reads both vectors for every output.
constexpr int kLogitTile = 64;
constexpr int kLogitK = 32;
constexpr int kLogitThreads = 256; // 16 × 16, each 4 × 4 outputs
// Tiles below which the warp kernel runs: about two per SM of an H100.
constexpr int64_t kMinLogitTiles = 256;

__global__ void __launch_bounds__(kLogitThreads)
    routerLogitsWarpKernel(const float *x, const float *w, const float *bias,
                           int64_t rows, int64_t hidden, int64_t experts,
                           float *out) {
  int64_t task = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (task >= rows * experts)
    return;
  int64_t r = task / experts, e = task % experts;
  float sum = 0.0f;
  for (int64_t i = lane; i < hidden; i += 32)
    sum += x[r * hidden + i] * w[e * hidden + i];
  for (int offset = 16; offset > 0; offset /= 2)
    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0)
    out[task] = sum + (bias ? bias[e] : 0.0f);
}

__global__ void __launch_bounds__(kLogitThreads)
    routerLogitsKernel(const float *x, const float *w, const float *bias,
                       int64_t rows, int64_t hidden, int64_t experts,
                       float *out) {
  // [k][row or expert], padded so that a warp's stores of one row's 32 k
  // values fall in distinct banks.
  __shared__ float xs[kLogitK][kLogitTile + 1];
  __shared__ float ws[kLogitK][kLogitTile + 1];
  const int64_t row0 = int64_t(blockIdx.x) * kLogitTile;
  const int64_t expert0 = int64_t(blockIdx.y) * kLogitTile;
  const int tid = threadIdx.x;
  const int ty = tid / 16, tx = tid % 16;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < hidden; k0 += kLogitK) {
    for (int i = tid; i < kLogitTile * kLogitK; i += kLogitThreads) {
      const int r = i / kLogitK, kk = i % kLogitK;
      const int64_t k = k0 + kk;
      const bool inK = k < hidden;
      xs[kk][r] = inK && row0 + r < rows ? x[(row0 + r) * hidden + k] : 0.0f;
      ws[kk][r] =
          inK && expert0 + r < experts ? w[(expert0 + r) * hidden + k] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kLogitK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = xs[kk][ty + 16 * i];
        b[i] = ws[kk][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = row0 + ty + 16 * i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t e = expert0 + tx + 16 * j;
      if (r < rows && e < experts)
        out[r * experts + e] = acc[i][j] + (bias ? bias[e] : 0.0f);
    }
  }
}

} // namespace

cudaError_t routeTopK(const RouterArgs &a, cudaStream_t stream) {
  if (a.rows < 0 || !a.logits || !a.weights || !a.indices || a.experts <= 0 ||
      a.experts > kMaxExperts || a.topK < 1 || a.topK > kMaxTopK ||
      a.topK > a.experts || a.groups < 1 || a.groups > kMaxGroups ||
      a.experts % a.groups != 0 || a.keptGroups < 1 || a.keptGroups > a.groups)
    return cudaErrorInvalidValue;
  if (a.rows == 0)
    return cudaSuccess;
  int64_t blocks = (a.rows + kWarps - 1) / kWarps;
  routerKernel<<<static_cast<unsigned>(blocks), kWarps * 32, 0, stream>>>(a);
  return launched();
}

cudaError_t routerLogits(const float *x, const float *w, const float *bias,
                         int64_t rows, int64_t hidden, int64_t experts,
                         float *out, cudaStream_t stream) {
  if (rows * experts == 0)
    return cudaSuccess;
  if (rows < 0 || hidden <= 0 || experts < 0)
    return cudaErrorInvalidValue;
  const int64_t rowTiles = (rows + kLogitTile - 1) / kLogitTile;
  const int64_t expertTiles = (experts + kLogitTile - 1) / kLogitTile;
  if (rowTiles > INT32_MAX || expertTiles > 65535)
    return cudaErrorInvalidValue;
  if (rowTiles * expertTiles < kMinLogitTiles) {
    const int64_t threads = rows * experts * 32;
    routerLogitsWarpKernel<<<static_cast<unsigned>(
                                 (threads + kLogitThreads - 1) / kLogitThreads),
                             kLogitThreads, 0, stream>>>(x, w, bias, rows,
                                                         hidden, experts, out);
    return cudaGetLastError();
  }
  routerLogitsKernel<<<dim3(static_cast<unsigned>(rowTiles),
                            static_cast<unsigned>(expertTiles)),
                       kLogitThreads, 0, stream>>>(x, w, bias, rows, hidden,
                                                   experts, out);
  return cudaGetLastError();
}

} // namespace moe::cuda::kernels
