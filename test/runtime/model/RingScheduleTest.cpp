// The weight ring as the plan's schedule drives it: the committed plans that
// stream weights resolve to one copy per streamed op and step, each after
// the ops that read its buffer before; an edited schedule changes what is
// resolved; and schedules an executor could not follow are refused, each
// with an error naming the job.

#include "runtime/model/RingSchedule.h"
#include "test/runtime/golden/ScheduleEdits.h"
#include "test/runtime/model/ResolvedGoldenPlan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace moe::model {
namespace {

// The fixtures whose "streamed" plans copy weights through the ring (one
// buffer each: a layer's copy waits for the layer before it).
const std::vector<std::string> kStreamedModels = {
    "tiny-mixtral", "tiny-qwen2-moe", "tiny-deepseek-v2"};

std::string errorOf(const LoadedPlan &plan) {
  Result<ResolvedModel> model = ResolvedModel::resolve(plan.model());
  if (!model)
    return model.error().message();
  Result<RingSchedule> ring = resolveRingSchedule(plan.plan(), *model);
  return ring ? "resolved" : ring.error().message();
}

TEST(RingSchedule,
     StreamedPlansCopyEachStreamedOpOnceAStepAfterItsBuffersUsers) {
  for (const std::string &name : kStreamedModels) {
    SCOPED_TRACE(name);
    ResolvedGoldenPlan r = loadResolved(name, "streamed");
    Result<RingSchedule> ring = resolveRingSchedule(r.plan.plan(), r.model);
    ASSERT_TRUE(ring.ok()) << ring.error().message();
    EXPECT_GT(ring->buffers, 0);
    std::set<int> streamed;
    for (size_t op = 0; op < r.model.ops.size(); ++op)
      if (ring->bufferOf[op] >= 0) {
        streamed.insert(int(op));
        EXPECT_LT(ring->bufferOf[op], ring->buffers);
        EXPECT_LE(ring->turnOf[op], int(op));
      }
    ASSERT_FALSE(streamed.empty());
    for (bool prefill : {false, true}) {
      const RingStep &step = ring->step(prefill);
      std::set<int> loaded;
      std::vector<int> lastUser(size_t(ring->buffers), -1);
      for (const RingLoad &load : step.loads) {
        EXPECT_TRUE(loaded.insert(load.op).second) << "op " << load.op;
        int buffer = ring->bufferOf[size_t(load.op)];
        if (ring->turnOf[size_t(load.op)] == load.op && lastUser[buffer] >= 0) {
          ASSERT_FALSE(load.after.empty()) << "op " << load.op;
          EXPECT_GE(load.after.back(), lastUser[buffer]) << "op " << load.op;
        }
        for (int op : load.after)
          EXPECT_LT(op, load.op);
        lastUser[buffer] = std::max(lastUser[buffer], load.op);
      }
      EXPECT_EQ(loaded, streamed) << (prefill ? "prefill" : "decode");
    }
  }
}

TEST(RingSchedule, PlansWithoutStreamingHaveAnEmptyRing) {
  ResolvedGoldenPlan r = loadResolved("tiny-mixtral", "resident");
  Result<RingSchedule> ring = resolveRingSchedule(r.plan.plan(), r.model);
  ASSERT_TRUE(ring.ok()) << ring.error().message();
  EXPECT_EQ(ring->buffers, 0);
  EXPECT_TRUE(ring->decode.loads.empty());
  EXPECT_TRUE(std::all_of(ring->bufferOf.begin(), ring->bufferOf.end(),
                          [](int b) { return b < 0; }));
}

// Two buffers where the plan had one, layers alternating between them: each
// layer's copy now waits for the layer two back, and the resolved ring says
// so.
TEST(RingSchedule, FollowsAnEditedSchedule) {
  ResolvedGoldenPlan r = loadResolved("tiny-qwen2-moe", "streamed");
  LoadedPlan twoBuffers = edited(r.plan, alternateRingBuffers);
  Result<RingSchedule> ring = resolveRingSchedule(twoBuffers.plan(), r.model);
  ASSERT_TRUE(ring.ok()) << ring.error().message();
  EXPECT_EQ(ring->buffers, 2);
  std::set<int> buffersUsed(ring->bufferOf.begin(), ring->bufferOf.end());
  EXPECT_EQ(buffersUsed, (std::set<int>{-1, 0, 1}));
  size_t unwaited = 0;
  for (const RingLoad &load : ring->decode.loads)
    unwaited += load.after.empty();
  Result<RingSchedule> original = resolveRingSchedule(r.plan.plan(), r.model);
  ASSERT_TRUE(original.ok());
  size_t originallyUnwaited = 0;
  for (const RingLoad &load : original->decode.loads)
    originallyUnwaited += load.after.empty();
  EXPECT_GT(unwaited, originallyUnwaited) << "two layers start at once";
}

TEST(RingSchedule, RefusesSchedulesNoExecutorCanFollow) {
  ResolvedGoldenPlan r = loadResolved("tiny-qwen2-moe", "streamed");
  auto expectRefused = [&](const std::function<void(plan::PlanT &)> &edit,
                           const std::string &error) {
    std::string got = errorOf(edited(r.plan, edit));
    EXPECT_NE(got.find(error), std::string::npos) << got;
  };
  auto firstWaitingCopy = [](plan::StepScheduleT &step) -> plan::JobT & {
    for (auto &job : step.jobs)
      if (isRingCopy(*job) && !job->after.empty())
        return *job;
    ADD_FAILURE() << "no ring copy waits";
    return *step.jobs.front();
  };
  // A compute job on an op of another stage.
  expectRefused(
      [](plan::PlanT &p) {
        for (auto &job : p.schedule->decode->jobs)
          if (job->kind == plan::JobKind::compute &&
              job->stage == "attention") {
            job->stage = "router";
            return;
          }
      },
      "whose stage is 'attention'");
  // A job naming a module no op is.
  expectRefused(
      [](plan::PlanT &p) { p.schedule->prefill->jobs.back()->module_ = 99; },
      "which is no op's module");
  // A copy that would overwrite the buffer while the layer before reads it.
  expectRefused(
      [&](plan::PlanT &p) {
        firstWaitingCopy(*p.schedule->decode).after.clear();
      },
      "overwrites ring buffer 0");
  // A copy waiting for a KV copy, not for compute.
  expectRefused(
      [&](plan::PlanT &p) {
        plan::StepScheduleT &step = *p.schedule->decode;
        plan::JobT &copy = firstWaitingCopy(step);
        for (uint32_t j = 0; j < copy.after[0]; ++j)
          if (step.jobs[j]->kind == plan::JobKind::kv_store)
            copy.after = {j};
      },
      "which computes nothing");
  // A copy waiting for the op it feeds: moved to the end of the step, after
  // that op's compute job.
  expectRefused(
      [&](plan::PlanT &p) {
        plan::StepScheduleT &step = *p.schedule->decode;
        auto copy = std::find_if(
            step.jobs.begin(), step.jobs.end(), [](const auto &job) {
              return isRingCopy(*job) && !job->after.empty();
            });
        ASSERT_NE(copy, step.jobs.end());
        std::unique_ptr<plan::JobT> moved = std::move(*copy);
        step.jobs.erase(copy);
        for (auto &job : step.jobs)
          for (uint32_t &dep : job->after)
            dep -= dep > uint32_t(copy - step.jobs.begin()) ? 1 : 0;
        for (uint32_t j = 0; j < step.jobs.size(); ++j)
          if (step.jobs[j]->kind == plan::JobKind::compute &&
              step.jobs[j]->layer == moved->layer &&
              step.jobs[j]->module_ == moved->module_)
            moved->after = {j};
        step.jobs.push_back(std::move(moved));
      },
      "which runs later");
  // The prefill step putting an op in another buffer than the decode step.
  expectRefused(
      [](plan::PlanT &p) {
        for (auto &pool : p.schedule->pools)
          if (pool->kind == plan::PoolKind::weight_ring)
            pool->count = 2;
        for (auto &job : p.schedule->prefill->jobs)
          if (isRingCopy(*job))
            job->buffer = 1;
      },
      "the decode step puts it in buffer 0");
}

} // namespace
} // namespace moe::model
