// The host-side RoPE table, built with cpu::RopeTable's exact arithmetic.
#include "runtime/backends/cuda/kernels/Kernels.h"

#include <cmath>

namespace moe::cuda::kernels {

void buildRopeTable(const float *inverseFrequencies, int64_t half,
                    double attentionFactor, int64_t maxPositions, float *cos,
                    float *sin) {
  float attention = static_cast<float>(attentionFactor);
  for (int64_t p = 0; p < maxPositions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      float angle = static_cast<float>(p) * inverseFrequencies[i];
      cos[p * half + i] =
          static_cast<float>(std::cos(static_cast<double>(angle))) * attention;
      sin[p * half + i] =
          static_cast<float>(std::sin(static_cast<double>(angle))) * attention;
    }
}

} // namespace moe::cuda::kernels
