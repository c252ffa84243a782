// Decode attention on the host's cores over KV caches in host memory, laid
// out as the CUDA backend keeps its host slots (backend/KvCaches.h: per
// layer, rows in pages of a pool shared by the slots, in the plan's format,
// runtime/model/KvFormat.h): one query token per row, attending to the row's
// cached tokens, its own (already appended) the last. The semantics are the GPU
// kernels' (kernels::attention, kernels::mlaAttention) and the CPU
// backend's reference (cpu::attendHead, cpu::attendLatentHead): scores
// q·k·scale, softmax with an optional sink logit in the denominator, a
// window of the last `window` tokens, GQA's query head h reading KV head
// h / (heads / kvHeads); scores, softmax and sums in fp32. A layer that
// shares an earlier layer's KV passes that layer's cache.
//
// The rows' contexts are cut into chunks of at least 256 tokens, enough of
// them for every thread of the pool; each chunk reads its K/V rows once, in
// tiles of at most 32 tokens (cut where pages end) converted to fp32 in
// registers (MLA's fp8 latent, scaled per group, widened first; bf16 keys
// of groups of 16 heads scored by AMX tiles where the CPU has them), with an
// online softmax over the tiles. A second pass merges each row's chunks. Vector
// loops: AVX-512 or AVX2 (AttentionTiles.h), chosen when the object is made.
#pragma once

#include "runtime/host/AttentionTiles.h"
#include "runtime/host/CpuFeatures.h"
#include "runtime/model/KvFormat.h"
#include "runtime/support/Result.h"
#include "runtime/support/ThreadPool.h"

#include <cstdint>
#include <vector>

namespace moe::host {

/// One layer's cache in host memory, in pages of `pageTokens` rows of
/// rowBytes: position p of slot s is row pages[s·pagesPerSlot + p /
/// pageTokens]·pageTokens + p % pageTokens of k (and v). The table lists
/// each slot's pages in position order; entries past what a slot holds are
/// not read.
struct HostKvCache {
  const uint8_t *k = nullptr;
  const uint8_t *v = nullptr; // null for MLA's latent cache
  model::KvDtype dtype = model::KvDtype::bf16;
  int64_t rowBytes = 0;
  int64_t pageTokens = 0;
  const int32_t *pages = nullptr; // [slots][pagesPerSlot]
  int64_t pagesPerSlot = 0;

  /// The row of `slot`'s `position` in `rows` (k or v).
  const uint8_t *row(const uint8_t *rows, int64_t slot,
                     int64_t position) const {
    int64_t page = pages[slot * pagesPerSlot + position / pageTokens];
    return rows + (page * pageTokens + position % pageTokens) * rowBytes;
  }
};

/// The table of `slots` slots that hold `pagesPerSlot` consecutive pages
/// each (slot s the pages from s·pagesPerSlot): the pages of a [slot]
/// [position] array.
std::vector<int32_t> consecutivePages(int64_t slots, int64_t pagesPerSlot);

/// Row r's query attends to positions [0, lengths[r]) of slot slots[r] (the
/// last of them within the window); a length of 0 gives zeros.
struct DecodeRows {
  int64_t count = 0;
  const int32_t *slots = nullptr;
  const int32_t *lengths = nullptr;
};

/// Where the output rows go: fp32, or bf16 as the GPU's output projection
/// reads them. Exactly one is set.
struct AttentionOutput {
  float *f32 = nullptr;
  uint16_t *bf16 = nullptr;
};

struct SoftmaxAttentionArgs {
  const uint16_t *q = nullptr; // bf16 [rows, heads·headDim], after RoPE
  HostKvCache cache;
  DecodeRows rows;
  int64_t heads = 0, kvHeads = 0, headDim = 0; // headDim a multiple of 8
  const float *sinks = nullptr;                // [heads] or null
  int64_t window = 0;                          // 0 = the whole context
  float scale = 1.0f;
  AttentionOutput out; // [rows, heads·headDim]
};

/// DeepSeek's MLA in its absorbed form (kernels/MlaAttention.h): cache rows
/// [latent (latentDim) | k_pe (ropeDim)], fp8 ones scaled per group of
/// ropeDim elements; score_j = (q̃·c_j + q_pe·k_pe_j)·scale, out = Σ p_j c_j.
struct LatentAttentionArgs {
  const uint16_t *qLatent = nullptr; // bf16 [rows, heads, latentDim]: q̃
  const uint16_t *qRope = nullptr;   // bf16 [rows, heads, ropeDim]: q_pe
  HostKvCache cache;                 // k only
  DecodeRows rows;
  int64_t heads = 0, latentDim = 0, ropeDim = 0; // dims multiples of 8
  float scale = 1.0f;
  AttentionOutput out; // [rows, heads, latentDim]
};

/// One run at a time: runs share the pool and the partial results' buffer.
class DecodeAttention {
public:
  /// The kernels of `isa`; an error if this CPU cannot run them.
  static Result<DecodeAttention> create(ThreadPool &pool, VectorIsa isa);
  /// The kernels of the widest instruction set this CPU runs.
  static Result<DecodeAttention> create(ThreadPool &pool);

  VectorIsa isa() const { return isa_; }

  /// Errors name an argument that does not fit (shapes, the cache's row
  /// bytes, a length beyond the slot or its pages, no or two outputs).
  Status run(const SoftmaxAttentionArgs &args);
  Status run(const LatentAttentionArgs &args);

private:
  // Groups of query heads, each sharing K (and V) vectors: what both kinds
  // reduce to.
  struct Problem;

  DecodeAttention(ThreadPool &pool, VectorIsa isa, const TileKernels &tiles)
      : pool_(&pool), isa_(isa), tiles_(&tiles) {}
  void attend(const Problem &problem);

  ThreadPool *pool_;
  VectorIsa isa_;
  const TileKernels *tiles_;
  std::vector<float> partials_; // per chunk: max, sum, acc of every head
};

} // namespace moe::host
