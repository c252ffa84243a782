// How the CUDA backend lays out one chunk of a forward's rows: the device
// arrays its kernels read per row, and the host slots' KV micro-batches,
// loads and stores. Plain C++ (no CUDA), so it is tested without a GPU.
#pragma once

#include "runtime/engine/Backend.h"

#include <cstdint>
#include <vector>

namespace moe::cuda {

// Host slots' rows come last in a chunk (slots are in order and the host
// slots are the highest). Their K/V rows live in pages of the host pool
// (KvPages); each new row goes to its pool row. Rows the GPU attends are
// cut into micro-batches, each attended in a staging buffer after its
// slots' cached K/V are loaded into it, page by page.

// A host slot into staging slot `local`: the positions it had cached
// before the pass (`length`) and after it (`lengthAfter`).
struct KvLoad {
  int64_t hostSlot, local, length, lengthAfter;
};
struct KvMicroBatch {
  int64_t firstRow = 0, rows = 0;
  std::vector<KvLoad> loads;
};
// The rows the host's cores attend: decode rows of the plan's host-attended
// slots, the chunk's last `slots.size()` rows, one per slot. Their new K/V
// rows are stored like any host row's; nothing of theirs is loaded.
struct HostRows {
  int64_t firstRow = 0;
  std::vector<int32_t> slots;   // host slot of each row
  std::vector<int32_t> lengths; // positions it attends, its own the last
  int64_t count() const { return int64_t(slots.size()); }
};
struct KvPass {
  int64_t rows = 0;    // of the chunk
  int64_t gpuRows = 0; // the first rows, of GPU slots; host slots' follow
  bool loadsAfterCompute = false; // loads wait for the op's earlier work
  std::vector<KvMicroBatch> microBatches;
  HostRows host;
  int64_t hostRows() const { return rows - gpuRows; }
};

/// Cuts rows [first, end) into pieces of at most `limit` rows, each ending
/// at a slot boundary where one lies in reach (a longer slot run is split;
/// its later part continues the cache). Returns the cut points, `first`
/// first and `end` last.
std::vector<int64_t> cutAtSlots(const std::vector<TokenRow> &rows,
                                int64_t first, int64_t end, int64_t limit);

/// Rows [first, end) of a batch as one chunk: per row its token, the slot
/// in the KV array attention reads (a GPU slot, or a host slot's index in
/// its staging buffer), its position, the row of that array where its K/V
/// go and, for a host slot's row, its row in the host pool (`pages`, which
/// holds it); and the host slots' micro-batches (at most `microBatch` slots
/// each), numbered from the chunk's first row. Slots below `gpuSlots` keep
/// their KV on the GPU; rows are in slot order. Slots from
/// `hostAttendedSlot` on are attended by the host's cores where each of
/// them has one row in the chunk (decode); a chunk holding more rows of
/// such a slot (a prompt) stages them like any host slot's.
KvPass chunkRows(const StepBatch &batch, int64_t first, int64_t end,
                 int32_t gpuSlots, int32_t hostAttendedSlot, int32_t maxContext,
                 int64_t microBatch, const KvPages &pages, int32_t *tokens,
                 int32_t *attnSlots, int32_t *positions, int32_t *cacheRows,
                 int32_t *poolRows);

} // namespace moe::cuda
