// One forward's batch: rows of tokens from many sequences, and the contract
// every backend holds it to, checked by one function for all of them.
#pragma once

#include "runtime/engine/KvPages.h"
#include "runtime/support/Result.h"

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

/// One row of a step's batch: which sequence slot it belongs to and its
/// position in that sequence (0-based).
struct TokenRow {
  int32_t slot = 0;
  int32_t position = 0;
};

/// Rows of one slot are consecutive and in position order, continuing the
/// slot's cache; slots come in increasing order; logit rows increase.
struct StepBatch {
  std::vector<int32_t> tokenIds; // one per row
  std::vector<TokenRow> rows;
  std::vector<int32_t> logitRows; // rows whose logits the engine needs
};

/// Whether a forward prefills: some slot has more than one row.
inline bool isPrefill(const std::vector<TokenRow> &rows) {
  for (size_t r = 1; r < rows.size(); ++r)
    if (rows[r].slot == rows[r - 1].slot)
      return true;
  return false;
}

/// The consecutive rows of one slot in a batch.
struct SlotRun {
  int32_t slot;
  int64_t firstRow, count;
};

/// Checks `batch` against StepBatch's contract for a backend whose slots
/// hold `slotLengths` tokens each, of at most `maxContext`, with token ids
/// in [0, vocab). Returns the batch's runs, in row order.
Result<std::vector<SlotRun>>
validateStepBatch(const StepBatch &batch, std::span<const int32_t> slotLengths,
                  int32_t maxContext, int64_t vocab);

/// Takes the KV pages that `batch`'s runs (validateStepBatch's) extend their
/// slots into; fails, taking none, when the pool has too few.
Status holdKvRows(const StepBatch &batch, std::span<const SlotRun> runs,
                  KvPages &pages);

} // namespace moe
