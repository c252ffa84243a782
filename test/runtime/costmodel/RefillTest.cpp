#include "runtime/costmodel/Refill.h"

#include <gtest/gtest.h>

#include <cmath>

namespace moe::costmodel {
namespace {

// Refilling every k steps costs pass / k a step and leaves f·k / 2 slots
// idle on average (f = B / E[G] finish a step), each step / B of a step:
// the chosen free slots make the sum the least over k.
TEST(Refill, BalancesPassesAgainstIdleSlots) {
  const int64_t batch = 1024;
  const double meanGenerated = 256, step = 1.4, pass = 0.8;
  int64_t slots = refillSlots(batch, meanGenerated, step, pass);
  double finishing = double(batch) / meanGenerated;
  auto costPerStep = [&](double k) {
    return pass / k + finishing * k / 2 * step / double(batch);
  };
  double chosen = double(slots) / finishing;
  for (double k = 1; k < 200; k += 0.5)
    EXPECT_LE(costPerStep(chosen), costPerStep(k) + 1e-3) << k;
  EXPECT_EQ(slots,
            std::llround(batch * std::sqrt(2 * pass / (meanGenerated * step))));
}

TEST(Refill, AsSoonAsASlotFreesWhereAPassCostsNothing) {
  EXPECT_EQ(refillSlots(1024, 256, 1.4, 0), 1);
  EXPECT_EQ(refillSlots(1, 256, 1.4, 0.8), 1);
  EXPECT_EQ(refillSlots(1024, 0, 1.4, 0.8), 1);
  // A pass dearer than every slot idling waits for all of them.
  EXPECT_EQ(refillSlots(16, 2, 0.01, 100), 16);
}

// Generations spread over 2..512 (mean 257): a sequence decodes 256 steps
// on average after the pass that gave its first token, so 4 of 1024 slots
// free a step.
TEST(Refill, SpreadGenerationsRefillTheSlotsThatFreedSince) {
  LengthDistribution generated = LengthDistribution::uniform(2, 512);
  RefillCycle cycle = refillCycle(1024, generated, 40);
  EXPECT_EQ(cycle.prompts, 40);
  EXPECT_DOUBLE_EQ(cycle.steps, 10);
  EXPECT_DOUBLE_EQ(cycle.idleSlots, 20);
  // 10 steps of 1,004 busy slots and the 40 first tokens, in 10 × 1.4 s
  // and a 2 s pass.
  EXPECT_DOUBLE_EQ(cycle.newTokens, 10 * 1004 + 40);
  EXPECT_DOUBLE_EQ(refilledTokensPerSecond(cycle, 1.4, 2), 10080 / 16.0);
  // Refilling at each freed slot still waits a step, for the 4 that free
  // in it.
  RefillCycle eager = refillCycle(1024, generated, 1);
  EXPECT_EQ(eager.prompts, 4);
  EXPECT_DOUBLE_EQ(eager.steps, 1);
  EXPECT_DOUBLE_EQ(eager.idleSlots, 2);
}

// Generations of one length end together: the whole batch every G − 1
// decode steps, whatever the slots, and no slot waits.
TEST(Refill, OneLengthRefillsTheWholeBatch) {
  RefillCycle cycle = refillCycle(512, LengthDistribution::fixed(256), 40);
  EXPECT_EQ(cycle.prompts, 512);
  EXPECT_DOUBLE_EQ(cycle.steps, 255);
  EXPECT_DOUBLE_EQ(cycle.idleSlots, 0);
  EXPECT_DOUBLE_EQ(cycle.newTokens, 512 * 256);
  EXPECT_DOUBLE_EQ(refilledTokensPerSecond(cycle, 0.5, 64),
                   512 * 256 / (127.5 + 64));
}

// One token each is the pass's alone; none at all makes nothing.
TEST(Refill, ShortGenerationsArePassesAlone) {
  RefillCycle one = refillCycle(64, LengthDistribution::fixed(1), 8);
  EXPECT_DOUBLE_EQ(one.steps, 0);
  EXPECT_DOUBLE_EQ(refilledTokensPerSecond(one, 0.5, 4), 64 / 4.0);
  RefillCycle none = refillCycle(64, LengthDistribution::fixed(0), 8);
  EXPECT_EQ(none.prompts, 64);
  EXPECT_DOUBLE_EQ(none.steps, 0);
  EXPECT_DOUBLE_EQ(refilledTokensPerSecond(none, 0.5, 3), 0);
}

} // namespace
} // namespace moe::costmodel
