// Device time per stage: timing events recorded on the compute stream
// around each op run and each timed wait of a pass, read once the pass has
// finished and summed per phase (prefill or decode). A pass captured as a
// CUDA graph records the same events at each replay.
#pragma once

#include "runtime/backends/cuda/Stream.h"
#include "runtime/costmodel/CriticalPath.h"
#include "runtime/engine/Backend.h"

#include <array>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::cuda {

// The planner's stages (costmodel::Stage, where each op's time goes), then
// the compute stream's timed waits between ops.
// An op's first chunk waiting for its streamed weights.
constexpr size_t kWeightWaitStage = costmodel::kNumStages;
// A chunked pass's hidden states parked in host memory between layers:
// waiting for them and copying them back.
constexpr size_t kParkedStage = kWeightWaitStage + 1;
constexpr size_t kStages = kParkedStage + 1;
std::string_view stageName(size_t stage);

class StageTimer {
public:
  // (stage, timing pair) of each timed run of a pass.
  using Timed = std::vector<std::pair<size_t, size_t>>;

  void beginPass() { timed_.clear(); }
  // A replayed pass's runs: those its capture timed.
  void beginReplay(const Timed &timed) { timed_ = timed; }
  const Timed &timed() const { return timed_; }
  // Times the compute stream's work from here to stop() as `stage`; returns
  // what stop() takes.
  Result<size_t> start(size_t stage, cudaStream_t stream);
  Status stop(size_t pair, cudaStream_t stream);
  // Adds the finished pass's times to its phase.
  Status endPass(bool prefill);
  // Time measured elsewhere (the host's cores) for `stage` of a phase.
  void add(size_t stage, bool prefill, double seconds) {
    seconds_[prefill ? 0 : 1][stage] += seconds;
  }

  std::vector<StageTime> stages() const;

private:
  std::vector<Event> timing_; // start/stop pairs, one per timed run
  Timed timed_;
  // [prefill, decode][stage]
  std::array<std::array<double, kStages>, 2> seconds_{};
};

} // namespace moe::cuda
