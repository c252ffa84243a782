// Device kernels of the CUDA backend's non-GEMM ops, behind plain launchers
// that return cudaError_t (the launch's own error, checked right after it).
// nvcc compiles this header, so it includes no fmt (Result.h): host code turns
// the codes into moe::Status with moe::cuda::checkCuda.
//
// Every pointer is device memory, row-major, rows = tokens. Math is fp32 on
// bf16 inputs, rounded once on output; each op computes the same function as
// its moe::cpu reference (runtime/backends/cpu/Kernels.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda::kernels {

using bf16 = __nv_bfloat16;

//===----------------------------------------------------------------------===//
// RMSNorm
//===----------------------------------------------------------------------===//

// y = w ⊙ x / sqrt(mean(x²) + eps) per row of `width`. weightAfterCast picks
// the rounding of HF Llama-style norms (x·inv rounded to bf16, then times w);
// false rounds once after the weight (GPT-OSS).
struct RmsNormArgs {
  const bf16 *x = nullptr;      // [rows, width]
  const bf16 *weight = nullptr; // [width]
  bf16 *out = nullptr;          // [rows, width]; may alias x (plain form only)
  // Pre-norm residual stream, or null for the plain form. When set, it is
  // updated in place to bf16(residual + x) (HF's bf16 add) and the norm is
  // taken of that new residual.
  bf16 *residual = nullptr;
  int64_t rows = 0;
  int64_t width = 0;
  float eps = 1e-6f;
  bool weightAfterCast = true;
};
cudaError_t rmsNorm(const RmsNormArgs &args, cudaStream_t stream);

// y = w ⊙ x / sqrt(mean(x²) + eps) per row of `width`, from the fp32
// residual stream: out = bf16(y) (one rounding, after the weight) and, when
// outF32 is set, y itself in fp32 (for the router).
cudaError_t rmsNormF32(const float *x, const bf16 *weight, int64_t rows,
                       int64_t width, float eps, bf16 *out, float *outF32,
                       cudaStream_t stream);

//===----------------------------------------------------------------------===//
// RoPE and per-head RMSNorm (Qwen3 QK norm)
//===----------------------------------------------------------------------===//

enum class RopeStyle : int { neox = 0, interleaved = 1 }; // plan::RopeStyle

// In place on q [rows, heads, headDim] and k [rows, kvHeads, headDim] (k may
// be null with kvHeads 0): optional per-head RMSNorm (qNorm/kNorm [headDim],
// null to skip; fp32 w·(x·inv)), then rotation of the first rotaryDim dims by
// the row's position; the other dims pass through. positions == null skips
// the rotation (the norm alone). Every position must be < the table's
// maxPositions.
struct RopeArgs {
  bf16 *q = nullptr;
  bf16 *k = nullptr;
  int64_t rows = 0;
  int heads = 0;
  int kvHeads = 0;
  int headDim = 0;
  int rotaryDim = 0; // even, ≤ headDim
  RopeStyle style = RopeStyle::neox;
  const int32_t *positions = nullptr; // [rows]
  const float *cos = nullptr;         // [maxPositions, rotaryDim / 2]
  const float *sin = nullptr;
  const bf16 *qNorm = nullptr;
  const bf16 *kNorm = nullptr;
  float normEps = 1e-6f;
};
cudaError_t applyRope(const RopeArgs &args, cudaStream_t stream);

