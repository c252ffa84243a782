// Everything the CUDA backend holds between prepare and the last forward:
// its memory, the bound program, the streams and events of the weight ring,
// the KV pipeline and the parking of chunked passes, and the stats.
#pragma once

#include "runtime/backends/cuda/GemmRunner.h"
#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/Stream.h"
#include "runtime/backends/cuda/backend/HostAttention.h"
#include "runtime/backends/cuda/backend/KvCaches.h"
#include "runtime/backends/cuda/backend/Parking.h"
#include "runtime/backends/cuda/backend/Program.h"
#include "runtime/backends/cuda/backend/Stats.h"
#include "runtime/backends/cuda/backend/StepGraphs.h"
#include "runtime/backends/cuda/backend/StepMemory.h"
#include "runtime/backends/cuda/backend/StepTrace.h"
#include "runtime/backends/cuda/backend/WeightRing.h"
#include "runtime/engine/Backend.h"

#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace moe::cuda {

struct BackendState {
  // The ring's and the KV pipeline's copies go into the step trace too.
  BackendState() { ring.trace = kv.trace = host.trace = &trace; }
  BackendState(const BackendState &) = delete;
  BackendState &operator=(const BackendState &) = delete;

  std::optional<Stream> stream; // compute
  std::unique_ptr<GemmRunner> gemm;
  std::optional<PinnedHostPool> pinned; // streamed weights, host KV
  std::optional<DeviceArena> weights;   // resident bf16 weights
  // KV caches, staging buffers, fp32 arrays, lightning states.
  std::optional<DeviceArena> cache;
  StepMemory memory;
  Program program;
  WeightRing ring;
  KvCaches kv;
  HostAttention host;
  Parking parking;
  StageTimer timer;
  StepTrace trace; // the spans of the step Backend::traceNextDecodeStep asks
  StepGraphs graphs;
  std::vector<std::vector<float>> floats; // host copies until uploaded
  std::vector<float *> floatsOnDevice;
  // Per lightning attention layer: the states of all slots.
  std::vector<float *> lightningStates;
  int32_t slots = 0, maxContext = 0;
  int smCount = 0; // sizes the attention kernel's split of long contexts
  std::vector<int32_t> lengths;
  bool prepared = false;
  // Streaming, as the plan's batching and schedule say.
  int32_t gpuSlots = 0; // slots whose KV stays on the GPU
  const KvPages *kvPages = nullptr; // the backend's: where host rows go
  HostPageTable hostPages;          // the host slots' pages, for the host
  // Slots from here on are attended by the host's cores in decode (the
  // plan's CPU attention share); INT32_MAX for none.
  int32_t hostAttendedSlot = INT32_MAX;
  int64_t prefillMicroBatch = 1, decodeMicroBatch = 1;
  int64_t expertMicroBatch = INT64_MAX; // b_e
  bool fp8ExpertInputs = true;          // CudaBackendOptions'
  BackendCounters counters;
  std::function<void(double)> progress; // share of the ops bound
};

} // namespace moe::cuda
