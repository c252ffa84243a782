#include "JobLengths.h"

#include "runtime/costmodel/Refill.h"

#include <fmt/format.h>

#include <cmath>

namespace moe {

int32_t plannedRefillSlots(const LoadedPlan &plan, int32_t residentBatch) {
  const plan::Prediction *prediction = plan.plan().prediction();
  std::optional<costmodel::GenerationLengths> lengths = plan.plannedLengths();
  if (!prediction || !prediction->decode_stages() || !lengths)
    return 1;
  double weightCopy = 0;
  for (const plan::StageTime *stage : *prediction->decode_stages())
    if (stage->stage()->string_view() == "weight copy")
      weightCopy = stage->seconds();
  return int32_t(
      costmodel::refillSlots(residentBatch, lengths->generated.mean(),
                             prediction->decode_step_seconds(), weightCopy));
}

nlohmann::json LengthsSeen::json() const {
  using nlohmann::json;
  return {{"answered", answered},
          {"mean_prompt_tokens", meanPrompt},
          {"mean_generated_tokens", meanGenerated},
          {"planned_mean_prompt_tokens",
           planned ? json(planned->prompts.mean()) : json()},
          {"planned_mean_generated_tokens",
           planned ? json(planned->generated.mean()) : json()}};
}

std::string LengthsSeen::hint(const std::string &output) const {
  // Fewer answers say little about a job's lengths.
  constexpr int64_t kEnoughAnswers = 64;
  constexpr double kFarOff = 0.25;
  if (!planned || answered < kEnoughAnswers || output == "-")
    return "";
  double assumed = planned->generated.mean();
  if (assumed <= 0 || std::abs(meanGenerated - assumed) <= kFarOff * assumed)
    return "";
  return fmt::format(
      "moe-run: the answers generated {:.0f} new tokens on average where "
      "the plan assumed {:.0f}: a plan for these lengths would suit jobs "
      "like this one better (moe-run --describe-prompts --observed-answers "
      "{}, then moe-opt --moe-plan=\"... lengths=...\"; scripts/plan-job.sh "
      "with MOE_OBSERVED_ANSWERS)",
      meanGenerated, assumed, output);
}

LengthsSeen lengthsSeen(const LoadedPlan &plan, const AnswerWriter &answers) {
  LengthsSeen seen;
  for (const auto &[reason, count] : answers.finishReasons())
    if (reason != "error")
      seen.answered += count;
  if (seen.answered > 0) {
    seen.meanPrompt = double(answers.promptTokens()) / double(seen.answered);
    seen.meanGenerated =
        double(answers.completionTokens()) / double(seen.answered);
  }
  seen.planned = plan.plannedLengths();
  return seen;
}

} // namespace moe
