// The plan's weight ring: streamed ops' weights live in pinned host memory
// and are copied, on the ring's own stream, into the ring buffer the plan's
// schedule gives them, in the schedule's order (model::RingSchedule). A copy
// starts once the ops it waits for have run for every chunk of the pass (so
// the buffer's previous users are done), and an op's first chunk waits for
// its copy.
#pragma once

#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/Stream.h"
#include "runtime/backends/cuda/backend/StepTrace.h"
#include "runtime/engine/Backend.h"
#include "runtime/model/RingSchedule.h"

#include <optional>
#include <string>
#include <vector>

namespace moe::cuda {

// One host-to-device copy of a streamed weight into its ring buffer.
struct CopyPart {
  const void *host;
  void *device;
  size_t bytes;
};

// The copies of one op's streamed weights, and the op's name in traces.
struct StreamedOp {
  std::vector<CopyPart> parts;
  std::string name; // "layer 3 routed experts"
};

class WeightRing {
public:
  model::RingSchedule schedule;
  std::optional<DeviceArena> arena; // buffers · bufferBytes; none without
  std::vector<StreamedOp> streamed; // per op; no parts when it streams none
  StepTrace *trace = nullptr;       // spans of a traced step's copies

  // The ring's device memory, as the plan's schedule sizes it.
  Status allocate();
  Status createStreams();
  // Once every op is bound: the events of the ops copied or waited for.
  Status finishBinding();
  // Where `bytes` more of op `op`'s weights go in its ring buffer, after
  // `used` bytes of its turn (the ops sharing the buffer with it).
  Result<char *> place(int op, size_t used, size_t bytes,
                       const char *what) const;

  // A pass of the decode or prefill step: the copies that wait for nothing.
  Status beginPass(bool prefill, BackendCounters &counters);
  // Op `op`'s first chunk waits for its weights.
  Status waitForWeights(int op, const Stream &compute) const;
  // Op `op` has run for every chunk of the pass: the copies waiting for it
  // may start.
  Status finished(int op, cudaStream_t compute, BackendCounters &counters);
  bool awaited(int op) const { return awaited_[size_t(op)]; }

private:
  // The step's next copies, in order, as far as their ops have run.
  Status issueReady(BackendCounters &counters);
  Status copy(int op, BackendCounters &counters);

  std::optional<Stream> copyStream_;
  std::vector<std::optional<Event>> copied_, done_; // per op, where used
  std::vector<char> awaited_; // per op: a copy waits for it
  // The pass: its step, the next copy to issue, per op whether it has run
  // and whether its copy is issued.
  const model::RingStep *step_ = nullptr;
  size_t next_ = 0;
  std::vector<char> ran_, issued_;
};

} // namespace moe::cuda
