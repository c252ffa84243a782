// When a refilled batch takes in new prompts. A streamed plan's prefill
// pass streams every weight the GPU does not hold, however few prompts it
// prefills: refilling each step that frees a slot pays that again and
// again, while waiting for more free slots leaves them idle meanwhile.
#pragma once

#include <cstdint>

namespace moe::costmodel {

// The free slots at which refilling pays, of `residentBatch` slots whose
// sequences generate `meanGenerated` tokens on average, decode steps of
// `stepSeconds` and a prefill pass costing `passSeconds` besides its
// prompts' own work. Refilling every k steps costs passSeconds / k a step;
// the B / E[G] sequences finishing a step leave f·k / 2 slots idle on
// average, each a token of the step's B: k = √(2·passSeconds·E[G] / step)
// balances the two, when f·k = B·√(2·passSeconds / (E[G]·step)) slots are
// free. At least 1 (refill as soon as a slot frees), at most B.
int64_t refillSlots(int64_t residentBatch, double meanGenerated,
                    double stepSeconds, double passSeconds);

// What refilling at `slots` free slots costs in that model: a pass every
// `stepsBetween` steps (at least every step) and, per step, its share of
// a pass and of the idle slots, as a fraction of the step.
struct RefillCost {
  double stepsBetween = 1;
  double fractionOfStep = 0;
};
RefillCost refillCost(int64_t residentBatch, double meanGenerated,
                      double stepSeconds, double passSeconds, int64_t slots);

} // namespace moe::costmodel
