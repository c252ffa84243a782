// The grouped expert GEMM.
//
// Scheduling without host counts. Expert e owns the m-tile slots
// [s(e), s(e+1)) with s(e) = offsets[e] / BM + e (integer division). Its rows
// [o, o + c) need ceil(c / BM) tiles, and s(e+1) − s(e) = (o + c) / BM −
// o / BM + 1 ≥ c / BM + 1 slots are always enough; so grid.x = s(E) =
// rows / BM + E covers every expert with tiles aligned to its first row, and
// the host needs only `rows`. Each block finds its expert with one parallel
// pass of its threads over the offsets (each tests one expert's slot range; the
// ranges are disjoint) and exits when its slot is a spare (at most one per
// expert). grid.y is the n-tile. m-tiles vary fastest, so the blocks that share
// an expert's weight tile run together and the later ones read it from L2.
//
// Quantized weights. A stage's weight tile arrives as codes (cp.async into a
// code area beside the stages) and its scales as plain loads issued a stage
// early (fp8: BK divides 128, so a tile row has one; mxfp4: one per 32
// columns, BK a multiple of 32); once landed, the block widens the codes into
// the stage's bf16 weight tile before the warps multiply, which then run as
// for bf16.
//
// Tiles. BM (16, 32, 64 or 128) follows the mean rows per expert. Small groups
// (decode) are bound by reading the weights once per m-tile, so their blocks
// keep a 128×64 weight tile per stage and 4 cp.async stages (16-byte,
// L1-bypassing) in flight; large groups use a 128×128×32 tile. Warps multiply
// with ldmatrix + mma.sync m16n8k16 (bf16 in, fp32 accumulate) from shared
// rows padded by 16 bytes, which makes ldmatrix conflict-free. Rows past the
// group, columns past n and k past its end are zero-filled by cp.async.
#include "runtime/backends/cuda/kernels/GroupedGemm.h"
#include "runtime/backends/cuda/kernels/Mma.cuh"
#include "runtime/backends/cuda/kernels/QuantizedWeights.cuh"

#include <cstdint>

