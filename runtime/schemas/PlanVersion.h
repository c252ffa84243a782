// The plan schema version. Writers stamp it; readers refuse any other. Bump
// it with every change to plan.fbs that old readers would misread.
#pragma once

#include <cstdint>

namespace moe::plan {
inline constexpr uint32_t kSchemaVersion = 1;
} // namespace moe::plan
