// A schedule's buffer pool of one kind, for the resolutions of its jobs.
#pragma once

#include "runtime/schemas/plan_generated.h"
#include "runtime/support/Result.h"

namespace moe::model {

/// The index of `schedule`'s pool of `kind`, -1 without one; two pools of
/// the kind are an error.
inline Result<int> onlyPool(const plan::Schedule &schedule,
                            plan::PoolKind kind) {
  int found = -1;
  const auto &pools = *schedule.pools();
  for (uint32_t p = 0; p < pools.size(); ++p) {
    if (pools.Get(p)->kind() != kind)
      continue;
    if (found >= 0)
      return makeError("schedule: pools {} and {} are both {} pools", found, p,
                       plan::EnumNamePoolKind(kind));
    found = int(p);
  }
  return found;
}

} // namespace moe::model