// Per-head RMSNorm in place on x [vectors, headDim] (weight [headDim]).
cudaError_t headRmsNorm(bf16 *x, const bf16 *weight, int64_t vectors,
                        int headDim, float eps, cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Router
//===----------------------------------------------------------------------===//

// Router logits all in fp32: out[r, e] = x[r]·w[e] (+ bias[e]) for x [rows,
// hidden] and w [experts, hidden]. Expert choices hinge on near-ties that
// bf16 (or TF32) rounding of x, w or the scores would flip.
// cudaErrorInvalidValue for hidden ≤ 0 or negative sizes.
cudaError_t routerLogits(const float *x, const float *w, const float *bias,
                         int64_t rows, int64_t hidden, int64_t experts,
                         float *out, cudaStream_t stream);

enum class RouterScoring : int { softmax = 0, sigmoid = 1 }; // plan's values
enum class RouterSelection : int {
  greedy = 0,
  groupLimitedGreedy = 1, // group score = max (DeepSeek-V2)
  noauxTc = 2,            // group score = sum of top-2 (DeepSeek-V3)
};

// cpu::routeToken per row, one warp per row. GPT-OSS (bias already added into
// the logits, softmax over the k selected) is softmax + greedy + normalize:
// renormalised top-k probabilities are that softmax. Indices come out in
// descending selection score, ties to the lower index.
// Limits: experts ≤ 256, 1 ≤ topK ≤ min(8, experts), groups ≤ 8 dividing
// experts, 1 ≤ keptGroups ≤ groups.
struct RouterArgs {
  const float *logits = nullptr;         // [rows, experts]
  const float *correctionBias = nullptr; // [experts] or null (noaux_tc)
  float *weights = nullptr;              // [rows, topK]
  int32_t *indices = nullptr;            // [rows, topK]
  int64_t rows = 0;
  int experts = 0;
  int topK = 0;
  RouterScoring scoring = RouterScoring::softmax;
  RouterSelection selection = RouterSelection::greedy;
  int groups = 1;
  int keptGroups = 1;
  bool normalize = false; // w /= Σw + 1e-20
  float scaling = 1.0f;
};
cudaError_t routeTopK(const RouterArgs &args, cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Attention over KV caches
//===----------------------------------------------------------------------===//

// Causal softmax attention for query rows of any sequences and positions
// (one kernel for prefill and decode): row r, head h attends to positions
// [first, positions[r]] of its sequence, first = positions[r] − window + 1
// when window > 0 (clamped at 0), else 0; a negative position attends to
// nothing (zeros). GQA: head h reads KV head h / (heads / kvHeads), HF's
// repeat_kv order. Scores q·k·scale, softmax and accumulation in fp32; a sink
// (sinks[h], fp32, optional) joins the denominator as a logit with no value.
// Supported: headDim ∈ {16, 32, 64, 128, 256}, heads / kvHeads ≤ 16 (≤ 8 at
// headDim 256): attentionSupports(); k, v 16-byte aligned, seqStride and
// rowBytes multiples of 16.
//
// The caches hold a row per token (runtime/model/KvFormat.h): bf16, the
// kvHeads·headDim elements; fp8, their E4M3 codes, then from byte
// kvHeads·headDim one fp32 scale per head. fp8 is dequantized on the fly:
// q·k and p·v run on the codes, each token's K scale multiplies its score
// and its V scale its weight.
struct AttentionArgs {
  const bf16 *q = nullptr; // [rows, heads·headDim]
  // Sequence s's K (V) rows start at k + s·seqStride bytes: a row of
  // rowBytes per position.
  const void *k = nullptr;
  const void *v = nullptr;
  bool fp8 = false;
  int64_t rowBytes = 0;
  bf16 *out = nullptr;                // [rows, heads·headDim]
  const int32_t *sequences = nullptr; // [rows]; null: row r reads sequence r
  const int32_t *positions = nullptr; // [rows]
  const float *sinks = nullptr;       // [heads] or null
  int64_t rows = 0;
  int heads = 0;
  int kvHeads = 0;
  int headDim = 0;
  int64_t seqStride = 0; // bytes
  int64_t window = 0;    // 0 = full
  // ≥ every row's attended length (positions[r] − first + 1): it sizes the
  // split of long contexts, and positions beyond it would be left out.
  int maxSpan = 0;
  float scale = 1.0f;
  float *workspace = nullptr; // attentionWorkspaceBytes() bytes
  // Rows of one sequence that sit next to each other: a prompt's rows in
  // prefill, 1 in decode. The tensor-core kernel then reads each K/V tile
  // once for up to 64 / (heads / kvHeads) of them. Results do not depend
  // on it.
  int64_t rowsPerSequence = 1;
  // The CUDA-core kernel even where the tensor-core one applies (tests and
  // timings compare the two).
  bool generalKernel = false;
};
// head_dim 64 or 128 with up to 64 heads per kv head (tensor cores); or
// head_dim 16..256, a power of 2, with up to 16 heads per kv head (8 at
// 256).
bool attentionSupports(int heads, int kvHeads, int headDim);
// Device workspace for partial results when few rows have long contexts
// (split over several blocks); 0 otherwise. smCount: the device's
// multiprocessors, the same value attention() is given.
size_t attentionWorkspaceBytes(int64_t rows, int heads, int kvHeads,
                               int headDim, int maxSpan, int smCount);
cudaError_t attention(const AttentionArgs &args, int smCount,
                      cudaStream_t stream);

// Writes each row's K and V (rows of rowBytes, already in the cache's
// format) into a layer's caches [slot·maxContext + position] at
// cacheRows[r]; v may be null (MLA's latent cache has no V). rowBytes a
// multiple of 16, every pointer 16-byte aligned.
cudaError_t appendKv(const void *k, const void *v, const int32_t *cacheRows,
                     int64_t rows, int64_t rowBytes, void *kCache, void *vCache,
                     cudaStream_t stream);

// Copies `bytes` from `from` to `to` with the SMs' loads and stores rather
// than a copy engine: either side may be pinned host memory (mapped, as
// cudaHostAlloc's is). A small copy from the host then does not queue
// behind the loads on the copy engine that every host-to-device copy of
// the device shares.
cudaError_t copyOnSms(void *to, const void *from, size_t bytes,
                      cudaStream_t stream);

// x [rows, vectors·width] as fp8 cache rows (runtime/model/KvFormat.h) of
// rowBytes, scales from byte scalesOffset: per vector, amax / 448 and the
// codes of x · (448 / amax), rounded to nearest even and saturated — what
// model::encodeFp8Row computes. width ≤ 1024.
cudaError_t encodeFp8Rows(const bf16 *x, int64_t rows, int vectors, int width,
                          int64_t scalesOffset, int64_t rowBytes, void *out,
                          cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Embedding, the fp32 residual stream, gates and conversions
//===----------------------------------------------------------------------===//

// out[r] = table[ids[r]] for rows of `hidden`, widened to fp32.
cudaError_t embedRows(const bf16 *table, const int32_t *ids, int64_t rows,
                      int64_t hidden, float *out, cudaStream_t stream);

// out = skipScale·skip + updateScale·update over n values: the residual
// stream stays fp32, so rounding does not accumulate across layers.
cudaError_t scaledAdd(const float *skip, const float *update, float skipScale,
                      float updateScale, int64_t n, float *out,
                      cudaStream_t stream);

// x[r, i] *= σ(gate[r, i]) with gate [rows, width] (lightning attention's
// output gate), or x[r, :] *= σ(gate[r]) with gateWidth 1 (Qwen2's
// shared-expert gate).
cudaError_t sigmoidGate(const bf16 *gate, int64_t gateWidth, int64_t rows,
                        int64_t width, bf16 *x, cudaStream_t stream);

cudaError_t bf16ToFloat(const bf16 *in, int64_t n, float *out,
                        cudaStream_t stream);
cudaError_t floatToBf16(const float *in, int64_t n, bf16 *out,
                        cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Gated activations (expert and dense FFN middles)
//===----------------------------------------------------------------------===//

// out[r, i] = silu(gu[r, i]) · gu[r, width + i]: the fused [rows, 2·width]
// gate|up GEMM output, gate first.
cudaError_t siluMul(const bf16 *gateUp, bf16 *out, int64_t rows, int64_t width,
                    cudaStream_t stream);

// GPT-OSS: gate = gu[r, 2i], up = gu[r, 2i + 1] (interleaved columns);
// g = min(gate, limit), u = clamp(up, −limit, limit),
// out[r, i] = (u + 1) · g · σ(alpha · g).
cudaError_t swigluClamped(const bf16 *gateUp, bf16 *out, int64_t rows,
                          int64_t width, float limit, float alpha,
                          cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Expert dispatch for module-based batching
//===----------------------------------------------------------------------===//

// A pair p = row·topK + j is one (token, choice). From indices [rows, topK]
// (each in [0, experts)), builds the pairs grouped by expert:
//   counts [experts], offsets [experts + 1] (exclusive prefix sum),
//   slotToPair [rows·topK]: expert e's pairs at [offsets[e], offsets[e+1]),
//     in ascending pair order (deterministic, as the CPU backend's lists),
//   pairToSlot [rows·topK]: its inverse.
// experts ≤ 1024.
struct DispatchArgs {
  const int32_t *indices = nullptr;
  int64_t rows = 0;
  int topK = 0;
  int experts = 0;
  int32_t *counts = nullptr;
  int32_t *offsets = nullptr;
  int32_t *slotToPair = nullptr;
  int32_t *pairToSlot = nullptr;
};
cudaError_t buildDispatch(const DispatchArgs &args, cudaStream_t stream);

// out[s] = x[slotToPair[s] / topK] for s < rows·topK: the expert-ordered
// inputs of the grouped expert GEMMs. x [rows, width], out [rows·topK, width].
cudaError_t gatherRows(const bf16 *x, const int32_t *slotToPair, int64_t pairs,
                       int topK, int64_t width, bf16 *out, cudaStream_t stream);

// out[r] = Σ_j weights[r, j] · expertOut[pairToSlot[r·topK + j]] in fp32,
// the k terms added in ascending expert index (the CPU backend's order, HF's
// expert loop), so the sum is bit-reproducible. expertOut [rows·topK, width]
// in slot order; out [rows, width] is overwritten.
struct CombineArgs {
  const bf16 *expertOut = nullptr;
  const float *weights = nullptr;   // [rows, topK]
  const int32_t *indices = nullptr; // [rows, topK]
  const int32_t *pairToSlot = nullptr;
  int64_t rows = 0;
  int topK = 0; // ≤ 8
  int64_t width = 0;
  float *out = nullptr;
};
cudaError_t combineExperts(const CombineArgs &args, cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Greedy sampling
//===----------------------------------------------------------------------===//

// out[r] = the first index of the maximum of logits[r, :], or
// kArgmaxNotFinite where the row holds NaN or Inf (the engine's kNotFinite).
inline constexpr int32_t kArgmaxNotFinite = -1;
cudaError_t argmaxRows(const float *logits, int64_t rows, int64_t vocab,
                       int32_t *out, cudaStream_t stream);
cudaError_t argmaxRows(const bf16 *logits, int64_t rows, int64_t vocab,
                       int32_t *out, cudaStream_t stream);
// The same a slice of the vocabulary at a time: logits [rows, width] are
// columns [offset, offset + width) of each row. `best` and `out` carry each
// row's maximum so far and its index from slice to slice in ascending
// order, the first slice (offset 0) starting them; after the last, `out`
// holds what argmaxRows gives for the whole rows.
cudaError_t argmaxRowsOfSlice(const bf16 *logits, int64_t rows, int64_t width,
                              int64_t offset, float *best, int32_t *out,
                              cudaStream_t stream);

} // namespace moe::cuda::kernels
