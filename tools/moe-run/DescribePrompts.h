// moe-run --describe-prompts: a job's shape for the planner, its prompt and
// generation length histograms the lengths file moe-opt plans from.
#pragma once

#include "runtime/support/Result.h"

#include <cstdint>
#include <string>

namespace moe {

/// The shape of the job in the prompts file, as the planner wants it: the
/// requests, their prompt lengths in tokens and the fewest and most tokens
/// they ask for (`defaultNewTokens` where a line gives none), the malformed
/// lines, and the histograms of prompt and generation lengths that the
/// planner's lengths file holds. Generation lengths are the requests' caps,
/// the most each may run, unless `observedAnswers` (an answers file; "" for
/// none) gives the lengths an earlier run of similar prompts generated. One
/// JSON object on stdout.
Status describePrompts(const std::string &promptsPath,
                       const std::string &checkpoint, int32_t defaultNewTokens,
                       const std::string &observedAnswers);

} // namespace moe
