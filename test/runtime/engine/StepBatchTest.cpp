// validateStepBatch: the batch contract every backend holds a forward to.

#include "runtime/engine/StepBatch.h"

#include <gtest/gtest.h>

namespace moe {
namespace {

// Three slots holding 0, 4 and 2 tokens; a context of 8; 50 token ids.
const std::vector<int32_t> kLengths = {0, 4, 2};

StepBatch batchOf(std::vector<TokenRow> rows, std::vector<int32_t> logitRows) {
  StepBatch batch;
  batch.rows = std::move(rows);
  batch.tokenIds.assign(batch.rows.size(), 7);
  batch.logitRows = std::move(logitRows);
  return batch;
}

std::string errorOf(const StepBatch &batch) {
  Result<std::vector<SlotRun>> runs = validateStepBatch(batch, kLengths, 8, 50);
  return runs.ok() ? "valid" : runs.error().message();
}

TEST(StepBatch, RunsOfAValidBatch) {
  StepBatch batch =
      batchOf({{0, 0}, {0, 1}, {0, 2}, {1, 4}, {2, 2}, {2, 3}}, {2, 3, 5});
  Result<std::vector<SlotRun>> runs = validateStepBatch(batch, kLengths, 8, 50);
  ASSERT_TRUE(runs.ok()) << runs.error().message();
  ASSERT_EQ(runs->size(), 3u);
  EXPECT_EQ((*runs)[0].slot, 0);
  EXPECT_EQ((*runs)[0].count, 3);
  EXPECT_EQ((*runs)[1].firstRow, 3);
  EXPECT_EQ((*runs)[2].slot, 2);
  EXPECT_EQ((*runs)[2].firstRow, 4);
  EXPECT_EQ((*runs)[2].count, 2);
  EXPECT_TRUE(validateStepBatch({}, kLengths, 8, 50)->empty());
}

TEST(StepBatch, RowsMustContinueEachSlotInSlotOrder) {
  EXPECT_EQ(errorOf(batchOf({{3, 0}}, {})), "row 0: slot 3 is not in 0..2");
  EXPECT_EQ(errorOf(batchOf({{1, 3}}, {})),
            "row 0: slot 1 continues at position 4, not 3");
  EXPECT_EQ(errorOf(batchOf({{0, 0}, {0, 2}}, {})),
            "row 1: positions of slot 0 are not consecutive");
  EXPECT_EQ(errorOf(batchOf({{1, 4}, {0, 0}}, {})),
            "row 1: slot 0 follows slot 1; runs must be in slot order");
  // A slot coming back after another is out of order too.
  EXPECT_EQ(errorOf(batchOf({{0, 0}, {1, 4}, {0, 1}}, {})),
            "row 2: slot 0 follows slot 1; runs must be in slot order");
  EXPECT_EQ(errorOf(batchOf(
                {{2, 2}, {2, 3}, {2, 4}, {2, 5}, {2, 6}, {2, 7}, {2, 8}}, {})),
            "row 6: position 8 exceeds the context of 8");
}

TEST(StepBatch, TokenIdsAndLogitRows) {
  StepBatch ids = batchOf({{0, 0}, {0, 1}}, {1});
  ids.tokenIds = {7};
  EXPECT_EQ(errorOf(ids), "1 token ids for 2 rows");
  ids.tokenIds = {7, 50};
  EXPECT_EQ(errorOf(ids), "row 1: token id 50 is not in 0..49");
  ids.tokenIds = {-1, 7};
  EXPECT_EQ(errorOf(ids), "row 0: token id -1 is not in 0..49");
  EXPECT_EQ(errorOf(batchOf({{0, 0}, {0, 1}}, {2})),
            "logit row 2 is not in 0..1");
  EXPECT_EQ(errorOf(batchOf({{0, 0}, {0, 1}}, {1, 1})),
            "logit rows must increase (row 1 follows 1)");
  EXPECT_EQ(errorOf(batchOf({{0, 0}, {0, 1}}, {1, 0})),
            "logit rows must increase (row 0 follows 1)");
}

} // namespace
} // namespace moe