namespace moe::cuda::kernels {
namespace {

using namespace detail;

template <int BM_, int BN_, int BK_, int WarpsM, int WarpsN, int Stages_,
          int MinBlocks>
struct Tile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, stages = Stages_;
  static constexpr int warpsN = WarpsN, minBlocks = MinBlocks;
  static constexpr int threads = WarpsM * WarpsN * 32;
  static constexpr int warpRows = BM / WarpsM, warpCols = BN / WarpsN;
  static constexpr int fragsM = warpRows / 16, fragsN = warpCols / 8;
  static constexpr int ld = BK + 8; // shared row, elements
  static constexpr int stageElems = (BM + BN) * ld;
  static constexpr int smemBytes = stages * stageElems * 2;
  static_assert(warpRows % 16 == 0 && warpCols % 16 == 0 && BK % 32 == 0 &&
                128 % BK == 0);
};

// How the weight tiles arrive: bf16 as they are, or as codes.
enum class Weights { bf16, fp8, mxfp4 };

// Bytes of a row of k codes, and of a stage's BN × BK code tile.
template <Weights W> __host__ __device__ constexpr int64_t codeBytes(int64_t k) {
  return W == Weights::fp8 ? k : k / 2;
}
template <class T, Weights W>
constexpr int codeStageBytes = W == Weights::bf16 ? 0 : T::BN * codeBytes<W>(T::BK);

using Tile16 = Tile<16, 128, 64, 1, 4, 4, 2>;
using Tile32 = Tile<32, 128, 64, 1, 4, 4, 2>;
using Tile64 = Tile<64, 128, 64, 2, 4, 4, 2>;
using Tile128 = Tile<128, 128, 32, 2, 4, 4, 2>;

__device__ __forceinline__ const bf16 *expertBlock(const ExpertMatrix &m,
                                                   int e) {
  if (m.resident == nullptr && m.streamed == nullptr)
    return nullptr;
  return e < m.residentExperts
             ? m.resident + e * m.stride
             : m.streamed + (e - m.residentExperts) * m.stride;
}

// A ROWS×BK tile of a row-major [·, k] matrix (from its column kBegin) into
// shared memory; rows ≥ validRows and columns ≥ k become zeros.
template <class T, int ROWS>
__device__ __forceinline__ void
loadTile(bf16 *dst, const bf16 *src, int validRows, int64_t kBegin, int64_t k) {
  constexpr int chunksPerRow = T::BK / 8;
  constexpr int rowsPerPass = T::threads / chunksPerRow;
  static_assert(T::threads % chunksPerRow == 0 && ROWS % rowsPerPass == 0);
  int row = threadIdx.x / chunksPerRow;
  int col = (threadIdx.x % chunksPerRow) * 8;
  bool colValid = kBegin + col < k;
#pragma unroll
  for (int p = 0; p < ROWS / rowsPerPass; ++p, row += rowsPerPass) {
    bool valid = colValid && row < validRows;
    cpAsync16(dst + row * T::ld + col,
              valid ? src + row * k + kBegin + col : src, valid ? 16 : 0);
  }
}

// A BN×BK tile of codes of a row-major [·, k] matrix into shared memory
// (rows of codeBytes(BK)); rows ≥ validRows and columns ≥ k become zero
// codes.
template <class T, Weights W>
__device__ __forceinline__ void loadCodes(uint8_t *dst, const uint8_t *src,
                                          int validRows, int64_t kBegin,
                                          int64_t k) {
  constexpr int rowBytes = codeBytes<W>(T::BK), chunksPerRow = rowBytes / 16;
  const int64_t srcRowBytes = codeBytes<W>(k), srcBegin = codeBytes<W>(kBegin);
#pragma unroll
  for (int i = threadIdx.x; i < T::BN * chunksPerRow; i += T::threads) {
    int row = i / chunksPerRow, col = (i % chunksPerRow) * 16;
    bool valid = srcBegin + col < srcRowBytes && row < validRows;
    cpAsync16(dst + row * rowBytes + col,
              valid ? src + row * srcRowBytes + srcBegin + col : src,
              valid ? 16 : 0);
  }
}

// The scales of the code chunks (16-byte loads) this thread widens in one
// stage: 16 fp8 codes or 32 mxfp4 ones (a scale block) each. They are plain
// global loads, issued a stage ahead of their use, since waiting for them
// between two barriers stalled every stage. Zero-filled codes past the matrix
// get scale 0: no scale is read there.
template <class T, Weights W> struct StageScales {
  static constexpr int chunksPerRow = codeBytes<W>(T::BK) / 16;
  static constexpr int chunks = T::BN * chunksPerRow;
  static constexpr int perThread = (chunks + T::threads - 1) / T::threads;
  static constexpr int codesPerChunk = W == Weights::fp8 ? 16 : 32;
  float scale[perThread];
};

template <class T, Weights W>
__device__ __forceinline__ StageScales<T, W>
loadScales(const QuantizedExpertMatrix &m, int expert, int64_t colBegin,
           int validRows, int64_t kBegin) {
  using S = StageScales<T, W>;
  S s;
#pragma unroll
  for (int j = 0; j < S::perThread; ++j) {
    int i = threadIdx.x + j * T::threads;
    int row = i / S::chunksPerRow, col = (i % S::chunksPerRow) * S::codesPerChunk;
    s.scale[j] = 0.0f;
    if (i >= S::chunks || row >= validRows)
      continue;
    if constexpr (W == Weights::fp8)
      s.scale[j] = fp8Scale(m, expert, colBegin + row, kBegin);
    else if (kBegin + col < m.cols)
      s.scale[j] = mxfp4Scale(m, expert, colBegin + row, kBegin + col);
  }
  return s;
}

// The landed codes of a stage widened into its bf16 weight tile, a 16-byte
// load of codes at a time.
template <class T, Weights W>
__device__ __forceinline__ void widenTile(bf16 *dst, const uint8_t *codes,
                                          const StageScales<T, W> &scales) {
  using S = StageScales<T, W>;
  constexpr int rowBytes = codeBytes<W>(T::BK);
#pragma unroll
  for (int j = 0; j < S::perThread; ++j) {
    int i = threadIdx.x + j * T::threads;
    if (i >= S::chunks)
      break;
    int row = i / S::chunksPerRow, chunk = i % S::chunksPerRow;
    uint4 packed =
        *reinterpret_cast<const uint4 *>(codes + row * rowBytes + chunk * 16);
    bf16 *out = dst + row * T::ld + chunk * S::codesPerChunk;
    if constexpr (W == Weights::fp8)
      widen16(packed, scales.scale[j], out);
    else
      widen32Fp4(packed, scales.scale[j], out);
  }
}

// One BK slice of the block's tile: each warp its warpRows×warpCols part.
template <class T>
__device__ __forceinline__ void
multiplyStage(const bf16 *as, const bf16 *bs,
              float (&acc)[T::fragsM][T::fragsN][4], int warpRow, int warpCol,
              int lane) {
#pragma unroll
  for (int kk = 0; kk < T::BK; kk += 16) {
    uint32_t a[T::fragsM][4], b[T::fragsN][2];
#pragma unroll
    for (int i = 0; i < T::fragsM; ++i)
      ldmatrixX4(a[i], as + (warpRow + i * 16 + (lane & 15)) * T::ld + kk +
                           (lane >> 4) * 8);
#pragma unroll
    for (int j = 0; j < T::fragsN; j += 2) {
      // One x4 load covers two n8 fragments: matrices (n0-7, k0-7),
      // (n0-7, k8-15), (n8-15, k0-7), (n8-15, k8-15).
      uint32_t r[4];
      ldmatrixX4(
          r, bs + (warpCol + j * 8 + (lane & 7) + ((lane >> 4) << 3)) * T::ld +
                 kk + ((lane >> 3) & 1) * 8);
      b[j][0] = r[0];
      b[j][1] = r[1];
      b[j + 1][0] = r[2];
      b[j + 1][1] = r[3];
    }
#pragma unroll
    for (int i = 0; i < T::fragsM; ++i)
#pragma unroll
      for (int j = 0; j < T::fragsN; ++j)
        mma16816(acc[i][j], a[i], b[j]);
  }
}

template <class T, Weights W>
__global__ void __launch_bounds__(T::threads, T::minBlocks)
    groupedGemmKernel(GroupedGemmArgs a) {
  constexpr bool quantized = W != Weights::bf16;
  extern __shared__ __align__(16) unsigned char sharedBytes[];
  __shared__ int32_t tile[3]; // expert, first row, rows in this tile

  if (threadIdx.x == 0)
    tile[2] = 0;
  __syncthreads();
  int slot = blockIdx.x;
  for (int e = threadIdx.x; e < a.experts; e += T::threads) {
    int32_t begin = a.offsets[e], end = a.offsets[e + 1];
    int32_t first = begin / T::BM + e;
    if (first <= slot && slot <= end / T::BM + e) {
      int32_t rowBegin = begin + (slot - first) * T::BM;
      tile[0] = e;
      tile[1] = rowBegin;
      tile[2] = min(end - rowBegin, T::BM);
    }
  }
  __syncthreads();
  int rowsHere = tile[2];
  if (rowsHere <= 0)
    return;
  int expert = tile[0];
  int64_t rowBegin = tile[1];
  int64_t colBegin = int64_t(blockIdx.y) * T::BN;
  int colsHere = static_cast<int>(min(int64_t(T::BN), a.n - colBegin));
  const bf16 *x = a.x + rowBegin * a.k;
  const bf16 *w = nullptr;
  const uint8_t *codes = nullptr;
  if constexpr (quantized)
    codes = expertCodes(a.quantizedWeight, expert) + colBegin * codeBytes<W>(a.k);
  else
    w = expertBlock(a.weight, expert) + colBegin * a.k;

  bf16 *smem = reinterpret_cast<bf16 *>(sharedBytes);
  uint8_t *codeStages = sharedBytes + T::smemBytes;
  int kTiles = static_cast<int>((a.k + T::BK - 1) / T::BK);
  auto load = [&](int kt) {
    if (kt < kTiles) {
      bf16 *stage = smem + (kt % T::stages) * T::stageElems;
      int64_t kBegin = int64_t(kt) * T::BK;
      loadTile<T, T::BM>(stage, x, rowsHere, kBegin, a.k);
      if constexpr (quantized)
        loadCodes<T, W>(codeStages + (kt % T::stages) * codeStageBytes<T, W>,
                        codes, colsHere, kBegin, a.k);
      else
        loadTile<T, T::BN>(stage + T::BM * T::ld, w, colsHere, kBegin, a.k);
    }
    cpAsyncCommit(); // empty groups keep the wait count uniform
  };

  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int warpRow = (warp / T::warpsN) * T::warpRows;
  int warpCol = (warp % T::warpsN) * T::warpCols;
  float acc[T::fragsM][T::fragsN][4] = {};

#pragma unroll
  for (int s = 0; s < T::stages - 1; ++s)
    load(s);
  // Only quantized weights read scales; bf16's loop ignores them.
  auto scalesOf = [&](int kt) {
    if constexpr (quantized)
      return loadScales<T, W>(a.quantizedWeight, expert, colBegin, colsHere,
                              int64_t(kt) * T::BK);
    else
      return 0;
  };
  auto scales = scalesOf(0);
  for (int kt = 0; kt < kTiles; ++kt) {
    // The last stage reads its own again: a load is cheaper than a branch
    // that would leave the next scales unset.
    auto nextScales = scalesOf(min(kt + 1, kTiles - 1));
    cpAsyncWait<T::stages - 2>();
    // Tile kt has landed for every thread, and every warp is done with the
    // stage that the next load overwrites (read in iteration kt − 1).
    __syncthreads();
    bf16 *stage = smem + (kt % T::stages) * T::stageElems;
    if constexpr (quantized) {
      widenTile<T, W>(stage + T::BM * T::ld,
                      codeStages + (kt % T::stages) * codeStageBytes<T, W>,
                      scales);
      __syncthreads();
    }
    load(kt + T::stages - 1);
    multiplyStage<T>(stage, stage + T::BM * T::ld, acc, warpRow, warpCol, lane);
    scales = nextScales;
  }

  // Fragment layout: acc[i][j][2h + c] is row g + 8h, column 2q + c of the
  // 16×8 fragment (g = lane / 4, q = lane % 4).
  const bf16 *bias = expertBlock(a.bias, expert);
  bool pairStores = (a.n & 1) == 0; // bf16x2 stores stay 4-byte aligned
  int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int j = 0; j < T::fragsN; ++j) {
    int64_t col = colBegin + warpCol + j * 8 + q * 2;
    if (col >= a.n)
      continue;
    bool second = col + 1 < a.n;
    float b0 = 0.0f, b1 = 0.0f;
    if (bias != nullptr) {
      b0 = __bfloat162float(bias[col]);
      b1 = second ? __bfloat162float(bias[col + 1]) : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < T::fragsM; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int r = warpRow + i * 16 + g + h * 8;
        if (r >= rowsHere)
          continue;
        bf16 *out = a.y + (rowBegin + r) * a.n + col;
        float v0 = acc[i][j][2 * h] + b0, v1 = acc[i][j][2 * h + 1] + b1;
        if (pairStores) {
          *reinterpret_cast<__nv_bfloat162 *>(out) =
              __floats2bfloat162_rn(v0, v1);
        } else {
          out[0] = __float2bfloat16_rn(v0);
          if (second)
            out[1] = __float2bfloat16_rn(v1);
        }
      }
  }
}

