// The per-head decay rates of MiniMax's lightning attention, derived from the
// plan's layer factor once for both backends.
#pragma once

#include <cstdint>
#include <vector>

namespace moe::model {

/// λ_h of each of `heads` heads: HF's slope rate in fp32, (2^(−8/H))^h for
/// h = 1..H, times the layer's factor.
std::vector<float> lightningDecays(int64_t heads, double layerScale);

} // namespace moe::model
