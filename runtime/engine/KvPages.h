// A KV cache held in pages of a fixed number of tokens: one pool shared by
// every slot, each slot's positions mapped to the pages it took as it grew.
// The KV a job holds is then the sum of its live sequences' contexts, not
// B times the longest context, and the engine admits and pauses sequences
// by the pages left (Engine.h). Backends store rows where row() says; the
// engine reads the accounting. A backend may keep its first slots' whole
// contexts outside the pool (the CUDA backend's GPU slots): those never
// take or lack a page.
#pragma once

#include "runtime/support/Result.h"

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

class KvPages {
public:
  KvPages() = default;
  /// A pool of `pages` pages of `pageTokens` tokens for `slots` slots of at
  /// most `maxContext` tokens, the first `wholeSlots` of which hold their
  /// whole context outside it. Fails unless the pool holds one whole
  /// sequence (so a sequence alone can always finish) where a slot uses it.
  static Result<KvPages> create(int32_t slots, int32_t maxContext,
                                int32_t pageTokens, int64_t pages,
                                int32_t wholeSlots = 0);
  /// The pool that holds every slot's whole context: it is never short.
  static KvPages wholeContext(int32_t slots, int32_t maxContext,
                              int32_t pageTokens);

  int32_t slots() const { return int32_t(tables_.size()); }
  /// Whether `slot` takes its rows from the pool.
  bool paged(int32_t slot) const { return slot >= wholeSlots_; }
  int32_t pageTokens() const { return pageTokens_; }
  int64_t pages() const { return pages_; }
  int64_t freePages() const { return int64_t(free_.size()); }
  /// Pages that hold `tokens` tokens.
  int64_t pagesFor(int64_t tokens) const {
    return (tokens + pageTokens_ - 1) / pageTokens_;
  }
  /// Pages `slot` lacks to hold `tokens` tokens (0 when it holds them or
  /// is not paged).
  int64_t pagesToGrow(int32_t slot, int64_t tokens) const;
  /// Takes the pages `slot` lacks to hold `tokens` tokens; fails, taking
  /// none, when the pool has too few.
  Status grow(int32_t slot, int64_t tokens);
  /// Gives back every page of `slot`.
  void release(int32_t slot);

  /// The row holding `slot`'s token `position` in the pool's [page][token]
  /// rows; the slot is paged and holds the position.
  int64_t row(int32_t slot, int64_t position) const {
    return int64_t(tables_[size_t(slot)][size_t(position / pageTokens_)]) *
               pageTokens_ +
           position % pageTokens_;
  }
  /// `slot`'s pages, in position order.
  std::span<const int32_t> table(int32_t slot) const {
    return tables_[size_t(slot)];
  }

private:
  KvPages(int32_t slots, int32_t pageTokens, int64_t pages, int32_t wholeSlots);

  int32_t pageTokens_ = 1;
  int32_t wholeSlots_ = 0;
  int64_t pages_ = 0;
  std::vector<std::vector<int32_t>> tables_;
  // Free pages, taken from the back: lowest first, so a job that never
  // runs short fills the pool from its start.
  std::vector<int32_t> free_;
};

} // namespace moe
