#include "runtime/backends/cuda/backend/StepGraphs.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <algorithm>
#include <bit>

namespace moe::cuda {

int32_t decodeSpan(int32_t span, int32_t maxContext) {
  int32_t step = std::max<int32_t>(
      64, int32_t(std::bit_floor(uint32_t(std::max(span, 1))) / 16));
  return std::min(maxContext, (span + step - 1) / step * step);
}

StepGraphs::~StepGraphs() {
  for (Graph &graph : graphs_)
    (void)cudaGraphExecDestroy(graph.exec);
  (void)cudaFreeHost(input_);
  (void)cudaFreeHost(output_);
  (void)cudaFreeHost(logits_);
}

Status StepGraphs::enable(int32_t slots, int64_t vocab) {
  // Tokens, attention slots, positions, cache rows, pool rows and logit rows
  // of each row (ChunkedPass::layOutRows).
  void *input = nullptr, *output = nullptr;
  MOE_CUDA_TRY(cudaHostAlloc(&input, size_t(6 * slots) * sizeof(int32_t),
                             cudaHostAllocDefault));
  input_ = static_cast<int32_t *>(input);
  MOE_CUDA_TRY(cudaHostAlloc(&output, size_t(slots) * sizeof(int32_t),
                             cudaHostAllocDefault));
  output_ = static_cast<int32_t *>(output);
  logitRows_ = std::min<int64_t>(slots, kMaxLogitBytes /
                                            (std::max<int64_t>(vocab, 1) * 4));
  void *logits = nullptr;
  MOE_CUDA_TRY(cudaHostAlloc(
      &logits, size_t(std::max<int64_t>(logitRows_ * vocab, 1)) * sizeof(float),
      cudaHostAllocDefault));
  logits_ = static_cast<float *>(logits);
  return Status::success();
}

StepGraphs::Graph *StepGraphs::find(const Shape &shape) {
  auto it = std::find_if(graphs_.begin(), graphs_.end(),
                         [&](const Graph &g) { return g.shape == shape; });
  return it == graphs_.end() ? nullptr : &*it;
}

bool StepGraphs::has(const Shape &shape) const {
  return std::any_of(graphs_.begin(), graphs_.end(),
                     [&](const Graph &g) { return g.shape == shape; });
}

bool StepGraphs::shouldCapture(const Shape &shape) const {
  RowsKey key{shape.rows, shape.logits, shape.sampled};
  return warm_.contains(key) && !refused_.contains(key);
}

void StepGraphs::ranEagerly(const Shape &shape) {
  warm_.insert({shape.rows, shape.logits, shape.sampled});
}

void StepGraphs::refuse(const Shape &shape) {
  refused_.insert({shape.rows, shape.logits, shape.sampled});
}

Status StepGraphs::add(const Shape &shape, cudaGraph_t graph,
                       StageTimer::Timed timed, BackendCounters &counters) {
  Graph made{shape, nullptr, std::move(timed), 0, replays_};
  size_t nodes = 0;
  cudaError_t status = cudaGraphGetNodes(graph, nullptr, &nodes);
  std::vector<cudaGraphNode_t> all(nodes);
  if (status == cudaSuccess)
    status = cudaGraphGetNodes(graph, all.data(), &nodes);
  for (size_t i = 0; status == cudaSuccess && i < nodes; ++i) {
    cudaGraphNodeType type;
    status = cudaGraphNodeGetType(all[i], &type);
    made.kernels += type == cudaGraphNodeTypeKernel;
  }
  if (status == cudaSuccess)
    status = cudaGraphInstantiate(&made.exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  MOE_CUDA_TRY(status);
  if (graphs_.size() >= kMaxGraphs) {
    auto oldest = std::min_element(graphs_.begin(), graphs_.end(),
                                   [](const Graph &a, const Graph &b) {
                                     return a.lastReplay < b.lastReplay;
                                   });
    (void)cudaGraphExecDestroy(oldest->exec);
    graphs_.erase(oldest);
  }
  graphs_.push_back(std::move(made));
  ++counters.graphCaptures;
  return Status::success();
}

Status StepGraphs::replay(const Shape &shape, cudaStream_t stream,
                          cudaMemPool_t pool, StageTimer &timer,
                          BackendCounters &counters) {
  Graph *graph = find(shape);
  if (!graph)
    return makeError("no decode graph of {} rows and span {}", shape.rows,
                     shape.span);
  timer.beginReplay(graph->timed);
  cudaError_t launched = cudaGraphLaunch(graph->exec, stream);
  if (launched == cudaErrorMemoryAllocation) {
    // The pool keeps what eager passes freed: returned, the graph's memory
    // nodes can map it.
    (void)cudaGetLastError();
    MOE_CUDA_TRY(cudaStreamSynchronize(stream));
    MOE_CUDA_TRY(cudaMemPoolTrimTo(pool, 0));
    launched = cudaGraphLaunch(graph->exec, stream);
  }
  MOE_CUDA_TRY(launched);
  graph->lastReplay = ++replays_;
  ++counters.graphReplays;
  counters.graphKernelLaunches += graph->kernels;
  int device = 0;
  uint64_t reserved = 0;
  MOE_CUDA_TRY(cudaGetDevice(&device));
  MOE_CUDA_TRY(cudaDeviceGetGraphMemAttribute(
      device, cudaGraphMemAttrReservedMemHigh, &reserved));
  counters.deviceGraphBytes = int64_t(reserved);
  return Status::success();
}

} // namespace moe::cuda