template <class T, Weights W>
cudaError_t launch(const GroupedGemmArgs &a, cudaStream_t stream) {
  constexpr int smemBytes = T::smemBytes + T::stages * codeStageBytes<T, W>;
  static const cudaError_t attr = cudaFuncSetAttribute(
      groupedGemmKernel<T, W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      smemBytes);
  if (attr != cudaSuccess)
    return attr;
  int64_t slots = a.rows / T::BM + a.experts;
  int64_t nTiles = (a.n + T::BN - 1) / T::BN;
  if (nTiles > 65535)
    return cudaErrorInvalidValue;
  dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(nTiles));
  groupedGemmKernel<T, W><<<grid, T::threads, smemBytes, stream>>>(a);
  return cudaGetLastError();
}

template <class T>
cudaError_t launch(const GroupedGemmArgs &a, Weights weights,
                   cudaStream_t stream) {
  switch (weights) {
  case Weights::fp8:
    return launch<T, Weights::fp8>(a, stream);
  case Weights::mxfp4:
    return launch<T, Weights::mxfp4>(a, stream);
  default:
    return launch<T, Weights::bf16>(a, stream);
  }
}

// Pointers present where experts use them, and the split in range.
bool validMatrix(const ExpertMatrix &m, int experts) {
  return m.residentExperts >= 0 && m.residentExperts <= experts &&
         m.stride >= 0 && (m.residentExperts == 0 || m.resident != nullptr) &&
         (m.residentExperts == experts || m.streamed != nullptr);
}

} // namespace

