#include "runtime/engine/Backend.h"

namespace moe {

void BackendTotals::add(const Backend &backend) {
  BackendCounters next = backend.counters();
  for (auto flow :
       {&BackendCounters::weightBytesToDevice,
        &BackendCounters::kvBytesToDevice, &BackendCounters::kvBytesToHost,
        &BackendCounters::hiddenBytesToHost,
        &BackendCounters::hiddenBytesToDevice,
        &BackendCounters::decodeBytesToDevice,
        &BackendCounters::deviceMemoryTrims, &BackendCounters::hostKvBytesRead,
        &BackendCounters::hostAttentionBytes,
        &BackendCounters::eagerDecodePasses, &BackendCounters::graphCaptures,
        &BackendCounters::graphCaptureFailures, &BackendCounters::graphReplays,
        &BackendCounters::graphKernelLaunches})
    counters.*flow += next.*flow;
  counters.graphCaptureSeconds += next.graphCaptureSeconds;
  for (auto held :
       {&BackendCounters::deviceFixedBytes,
        &BackendCounters::devicePeakStepBytes,
        &BackendCounters::pinnedHostBytes, &BackendCounters::deviceGraphBytes})
    counters.*held = std::max(counters.*held, next.*held);
  for (const StageTime &stage : backend.stageSeconds()) {
    auto same =
        std::find_if(stages.begin(), stages.end(), [&](const StageTime &known) {
          return known.phase == stage.phase && known.stage == stage.stage;
        });
    if (same == stages.end())
      stages.push_back(stage);
    else
      same->seconds += stage.seconds;
  }
}

} // namespace moe
