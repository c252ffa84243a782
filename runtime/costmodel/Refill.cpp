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

} // namespace moe::costmodel
