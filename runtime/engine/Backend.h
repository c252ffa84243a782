// What the engine asks of a backend: run the plan's forward pass over a
// batch of tokens from many sequences at once. The engine owns sequences,
// batching, scheduling and sampling; a backend owns weights in its memory,
// the KV caches and states, and the math. CPU and CUDA implement the same
// interface, so one engine drives both.
#pragma once

#include "runtime/engine/KvPages.h"
#include "runtime/engine/StepBatch.h"
#include "runtime/plan/LoadedPlan.h"
#include "runtime/support/Result.h"
#include "runtime/weights/WeightSet.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace moe {

class ChromeTrace;

/// Time spent in one kind of work ("attention", "routed experts", ...) in
/// prefill forwards (a sequence with several rows) or decode forwards.
struct StageTime {
  std::string phase; // "prefill" or "decode"
  std::string stage;
  double seconds = 0;
};

/// What a backend moved and held since prepare, for the stats file.
struct BackendCounters {
  int64_t weightBytesToDevice = 0; // streamed weights, host to GPU
  int64_t kvBytesToDevice = 0;     // cached KV loaded for attention
  int64_t kvBytesToHost = 0;       // new KV rows stored to host memory
  // Hidden states of a pass run in chunks, parked in host memory between
  // layers and brought back.
  int64_t hiddenBytesToHost = 0;
  int64_t hiddenBytesToDevice = 0;
  int64_t decodeBytesToDevice = 0; // weights and KV, in decode steps only
  int64_t deviceFixedBytes = 0;    // weights, ring, KV, staging buffers
  int64_t devicePeakStepBytes = 0; // activations and scratch, at most
  int64_t deviceMemoryTrims = 0;   // times step memory was drained to fit
  int64_t pinnedHostBytes = 0;     // streamed weights and host KV
  // Decode attention on the host's cores: the KV it read, and the queries
  // and outputs copied between the GPU and the host for it.
  int64_t hostKvBytesRead = 0;
  int64_t hostAttentionBytes = 0;
  // Decode passes launched op by op, passes captured as CUDA graphs (and
  // captures that failed: their shapes run op by op) and the host time
  // capturing and instantiating them took, replays of those, the kernel
  // launches the replays stood for, and the most device memory the graphs'
  // step memory held.
  int64_t eagerDecodePasses = 0;
  int64_t graphCaptures = 0;
  int64_t graphCaptureFailures = 0;
  double graphCaptureSeconds = 0;
  int64_t graphReplays = 0;
  int64_t graphKernelLaunches = 0;
  int64_t deviceGraphBytes = 0;
};

/// The token a backend picks for a row whose logits hold NaN or Inf.
inline constexpr int32_t kNotFinite = -1;
inline bool allFinite(const float *values, size_t count) {
  return std::all_of(values, values + count,
                     [](float value) { return std::isfinite(value); });
}

class Backend {
public:
  virtual ~Backend() = default;

  /// Takes the weights and sizes caches for `slots` sequences of at most
  /// `maxContext` tokens each.
  virtual Status prepare(const LoadedPlan &plan, const WeightSet &weights,
                         int32_t slots, int32_t maxContext) = 0;
  /// Forgets a slot's cache and state so a new sequence can take it, and
  /// gives back its KV pages.
  virtual void resetSlot(int32_t slot) = 0;
  /// Runs the model over the batch, extending each slot's cache by its rows,
  /// and writes logits [logitRows.size(), vocab] in fp32. A batch that breaks
  /// StepBatch's contract, or whose rows the KV pages left cannot hold, is
  /// refused (validateStepBatch, holdKvRows).
  virtual Status forward(const StepBatch &batch,
                         std::vector<float> &logits) = 0;
  /// forward() for greedy decoding: each logit row's first largest logit's
  /// index (torch.argmax) instead of the logits, or kNotFinite for a row
  /// holding NaN or Inf. A backend whose logits live elsewhere picks them
  /// there and moves only the ids.
  virtual Status forwardGreedy(const StepBatch &batch,
                               std::vector<int32_t> &tokens) {
    std::vector<float> logits;
    MOE_RETURN_IF_ERROR(forward(batch, logits));
    size_t vocab =
        batch.logitRows.empty() ? 0 : logits.size() / batch.logitRows.size();
    tokens.resize(batch.logitRows.size());
    for (size_t r = 0; r < tokens.size(); ++r) {
      const float *row = logits.data() + r * vocab;
      tokens[r] =
          allFinite(row, vocab)
              ? static_cast<int32_t>(std::max_element(row, row + vocab) - row)
              : kNotFinite;
    }
    return Status::success();
  }
  /// The KV pages the caches hold, by which the engine admits and pauses
  /// sequences. A backend that holds every slot's whole context keeps a
  /// pool that is never short (KvPages::wholeContext).
  const KvPages &kvPages() const { return kvPages_; }
  /// Time per stage since prepare, for the stats file.
  virtual std::vector<StageTime> stageSeconds() const = 0;
  /// Bytes moved and held; a backend that moves nothing keeps the zeros.
  virtual BackendCounters counters() const { return {}; }

  /// Called during a long prepare with the share done (0..1).
  void setPrepareProgress(std::function<void(double)> callback) {
    prepareProgress_ = std::move(callback);
  }

  /// Records the next decode step (a forward with one row per sequence) as
  /// a timeline of `trace`, a track per stream the backend runs work on, to
  /// set beside the plan's schedule. The trace must outlive that forward;
  /// null stops.
  void traceNextDecodeStep(ChromeTrace *trace) { trace_ = trace; }

protected:
  /// The trace to record `batch` into, if it is that step; then tracing
  /// ends.
  ChromeTrace *traceFor(const StepBatch &batch) {
    if (!trace_ || batch.rows.empty() || isPrefill(batch.rows))
      return nullptr;
    return std::exchange(trace_, nullptr);
  }

  std::function<void(double)> prepareProgress_;
  ChromeTrace *trace_ = nullptr;
  KvPages kvPages_;
};

/// What the backends a job ran on, one after another (a phase switch gives
/// one back for the next), moved and timed together.
struct BackendTotals {
  BackendCounters counters;
  std::vector<StageTime> stages;

  /// Adds `backend`'s: bytes moved, work and time summed, memory held the
  /// most any backend held.
  void add(const Backend &backend);
  BackendTotals with(const Backend &backend) const {
    BackendTotals totals = *this;
    totals.add(backend);
    return totals;
  }
};

} // namespace moe
