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

RefillCost refillCost(int64_t residentBatch, double meanGenerated,
                      double stepSeconds, double passSeconds, int64_t slots) {
  if (residentBatch <= 0 || !(meanGenerated > 0) || !(stepSeconds > 0))
    return {};
  double finishing = double(residentBatch) / meanGenerated;
  double between = std::max(1.0, double(slots) / finishing);
  return {between, std::max(0.0, passSeconds) / (between * stepSeconds) +
                       between / (2 * meanGenerated)};
}

} // namespace moe::costmodel
