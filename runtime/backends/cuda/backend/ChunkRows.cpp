#include "runtime/backends/cuda/backend/ChunkRows.h"

#include <algorithm>

namespace moe::cuda {

std::vector<int64_t> cutAtSlots(const std::vector<TokenRow> &rows,
                                int64_t first, int64_t end, int64_t limit) {
  limit = std::max<int64_t>(limit, 1);
  std::vector<int64_t> cuts{first};
  while (cuts.back() + limit < end) {
    int64_t cut = cuts.back() + limit, boundary = cut;
    while (boundary > cuts.back() &&
           rows[boundary].slot == rows[boundary - 1].slot)
      --boundary;
    cuts.push_back(boundary > cuts.back() ? boundary : cut);
  }
  cuts.push_back(end);
  return cuts;
}

namespace {

// The chunk's first row of a host-attended slot, if every such slot has one
// row in it; else `rows` (none).
int64_t firstHostRow(const StepBatch &batch, int64_t first, int64_t rows,
                     int32_t hostAttendedSlot) {
  int64_t from = rows;
  while (from > 0 && batch.rows[first + from - 1].slot >= hostAttendedSlot)
    --from;
  for (int64_t i = from + 1; i < rows; ++i)
    if (batch.rows[first + i].slot == batch.rows[first + i - 1].slot)
      return rows;
  return from;
}

} // namespace

KvPass chunkRows(const StepBatch &batch, int64_t first, int64_t end,
                 int32_t gpuSlots, int32_t hostAttendedSlot, int32_t maxContext,
                 int64_t microBatch, const KvPages &pages, int32_t *tokens,
                 int32_t *attnSlots, int32_t *positions, int32_t *cacheRows,
                 int32_t *poolRows) {
  int64_t rows = end - first;
  KvPass kvPass;
  kvPass.rows = kvPass.gpuRows = rows;
  kvPass.host.firstRow = firstHostRow(batch, first, rows, hostAttendedSlot);
  int64_t batchSlots = 0; // slots in the last micro-batch
  for (int64_t i = 0; i < rows; ++i) {
    const TokenRow &row = batch.rows[first + i];
    tokens[i] = batch.tokenIds[first + i];
    positions[i] = row.position;
    poolRows[i] = 0;
    if (row.slot < gpuSlots) {
      attnSlots[i] = row.slot;
      cacheRows[i] = row.slot * maxContext + row.position;
      continue;
    }
    int64_t hostSlot = row.slot - gpuSlots;
    if (kvPass.gpuRows == rows)
      kvPass.gpuRows = i;
    poolRows[i] = static_cast<int32_t>(pages.row(row.slot, row.position));
    if (i >= kvPass.host.firstRow) {
      kvPass.host.slots.push_back(static_cast<int32_t>(hostSlot));
      kvPass.host.lengths.push_back(row.position + 1);
      attnSlots[i] = 0;
      cacheRows[i] = 0;
      continue;
    }
    if (i == 0 || batch.rows[first + i - 1].slot != row.slot) {
      if (kvPass.microBatches.empty() || batchSlots == microBatch) {
        kvPass.microBatches.push_back({i, 0, {}});
        batchSlots = 0;
      }
      kvPass.microBatches.back().loads.push_back(
          {hostSlot, batchSlots, row.position, row.position});
      ++batchSlots;
    }
    KvMicroBatch &batchOfRow = kvPass.microBatches.back();
    batchOfRow.loads.back().lengthAfter = row.position + 1;
    ++batchOfRow.rows;
    int64_t local = batchSlots - 1;
    attnSlots[i] = static_cast<int32_t>(local);
    cacheRows[i] = static_cast<int32_t>(local * maxContext + row.position);
  }
  return kvPass;
}

} // namespace moe::cuda
