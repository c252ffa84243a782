// What a run takes from the lengths its plan was made for, and tells of the
// lengths its answers had.
#pragma once

#include "runtime/costmodel/Lengths.h"
#include "runtime/io/Jsonl.h"
#include "runtime/plan/LoadedPlan.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace moe {

/// Free slots at which new prompts are taken in, by the plan's predictions:
/// a prefill pass streams the weights a decode step streams (its "weight
/// copy" stage), whatever few prompts it holds.
int32_t plannedRefillSlots(const LoadedPlan &plan, int32_t residentBatch);

/// The lengths this run's answers had, beside those the plan was made for.
struct LengthsSeen {
  int64_t answered = 0; // error lines hold no lengths
  double meanPrompt = 0, meanGenerated = 0;
  std::optional<costmodel::GenerationLengths> planned;

  nlohmann::json json() const;
  /// A hint where the answers generated far more or fewer tokens than the
  /// plan was priced for ("" otherwise): a plan for the job's own lengths
  /// would choose its batch for them. `output`: the answers' file.
  std::string hint(const std::string &output) const;
};

LengthsSeen lengthsSeen(const LoadedPlan &plan, const AnswerWriter &answers);

} // namespace moe
