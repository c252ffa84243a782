#include "runtime/model/Rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace moe::model {

RopeParams RopeParams::fromPlan(const plan::Rope &rope) {
  RopeParams p;
  p.style = rope.style();
  p.theta = rope.theta();
  p.rotaryDim = rope.rotary_dim();
  p.yarn = rope.scaling() == plan::RopeScaling::yarn;
  p.factor = rope.factor();
  p.originalMaxPosition = rope.original_max_position();
  p.betaFast = rope.beta_fast();
  p.betaSlow = rope.beta_slow();
  p.truncate = rope.truncate();
  p.attentionFactor = rope.attention_factor();
  return p;
}

YarnRange yarnCorrectionRange(const RopeParams &rope) {
  double d = static_cast<double>(rope.rotaryDim);
  auto correctionDim = [&](double rotations) {
    return d *
           std::log(static_cast<double>(rope.originalMaxPosition) /
                    (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(rope.theta));
  };
  double low = correctionDim(rope.betaFast);
  double high = correctionDim(rope.betaSlow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  return {std::max(low, 0.0), std::min(high, d - 1)};
}

std::vector<float> ropeInverseFrequencies(const RopeParams &rope) {
  // HF builds these in fp32: base^(2i/d) as a float power, then 1/x.
  int64_t half = rope.rotaryDim / 2;
  float dim = static_cast<float>(rope.rotaryDim);
  std::vector<float> inverse(half);
  std::vector<float> power(half);
  for (int64_t i = 0; i < half; ++i) {
    float exponent = static_cast<float>(2 * i) / dim;
    power[i] = static_cast<float>(
        std::pow(static_cast<double>(static_cast<float>(rope.theta)),
                 static_cast<double>(exponent)));
    inverse[i] = 1.0f / power[i];
  }
  if (!rope.yarn)
    return inverse;
  YarnRange range = yarnCorrectionRange(rope);
  double high = range.high == range.low ? range.high + 0.001 : range.high;
  float factor = static_cast<float>(rope.factor);
  for (int64_t i = 0; i < half; ++i) {
    float ramp = (static_cast<float>(i) - static_cast<float>(range.low)) /
                 static_cast<float>(high - range.low);
    ramp = std::clamp(ramp, 0.0f, 1.0f);
    float extrapolation = 1.0f - ramp;
    float interpolated = 1.0f / (factor * power[i]);
    inverse[i] =
        interpolated * (1.0f - extrapolation) + inverse[i] * extrapolation;
  }
  return inverse;
}

RopeTables ropeTables(const RopeParams &rope, int64_t maxPositions) {
  std::vector<float> inverse = ropeInverseFrequencies(rope);
  int64_t half = rope.rotaryDim / 2;
  float attention = static_cast<float>(rope.attentionFactor);
  RopeTables tables{std::vector<float>(maxPositions * half),
                    std::vector<float>(maxPositions * half)};
  for (int64_t p = 0; p < maxPositions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      float angle = static_cast<float>(p) * inverse[i];
      tables.cos[p * half + i] =
          static_cast<float>(std::cos(static_cast<double>(angle))) * attention;
      tables.sin[p * half + i] =
          static_cast<float>(std::sin(static_cast<double>(angle))) * attention;
    }
  return tables;
}

} // namespace moe::model
