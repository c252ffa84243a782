// Decode attention on the host's cores for the plan's host-attended slots
// (the last ones; runtime/host/DecodeAttention.h over the host slots' KV in
// pinned memory), beside the GPU attending the others. Per attention op and
// chunk, on the host stream: the rows' queries are copied to pinned memory
// once the compute stream has made them, and a host function attends them
// once their new K/V rows are stored. The compute stream, before the output
// projection, waits for it and reads the outputs into the op's output rows
// with its own SMs: a copy would wait behind the weight and KV loads queued
// on the copy engine that serves every host-to-device copy, and the host's
// next layer waits for this one's outputs. The stream keeps the ops in
// order, so one pinned buffer each serves every op.
#pragma once

#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/Stream.h"
#include "runtime/backends/cuda/backend/ChunkRows.h"
#include "runtime/backends/cuda/backend/StepTrace.h"
#include "runtime/backends/cuda/kernels/Kernels.h"
#include "runtime/engine/Backend.h"
#include "runtime/host/DecodeAttention.h"
#include "runtime/support/ThreadPool.h"

#include <deque>
#include <memory>
#include <mutex>
#include <optional>

namespace moe::cuda {

using bf16 = kernels::bf16;

class HostAttention {
public:
  // What an attention op gives the host: its cache in host memory, its
  // shape and its constants (sinks in host memory, or null).
  struct Layer {
    host::HostKvCache cache;
    int64_t heads = 0, kvHeads = 0, headDim = 0, window = 0;
    float scale = 1.0f;
    const float *sinks = nullptr;
  };

  // An attention queued on the host stream: its end, and the outputs it
  // leaves in pinned memory for the op's output rows.
  struct Outputs {
    cudaEvent_t attended = nullptr;
    const void *from = nullptr;
    void *to = nullptr;
    size_t bytes = 0;
  };

  // Pinned buffers for `rows` rows of at most `width` query elements, the
  // host stream and its events, and the kernels on a pool of every core
  // but one.
  Status prepare(PinnedHostPool &pinned, int64_t rows, int64_t width);
  bool prepared() const { return rows_ > 0; }

  // Queues the attention of `rows` of the chunk: queries q (device, bf16
  // [chunk rows, heads·headDim]) after the compute stream's work so far,
  // the host's run after `kvStored` (the new rows' store; null when the op
  // stores none). Returns where its outputs go, for collect().
  Result<Outputs> attend(cudaStream_t compute, const Event *kvStored,
                         const HostRows &rows, const Layer &layer,
                         const bf16 *q, bf16 *out, int layerIndex,
                         BackendCounters &counters);
  // The compute stream waits for the attention that gave `outputs` and
  // reads them into their rows.
  static Status collect(cudaStream_t compute, const Outputs &outputs);

  // Once the pass has finished (every host function ran): the first error
  // one met, else the seconds the host spent attending since the last call.
  Result<double> finishPass();

  StepTrace *trace = nullptr; // spans of a traced step's copies

private:
  struct Job {
    HostAttention *self = nullptr;
    host::SoftmaxAttentionArgs args;
    std::vector<int32_t> slots, lengths;
  };
  static void CUDART_CB run(void *job);

  int64_t rows_ = 0, width_ = 0;
  uint16_t *queries_ = nullptr, *outputs_ = nullptr; // pinned
  std::optional<Stream> stream_;
  std::optional<Event> queriesMade_, done_;
  std::unique_ptr<ThreadPool> pool_;
  std::optional<host::DecodeAttention> kernels_;
  std::deque<Job> jobs_; // this pass's, alive until they ran
  std::mutex mutex_;     // guards what the host functions report
  std::optional<Error> error_;
  double seconds_ = 0;
};

} // namespace moe::cuda
