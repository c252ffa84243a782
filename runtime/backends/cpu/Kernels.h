// The fp32 kernels of the CPU backend: the reference semantics of the
// model's ops, matching HuggingFace transformers' eager fp32 code. Every
// output element is computed by one fixed sequence of operations, whatever
// the thread count, so results are bit-identical across pool sizes.
#pragma once

#include "runtime/model/ResolvedModel.h"
#include "runtime/model/Rope.h"
#include "runtime/schemas/plan_generated.h"
#include "runtime/support/ThreadPool.h"

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace moe::cpu {

/// y[r, o] = Σ_i x[r, i] · w[o, i] (+ bias[o]): a Linear with its weight
/// stored [out, in]. `bias` may be null.
void linear(ThreadPool &pool, const float *x, int64_t rows, int64_t in,
            const float *w, int64_t out, const float *bias, float *y);

/// The fixed-order dot product every kernel uses.
float dot(const float *a, const float *b, int64_t n);

/// y = w ⊙ x / sqrt(mean(x²) + eps) over n values (y may alias x).
void rmsNorm(const float *x, const float *w, int64_t n, double eps, float *y);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }

//===----------------------------------------------------------------------===//
// Attention of one query head over cached tokens
//===----------------------------------------------------------------------===//

/// Softmax over scores[0, n) in place; a sink logit (optional) joins the
/// denominator without a value.
void softmaxWithSink(float *scores, int64_t n, const float *sink);

/// One sequence's cached rows in a cache of pages (KvPages): the row of
/// position p starts at rows + (pages[p / pageTokens] · pageTokens +
/// p mod pageTokens) · stride. `rows` may point into a row (a head's
/// vector).
struct CachedRows {
  const float *rows;
  int64_t stride;
  std::span<const int32_t> pages;
  int64_t pageTokens;

  const float *at(int64_t position) const {
    return rows + (int64_t(pages[size_t(position / pageTokens)]) * pageTokens +
                   position % pageTokens) *
                      stride;
  }
};

/// out[0, headDim) = Σ_j softmax_j(q·k_j·scale) · v_j over the n cached
/// tokens from position `first`; `sink` may be null. `scores` is n floats
/// of scratch.
void attendHead(const float *q, const CachedRows &keys,
                const CachedRows &values, int64_t first, int64_t n,
                int64_t headDim, float scale, const float *sink, float *scores,
                float *out);

/// MLA's absorbed form for one head over the latent rows [c (latentDim) |
/// k_pe (ropeDim)] of positions [0, n): mixed[0, latentDim) =
/// Σ_j softmax_j((q̃·c_j + q_pe·k_pe_j) · scale) · c_j. `scores` is n floats
/// of scratch.
void attendLatentHead(const float *qLatent, const float *qRope,
                      const CachedRows &rows, int64_t n, int64_t latentDim,
                      int64_t ropeDim, float scale, float *scores,
                      float *mixed);

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

/// cos/sin per position (times the attention factor), applied to the first
/// rotaryDim values of a head vector; the rest pass through.
class RopeTable {
public:
  RopeTable() = default;
  RopeTable(const model::RopeParams &rope, int64_t maxPositions);

  int64_t rotaryDim() const { return rope_.rotaryDim; }
  void apply(float *x, int64_t position) const;

private:
  model::RopeParams rope_;
  int64_t half_ = 0;
  std::vector<float> cos_, sin_; // [position][half]
};

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

/// Picks top_k experts of one token from its router logits (bias already
/// added). `correctionBias` (noaux_tc; may be null) only steers selection.
/// Indices come out in descending selection score.
void routeToken(const model::RouterSpec &router, const float *logits,
                const float *correctionBias, float *weights, int32_t *indices);

//===----------------------------------------------------------------------===//
// Lightning attention (one head)
//===----------------------------------------------------------------------===//

/// One head over n consecutive tokens continuing `state` [d][d] (d_k × d_v),
/// which is updated. q/k/v rows are `stride` apart; out rows `outStride`.
/// `decay` is λ_h. The recurrence: S = e^{−λ}S + kᵀv, o = qS.
void lightningRecurrent(const float *q, const float *k, const float *v,
                        int64_t stride, int64_t n, int64_t d, float decay,
                        float *state, float *out, int64_t outStride);
/// The same by Lightning Attention-2 blocks of `blockSize` (HF's prefill):
/// intra-block masked products plus the decayed incoming state.
void lightningBlocks(const float *q, const float *k, const float *v,
                     int64_t stride, int64_t n, int64_t d, float decay,
                     int64_t blockSize, float *state, float *out,
                     int64_t outStride);

} // namespace moe::cpu
