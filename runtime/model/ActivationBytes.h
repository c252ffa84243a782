// Step memory per batch row: what an op's own buffers take for one row
// (its projections, scores and scratch; not the values it reads or makes),
// one function per op family, and over a resolved model the most any op
// holds per row with the values alive across it. The compiler prices each
// module's row by the same function (the module cost interface), so the
// planner's activation budget and the CUDA backend's chunking count the same
// buffers.
#pragma once

#include "runtime/model/KvFormat.h"

#include <cstdint>

namespace moe::model {

struct ResolvedModel;
struct ResolvedOp;

inline constexpr int64_t kActivationBf16Bytes = 2;
// A value alive across an op is held in both forms: bf16 for GEMM inputs,
// fp32 for the residual stream.
inline constexpr int64_t kBothFormsBytes = 6;

// q and o per head, the new K/V rows (and their fp8 encoding), the output.
constexpr int64_t attentionRowBytes(int64_t hidden, int64_t heads,
                                    int64_t kvHeads, int64_t headDim,
                                    KvDtype kv) {
  int64_t encoded =
      kv == KvDtype::fp8 ? 2 * kvRowBytes(kv, kvHeads, headDim) : 0;
  return (2 * heads * headDim + 2 * kvHeads * headDim + hidden) *
             kActivationBf16Bytes +
         encoded;
}

// Absorbed MLA: per head the query, its roped part, the absorbed query,
// the latent output and the value; the low-rank query, the new latent row
// (and its fp8 encoding) and its roped part, the output.
constexpr int64_t latentAttentionRowBytes(int64_t hidden, int64_t heads,
                                          int64_t qLoraRank, int64_t kvLoraRank,
                                          int64_t nope, int64_t ropeDim,
                                          int64_t vDim, KvDtype kv) {
  int64_t encoded =
      kv == KvDtype::fp8 ? latentRowBytes(kv, kvLoraRank, ropeDim) : 0;
  return (heads * (nope + 2 * ropeDim + 2 * kvLoraRank + vDim) + qLoraRank +
          3 * (kvLoraRank + ropeDim) + hidden) *
             kActivationBf16Bytes +
         encoded;
}

// q|k|v, the mixed heads, the gate, the output.
constexpr int64_t lightningRowBytes(int64_t hidden, int64_t heads,
                                    int64_t headDim) {
  return (5 * heads * headDim + hidden) * kActivationBf16Bytes;
}

// Logits in both forms; weights and indices of the picks.
constexpr int64_t routerRowBytes(int64_t experts, int64_t topK) {
  return experts * (kActivationBf16Bytes + 4) + topK * 8;
}

// Per pick: its gathered input, gate|up, the activations and its output,
// with its route; the combined output in both forms.
constexpr int64_t routedExpertsRowBytes(int64_t hidden, int64_t width,
                                        int64_t topK) {
  return topK * ((2 * hidden + 3 * width) * kActivationBf16Bytes + 8) +
         hidden * (4 + kActivationBf16Bytes);
}

// gate|up, the activations, the output and its gate.
constexpr int64_t mlpRowBytes(int64_t hidden, int64_t width) {
  return (3 * width + hidden + 1) * kActivationBf16Bytes;
}

// Norms, residual adds, the embedding and the LM head's gathered row: one
// bf16 row of their width.
constexpr int64_t rowOfWidthBytes(int64_t width) {
  return width * kActivationBf16Bytes;
}

int64_t opRowBytes(const ResolvedOp &op, KvDtype kv);

// The most step memory one row needs at any op of `model`: the values
// alive across the op and its results in both forms, and its own buffers.
// The LM head makes its logits a block of rows at a time, not per row.
int64_t stepRowBytes(const ResolvedModel &model);

} // namespace moe::model
