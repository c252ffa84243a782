#include "runtime/costmodel/Phases.h"

#include <algorithm>
#include <cmath>

namespace moe::costmodel {

double tailSurvival(const GenerationLengths &lengths, double steps) {
  double mean = lengths.generated.mean();
  if (mean <= 0)
    return 0;
  return lengths.generated.meanExcess(std::max(steps, 0.0)) / mean;
}

double LiveStepCurve::at(double sequences) const {
  if (live.empty())
    return 0;
  if (sequences <= double(live.front()))
    return seconds.front();
  for (size_t i = 1; i < live.size(); ++i)
    if (sequences <= double(live[i])) {
      double share =
          (sequences - double(live[i - 1])) / double(live[i] - live[i - 1]);
      return seconds[i - 1] + share * (seconds[i] - seconds[i - 1]);
    }
  return seconds.back();
}

Result<double> stepSecondsWithLive(const ModelCosts &model,
                                   const HardwareProfile &profile,
                                   const Plan &plan, int64_t live,
                                   const GenerationLengths &lengths) {
  Plan partial = plan;
  partial.residentBatch = live;
  partial.attentionMicroBatchDecode =
      std::min(plan.attentionMicroBatchDecode, live);
  partial.attentionMicroBatchPrefill =
      std::min(plan.attentionMicroBatchPrefill, live);
  partial.lengths = lengths;
  // The shares round separately at a few live sequences (ω 0.5 and a GPU-KV
  // fraction of 0.5 of one sequence both round up): the host attends at most
  // the sequences whose KV it holds.
  if (live > 0)
    partial.cpuAttentionShare =
        std::min(plan.cpuAttentionShare,
                 double(partial.hostKvSequences()) / double(live));
  // Priced, not fitted: the plan's memory was sized for its own job.
  MOE_RETURN_IF_ERROR(validatePlan(model, partial));
  MOE_ASSIGN_OR_RETURN(StepDag step,
                       buildDecodeStepDag(model, partial, profile));
  MOE_ASSIGN_OR_RETURN(Evaluation evaluation, evaluate(step.dag));
  return evaluation.makespan;
}

Result<LiveStepCurve> liveStepCurve(const ModelCosts &model,
                                    const HardwareProfile &profile,
                                    const Plan &plan,
                                    const GenerationLengths &lengths) {
  LiveStepCurve curve;
  for (int64_t live = 1; live < plan.residentBatch; live *= 2)
    curve.live.push_back(live);
  curve.live.push_back(plan.residentBatch);
  for (int64_t live : curve.live) {
    MOE_ASSIGN_OR_RETURN(
        double seconds,
        stepSecondsWithLive(model, profile, plan, live, lengths));
    curve.seconds.push_back(seconds);
  }
  return curve;
}

GenerationLengths drainLengths(const GenerationLengths &job) {
  return {job.prompts, LengthDistribution::fixed(job.longestGeneration())};
}

Result<DrainCurve> drainCurve(const ModelCosts &model,
                              const HardwareProfile &profile,
                              const Plan &main) {
  DrainCurve drain{drainLengths(main.lengths), {}};
  MOE_ASSIGN_OR_RETURN(drain.steps,
                       liveStepCurve(model, profile, main, drain.lengths));
  return drain;
}

Result<std::optional<TailChoice>> selectTailPlan(const ModelCosts &model,
                                                 const HardwareProfile &profile,
                                                 const Plan &main,
                                                 const DrainCurve &drain,
                                                 const SearchOptions &options) {
  const GenerationLengths &job = main.lengths;
  const GenerationLengths &tail = drain.lengths;
  std::vector<int64_t> batches;
  for (int64_t divisor : {16, 8, 4}) {
    int64_t batch = (main.residentBatch + divisor - 1) / divisor;
    if (batch < main.residentBatch &&
        std::find(batches.begin(), batches.end(), batch) == batches.end())
      batches.push_back(batch);
  }
  if (batches.empty())
    return std::optional<TailChoice>();
  const LiveStepCurve &mainSteps = drain.steps;
  const double batch = double(main.residentBatch);
  std::optional<TailChoice> best;
  for (int64_t slots : batches) {
    SearchOptions search = options;
    search.residentBatches.clear();
    search.maxResidentBatch = slots;
    search.wholeContextPool = true;
    search.refills = false;
    Result<PlanChoice> planned = selectPlan(model, profile, tail, search);
    if (!planned.ok())
      continue; // nothing of that size fits beside the model
    TailChoice choice;
    const Plan &plan = planned->best.plan;
    MOE_ASSIGN_OR_RETURN(choice.tailSteps,
                         liveStepCurve(model, profile, plan, tail));
    // From the step the live sequences fit the tail plan's slots to the
    // last sequence's end; the last one is live to the end.
    double tailSeconds = 0;
    for (int64_t step = 0; step < job.longestGeneration(); ++step) {
      double live = batch * tailSurvival(job, double(step));
      if (live > double(plan.residentBatch))
        continue;
      live = std::max(live, 1.0);
      ++choice.tailStepCount;
      choice.mainTailSeconds += mainSteps.at(live);
      tailSeconds += choice.tailSteps.at(live);
    }
    choice.recomputeSeconds =
        planned->prefillTokensPerSecond > 0
            ? double(plan.residentBatch * tail.meanDecodeContext()) /
                  planned->prefillTokensPerSecond
            : 0;
    choice.savedSeconds =
        choice.mainTailSeconds - tailSeconds - choice.recomputeSeconds;
    choice.plan = std::move(planned).value();
    if (!best || choice.savedSeconds > best->savedSeconds)
      best = std::move(choice);
  }
  if (!best || best->savedSeconds <= 0)
    return std::optional<TailChoice>();
  return best;
}

} // namespace moe::costmodel
