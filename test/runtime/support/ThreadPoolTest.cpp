#include "runtime/support/ThreadPool.h"

#include <gtest/gtest.h>

#include <vector>

namespace moe {
namespace {

TEST(ThreadPool, CoversEveryIndexOnce) {
  ThreadPool pool(4);
  std::vector<int> hits(1003, 0);
  pool.parallelFor(static_cast<int64_t>(hits.size()),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t i = begin; i < end; ++i)
                       ++hits[i];
                   });
  for (int h : hits)
    EXPECT_EQ(h, 1);
}

} // namespace
} // namespace moe
