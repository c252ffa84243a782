// Edits of a plan's schedule that the tests apply to committed plans, to
// show that what runs follows the schedule (editPlan in GoldenFixture.h).
#pragma once

#include "runtime/schemas/plan_generated.h"

#include <cstdint>
#include <vector>

namespace moe {

inline bool isRingCopy(const plan::JobT &job) {
  return job.kind == plan::JobKind::copy_weights && job.pool >= 0;
}

/// A ring of one buffer (each layer's copies waiting for the end of the
/// layer streamed before) made a ring of two: layers alternate between the
/// buffers, and each layer's copies wait for the end of the layer streamed
/// two before, the first two layers' for nothing. The GPU budget grows by
/// the second buffer (and its alignment).
inline void alternateRingBuffers(plan::PlanT &plan) {
  plan::ScheduleT &schedule = *plan.schedule;
  for (auto &pool : schedule.pools)
    if (pool->kind == plan::PoolKind::weight_ring) {
      pool->count = 2;
      if (plan.batching)
        plan.batching->gpu_budget_bytes += pool->buffer_bytes + 4096;
    }
  for (plan::StepScheduleT *step :
       {schedule.decode.get(), schedule.prefill.get()}) {
    // Per streamed layer in order: the job its copies waited for, which
    // ends the layer streamed before it.
    std::vector<int64_t> layers;
    std::vector<uint32_t> previousEnd;
    for (auto &job : step->jobs) {
      if (!isRingCopy(*job))
        continue;
      if (layers.empty() || layers.back() != job->layer) {
        layers.push_back(job->layer);
        previousEnd.push_back(job->after.empty() ? 0 : job->after.front());
      }
      size_t turn = layers.size() - 1;
      job->buffer = int32_t(turn % 2);
      job->after.clear();
      if (turn >= 2) // the end of layer turn - 2 is what turn - 1 waited for
        job->after.push_back(previousEnd[turn - 1]);
    }
  }
}

} // namespace moe
