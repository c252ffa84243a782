// The resolved model's ops bound to their weights, and what a pass needs
// to know of their values: widths, the op making and the op last reading
// each, the segments a chunked pass runs layer by layer, and the step
// memory a row takes.
#pragma once

#include "runtime/backends/cuda/backend/KvCaches.h"
#include "runtime/backends/cuda/backend/WeightPlacement.h"
#include "runtime/backends/cuda/backend/ops/Ops.h"
#include "runtime/model/ResolvedModel.h"

#include <functional>
#include <utility>
#include <vector>

namespace moe::cuda {

struct CompiledOp {
  Op op;
  std::vector<int> operands, results;
  bool streams = false; // the schedule copies its weights into the ring
  int layer = -1;
  costmodel::Stage stage; // where the stats count its time
};

struct Program {
  std::vector<CompiledOp> ops;
  int numValues = 0;
  std::vector<int64_t> valueWidths;
  // Per value: the last op reading it (-1 if none, and for the logits,
  // which the LM head writes to the host), and the op making it (-1:
  // tokens).
  std::vector<int> lastUse, definedBy;
  // Op ranges run for all chunks of a pass before the next range starts:
  // one layer each, cut before an op whose weights' copy waits for an op of
  // the range (that op has run only after its last chunk).
  std::vector<std::pair<size_t, size_t>> segments;
  int64_t embeddingVocab = 0, vocab = 0;
  int64_t rowBytes = 0; // most step memory one batch row needs at once
                        // (model::stepRowBytes)
  // Per row: the most bytes of one segment's values parked at its end,
  // held until the chunk after next (ChunkedPass).
  int64_t parkRowBytes = 0;
  // Per row: the most bytes of parked values one segment reads (restored
  // for the next chunk while a chunk computes).
  int64_t restoreRowBytes = 0;
  bool gptOssNorm = false;
  bool streamsWeights = false; // some op's weights come through the ring

  // Value v is made in segment [begin, stop) and read after it: chunked
  // passes park it in host memory at the segment's end.
  bool crossesSegment(int v, size_t begin, size_t stop) const {
    return definedBy[v] >= int(begin) && definedBy[v] < int(stop) &&
           lastUse[v] >= int(stop);
  }
  // Value v, parked by an earlier segment, is live in the segment starting
  // at op `begin`: chunked passes copy it back for each chunk.
  bool restoredIn(int v, size_t begin) const {
    return v > 0 && definedBy[v] < int(begin) && lastUse[v] >= int(begin);
  }
  // Step memory one row of a chunk takes: its own values and scratch, and
  // when the pass runs in several chunks (`parks`) the previous chunk's
  // parked values and the next chunk's restored ones beside them; plus the
  // 1/16 by which StepMemory rounds sizes up at most.
  int64_t chunkRowBytes(bool parks) const;
  // The most rows of a chunk that `limit` bytes of step memory hold in a
  // pass of `rows` rows (at least 1).
  int64_t chunkRowLimit(int64_t rows, size_t limit) const;
  // Whether some op of a chunk of `rows` rows waits for the host (routed
  // experts reading their counts back: expertsWaitForHost).
  bool waitsForHost(int64_t rows, int64_t perExpertGemmRows) const;
};

// Binds every op of the resolved `model` (weights through `placement`,
// caches described in `kv`) and lays out its values and segments (cut where
// the weight ring's schedule `ring` needs). `plan` names the ops in errors;
// `progress` gets the share of ops bound.
Status compileProgram(const plan::Model &plan,
                      const model::ResolvedModel &model,
                      WeightPlacement &placement, KvCaches &kv,
                      const model::RingSchedule &ring,
                      const std::function<void(double)> &progress,
                      Program &program);

} // namespace moe::cuda