cudaError_t groupedGemm(const GroupedGemmArgs &a, cudaStream_t stream) {
  if (a.rows < 0 || a.rows > INT32_MAX || a.n < 0 || a.k <= 0 || a.k % 8 != 0 ||
      a.experts < 1 || a.experts > 1024)
    return cudaErrorInvalidValue;
  if (a.rows == 0 || a.n == 0)
    return cudaSuccess;
  const ExpertMatrix &w = a.weight;
  const QuantizedExpertMatrix &q = a.quantizedWeight;
  Weights weights = q.stride == 0 ? Weights::bf16
                    : q.format == ExpertFormat::fp8 ? Weights::fp8
                                                    : Weights::mxfp4;
  bool validWeight =
      weights != Weights::bf16
          ? w.resident == nullptr && w.streamed == nullptr &&
                validQuantizedMatrix(q, a.experts) && q.cols == a.k &&
                q.parts * q.partRows == a.n
          : validMatrix(w, a.experts) && aligned16(w.resident) &&
                aligned16(w.streamed) && w.stride % 8 == 0;
  bool hasBias = a.bias.resident != nullptr || a.bias.streamed != nullptr;
  if (a.x == nullptr || a.y == nullptr || a.offsets == nullptr ||
      !aligned16(a.x) || !aligned16(a.y) || !validWeight ||
      (hasBias && !validMatrix(a.bias, a.experts)))
    return cudaErrorInvalidValue;

  // Rows per m-tile from the mean group size: decode groups (tens of rows)
  // take one short tile each, so each weight byte is read about once.
  int64_t mean = (a.rows + a.experts - 1) / a.experts;
  if (mean <= 16)
    return launch<Tile16>(a, weights, stream);
  if (mean <= 32)
    return launch<Tile32>(a, weights, stream);
  if (mean <= 64)
    return launch<Tile64>(a, weights, stream);
  return launch<Tile128>(a, weights, stream);
}

} // namespace moe::cuda::kernels
