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
  EXPECT_EQ(slots, std::llround(batch * std::sqrt(2 * pass /
                                                  (meanGenerated * step))));
  RefillCost cost = refillCost(batch, meanGenerated, step, pass, slots);
  EXPECT_DOUBLE_EQ(cost.stepsBetween, chosen);
  EXPECT_NEAR(cost.fractionOfStep, costPerStep(chosen) / step, 1e-12);
  // Refilling as soon as a slot frees: a pass every step where several
  // finish a step.
  RefillCost eager = refillCost(batch, meanGenerated, step, pass, 1);
  EXPECT_DOUBLE_EQ(eager.stepsBetween, 1);
  EXPECT_NEAR(eager.fractionOfStep,
              (pass + finishing / 2 * step / batch) / step, 1e-12);
  EXPECT_GT(eager.fractionOfStep, cost.fractionOfStep);
}

TEST(Refill, AsSoonAsASlotFreesWhereAPassCostsNothing) {
  EXPECT_EQ(refillSlots(1024, 256, 1.4, 0), 1);
  EXPECT_EQ(refillSlots(1, 256, 1.4, 0.8), 1);
  EXPECT_EQ(refillSlots(1024, 0, 1.4, 0.8), 1);
  // A pass dearer than every slot idling waits for all of them.
  EXPECT_EQ(refillSlots(16, 2, 0.01, 100), 16);
}

} // namespace
} // namespace moe::costmodel
