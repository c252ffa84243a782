// The weight ring as a plan's schedule drives it: which ring buffer holds
// each streamed op's weights, and, for a decode step and a prefill pass, the
// copies into the ring in the plan's issue order with the ops each one waits
// for. Resolved from the schedule's jobs (each names its op by the cost
// model's layer and module) and checked once, so that an executor copies
// what the planner priced, where and when it priced it, and a schedule that
// would overwrite weights still in use is refused before anything runs.
#pragma once

#include "runtime/model/ResolvedModel.h"
#include "runtime/schemas/plan_generated.h"
#include "runtime/support/Result.h"

#include <cstdint>
#include <vector>

namespace moe::model {

/// One copy of an op's streamed weights into its ring buffer.
struct RingLoad {
  int op;
  /// Ops that must have run, for all rows of the pass, before the copy
  /// starts: the buffer's previous users are done with it.
  std::vector<int> after;
};

/// The ring copies of one step, in the plan's issue order.
struct RingStep {
  std::vector<RingLoad> loads;
};

struct RingSchedule {
  int buffers = 0; // 0: the plan streams nothing through a ring
  int64_t bufferBytes = 0;
  /// Per op: its ring buffer, -1 when the schedule copies none of its
  /// weights into the ring.
  std::vector<int> bufferOf;
  /// Per op: the first op of its turn, the ops whose weights fill its buffer
  /// together (one streaming layer, as the planner lays the ring out); ops
  /// of one turn sit one after the other in the buffer. -1 with no buffer.
  std::vector<int> turnOf;
  RingStep decode, prefill;

  const RingStep &step(bool prefill) const {
    return prefill ? this->prefill : decode;
  }
  /// Whether a copy of either step waits for op `op`.
  bool awaited(int op) const;
};

/// The ring part of `plan`'s schedule over `model` (resolved from the same
/// plan). Every job's (layer, module) must name an op, each compute job that
/// op's stage; every ring copy waits only for compute jobs, after the ops
/// that used its buffer before and before the op it feeds; each streamed op
/// is copied once a step, into the same buffer in both steps. A plan without
/// a schedule yields an empty ring. Errors name the step and the job.
Result<RingSchedule> resolveRingSchedule(const plan::Plan &plan,
                                         const ResolvedModel &model);

} // namespace moe::model
