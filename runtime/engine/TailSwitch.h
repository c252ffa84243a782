// When a job hands its tail to the plan compiled for it (the plan's phase
// "tail"): once every request has been admitted and the live sequences fit
// the tail plan's slots, the time the tail plan is predicted to save over
// the steps the live sequences are expected to run must outweigh switching:
// preparing its backend (as long as the job's own took) and recomputing the
// live sequences' caches at its prefill rate. Both plans' step times come
// from the compiler's cost model (plan::Phase's curves), as the live count
// goes down.
#pragma once

#include "runtime/costmodel/Phases.h"
#include "runtime/engine/Engine.h"
#include "runtime/plan/LoadedPlan.h"

#include <optional>
#include <span>

namespace moe {

class TailSwitch {
public:
  /// `job` must carry a phase "tail" (hasTail); `prepareSeconds` is what
  /// preparing the job's backend took.
  TailSwitch(const LoadedPlan &job, double prepareSeconds);
  static bool hasTail(const LoadedPlan &job);
  /// The tail phase's plan, to prepare a backend for.
  const LoadedPlan &tailPlan() const { return *tailPlan_; }
  int64_t slots() const { return slots_; }

  struct Estimate {
    int64_t steps = 0;        // until the last live sequence is expected done
    double savedSeconds = 0;  // by the tail plan over those steps
    double switchSeconds = 0; // preparing it and recomputing the caches
    int64_t recomputeTokens = 0;
  };
  /// What switching now would save and cost. A sequence's length is taken
  /// from the generation lengths the job was planned for, given that it
  /// has not stopped yet, and cut at its budget.
  Estimate estimate(std::span<const LiveSequence> live) const;
  /// Switch now? Asks once the live sequences fit the tail plan; says yes
  /// at most once.
  std::optional<PhaseChange> decide(std::span<const LiveSequence> live);

private:
  const LoadedPlan *tailPlan_;
  int64_t slots_, contextTokens_;
  costmodel::LiveStepCurve current_, tail_;
  // The generation lengths the job was planned for.
  costmodel::LengthDistribution generated_ =
      costmodel::LengthDistribution::fixed(0);
  double recomputeTokensPerSecond_, prepareSeconds_;
  bool decided_ = false;
};

} // namespace moe
