#include "runtime/costmodel/Refill.h"

#include <algorithm>
#include <cmath>

namespace moe::costmodel {

int64_t refillSlots(int64_t residentBatch, double meanGenerated,
                    double stepSeconds, double passSeconds) {
  if (residentBatch <= 1 || !(meanGenerated > 0) || !(stepSeconds > 0) ||
      !(passSeconds > 0))
    return 1;
  double slots = double(residentBatch) *
                 std::sqrt(2 * passSeconds / (meanGenerated * stepSeconds));
  return std::clamp<int64_t>(std::llround(slots), 1, residentBatch);
}

RefillCycle refillCycle(int64_t residentBatch,
                        const LengthDistribution &generated, int64_t slots) {
  const double batch = double(std::max<int64_t>(residentBatch, 0));
  // Sequences that generate anything get their first token from the pass.
  const double answered = generated.exceeding(0);
  const double meanSteps = generated.mean() - answered; // E[max(G − 1, 0)]
  if (generated.shortest() == generated.longest() || !(meanSteps > 0))
    return {residentBatch, std::max(0.0, meanSteps), 0,
            batch * generated.mean()};
  double finishing = batch / meanSteps;
  double steps = std::max(
      1.0, double(std::clamp<int64_t>(slots, 1, residentBatch)) / finishing);
  int64_t prompts =
      std::clamp<int64_t>(std::llround(finishing * steps), 1, residentBatch);
  double idle = finishing * steps / 2;
  return {prompts, steps, idle,
          steps * (batch - idle) + double(prompts) * answered};
}

double refilledTokensPerSecond(const RefillCycle &cycle, double stepSeconds,
                               double passSeconds) {
  double seconds = cycle.steps * stepSeconds + std::max(0.0, passSeconds);
  return seconds > 0 ? cycle.newTokens / seconds : 0;
}

} // namespace moe::costmodel
