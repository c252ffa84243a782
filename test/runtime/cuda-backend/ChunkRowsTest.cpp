// The CUDA backend's layout of a chunk of rows: which KV array each row's
// attention reads, where its K/V go, and how the host slots' rows are cut
// into micro-batches with their loads and stores.
#include "runtime/backends/cuda/backend/ChunkRows.h"

#include <gtest/gtest.h>

namespace moe::cuda {
namespace {

constexpr int32_t kContext = 16;

struct Laid {
  std::vector<int32_t> tokens, attnSlots, positions, cacheRows;
  KvPass pass;
};

// Rows (slot, position), token = 100 + row index.
Laid lay(const std::vector<TokenRow> &rows, int64_t first, int64_t end,
         int32_t gpuSlots, int64_t microBatch,
         int32_t hostAttendedSlot = INT32_MAX) {
  StepBatch batch;
  batch.rows = rows;
  for (size_t r = 0; r < rows.size(); ++r)
    batch.tokenIds.push_back(100 + int32_t(r));
  Laid laid;
  size_t n = size_t(end - first);
  laid.tokens.resize(n);
  laid.attnSlots.resize(n);
  laid.positions.resize(n);
  laid.cacheRows.resize(n);
  laid.pass = chunkRows(batch, first, end, gpuSlots, hostAttendedSlot, kContext,
                        microBatch, laid.tokens.data(), laid.attnSlots.data(),
                        laid.positions.data(), laid.cacheRows.data());
  return laid;
}

TEST(CutAtSlots, PiecesEndAtSlotBoundariesWithinTheLimit) {
  // Slot 0: rows 0-2, slot 1: rows 3-4, slot 2: rows 5-8.
  std::vector<TokenRow> rows = {{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1},
                                {2, 0}, {2, 1}, {2, 2}, {2, 3}};
  EXPECT_EQ(cutAtSlots(rows, 0, 9, 100), (std::vector<int64_t>{0, 9}));
  EXPECT_EQ(cutAtSlots(rows, 0, 9, 4), (std::vector<int64_t>{0, 3, 5, 9}));
  EXPECT_EQ(cutAtSlots(rows, 0, 9, 5), (std::vector<int64_t>{0, 5, 9}));
  // A slot longer than the limit is split where the limit falls.
  EXPECT_EQ(cutAtSlots(rows, 5, 9, 3), (std::vector<int64_t>{5, 8, 9}));
  EXPECT_EQ(cutAtSlots(rows, 0, 3, 1), (std::vector<int64_t>{0, 1, 2, 3}));
  // Decode rows, one per slot.
  std::vector<TokenRow> decode = {{0, 7}, {1, 7}, {2, 7}, {3, 7}, {4, 7}};
  EXPECT_EQ(cutAtSlots(decode, 0, 5, 2), (std::vector<int64_t>{0, 2, 4, 5}));
}

TEST(ChunkRows, GpuSlotsReadTheirOwnCache) {
  Laid laid = lay({{0, 5}, {1, 3}, {3, 9}}, 0, 3, /*gpuSlots=*/4, 2);
  EXPECT_EQ(laid.pass.gpuRows, 3);
  EXPECT_TRUE(laid.pass.microBatches.empty());
  EXPECT_TRUE(laid.pass.stores.empty());
  EXPECT_EQ(laid.attnSlots, (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(laid.cacheRows,
            (std::vector<int32_t>{5, kContext + 3, 3 * kContext + 9}));
  EXPECT_EQ(laid.tokens, (std::vector<int32_t>{100, 101, 102}));
}

TEST(ChunkRows, DecodeMicroBatchesLoadsAndStoresOfHostSlots) {
  // Slot 0 on the GPU; slots 2, 3 and 5 (host slots 1, 2, 4) in host memory,
  // two per micro-batch.
  Laid laid = lay({{0, 7}, {2, 7}, {3, 7}, {5, 9}}, 0, 4, 1, 2);
  EXPECT_EQ(laid.pass.gpuRows, 1);
  ASSERT_EQ(laid.pass.microBatches.size(), 2u);
  const KvMicroBatch &first = laid.pass.microBatches[0];
  EXPECT_EQ(first.firstRow, 1);
  EXPECT_EQ(first.rows, 2);
  ASSERT_EQ(first.loads.size(), 1u); // consecutive slots: one 2-D copy
  EXPECT_EQ(first.loads[0].hostSlot, 1);
  EXPECT_EQ(first.loads[0].local, 0);
  EXPECT_EQ(first.loads[0].count, 2);
  EXPECT_EQ(first.loads[0].length, 7);
  EXPECT_EQ(first.loads[0].lengthAfter, 8);
  const KvMicroBatch &second = laid.pass.microBatches[1];
  EXPECT_EQ(second.firstRow, 3);
  ASSERT_EQ(second.loads.size(), 1u);
  EXPECT_EQ(second.loads[0].hostSlot, 4);
  EXPECT_EQ(second.loads[0].local, 0);
  EXPECT_EQ(second.loads[0].length, 9);
  // Staging slots restart in each micro-batch.
  EXPECT_EQ(laid.attnSlots, (std::vector<int32_t>{0, 0, 1, 0}));
  EXPECT_EQ(laid.cacheRows, (std::vector<int32_t>{7, 7, kContext + 7, 9}));
  // Rows of consecutive slots at one position: one store across slots.
  ASSERT_EQ(laid.pass.stores.size(), 2u);
  EXPECT_EQ(laid.pass.stores[0].row, 1);
  EXPECT_EQ(laid.pass.stores[0].hostSlot, 1);
  EXPECT_EQ(laid.pass.stores[0].rows, 2);
  EXPECT_TRUE(laid.pass.stores[0].acrossSlots);
  EXPECT_EQ(laid.pass.stores[1].row, 3);
  EXPECT_EQ(laid.pass.stores[1].hostSlot, 4);
  EXPECT_EQ(laid.pass.stores[1].position, 9);
  EXPECT_EQ(laid.pass.stores[1].rows, 1);
}

TEST(ChunkRows, GapsBetweenHostSlotsSplitTheLoads) {
  // Host slots 0 and 2 in one micro-batch: two loads, staging slots 0, 1.
  Laid laid = lay({{0, 4}, {2, 6}}, 0, 2, 0, 4);
  ASSERT_EQ(laid.pass.microBatches.size(), 1u);
  const std::vector<KvLoad> &loads = laid.pass.microBatches[0].loads;
  ASSERT_EQ(loads.size(), 2u);
  EXPECT_EQ(loads[1].hostSlot, 2);
  EXPECT_EQ(loads[1].local, 1);
  EXPECT_EQ(laid.attnSlots, (std::vector<int32_t>{0, 1}));
  // Different positions: one store each.
  EXPECT_EQ(laid.pass.stores.size(), 2u);
}

TEST(ChunkRows, PrefillRowsOfASlotStayTogether) {
  Laid laid = lay({{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}}, 0, 5, 0, 1);
  ASSERT_EQ(laid.pass.microBatches.size(), 2u);
  EXPECT_EQ(laid.pass.microBatches[0].rows, 3);
  EXPECT_EQ(laid.pass.microBatches[0].loads[0].length, 0); // nothing cached
  EXPECT_EQ(laid.pass.microBatches[0].loads[0].lengthAfter, 3);
  EXPECT_EQ(laid.pass.microBatches[1].firstRow, 3);
  EXPECT_EQ(laid.cacheRows, (std::vector<int32_t>{0, 1, 2, 0, 1}));
  ASSERT_EQ(laid.pass.stores.size(), 2u);
  EXPECT_FALSE(laid.pass.stores[0].acrossSlots);
  EXPECT_EQ(laid.pass.stores[0].rows, 3);
  EXPECT_EQ(laid.pass.stores[1].row, 3);
  EXPECT_EQ(laid.pass.stores[1].rows, 2);
}

TEST(ChunkRows, RowsAreNumberedFromTheChunk) {
  // The second chunk of a slot split across chunks continues its cache.
  Laid laid = lay({{0, 0}, {0, 1}, {0, 2}, {0, 3}}, 2, 4, 0, 1);
  EXPECT_EQ(laid.tokens, (std::vector<int32_t>{102, 103}));
  ASSERT_EQ(laid.pass.microBatches.size(), 1u);
  EXPECT_EQ(laid.pass.microBatches[0].firstRow, 0);
  EXPECT_EQ(laid.pass.microBatches[0].loads[0].length, 2);
  EXPECT_EQ(laid.pass.stores[0].row, 0);
  EXPECT_EQ(laid.pass.stores[0].position, 2);
}

// A sliding window's reads start from the run's shortest cache: slots 1
// and 2 (host slots 0 and 1) load together, at 9 and 5 cached positions.
TEST(ChunkRows, LoadsKnowTheirShortestSlot) {
  Laid laid = lay({{1, 9}, {2, 5}}, 0, 2, 1, 8);
  ASSERT_EQ(laid.pass.microBatches.size(), 1u);
  ASSERT_EQ(laid.pass.microBatches[0].loads.size(), 1u);
  const KvLoad &load = laid.pass.microBatches[0].loads[0];
  EXPECT_EQ(load.count, 2);
  EXPECT_EQ(load.length, 9);
  EXPECT_EQ(load.lengthAfter, 10);
  EXPECT_EQ(load.shortest, 5);
}

TEST(ChunkRows, HostAttendedSlotsAreStoredNotLoaded) {
  // Slot 0 on the GPU; slots 1-4 in host memory, slots 3 and 4 attended by
  // the host's cores: their rows are stored with the others' and not loaded.
  Laid laid = lay({{0, 7}, {1, 7}, {2, 7}, {3, 7}, {4, 5}}, 0, 5, 1, 8,
                  /*hostAttendedSlot=*/3);
  EXPECT_EQ(laid.pass.gpuRows, 1);
  ASSERT_EQ(laid.pass.microBatches.size(), 1u);
  EXPECT_EQ(laid.pass.microBatches[0].rows, 2);
  ASSERT_EQ(laid.pass.microBatches[0].loads.size(), 1u);
  EXPECT_EQ(laid.pass.microBatches[0].loads[0].count, 2);
  EXPECT_EQ(laid.pass.host.firstRow, 3);
  EXPECT_EQ(laid.pass.host.slots, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(laid.pass.host.lengths, (std::vector<int32_t>{8, 6}));
  // Host slots 0-2 at position 7 in one store, host slot 3 at 5 in another.
  ASSERT_EQ(laid.pass.stores.size(), 2u);
  EXPECT_EQ(laid.pass.stores[0].row, 1);
  EXPECT_EQ(laid.pass.stores[0].rows, 3);
  EXPECT_TRUE(laid.pass.stores[0].acrossSlots);
  EXPECT_EQ(laid.pass.stores[1].row, 4);
  EXPECT_EQ(laid.pass.stores[1].hostSlot, 3);
  EXPECT_EQ(laid.pass.stores[1].position, 5);
}

TEST(ChunkRows, PromptsOfHostAttendedSlotsAreStaged) {
  // Slot 2's prompt (two rows) keeps the chunk's host slots on the GPU.
  Laid laid = lay({{1, 7}, {2, 0}, {2, 1}}, 0, 3, 0, 8, /*hostAttendedSlot=*/1);
  EXPECT_EQ(laid.pass.host.count(), 0);
  EXPECT_EQ(laid.pass.host.firstRow, 3);
  ASSERT_EQ(laid.pass.microBatches.size(), 1u);
  EXPECT_EQ(laid.pass.microBatches[0].rows, 3);
}

} // namespace
} // namespace moe::cuda
