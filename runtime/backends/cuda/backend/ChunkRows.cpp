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
                 int64_t microBatch, int32_t *tokens, int32_t *attnSlots,
                 int32_t *positions, int32_t *cacheRows) {
  int64_t rows = end - first;
  KvPass kvPass;
  kvPass.gpuRows = rows;
  kvPass.host.firstRow = firstHostRow(batch, first, rows, hostAttendedSlot);
  int64_t batchSlots = 0; // slots in the last micro-batch
  for (int64_t i = 0; i < rows; ++i) {
    const TokenRow &row = batch.rows[first + i];
    tokens[i] = batch.tokenIds[first + i];
    positions[i] = row.position;
    bool newRun = i == 0 || batch.rows[first + i - 1].slot != row.slot;
    if (row.slot < gpuSlots) {
      attnSlots[i] = row.slot;
      cacheRows[i] = row.slot * maxContext + row.position;
      continue;
    }
    int64_t hostSlot = row.slot - gpuSlots;
    if (kvPass.gpuRows == rows)
      kvPass.gpuRows = i;
    if (i >= kvPass.host.firstRow) {
      kvPass.host.slots.push_back(static_cast<int32_t>(hostSlot));
      kvPass.host.lengths.push_back(row.position + 1);
      attnSlots[i] = 0;
      cacheRows[i] = 0;
    } else if (newRun) {
      if (kvPass.microBatches.empty() || batchSlots == microBatch) {
        kvPass.microBatches.push_back({i, 0, {}});
        batchSlots = 0;
      }
      std::vector<KvLoad> &loads = kvPass.microBatches.back().loads;
      if (loads.empty() ||
          loads.back().hostSlot + loads.back().count != hostSlot)
        loads.push_back({hostSlot, batchSlots, 0, 0, 0, row.position});
      ++loads.back().count;
      loads.back().length =
          std::max<int64_t>(loads.back().length, row.position);
      loads.back().shortest =
          std::min<int64_t>(loads.back().shortest, row.position);
      ++batchSlots;
    }
    if (i < kvPass.host.firstRow) {
      KvMicroBatch &batchOfRow = kvPass.microBatches.back();
      KvLoad &load = batchOfRow.loads.back();
      load.lengthAfter = std::max<int64_t>(load.lengthAfter, row.position + 1);
      ++batchOfRow.rows;
      int64_t local = batchSlots - 1;
      attnSlots[i] = static_cast<int32_t>(local);
      cacheRows[i] = static_cast<int32_t>(local * maxContext + row.position);
    }
    // Stores: one slot's consecutive rows, or the single rows of
    // consecutive slots at one position (decode).
    if (!newRun) {
      ++kvPass.stores.back().rows;
      continue;
    }
    bool single = i + 1 == rows || batch.rows[first + i + 1].slot != row.slot;
    if (single && !kvPass.stores.empty()) {
      KvStoreRun &last = kvPass.stores.back();
      if ((last.acrossSlots || last.rows == 1) &&
          last.position == row.position &&
          last.hostSlot + last.rows == hostSlot) {
        last.acrossSlots = true;
        ++last.rows;
        continue;
      }
    }
    kvPass.stores.push_back({i, hostSlot, row.position, 1, false});
  }
  return kvPass;
}

} // namespace moe::cuda
