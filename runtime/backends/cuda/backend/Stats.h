// Device time per stage (kStageNames): timing events recorded on the
// compute stream around each op run and each timed wait of a pass, read
// once the pass has finished and summed per phase (prefill or decode).
#pragma once

#include "runtime/backends/cuda/Stream.h"
#include "runtime/backends/cuda/backend/ops/Ops.h"
#include "runtime/engine/Backend.h"

#include <array>
#include <utility>
#include <vector>

namespace moe::cuda {

class StageTimer {
public:
  void beginPass() { timed_.clear(); }
  // Times the compute stream's work from here to stop() as `stage`; returns
  // what stop() takes.
  Result<size_t> start(size_t stage, cudaStream_t stream);
  Status stop(size_t pair, cudaStream_t stream);
  // Adds the finished pass's times to its phase.
  Status endPass(bool prefill);

  std::vector<StageTime> stages() const;

private:
  std::vector<Event> timing_; // start/stop pairs, one per timed run
  std::vector<std::pair<size_t, size_t>> timed_; // (stage, timing pair)
  // [prefill, decode][stage]
  std::array<std::array<double, kStageNames.size()>, 2> seconds_{};
};

} // namespace moe::cuda
