#include "runtime/model/Lightning.h"

#include <cmath>

namespace moe::model {

std::vector<float> lightningDecays(int64_t heads, double layerScale) {
  std::vector<float> decays;
  for (int64_t h = 1; h <= heads; ++h) {
    float slope = static_cast<float>(
        std::pow(std::pow(2.0, -8.0 / static_cast<double>(heads)),
                 static_cast<double>(h)));
    decays.push_back(slope * static_cast<float>(layerScale));
  }
  return decays;
}

} // namespace moe::model
