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

/// The KV staging pool grown to `buffers` buffers: the decode and prefill
/// steps' loads take them in turn, each waiting for the store of the load
/// `buffers` before it (the buffer's previous micro-batch), and each
/// micro-batch's attention and store use its load's buffer. The GPU budget
/// is left as it is: a backend sizes staging buffers for the context it is
/// prepared for.
inline void stageKvIn(plan::PlanT &plan, int buffers) {
  plan::ScheduleT &schedule = *plan.schedule;
  int staging = -1;
  for (size_t p = 0; p < schedule.pools.size(); ++p)
    if (schedule.pools[p]->kind == plan::PoolKind::kv_staging) {
      staging = int(p);
      schedule.pools[p]->count = buffers;
    }
  for (plan::StepScheduleT *step :
       {schedule.decode.get(), schedule.prefill.get()}) {
    std::vector<uint32_t> stores; // per load: its store job
    int loads = 0, buffer = -1;
    for (uint32_t j = 0; j < step->jobs.size(); ++j) {
      plan::JobT &job = *step->jobs[j];
      if (job.pool != staging)
        continue;
      if (job.kind == plan::JobKind::kv_load) {
        buffer = loads % buffers;
        job.after.clear();
        if (loads >= buffers)
          job.after.push_back(stores[size_t(loads - buffers)]);
        stores.push_back(0);
        ++loads;
      } else if (job.kind == plan::JobKind::kv_store) {
        stores.back() = j;
      }
      job.buffer = buffer;
    }
  }
}

} // namespace moe
