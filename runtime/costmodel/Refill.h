// When a refilled batch takes in new prompts, and what its steady state
// makes of the decode rate. A streamed plan's prefill pass streams every
// weight the GPU does not hold, however few prompts it prefills: refilling
// each step that frees a slot pays that again and again, while waiting for
// more free slots leaves them idle meanwhile.
#pragma once

#include <cstdint>

#include "runtime/costmodel/Lengths.h"

namespace moe::costmodel {

// The free slots at which refilling pays, of `residentBatch` slots whose
// sequences generate `meanGenerated` tokens on average, decode steps of
// `stepSeconds` and a prefill pass costing `passSeconds` besides its
// prompts' own work (which is the same however the prompts are grouped).
// Refilling every k steps costs passSeconds / k a step; the B / E[G]
// sequences finishing a step leave f·k / 2 slots idle on average, each a
// token of the step's B: k = √(2·passSeconds·E[G] / step) balances the
// two, when f·k = B·√(2·passSeconds / (E[G]·step)) slots are free. At
// least 1 (refill as soon as a slot frees), at most B.
int64_t refillSlots(int64_t residentBatch, double meanGenerated,
                    double stepSeconds, double passSeconds);

// One cycle of a refilled batch's steady state: a prefill pass of
// `prompts` new prompts, which gives each its first token, then `steps`
// decode steps until enough slots are free again, with `idleSlots` of the
// B empty on average meanwhile; `newTokens` in all.
struct RefillCycle {
  int64_t prompts = 0;
  double steps = 0;
  double idleSlots = 0;
  double newTokens = 0;
};

// The cycle of `residentBatch` slots refilled when `slots` are free. A
// sequence of G tokens holds its slot for G − 1 decode steps after its
// prefill. Generations all of one length finish together: the whole batch
// is refilled every G − 1 steps and no slot waits. Otherwise B / E[G − 1]
// finish each step, a pass comes every max(1, slots·E[G − 1] / B) steps and
// takes in those that finished since, half of which sat idle on average.
RefillCycle refillCycle(int64_t residentBatch,
                        const LengthDistribution &generated, int64_t slots);

// New tokens a second in that steady state: the cycle's tokens over its
// decode steps and its pass (`passSeconds`, its prompts' work included).
double refilledTokensPerSecond(const RefillCycle &cycle, double stepSeconds,
                               double passSeconds);

} // namespace moe::costmodel
