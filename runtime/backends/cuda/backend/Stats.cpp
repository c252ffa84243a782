#include "runtime/backends/cuda/backend/Stats.h"

#include <string>

namespace moe::cuda {

std::string_view stageName(size_t stage) {
  if (stage == kWeightWaitStage)
    return "weight wait";
  if (stage == kParkedStage)
    return "parked states";
  return costmodel::stageName(costmodel::Stage(stage));
}

Result<size_t> StageTimer::start(size_t stage, cudaStream_t stream) {
  size_t pair = timed_.size();
  while (timing_.size() < 2 * (pair + 1)) {
    auto event = Event::create(true);
    if (!event)
      return event.error();
    timing_.push_back(std::move(*event));
  }
  timed_.push_back({stage, pair});
  MOE_RETURN_IF_ERROR(timing_[2 * pair].recordInGraph(stream));
  return pair;
}

Status StageTimer::stop(size_t pair, cudaStream_t stream) {
  return timing_[2 * pair + 1].recordInGraph(stream);
}

Status StageTimer::endPass(bool prefill) {
  for (const auto &[stage, pair] : timed_) {
    auto seconds = elapsedSeconds(timing_[2 * pair], timing_[2 * pair + 1]);
    if (!seconds)
      return seconds.error();
    seconds_[prefill ? 0 : 1][stage] += *seconds;
  }
  return Status::success();
}

std::vector<StageTime> StageTimer::stages() const {
  std::vector<StageTime> stages;
  for (int phase = 0; phase < 2; ++phase)
    for (size_t stage = 0; stage < kStages; ++stage)
      if (double seconds = seconds_[phase][stage]; seconds > 0)
        stages.push_back({phase == 0 ? "prefill" : "decode",
                          std::string(stageName(stage)), seconds});
  return stages;
}

} // namespace moe::cuda
