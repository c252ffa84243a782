#include "runtime/costmodel/Phases.h"

#include <gtest/gtest.h>

#include "TestSupport.h"

namespace moe::costmodel {
namespace {

using testing::decodePlan;
using testing::syntheticProfile;
using testing::tinyMoe;
using testing::withHostAttention;

constexpr int64_t kMB = 1'000'000;

// The share of live sequences left `steps` after the last admission, by
// counting: each generation of g tokens is live for g steps of a refilled
// batch, and has g - steps of them left when caught more than `steps` from
// its end.
double countedSurvival(int64_t fewest, int64_t most, int64_t steps) {
  double left = 0, live = 0;
  for (int64_t g = fewest; g <= most; ++g) {
    live += double(g);
    left += double(std::max<int64_t>(g - steps, 0));
  }
  return left / live;
}

TEST(PhasesTest, TailSurvivalCountsTheStepsLeft) {
  GenerationLengths spread = GenerationLengths::spread(512, 8192, 1);
  for (int64_t steps : {0, 1, 100, 2000, 6000, 8191})
    EXPECT_NEAR(tailSurvival(spread, double(steps)),
                countedSurvival(1, 8192, steps), 1e-12)
        << steps;
  EXPECT_EQ(tailSurvival(spread, 8192), 0);
  GenerationLengths narrow = GenerationLengths::spread(512, 8192, 4096);
  for (int64_t steps : {0, 3000, 4096, 5000, 8000})
    EXPECT_NEAR(tailSurvival(narrow, double(steps)),
                countedSurvival(4096, 8192, steps), 1e-12)
        << steps;
  // All the same length: live sequences are spread evenly over it.
  GenerationLengths fixed = GenerationLengths::spread(512, 1000);
  EXPECT_DOUBLE_EQ(tailSurvival(fixed, 250), 0.75);
}

TEST(PhasesTest, LiveStepCurveIsLinearBetweenItsPoints) {
  LiveStepCurve curve{{1, 2, 4, 6}, {1.0, 2.0, 4.0, 5.0}};
  EXPECT_DOUBLE_EQ(curve.at(0.5), 1.0);
  EXPECT_DOUBLE_EQ(curve.at(3), 3.0);
  EXPECT_DOUBLE_EQ(curve.at(5), 4.5);
  EXPECT_DOUBLE_EQ(curve.at(9), 5.0);
}

// A GPU too small for the model at a large batch: the steady state streams
// weights; the tail's plan, for few sequences, keeps more of them resident.
struct Streamed {
  ModelCosts model = tinyMoe();
  HardwareProfile profile = syntheticProfile(150 * kMB, 4000 * kMB);
  GenerationLengths lengths = GenerationLengths::spread(100, 400, 1);
  SearchOptions options;
  Streamed() {
    options.decodeMicroBatches = {1, 4, 16, 64};
    options.prefillChunkTokens = 200;
    options.expertMicroBatches = {16, 1024};
  }
  PlanChoice main() const {
    auto choice = selectPlan(model, profile, lengths, options);
    EXPECT_TRUE(choice.ok()) << choice.error().message();
    return *choice;
  }
};

TEST(PhasesTest, APlanWithFewerLiveSequencesIsPricedWithItsOwnWeights) {
  Streamed job;
  PlanChoice main = job.main();
  const Plan &plan = main.best.plan;
  auto full = stepSecondsWithLive(job.model, job.profile, plan,
                                  plan.residentBatch, plan.lengths);
  ASSERT_TRUE(full.ok()) << full.error().message();
  EXPECT_DOUBLE_EQ(*full, main.best.decodeStepSeconds);
  auto curve = liveStepCurve(job.model, job.profile, plan,
                             GenerationLengths::spread(100, 400));
  ASSERT_TRUE(curve.ok()) << curve.error().message();
  ASSERT_EQ(curve->live.back(), plan.residentBatch);
  EXPECT_EQ(curve->live.front(), 1);
  for (size_t i = 1; i < curve->seconds.size(); ++i)
    EXPECT_LE(curve->seconds[i - 1], curve->seconds[i]) << curve->live[i];
  // One sequence still waits for the streamed weights (1 GB/s; the next
  // step's first copies overlap this one's last layers).
  EXPECT_GE(curve->seconds.front(),
            0.9 * main.best.decodeTraffic.weightBytesToGpu / 1e9);
}

// Half the KV on the GPU and half of the sequences attended by the host:
// at one or three live sequences both shares round up, and the host still
// attends no more than the host-KV sequences.
TEST(PhasesTest, FewLiveSequencesKeepTheHostShareWithinTheHostKv) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  plan.residentBatch = 8;
  plan.kvGpuFraction = 0.5;
  plan.cpuAttentionShare = 0.5;
  HardwareProfile profile = withHostAttention(1e9);
  for (int64_t live : {1, 3, 8}) {
    auto seconds =
        stepSecondsWithLive(model, profile, plan, live, plan.lengths);
    EXPECT_TRUE(seconds.ok()) << live << ": " << seconds.error().message();
  }
  auto curve = liveStepCurve(model, profile, plan, plan.lengths);
  ASSERT_TRUE(curve.ok()) << curve.error().message();
  EXPECT_EQ(curve->live, (std::vector<int64_t>{1, 2, 4, 8}));
}

TEST(PhasesTest, TheTailPlanKeepsMoreWeightsOnTheGpuAndSavesTime) {
  Streamed job;
  PlanChoice main = job.main();
  ASSERT_GT(main.best.decodeTraffic.weightBytesToGpu, 0);
  auto drain = drainCurve(job.model, job.profile, main.best.plan);
  ASSERT_TRUE(drain.ok()) << drain.error().message();
  // The drain is priced at the longest generation: the sequences left.
  EXPECT_EQ(drain->lengths.generated,
            LengthDistribution::fixed(job.lengths.longestGeneration()));
  auto tail = selectTailPlan(job.model, job.profile, main.best.plan, *drain,
                             job.options);
  ASSERT_TRUE(tail.ok()) << tail.error().message();
  ASSERT_TRUE(tail->has_value());
  const TailChoice &choice = **tail;
  const Plan &plan = choice.plan.best.plan;
  EXPECT_LE(plan.residentBatch, (main.best.plan.residentBatch + 3) / 4);
  EXPECT_GT(choice.plan.best.memory.residentWeightBytes,
            main.best.memory.residentWeightBytes);
  EXPECT_LT(choice.plan.best.decodeTraffic.weightBytesToGpu,
            main.best.decodeTraffic.weightBytesToGpu);
  EXPECT_TRUE(plan.wholeContextPool);
  EXPECT_EQ(plan.lengths.generated, drain->lengths.generated);
  EXPECT_GT(choice.tailStepCount, 0);
  EXPECT_LE(choice.tailStepCount, job.lengths.longestGeneration());
  EXPECT_GT(choice.recomputeSeconds, 0);
  EXPECT_GT(choice.savedSeconds, 0);
  EXPECT_LT(choice.savedSeconds + choice.recomputeSeconds,
            choice.mainTailSeconds);
  // Every live count the tail sees, the tail plan steps faster.
  for (int64_t live = 1; live <= plan.residentBatch; ++live)
    EXPECT_LT(choice.tailSteps.at(double(live)), drain->steps.at(double(live)))
        << live;
}

TEST(PhasesTest, NoTailPlanWhereTheModelIsResident) {
  Streamed job;
  job.profile = syntheticProfile(4000 * kMB, 4000 * kMB);
  PlanChoice main = job.main();
  ASSERT_EQ(main.best.decodeTraffic.weightBytesToGpu, 0);
  auto drain = drainCurve(job.model, job.profile, main.best.plan);
  ASSERT_TRUE(drain.ok()) << drain.error().message();
  auto tail = selectTailPlan(job.model, job.profile, main.best.plan, *drain,
                             job.options);
  ASSERT_TRUE(tail.ok()) << tail.error().message();
  EXPECT_FALSE(tail->has_value());
}

} // namespace
} // namespace moe::costmodel
