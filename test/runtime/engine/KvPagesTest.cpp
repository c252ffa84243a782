// KvPages: the pool of KV pages the slots of a backend grow into.

#include "runtime/engine/KvPages.h"
#include "runtime/engine/StepBatch.h"

#include <gtest/gtest.h>

#include <set>

namespace moe {
namespace {

TEST(KvPages, SlotsTakePagesAsTheyGrowAndGiveThemBack) {
  // Three slots of up to 10 tokens in 4-token pages, 5 pages in all.
  Result<KvPages> created = KvPages::create(3, 10, 4, 5);
  ASSERT_TRUE(created.ok()) << created.error().message();
  KvPages &pages = *created;
  EXPECT_EQ(pages.pagesFor(9), 3);
  EXPECT_EQ(pages.pagesToGrow(0, 9), 3);
  ASSERT_TRUE(pages.grow(0, 9).ok());
  ASSERT_TRUE(pages.grow(1, 4).ok());
  EXPECT_EQ(pages.freePages(), 1);
  EXPECT_EQ(pages.pagesToGrow(1, 4), 0);
  EXPECT_EQ(pages.pagesToGrow(1, 5), 1);
  // Short: slot 2 would need 2 pages; it takes none.
  Status shortfall = pages.grow(2, 5);
  ASSERT_FALSE(shortfall.ok());
  EXPECT_EQ(shortfall.error().message(),
            "the KV pool is short: slot 2 needs 2 more pages of 4 tokens, 1 "
            "of 5 are free");
  EXPECT_EQ(pages.freePages(), 1);
  // Every held position has its own row; a slot's positions within a page
  // are consecutive rows.
  std::set<int64_t> rows;
  for (int32_t slot : {0, 1})
    for (int64_t p = 0; p < (slot == 0 ? 9 : 4); ++p) {
      EXPECT_TRUE(rows.insert(pages.row(slot, p)).second);
      EXPECT_LT(pages.row(slot, p), 5 * 4);
      if (p % 4)
        EXPECT_EQ(pages.row(slot, p), pages.row(slot, p - 1) + 1);
    }
  pages.release(0);
  EXPECT_EQ(pages.freePages(), 4);
  EXPECT_TRUE(pages.table(0).empty());
  ASSERT_TRUE(pages.grow(2, 10).ok());
  EXPECT_EQ(pages.table(2).size(), 3u);
}

TEST(KvPages, APoolHoldsAtLeastOneWholeSequence) {
  Result<KvPages> small = KvPages::create(4, 10, 4, 2);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.error().message(), "a KV pool of 8 tokens cannot hold one "
                                     "sequence of the job's 10-token context");
  EXPECT_FALSE(KvPages::create(4, 10, 0, 8).ok());
  KvPages whole = KvPages::wholeContext(4, 10, 4);
  EXPECT_EQ(whole.pages(), 12);
  for (int32_t slot = 0; slot < 4; ++slot)
    EXPECT_TRUE(whole.grow(slot, 10).ok());
  EXPECT_EQ(whole.freePages(), 0);
}

TEST(KvPages, WholeSlotsStayOutsideThePool) {
  // Slots 0 and 1 hold their whole 10 tokens elsewhere; 2 and 3 share 3
  // pages of 4 tokens.
  Result<KvPages> created = KvPages::create(4, 10, 4, 3, 2);
  ASSERT_TRUE(created.ok()) << created.error().message();
  KvPages &pages = *created;
  EXPECT_FALSE(pages.paged(1));
  EXPECT_TRUE(pages.paged(2));
  EXPECT_EQ(pages.pagesToGrow(0, 10), 0);
  ASSERT_TRUE(pages.grow(0, 10).ok());
  EXPECT_TRUE(pages.table(0).empty());
  EXPECT_EQ(pages.freePages(), 3);
  ASSERT_TRUE(pages.grow(2, 10).ok());
  EXPECT_EQ(pages.freePages(), 0);
  EXPECT_EQ(pages.pagesToGrow(3, 1), 1);
  pages.release(0);
  EXPECT_EQ(pages.freePages(), 0);
  pages.release(2);
  EXPECT_EQ(pages.freePages(), 3);
  // Only slots that use the pool need it to hold a whole sequence.
  EXPECT_TRUE(KvPages::create(2, 10, 4, 0, 2).ok());
  EXPECT_FALSE(KvPages::create(2, 10, 4, 2, 1).ok());
  EXPECT_FALSE(KvPages::create(2, 10, 4, 3, 3).ok());
}

TEST(KvPages, ABatchTakesItsPagesAllOrNone) {
  Result<KvPages> pages = KvPages::create(2, 6, 2, 3);
  ASSERT_TRUE(pages.ok());
  StepBatch batch;
  batch.rows = {{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}};
  batch.tokenIds.assign(batch.rows.size(), 1);
  std::vector<int32_t> lengths = {0, 0};
  Result<std::vector<SlotRun>> runs = validateStepBatch(batch, lengths, 6, 5);
  ASSERT_TRUE(runs.ok());
  Status held = holdKvRows(batch, *runs, *pages);
  ASSERT_FALSE(held.ok());
  EXPECT_EQ(held.error().message(),
            "the KV pool is short: the batch needs 4 more pages of 2 tokens, "
            "3 of 3 are free");
  batch.rows.pop_back();
  batch.tokenIds.pop_back();
  runs = validateStepBatch(batch, lengths, 6, 5);
  ASSERT_TRUE(runs.ok());
  ASSERT_TRUE(holdKvRows(batch, *runs, *pages).ok());
  EXPECT_EQ(pages->freePages(), 0);
}

} // namespace
} // namespace moe
