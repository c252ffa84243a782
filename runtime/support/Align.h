// Sizes rounded up to the 16 bytes the GPU's vector loads and cp.async
// copies move at a time, shared by the KV and weight formats.
#pragma once

#include <cstdint>

namespace moe {

inline constexpr int64_t alignTo16(int64_t bytes) {
  return (bytes + 15) / 16 * 16;
}

} // namespace moe
