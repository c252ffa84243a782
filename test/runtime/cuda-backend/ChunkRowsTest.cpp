// The CUDA backend's layout of a chunk of rows: which KV array each row's
// attention reads, where its K/V go (the host slots' in pages of the host
// pool), and how the host slots' rows are cut into micro-batches with their
// loads.
#include "runtime/backends/cuda/backend/ChunkRows.h"

#include <gtest/gtest.h>

namespace moe::cuda {
namespace {

constexpr int32_t kContext = 16;
constexpr int32_t kPageTokens = 4;
constexpr int32_t kSlots = 8;

struct Laid {
  std::vector<int32_t> tokens, attnSlots, positions, cacheRows, poolRows;
  KvPass pass;
  KvPages pages;
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
  // The host slots' pages, taken in the order the rows reach them.
  laid.pages = *KvPages::create(kSlots, kContext, kPageTokens,
                                kSlots * kContext / kPageTokens, gpuSlots);
  for (const TokenRow &row : rows)
    EXPECT_TRUE(laid.pages.grow(row.slot, row.position + 1).ok());
  size_t n = size_t(end - first);
  for (auto *array : {&laid.tokens, &laid.attnSlots, &laid.positions,
                      &laid.cacheRows, &laid.poolRows})
    array->assign(n, -1);
  laid.pass = chunkRows(batch, first, end, gpuSlots, hostAttendedSlot, kContext,
                        microBatch, laid.pages, laid.tokens.data(),
                        laid.attnSlots.data(), laid.positions.data(),
                        laid.cacheRows.data(), laid.poolRows.data());
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
  EXPECT_EQ(laid.pass.hostRows(), 0);
  EXPECT_TRUE(laid.pass.microBatches.empty());
  EXPECT_EQ(laid.attnSlots, (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(laid.cacheRows,
            (std::vector<int32_t>{5, kContext + 3, 3 * kContext + 9}));
  EXPECT_EQ(laid.tokens, (std::vector<int32_t>{100, 101, 102}));
  EXPECT_EQ(laid.poolRows, (std::vector<int32_t>{0, 0, 0}));
}

TEST(ChunkRows, DecodeMicroBatchesAndLoadsOfHostSlots) {
  // Slot 0 on the GPU; slots 2, 3 and 5 (host slots 1, 2, 4) in host memory,
  // two per micro-batch.
  Laid laid = lay({{0, 7}, {2, 7}, {3, 7}, {5, 9}}, 0, 4, 1, 2);
  EXPECT_EQ(laid.pass.gpuRows, 1);
  EXPECT_EQ(laid.pass.hostRows(), 3);
  ASSERT_EQ(laid.pass.microBatches.size(), 2u);
  const KvMicroBatch &first = laid.pass.microBatches[0];
  EXPECT_EQ(first.firstRow, 1);
  EXPECT_EQ(first.rows, 2);
  ASSERT_EQ(first.loads.size(), 2u); // one a slot: their pages lie apart
  EXPECT_EQ(first.loads[0].hostSlot, 1);
  EXPECT_EQ(first.loads[0].local, 0);
  EXPECT_EQ(first.loads[0].length, 7);
  EXPECT_EQ(first.loads[0].lengthAfter, 8);
  EXPECT_EQ(first.loads[1].hostSlot, 2);
  EXPECT_EQ(first.loads[1].local, 1);
  const KvMicroBatch &second = laid.pass.microBatches[1];
  EXPECT_EQ(second.firstRow, 3);
  ASSERT_EQ(second.loads.size(), 1u);
  EXPECT_EQ(second.loads[0].hostSlot, 4);
  EXPECT_EQ(second.loads[0].local, 0);
  EXPECT_EQ(second.loads[0].length, 9);
  // Staging slots restart in each micro-batch.
  EXPECT_EQ(laid.attnSlots, (std::vector<int32_t>{0, 0, 1, 0}));
  EXPECT_EQ(laid.cacheRows, (std::vector<int32_t>{7, 7, kContext + 7, 9}));
  // Every host row goes to its own row of its slot's page.
  for (int64_t i = 1; i < 4; ++i) {
    const TokenRow &row = TokenRow{i == 3 ? 5 : int32_t(i + 1), i == 3 ? 9 : 7};
    EXPECT_EQ(laid.poolRows[i], laid.pages.row(row.slot, row.position)) << i;
  }
}

TEST(ChunkRows, PrefillRowsOfASlotStayTogether) {
  Laid laid = lay({{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}}, 0, 5, 0, 1);
  ASSERT_EQ(laid.pass.microBatches.size(), 2u);
  EXPECT_EQ(laid.pass.microBatches[0].rows, 3);
  EXPECT_EQ(laid.pass.microBatches[0].loads[0].length, 0); // nothing cached
  EXPECT_EQ(laid.pass.microBatches[0].loads[0].lengthAfter, 3);
  EXPECT_EQ(laid.pass.microBatches[1].firstRow, 3);
  EXPECT_EQ(laid.cacheRows, (std::vector<int32_t>{0, 1, 2, 0, 1}));
  EXPECT_EQ(laid.pass.hostRows(), 5);
  // A slot's positions within a page are consecutive pool rows.
  EXPECT_EQ(laid.poolRows[1], laid.poolRows[0] + 1);
  EXPECT_EQ(laid.poolRows[4], laid.poolRows[3] + 1);
}

TEST(ChunkRows, RowsAreNumberedFromTheChunk) {
  // The second chunk of a slot split across chunks continues its cache.
  Laid laid = lay({{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}}, 2, 5, 0, 1);
  EXPECT_EQ(laid.tokens, (std::vector<int32_t>{102, 103, 104}));
  ASSERT_EQ(laid.pass.microBatches.size(), 1u);
  EXPECT_EQ(laid.pass.microBatches[0].firstRow, 0);
  EXPECT_EQ(laid.pass.microBatches[0].loads[0].length, 2);
  EXPECT_EQ(laid.pass.microBatches[0].loads[0].lengthAfter, 5);
  EXPECT_EQ(laid.poolRows,
            (std::vector<int32_t>{int32_t(laid.pages.row(0, 2)),
                                  int32_t(laid.pages.row(0, 3)),
                                  int32_t(laid.pages.row(0, 4))}));
}

TEST(ChunkRows, HostAttendedSlotsAreStoredNotLoaded) {
  // Slot 0 on the GPU; slots 1-4 in host memory, slots 3 and 4 attended by
  // the host's cores: their rows are stored with the others' and not loaded.
  Laid laid = lay({{0, 7}, {1, 7}, {2, 7}, {3, 7}, {4, 5}}, 0, 5, 1, 8,
                  /*hostAttendedSlot=*/3);
  EXPECT_EQ(laid.pass.gpuRows, 1);
  EXPECT_EQ(laid.pass.hostRows(), 4);
  ASSERT_EQ(laid.pass.microBatches.size(), 1u);
  EXPECT_EQ(laid.pass.microBatches[0].rows, 2);
  ASSERT_EQ(laid.pass.microBatches[0].loads.size(), 2u);
  EXPECT_EQ(laid.pass.host.firstRow, 3);
  EXPECT_EQ(laid.pass.host.slots, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(laid.pass.host.lengths, (std::vector<int32_t>{8, 6}));
  EXPECT_EQ(laid.poolRows[3], laid.pages.row(3, 7));
  EXPECT_EQ(laid.poolRows[4], laid.pages.row(4, 5));
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
