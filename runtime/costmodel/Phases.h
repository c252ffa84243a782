// Plans for a job's phases. Once the last request is admitted, a job's
// sequences only finish: the live batch shrinks from B towards none while
// every step still streams the weights the steady-state plan does not keep
// on the GPU. A plan made for few long sequences (fewer slots, so less KV
// staging and activation memory, so more weights resident, and host pools
// holding whole contexts) runs those steps faster; the runtime switches to
// it when the sequences left fit it and the time it saves outweighs
// recomputing their caches.
#pragma once

#include <optional>
#include <vector>

#include "runtime/costmodel/PlanSearch.h"

namespace moe::costmodel {

// The share of a refilled batch's sequences still generating `steps` decode
// steps after the last admission: a live sequence is caught at a uniform
// point of its generation, and longer generations are live longer, so it
// has E[(G - steps)+] / E[G] of them left.
double tailSurvival(const GenerationLengths &lengths, double steps);

// A plan's decode step as the number of its live sequences goes down, at
// the contexts of `lengths`: points at 1, 2, 4, ... live sequences and at
// B, linear between them.
struct LiveStepCurve {
  std::vector<int64_t> live;
  std::vector<double> seconds;
  double at(double sequences) const;
};

// `plan` with only `live` of its slots holding sequences: the same resident
// weights, the same shares of sequences on the GPU and on the host's
// cores, contexts as `lengths` has them (priced whether or not its memory
// would hold all its slots at those contexts).
Result<double> stepSecondsWithLive(const ModelCosts &model,
                                   const HardwareProfile &profile,
                                   const Plan &plan, int64_t live,
                                   const GenerationLengths &lengths);
Result<LiveStepCurve> liveStepCurve(const ModelCosts &model,
                                    const HardwareProfile &profile,
                                    const Plan &plan,
                                    const GenerationLengths &lengths);

// The contexts of a job's drain (its steps after the last admission): the
// sequences left are the longest, so every one is priced at the job's
// longest generation.
GenerationLengths drainLengths(const GenerationLengths &job);

// The job's plan as its batch drains: its live-step curve at the drain's
// contexts.
struct DrainCurve {
  GenerationLengths lengths;
  LiveStepCurve steps;
};
Result<DrainCurve> drainCurve(const ModelCosts &model,
                              const HardwareProfile &profile, const Plan &main);

struct TailChoice {
  PlanChoice plan; // its B is the most live sequences it takes over
  LiveStepCurve tailSteps; // at the drain's contexts, as the main curve
  // The tail from the step the live sequences fit the tail plan to the
  // last one: its steps, and its time on the steady-state plan.
  int64_t tailStepCount = 0;
  double mainTailSeconds = 0;
  // Recomputing the caches of the sequences it takes over.
  double recomputeSeconds = 0;
  double savedSeconds = 0; // net of the recompute
};

// The tail plan that saves the most of the job's tail behind `main` (whose
// drain is `drain`), among plans for B/16, B/8 and B/4 sequences; none when
// none saves time.
Result<std::optional<TailChoice>> selectTailPlan(const ModelCosts &model,
                                                 const HardwareProfile &profile,
                                                 const Plan &main,
                                                 const DrainCurve &drain,
                                                 const SearchOptions &options);

} // namespace moe::costmodel
