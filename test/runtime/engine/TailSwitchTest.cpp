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
// from 64 to its budget, a sequence past 64 from its next token on.
TEST(TailSwitch, ExpectsWhatThePlannedLengthsLeave) {
  PlanSpec spec = withTail();
  spec.minGeneratedTokens = 64;
  LoadedPlan job = loaded(spec);
  TailSwitch tail(job, 0);
  std::vector<LiveSequence> early{{10, 256, 522}};
  EXPECT_EQ(tail.estimate(early).steps, (64 + 256) / 2 - 10);
  std::vector<LiveSequence> late{{99, 200, 611}};
  EXPECT_EQ(tail.estimate(late).steps, (100 + 200) / 2 - 99);
}

} // namespace
} // namespace moe
