// Lightning attention (MiniMax's linear attention with per-head decay) over
// a recurrent fp32 state per sequence. nvcc compiles this header, so it
// includes no fmt: host code turns the codes into moe::Status with
// moe::cuda::checkCuda.
//
// Per head h, with λ_h the head's decay and q, k, v the SiLU of the
// projections, each row t of a sequence updates its state and reads it:
//   S ← e^{−λ_h} S + k_tᵀ v_t,   o_t = q_t S        (S is [headDim, headDim])
// which is what the block form computes too (exactly, up to rounding). A
// sequence whose first row in the call has position 0 starts from a zero
// state, so a reused slot needs no reset.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda::kernels {

using bf16 = __nv_bfloat16;

struct LightningAttentionArgs {
  // [rows, heads, 3·headDim]: per head [q | k | v] before the SiLU, as the
  // fused qkv projection writes them.
  const bf16 *qkv = nullptr;
  // [sequences, heads, headDim, headDim] fp32, row-major per head: updated
  // in place.
  float *state = nullptr;
  const float *decay = nullptr;       // [heads] λ_h
  const int32_t *sequences = nullptr; // [rows]: the state each row updates
  const int32_t *positions = nullptr; // [rows]
  bf16 *out = nullptr;                // [rows, heads·headDim]
  int64_t rows = 0;
  int heads = 0;
  int headDim = 0;
};

// headDim ∈ {16, 32, 64, 128}, heads ≥ 1.
bool lightningAttentionSupports(int heads, int headDim);
// Rows of one sequence must be consecutive and in position order (a
// sequence's later rows in a later call continue its state).
// cudaErrorInvalidValue for unsupported shapes; cudaSuccess without a launch
// when rows is 0.
cudaError_t lightningAttention(const LightningAttentionArgs &args,
                               cudaStream_t stream);

} // namespace moe::cuda::kernels
