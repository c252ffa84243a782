// Decode passes replayed as CUDA graphs. A decode pass whose work stays on
// the compute stream (weights resident, its rows' KV on the GPU, one chunk,
// no op waiting for the host) launches the same kernels step after step:
// only its rows' metadata change, which the graph copies from a pinned
// buffer, and its greedy tokens, or its logits for sampling, land in
// another. Sampled passes replay while their logits fit kMaxLogitBytes: a
// pass of more rows moves far more logits over PCIe than launching its
// kernels costs. Such a pass is captured the
// second time its shape runs (the first one, eager, tunes its GEMMs outside
// any capture) and replayed while the shape lasts; a shape whose capture
// fails runs eagerly from then on.
//
// A graph's step memory comes from its own memory nodes. Its physical memory
// is shared by all graphs (they run one at a time on the compute stream) and
// returned when step memory runs short (StepMemory); where a replay cannot
// map it, the pool of eager passes returns what it keeps first.
#pragma once

#include "runtime/backends/cuda/backend/Stats.h"
#include "runtime/engine/Backend.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <set>
#include <tuple>
#include <vector>

namespace moe::cuda {

// The longest context a replayable decode pass attends to, rounded up so
// that one captured graph serves the steps until it grows past the rounding
// (a multiple of 64 tokens, or of 1/16 of the span from 1,024): such a pass
// launches the same kernels whether replayed or not, greedy or not.
int32_t decodeSpan(int32_t span, int32_t maxContext);

class StepGraphs {
public:
  // What a captured pass's launches depend on besides its rows' metadata.
  struct Shape {
    int64_t rows = 0, logits = 0;
    int32_t span = 0;     // Step::maxSpan
    bool sampled = false; // logits to the host instead of greedy tokens
    bool operator==(const Shape &) const = default;
  };

  StepGraphs() = default;
  StepGraphs(const StepGraphs &) = delete;
  StepGraphs &operator=(const StepGraphs &) = delete;
  ~StepGraphs();

  bool enabled() const { return input_ != nullptr; }
  // Turns replays on: pinned buffers for the metadata and the tokens of a
  // pass of up to `slots` rows, and for the logits of `vocab` entries of as
  // many of them as kMaxLogitBytes holds.
  Status enable(int32_t slots, int64_t vocab);
  // A pass's metadata (tokens, slots, positions, cache rows, pool rows,
  // logit rows), read by every graph's first copy; its greedy tokens or its
  // logits.
  int32_t *input() const { return input_; }
  int32_t *output() const { return output_; }
  float *logits() const { return logits_; }
  // Whether a sampled pass of `rows` logit rows can replay.
  bool holdsLogits(int64_t rows) const { return rows <= logitRows_; }

  // Whether a pass of `shape` runs from a graph: replayed (find), captured
  // now (shouldCapture: its GEMM shapes ran eagerly before) or run eagerly
  // (ranEagerly records that).
  bool has(const Shape &shape) const;
  bool shouldCapture(const Shape &shape) const;
  void ranEagerly(const Shape &shape);
  // A capture that failed: `shape`'s rows run eagerly from now on.
  void refuse(const Shape &shape);

  // Instantiates `graph` (captured for `shape`, its timed runs `timed`),
  // evicting the least recently replayed graph beyond kMaxGraphs.
  Status add(const Shape &shape, cudaGraph_t graph, StageTimer::Timed timed,
             BackendCounters &counters);
  // Launches the graph of `shape` on `stream` (after input() holds the
  // pass's metadata); the timer takes the runs it times. Where the graph's
  // memory cannot be mapped, `pool`'s unused memory is returned first.
  Status replay(const Shape &shape, cudaStream_t stream, cudaMemPool_t pool,
                StageTimer &timer, BackendCounters &counters);

  static constexpr size_t kMaxGraphs = 4;
  static constexpr int64_t kMaxLogitBytes = int64_t{64} << 20;

private:
  struct Graph {
    Shape shape;
    cudaGraphExec_t exec = nullptr;
    StageTimer::Timed timed;
    int64_t kernels = 0; // kernel nodes: the launches one replay stands for
    uint64_t lastReplay = 0;
  };
  using RowsKey = std::tuple<int64_t, int64_t, bool>; // (rows, logits, sampled)

  Graph *find(const Shape &shape);

  int32_t *input_ = nullptr, *output_ = nullptr;
  float *logits_ = nullptr;
  int64_t logitRows_ = 0;
  std::vector<Graph> graphs_;
  std::set<RowsKey> warm_, refused_;
  uint64_t replays_ = 0;
};

} // namespace moe::cuda
