// The plan's schedule as a timeline: every job of its decode step and
// prefill pass at the time the cost model's critical-path evaluation starts
// it (each stream runs its jobs in issue order, a job also waits for the
// jobs it names), i.e. what the planner priced, to open beside what a
// backend measured.
#pragma once

#include "runtime/schemas/plan_generated.h"
#include "runtime/support/Result.h"
#include "runtime/trace/ChromeTrace.h"

namespace moe {

/// Adds the timelines "plan: decode step (predicted)" and "plan: prefill
/// pass (predicted)" to `trace`. A plan exported without the planner has no
/// schedule: an error says so.
Status addPlanTimelines(ChromeTrace &trace, const plan::Plan &plan);

} // namespace moe
