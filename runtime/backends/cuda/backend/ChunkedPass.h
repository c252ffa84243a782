// One pass over rows [first, end) of a batch: the weights streamed once,
// the rows in chunks of what the step memory holds (cut at slot boundaries
// where possible; a slot's second part continues its cache), run segment
// by segment (ops of one layer) for every chunk, the values crossing a
// segment parked in pinned memory between them. A decode pass that
// StepGraphs can replay is captured once and replayed.
#pragma once

#include "runtime/backends/cuda/backend/BackendState.h"

#include <array>
#include <optional>
#include <vector>

namespace moe::cuda {

class ChunkedPass {
public:
  // The results of logit rows [firstLogit, endLogit) of the batch land in
  // `out`.
  ChunkedPass(BackendState &state, int64_t perExpertGemmRows,
              const StepBatch &batch, int64_t first, int64_t end,
              size_t firstLogit, size_t endLogit, HeadOutput out);
  Status run();

private:
  // A value made by an earlier segment, copied back for a chunk.
  struct Restored {
    int value;
    void *buffer;
    size_t bytes;
  };

  void cutChunks();
  void layOutRows();
  // Whether the pass's work stays on the compute stream, so that StepGraphs
  // can replay it (its attention span then rounded by decodeSpan, replayed
  // or not; untraced passes are captured, sampled ones while their logits
  // fit StepGraphs' pinned buffer).
  bool replayable() const;
  Status capture(const StepGraphs::Shape &shape);
  Status replay(const StepGraphs::Shape &shape);
  // Issues the pass's work on the streams.
  Status enqueue();
  Status uploadRows();
  Status planParking();
  Step stepFor(size_t c);
  Status runChunk(size_t segmentBegin, size_t segmentEnd, size_t c);
  Status launch(size_t index, size_t c, Step &step);
  Status keepResults(size_t index, Step &step);
  Status bringBackParked(size_t segmentBegin, size_t c);
  Status takeBackParked(size_t parity);
  Status restoreChunk(size_t segmentBegin, size_t c);
  bool parksHere(int v, size_t segmentBegin, size_t segmentEnd) const;
  Status parkChunk(size_t segmentBegin, size_t segmentEnd, size_t c);
  Status endSegment();
  Status finish();
  void clearValue(int v);
  Status freeValue(int v);

  BackendState &s_;
  const Program &program_;
  int64_t perExpertGemmRows_;
  const StepBatch &batch_;
  int64_t first_, end_, rows_;
  size_t firstLogit_, endLogit_;
  HeadOutput out_;
  bool prefill_;
  int64_t microBatch_;
  cudaStream_t stream_;
  bool capturing_ = false; // the pass is being captured, not run

  // Chunk c is rows [cuts_[c], cuts_[c + 1]) of the pass.
  std::vector<int64_t> cuts_;
  size_t chunks_ = 0;
  // Per row: token, attention slot, position, cache row; then the logit
  // rows, relative to their chunk. On the device at base_.
  std::vector<int32_t> meta_;
  int32_t *base_ = nullptr;
  std::vector<KvPass> kvPasses_;
  std::vector<size_t> chunkLogits_; // first logit of each chunk
  std::vector<int32_t> chunkSpans_; // Step::maxSpan of each chunk
  std::vector<int64_t> chunkRowsPerSlot_; // Step::rowsPerSlot of each chunk
  int64_t movedBefore_ = 0;         // weight and KV bytes before the pass

  // Values crossing a segment boundary are parked per chunk, in one form
  // each: value v's rows at parkOffset_[v] (elements of 4 bytes), in a
  // region it holds from the end of the segment making it to the end of
  // the segment last reading it.
  std::vector<size_t> parkOffset_;
  std::vector<ValueForm> parkedForm_;
  char *parked_ = nullptr;
  bool parkedInSegment_ = false;
  // Bytes of parked values freed on the park stream and still counted, by
  // chunk parity: chunk c takes chunk c - 2's back after waiting for its
  // parking, so the pool never holds more than the step memory counts.
  std::array<size_t, 2> parkPending_{};
  std::array<std::vector<Restored>, 2> restored_; // by chunk parity

  std::vector<DeviceValue> values_;
  std::vector<std::vector<void *>> owned_; // per value: its buffers
};

} // namespace moe::cuda
