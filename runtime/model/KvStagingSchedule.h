// The KV staging of a plan's schedule as the executor runs it: host slots'
// cached K/V are loaded an attention micro-batch at a time into the buffers
// of the schedule's kv_staging pool, taken in turn across the layers of a
// step; a load waits for the store that emptied its buffer (the rows the
// micro-batch before added, copied back to pinned memory), and the
// micro-batch's attention reads the buffer its load filled. Resolved and
// checked once, so that an executor stages into the pool the schedule sizes
// and a schedule it could not follow is refused before anything runs. The
// micro-batches themselves follow the rows of each step, which differ from
// the B sequences at the mean context a schedule is priced for.
#pragma once

#include "runtime/model/ResolvedModel.h"
#include "runtime/schemas/plan_generated.h"
#include "runtime/support/Result.h"

#include <cstdint>

namespace moe::model {

struct KvStagingSchedule {
  int buffers = 0; // 0: the schedule has no kv_staging pool
  int64_t bufferBytes = 0;
  int64_t decodeLoads = 0; // the decode step's kv_load jobs
};

/// The kv_staging part of `plan`'s schedule over `model` (resolved from the
/// same plan). A plan without a schedule yields no buffers. Errors name the
/// step and the job.
Result<KvStagingSchedule> resolveKvStagingSchedule(const plan::Plan &plan,
                                                   const ResolvedModel &model);

} // namespace moe::model
