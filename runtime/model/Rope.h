// RoPE as the plan describes it, and the inverse frequencies HF derives from
// it. Both backends build their cos/sin tables from these frequencies, so
// they rotate by the same fp32 angles.
#pragma once

#include "runtime/schemas/plan_generated.h"

#include <cstdint>
#include <vector>

namespace moe::model {

struct RopeParams {
  plan::RopeStyle style = plan::RopeStyle::neox;
  double theta = 10000.0;
  int64_t rotaryDim = 0;
  bool yarn = false;
  double factor = 1.0;
  int64_t originalMaxPosition = 0;
  double betaFast = 32.0;
  double betaSlow = 1.0;
  bool truncate = true;
  double attentionFactor = 1.0;

  static RopeParams fromPlan(const plan::Rope &rope);
  bool operator==(const RopeParams &) const = default;
};

/// YaRN's [low, high] dims (HF find_correction_range): below `low` the
/// original frequency, above `high` the frequency divided by the factor.
struct YarnRange {
  double low = 0;
  double high = 0;
};
YarnRange yarnCorrectionRange(const RopeParams &rope);

/// The rotaryDim/2 inverse frequencies, rounded to fp32 as HF keeps them.
std::vector<float> ropeInverseFrequencies(const RopeParams &rope);

/// cos and sin of every position's angles, [maxPositions, rotaryDim/2] each,
/// times the attention factor (YaRN): the angle p·inv[i] an fp32 product as
/// in HF's inv_freq @ positions, cos and sin taken in double and rounded to
/// fp32. Both backends rotate by these tables.
struct RopeTables {
  std::vector<float> cos, sin;
};
RopeTables ropeTables(const RopeParams &rope, int64_t maxPositions);

} // namespace moe::model
