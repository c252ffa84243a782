#include "runtime/engine/KvPages.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace moe {

KvPages::KvPages(int32_t slots, int32_t pageTokens, int64_t pages,
                 int32_t wholeSlots)
    : pageTokens_(pageTokens), wholeSlots_(wholeSlots), pages_(pages),
      tables_(size_t(slots)), free_(size_t(pages)) {
  std::iota(free_.rbegin(), free_.rend(), 0);
}

Result<KvPages> KvPages::create(int32_t slots, int32_t maxContext,
                                int32_t pageTokens, int64_t pages,
                                int32_t wholeSlots) {
  if (slots <= 0 || maxContext <= 0 || pageTokens <= 0)
    return makeError("KV pages: {} slots of {} tokens in pages of {} tokens: "
                     "all must be positive",
                     slots, maxContext, pageTokens);
  if (wholeSlots < 0 || wholeSlots > slots)
    return makeError("KV pages: {} of {} slots outside the pool", wholeSlots,
                     slots);
  int64_t whole = (int64_t(maxContext) + pageTokens - 1) / pageTokens;
  if (wholeSlots < slots && pages < whole)
    return makeError("a KV pool of {} tokens cannot hold one sequence of the "
                     "job's {}-token context",
                     pages * pageTokens, maxContext);
  if (pages > std::numeric_limits<int32_t>::max())
    return makeError("a KV pool of {} pages: at most {}", pages,
                     std::numeric_limits<int32_t>::max());
  return KvPages(slots, pageTokens, pages, wholeSlots);
}

KvPages KvPages::wholeContext(int32_t slots, int32_t maxContext,
                              int32_t pageTokens) {
  int64_t perSlot = (int64_t(maxContext) + pageTokens - 1) / pageTokens;
  return KvPages(slots, pageTokens, perSlot * slots, 0);
}

int64_t KvPages::pagesToGrow(int32_t slot, int64_t tokens) const {
  if (!paged(slot))
    return 0;
  return std::max<int64_t>(0, pagesFor(tokens) -
                                  int64_t(tables_[size_t(slot)].size()));
}

Status KvPages::grow(int32_t slot, int64_t tokens) {
  int64_t lacking = pagesToGrow(slot, tokens);
  if (lacking > freePages())
    return makeError("the KV pool is short: slot {} needs {} more pages of {} "
                     "tokens, {} of {} are free",
                     slot, lacking, pageTokens_, freePages(), pages_);
  std::vector<int32_t> &table = tables_[size_t(slot)];
  for (int64_t p = 0; p < lacking; ++p) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return Status::success();
}

void KvPages::release(int32_t slot) {
  if (!paged(slot))
    return;
  std::vector<int32_t> &table = tables_[size_t(slot)];
  // Back in reverse so the slot's first page is taken first again.
  free_.insert(free_.end(), table.rbegin(), table.rend());
  table.clear();
}

} // namespace moe
