#include "runtime/engine/Backend.h"

namespace moe {

void BackendTotals::add(const Backend &backend) {
  BackendCounters next = backend.counters();
  BackendCounters &sum = counters;
  sum.weightBytesToDevice += next.weightBytesToDevice;
  sum.kvBytesToDevice += next.kvBytesToDevice;
  sum.kvBytesToHost += next.kvBytesToHost;
  sum.hiddenBytesToHost += next.hiddenBytesToHost;
  sum.hiddenBytesToDevice += next.hiddenBytesToDevice;
  sum.decodeBytesToDevice += next.decodeBytesToDevice;
  sum.deviceFixedBytes = std::max(sum.deviceFixedBytes, next.deviceFixedBytes);
  sum.devicePeakStepBytes =
      std::max(sum.devicePeakStepBytes, next.devicePeakStepBytes);
  sum.deviceMemoryTrims += next.deviceMemoryTrims;
  sum.pinnedHostBytes = std::max(sum.pinnedHostBytes, next.pinnedHostBytes);
  sum.hostKvBytesRead += next.hostKvBytesRead;
  sum.hostAttentionBytes += next.hostAttentionBytes;
  sum.eagerDecodePasses += next.eagerDecodePasses;
  sum.graphCaptures += next.graphCaptures;
  sum.graphCaptureFailures += next.graphCaptureFailures;
  sum.graphCaptureSeconds += next.graphCaptureSeconds;
  sum.graphReplays += next.graphReplays;
  sum.graphKernelLaunches += next.graphKernelLaunches;
  sum.deviceGraphBytes = std::max(sum.deviceGraphBytes, next.deviceGraphBytes);
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
