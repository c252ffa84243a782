// The plan's weight ring: streamed ops' weights live in pinned host memory
// and are copied into a ring slot on their own stream ahead of their ops.
// Streamed op j uses slot j mod slots; its copy waits until the slot's
// previous user (op j - slots) has run for every chunk of the pass, and the
// op's first chunk waits for its copy.
#pragma once

#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/Stream.h"
#include "runtime/backends/cuda/backend/StepTrace.h"
#include "runtime/engine/Backend.h"

#include <optional>
#include <string>
#include <vector>

namespace moe::cuda {

// One host-to-device copy of a streamed weight into its ring slot.
struct CopyPart {
  const void *host;
  void *device;
  size_t bytes;
};

// The copies of one streamed op, and the op's name in traces.
struct StreamedOp {
  std::vector<CopyPart> parts;
  std::string name; // "layer 3 routed experts"
};

class WeightRing {
public:
  int slots = 1;
  size_t slotBytes = 0;
  std::optional<DeviceArena> arena; // slots · slotBytes; none without a ring
  std::vector<StreamedOp> streamed;
  StepTrace *trace = nullptr; // spans of a traced step's copies

  // The ring's device memory, as the plan's schedule sizes it.
  Status allocate();
  Status createStreams();
  Status createEvents();

  // The first streamed ops' copies, one per slot.
  Status beginPass(BackendCounters &counters);
  // Streamed op j's first chunk waits for its weights.
  Status waitForWeights(int j, const Stream &compute) const;
  // Streamed op j has run for every chunk: its slot takes op j + slots.
  Status releaseSlot(int j, cudaStream_t compute, BackendCounters &counters);

private:
  Status copy(int j, BackendCounters &counters);

  std::optional<Stream> copyStream_;
  std::vector<Event> copied_;   // per streamed op
  std::vector<Event> slotFree_; // per slot
};

} // namespace moe::cuda
