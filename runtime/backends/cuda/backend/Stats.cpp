#include "runtime/backends/cuda/backend/Stats.h"

#include <algorithm>

namespace moe::cuda {

Result<size_t> StageTimer::start(size_t stage, cudaStream_t stream) {
  size_t pair = timed_.size();
  while (timing_.size() < 2 * (pair + 1)) {
    auto event = Event::create(true);
    if (!event)
      return event.error();
    timing_.push_back(std::move(*event));
  }
  timed_.push_back({stage, pair});
  MOE_RETURN_IF_ERROR(timing_[2 * pair].record(stream));
  return pair;
}

Status StageTimer::stop(size_t pair, cudaStream_t stream) {
  return timing_[2 * pair + 1].record(stream);
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
    for (size_t kind = 0; kind < kStageNames.size(); ++kind) {
      double seconds = seconds_[phase][kind];
      if (seconds <= 0)
        continue;
      std::string name = phase == 0 ? "prefill" : "decode";
      auto same = std::find_if(stages.begin(), stages.end(), [&](auto &t) {
        return t.phase == name && t.stage == kStageNames[kind];
      });
      if (same != stages.end())
        same->seconds += seconds;
      else
        stages.push_back({name, kStageNames[kind], seconds});
    }
  return stages;
}

} // namespace moe::cuda
