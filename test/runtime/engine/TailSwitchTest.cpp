#include "runtime/engine/TailSwitch.h"
#include "test/runtime/plan/PlanBuilder.h"

#include <gtest/gtest.h>

namespace moe {
namespace {

using testing::buildPlan;
using testing::PlanSpec;
using testing::withTail;

LoadedPlan loaded(const PlanSpec &spec) {
  Result<LoadedPlan> plan = LoadedPlan::fromBytes(buildPlan(spec), "x");
  EXPECT_TRUE(plan.ok()) << plan.error().message();
  return std::move(plan).value();
}

// Two sequences of a job whose generations are all 256 long: 156 and 56
// steps left. One is live for 100 steps (1.0 s against 0.5 s a step), two
// for 56 (1.1 against 0.6): 50 + 28 s saved.
TEST(TailSwitch, SavesWhatTheStepsLeftSaveOnTheTailPlan) {
  LoadedPlan job = loaded(withTail());
  ASSERT_TRUE(TailSwitch::hasTail(job));
  TailSwitch tail(job, 60);
  std::vector<LiveSequence> live{{100, 300, 612}, {200, 256, 712}};
  TailSwitch::Estimate estimate = tail.estimate(live);
  EXPECT_EQ(estimate.steps, 156);
  EXPECT_DOUBLE_EQ(estimate.savedSeconds, 78);
  EXPECT_EQ(estimate.recomputeTokens, 1324);
  // The tail plan in this test predicts no prefill rate: preparing only.
  EXPECT_DOUBLE_EQ(estimate.switchSeconds, 60);
  std::optional<PhaseChange> change = tail.decide(live);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->phase, "tail");
  EXPECT_NE(change->why.find("2 sequences live (mean context 662)"),
            std::string::npos)
      << change->why;
  EXPECT_NE(change->why.find("saves 78 s against 60 s"), std::string::npos)
      << change->why;
  EXPECT_FALSE(tail.decide(live)) << "it switches once";
}

TEST(TailSwitch, WaitsWhileSwitchingCostsMoreThanItSaves) {
  LoadedPlan job = loaded(withTail());
  TailSwitch tail(job, 100);
  std::vector<LiveSequence> live{{100, 300, 612}, {200, 256, 712}};
  EXPECT_FALSE(tail.decide(live));
  // Fewer steps done, more left to save.
  live = {{0, 256, 512}, {0, 256, 512}};
  EXPECT_TRUE(tail.decide(live));
}

TEST(TailSwitch, WaitsUntilTheLiveSequencesFitItsSlots) {
  LoadedPlan job = loaded(withTail());
  TailSwitch tail(job, 0);
  std::vector<LiveSequence> five(5, LiveSequence{0, 256, 512});
  EXPECT_FALSE(tail.decide(five));
  five.pop_back();
  EXPECT_TRUE(tail.decide(five));
}

// Planned spread over 64..256: a sequence 10 tokens in may stop anywhere
// from 64 to its budget; one 99 tokens in stops at 100..256 alike, cut at
// its budget of 200 (57 of those 157 lengths reach it).
TEST(TailSwitch, ExpectsWhatThePlannedLengthsLeave) {
  PlanSpec spec = withTail();
  spec.minGeneratedTokens = 64;
  LoadedPlan job = loaded(spec);
  TailSwitch tail(job, 0);
  std::vector<LiveSequence> early{{10, 256, 522}};
  EXPECT_EQ(tail.estimate(early).steps, (64 + 256) / 2 - 10);
  std::vector<LiveSequence> late{{99, 200, 611}};
  int64_t below = (100 + 199) * 100 / 2;
  EXPECT_EQ(tail.estimate(late).steps, (below + 57 * 200) / 157 - 99);
}

// A job planned for its own lengths: most sequences stop within 16 tokens,
// a few run to 256; one still running at 16 is one of the long ones.
TEST(TailSwitch, ExpectsWhatTheJobsOwnLengthsLeave) {
  PlanSpec spec = withTail();
  spec.generatedLengths = {1, 16, 9, 256, 256, 1};
  LoadedPlan job = loaded(spec);
  TailSwitch tail(job, 0);
  std::vector<LiveSequence> running{{16, 256, 528}};
  EXPECT_EQ(tail.estimate(running).steps, 256 - 16);
  std::vector<LiveSequence> young{{0, 256, 512}};
  // E[G] = 0.9 · 8.5 + 0.1 · 256.
  EXPECT_EQ(tail.estimate(young).steps, int64_t(0.9 * 8.5 + 0.1 * 256));
}

} // namespace
} // namespace moe
