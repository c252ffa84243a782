// Multi-head latent attention (DeepSeek-V2/V3 MLA) in its absorbed form, over
// a latent KV cache. nvcc compiles this header, so it includes no fmt
// (Result.h): host code turns the codes into moe::Status with
// moe::cuda::checkCuda.
//
// Each cache row is [c (latentDim) | k_pe (ropeDim)]: the compressed latent
// (already normed) and the roped key part, shared by every head. The caller
// absorbs W_UK into the query (q̃_h = W_UK,hᵀ q_nope,h) and W_UV into the
// output projection, so for row r, head h at position p:
//   score_j = (q̃_h · c_j + q_pe,h · k_pe_j) · scale,  j = 0..p
//   out_h   = Σ_j softmax(score)_j · c_j
// Scores, softmax and accumulation in fp32 on the cache's values (bf16, or
// fp8 codes times their scales), one rounding on output.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda::kernels {

using bf16 = __nv_bfloat16;

struct MlaAttentionArgs {
  const bf16 *qLatent = nullptr; // [rows, heads, latentDim]  absorbed query q̃
  const bf16 *qRope = nullptr;   // [rows, heads, ropeDim]    roped q_pe
  // Sequence s's cache rows start at cache + s·seqStride bytes: one row of
  // rowBytes per position, in model::latentRowBytes' format: bf16 [c |
  // k_pe], or with fp8 their E4M3 codes, then from the next 16-byte
  // boundary one fp32 scale per ropeDim elements (runtime/model/KvFormat.h).
  const void *cache = nullptr;
  bool fp8 = false;
  int64_t rowBytes = 0;
  int64_t scalesOffset = 0;           // fp8: where a row's scales start
  bf16 *out = nullptr;                // [rows, heads, latentDim]
  const int32_t *sequences = nullptr; // [rows]; null: row r reads sequence r
  // [rows]; row r attends to positions [0, positions[r]]; negative: nothing
  // (zeros).
  const int32_t *positions = nullptr;
  int64_t rows = 0;
  int heads = 0;
  int latentDim = 0;
  int ropeDim = 0;
  int64_t seqStride = 0; // bytes, a multiple of 16
  // ≥ every row's positions[r] + 1: it sizes the split of long contexts, and
  // positions beyond it would be left out.
  int maxSpan = 0;
  float scale = 1.0f;
  float *workspace = nullptr; // mlaAttentionWorkspaceBytes() bytes
  // The CUDA-core kernel even where the tensor-core one applies (tests and
  // timings compare the two).
  bool generalKernel = false;
};

// heads 1..128, latentDim ∈ {16, 32, 64, 128, 256, 512},
// ropeDim ∈ {8, 16, 32, 64}; an fp8 cache's latentDim a multiple of ropeDim
// (its scale groups).
bool mlaAttentionSupports(int heads, int latentDim, int ropeDim, bool fp8);
// Whether such a cache (rows in model::latentRowBytes' format) is attended
// on tensor cores: latentDim ∈ {128, 256, 512}, ropeDim ∈ {32, 64}, the
// latent shapes of real checkpoints; other supported shapes run on CUDA
// cores.
bool mlaAttentionOnTensorCores(int latentDim, int ropeDim);
// Device workspace for partial results when few rows have long contexts
// (split over several blocks); 0 otherwise. smCount: the device's
// multiprocessors, the same value mlaAttention() is given.
size_t mlaAttentionWorkspaceBytes(int64_t rows, int heads, int latentDim,
                                  int maxSpan, int smCount);
// cudaErrorInvalidValue for unsupported shapes, a row that cannot hold the
// format's values and scales or a missing workspace, cudaErrorMisalignedAddress
// unless cache is 16-byte aligned and seqStride a multiple of 16; cudaSuccess
// without a launch when rows is 0.
cudaError_t mlaAttention(const MlaAttentionArgs &args, int smCount,
                         cudaStream_t stream);

} // namespace moe::cuda::kernels
