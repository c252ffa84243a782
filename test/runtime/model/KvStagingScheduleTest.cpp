// The KV staging as the plan's schedule drives it: the committed plans that
// keep KV in host memory resolve to their kv_staging pool, an edited pool
// is what resolves, and schedules the executor's pipeline could not follow
// are refused, each with an error naming the step and the job.

#include "runtime/model/KvStagingSchedule.h"
#include "test/runtime/golden/ScheduleEdits.h"
#include "test/runtime/model/ResolvedGoldenPlan.h"

#include <gtest/gtest.h>

namespace moe::model {
namespace {

std::string errorOf(const LoadedPlan &plan, const ResolvedModel &model) {
  Result<KvStagingSchedule> staging =
      resolveKvStagingSchedule(plan.plan(), model);
  return staging ? "resolved" : staging.error().message();
}

TEST(KvStagingSchedule, PlansWithHostKvStageIntoTheirPool) {
  for (const char *name :
       {"tiny-mixtral", "tiny-qwen2-moe", "tiny-deepseek-v2"}) {
    SCOPED_TRACE(name);
    ResolvedGoldenPlan r = loadResolved(name, "streamed");
    Result<KvStagingSchedule> staging =
        resolveKvStagingSchedule(r.plan.plan(), r.model);
    ASSERT_TRUE(staging.ok()) << staging.error().message();
    EXPECT_EQ(staging->buffers, r.plan.plan().batching()->kv_staging_buffers());
    EXPECT_GT(staging->bufferBytes, 0);
    EXPECT_GT(staging->decodeLoads, 0);
  }
  ResolvedGoldenPlan resident = loadResolved("tiny-mixtral", "resident");
  Result<KvStagingSchedule> none =
      resolveKvStagingSchedule(resident.plan.plan(), resident.model);
  ASSERT_TRUE(none.ok()) << none.error().message();
  EXPECT_EQ(none->buffers, 0);
}

TEST(KvStagingSchedule, FollowsAnEditedPool) {
  ResolvedGoldenPlan r = loadResolved("tiny-qwen2-moe", "streamed");
  LoadedPlan three = edited(r.plan, [](plan::PlanT &p) { stageKvIn(p, 3); });
  Result<KvStagingSchedule> staging =
      resolveKvStagingSchedule(three.plan(), r.model);
  ASSERT_TRUE(staging.ok()) << staging.error().message();
  EXPECT_EQ(staging->buffers, 3);
}

TEST(KvStagingSchedule, RefusesSchedulesThePipelineCannotFollow) {
  ResolvedGoldenPlan r = loadResolved("tiny-qwen2-moe", "streamed");
  auto expectRefused = [&](const std::function<void(plan::PlanT &)> &edit,
                           const std::string &error) {
    std::string got = errorOf(edited(r.plan, edit), r.model);
    EXPECT_NE(got.find(error), std::string::npos) << got;
  };
  auto nthLoad = [](plan::StepScheduleT &step, int n) -> plan::JobT & {
    for (auto &job : step.jobs)
      if (job->kind == plan::JobKind::kv_load && n-- == 0)
        return *job;
    ADD_FAILURE() << "too few KV loads";
    return *step.jobs.front();
  };
  // Buffers out of turn: the second load into the first load's buffer.
  expectRefused(
      [&](plan::PlanT &p) { nthLoad(*p.schedule->decode, 1).buffer = 0; },
      "schedule: decode: job 14: loads KV into staging buffer 0; the executor "
      "takes the buffers in turn, and this load's is buffer 1");
  // A load overwriting its buffer before the rows of the micro-batch that
  // used it were stored.
  expectRefused(
      [&](plan::PlanT &p) { nthLoad(*p.schedule->decode, 2).after.clear(); },
      "without waiting for job 13, which stores the rows of the buffer's "
      "previous micro-batch");
  // Attention reading another buffer than its micro-batch's load filled.
  expectRefused(
      [](plan::PlanT &p) {
        for (auto &job : p.schedule->decode->jobs)
          if (job->kind == plan::JobKind::compute && job->buffer == 0 &&
              job->pool >= 0) {
            job->buffer = 1;
            return;
          }
      },
      "uses staging buffer 1; its micro-batch's KV was loaded into buffer 0");
  // A load for another module of the layer, which keeps no KV cache.
  expectRefused(
      [&](plan::PlanT &p) { nthLoad(*p.schedule->decode, 0).module_ = 2; },
      "which keeps no KV cache");
  // A load into a pool that is not the staging pool.
  expectRefused(
      [&](plan::PlanT &p) { nthLoad(*p.schedule->decode, 0).pool = 0; },
      "loads KV into pool 0, which is not a kv_staging pool");
}

} // namespace
} // namespace moe::model
