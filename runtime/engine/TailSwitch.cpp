#include "runtime/engine/TailSwitch.h"

#include <algorithm>
#include <functional>

namespace moe {
namespace {

constexpr std::string_view kTail = "tail";

const plan::Phase *tailPhase(const LoadedPlan &job, size_t *index = nullptr) {
  const auto *phases = job.plan().phases();
  if (!phases)
    return nullptr;
  for (uint32_t i = 0; i < phases->size(); ++i)
    if (phases->Get(i)->name()->string_view() == kTail) {
      if (index)
        *index = i;
      return phases->Get(i);
    }
  return nullptr;
}

costmodel::LiveStepCurve curveOf(const plan::LiveSteps &steps) {
  return {{steps.live()->begin(), steps.live()->end()},
          {steps.seconds()->begin(), steps.seconds()->end()}};
}

} // namespace

bool TailSwitch::hasTail(const LoadedPlan &job) {
  return tailPhase(job) != nullptr;
}

TailSwitch::TailSwitch(const LoadedPlan &job, double prepareSeconds)
    : prepareSeconds_(prepareSeconds) {
  size_t index = 0;
  const plan::Phase &phase = *tailPhase(job, &index);
  tailPlan_ = &job.phasePlans()[index];
  slots_ = phase.slots();
  contextTokens_ = phase.context_tokens();
  current_ = curveOf(*phase.current());
  tail_ = curveOf(*phase.steps());
  std::optional<costmodel::GenerationLengths> planned = job.plannedLengths();
  if (planned)
    generated_ = planned->generated;
  const plan::Prediction *prediction = tailPlan_->plan().prediction();
  recomputeTokensPerSecond_ =
      prediction ? prediction->prefill_tokens_per_second() : 0;
}

TailSwitch::Estimate
TailSwitch::estimate(std::span<const LiveSequence> live) const {
  Estimate estimate;
  std::vector<double> left;
  for (const LiveSequence &sequence : live) {
    // E[min(G, budget) - g | G > g] = (E[(G - g)+] - E[(G - budget)+]) /
    // P(G > g); a sequence past every planned length stops any step now.
    double generated = double(sequence.generated);
    double budget = std::max<double>(sequence.maxNewTokens, generated);
    double running = generated_.exceeding(generated);
    double expected = running > 0 ? (generated_.meanExcess(generated) -
                                     generated_.meanExcess(budget)) /
                                        running
                                  : 1;
    left.push_back(std::max(expected, 1.0));
    estimate.recomputeTokens += sequence.context;
  }
  std::sort(left.begin(), left.end(), std::greater<>());
  // Between the i-th and the (i+1)-th longest expected remainders, i + 1
  // sequences are live.
  for (size_t i = 0; i < left.size(); ++i) {
    double steps = left[i] - (i + 1 < left.size() ? left[i + 1] : 0);
    double sequences = double(i + 1);
    estimate.savedSeconds +=
        steps * (current_.at(sequences) - tail_.at(sequences));
  }
  estimate.steps = left.empty() ? 0 : int64_t(left.front());
  estimate.switchSeconds =
      prepareSeconds_ +
      (recomputeTokensPerSecond_ > 0
           ? double(estimate.recomputeTokens) / recomputeTokensPerSecond_
           : 0);
  return estimate;
}

std::optional<PhaseChange>
TailSwitch::decide(std::span<const LiveSequence> live) {
  if (decided_ || live.empty() || int64_t(live.size()) > slots_)
    return std::nullopt;
  Estimate predicted = estimate(live);
  if (predicted.savedSeconds <= predicted.switchSeconds)
    return std::nullopt;
  decided_ = true;
  int64_t contexts = 0;
  for (const LiveSequence &sequence : live)
    contexts += sequence.context;
  double sequences = double(live.size());
  return PhaseChange{
      std::string(kTail),
      fmt::format(
          "every request admitted and {} sequences live (mean context {}), "
          "which the tail plan's {} slots hold: a step of {:.3f} s instead "
          "of {:.3f} s (priced at context {}) over about {} steps saves "
          "{:.0f} s against {:.0f} s to switch (preparing it {:.0f} s, "
          "recomputing {} tokens)",
          live.size(), contexts / int64_t(live.size()), slots_,
          tail_.at(sequences), current_.at(sequences), contextTokens_,
          predicted.steps, predicted.savedSeconds, predicted.switchSeconds,
          prepareSeconds_, predicted.recomputeTokens)};
}

} // namespace moe
