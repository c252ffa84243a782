#include "runtime/engine/StepBatch.h"

namespace moe {

Result<std::vector<SlotRun>>
validateStepBatch(const StepBatch &batch, std::span<const int32_t> slotLengths,
                  int32_t maxContext, int64_t vocab) {
  int64_t rows = static_cast<int64_t>(batch.rows.size());
  int64_t slots = static_cast<int64_t>(slotLengths.size());
  if (static_cast<int64_t>(batch.tokenIds.size()) != rows)
    return makeError("{} token ids for {} rows", batch.tokenIds.size(), rows);
  std::vector<SlotRun> runs;
  for (int64_t r = 0; r < rows; ++r) {
    const TokenRow &row = batch.rows[r];
    if (row.slot < 0 || row.slot >= slots)
      return makeError("row {}: slot {} is not in 0..{}", r, row.slot,
                       slots - 1);
    if (runs.empty() || runs.back().slot != row.slot) {
      // Increasing slots also keep a slot from coming back in a second run.
      if (!runs.empty() && row.slot < runs.back().slot)
        return makeError("row {}: slot {} follows slot {}; runs must be in "
                         "slot order",
                         r, row.slot, runs.back().slot);
      if (row.position != slotLengths[row.slot])
        return makeError("row {}: slot {} continues at position {}, not {}", r,
                         row.slot, slotLengths[row.slot], row.position);
      runs.push_back({row.slot, r, 1});
    } else {
      if (row.position != batch.rows[r - 1].position + 1)
        return makeError("row {}: positions of slot {} are not consecutive", r,
                         row.slot);
      ++runs.back().count;
    }
    if (row.position >= maxContext)
      return makeError("row {}: position {} exceeds the context of {}", r,
                       row.position, maxContext);
    if (batch.tokenIds[r] < 0 || batch.tokenIds[r] >= vocab)
      return makeError("row {}: token id {} is not in 0..{}", r,
                       batch.tokenIds[r], vocab - 1);
  }
  for (size_t i = 0; i < batch.logitRows.size(); ++i) {
    int32_t row = batch.logitRows[i];
    if (row < 0 || row >= rows)
      return makeError("logit row {} is not in 0..{}", row, rows - 1);
    if (i > 0 && row <= batch.logitRows[i - 1])
      return makeError("logit rows must increase (row {} follows {})", row,
                       batch.logitRows[i - 1]);
  }
  return runs;
}

Status holdKvRows(const StepBatch &batch, std::span<const SlotRun> runs,
                  KvPages &pages) {
  auto tokensAfter = [&](const SlotRun &run) {
    return int64_t(batch.rows[size_t(run.firstRow + run.count - 1)].position) +
           1;
  };
  int64_t lacking = 0;
  for (const SlotRun &run : runs)
    lacking += pages.pagesToGrow(run.slot, tokensAfter(run));
  if (lacking > pages.freePages())
    return makeError("the KV pool is short: the batch needs {} more pages of "
                     "{} tokens, {} of {} are free",
                     lacking, pages.pageTokens(), pages.freePages(),
                     pages.pages());
  for (const SlotRun &run : runs)
    MOE_RETURN_IF_ERROR(pages.grow(run.slot, tokensAfter(run)));
  return Status::success();
}

} // namespace moe
