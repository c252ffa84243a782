// The CUDA backend: bf16 weights and activations, fp32 accumulation (cuBLASLt
// GEMMs, fp32 math in the kernels), logits returned in fp32. Two places stay
// fp32 because bf16 rounding there costs far more accuracy than it saves: the
// residual stream (embedding, residual adds, the experts' weighted sum, norm
// inputs) and the routers (weights, inputs and logits), whose top-k picks hinge
// on near-ties. It runs the ops of model::ResolvedModel with the CPU
// backend's semantics (runtime/backends/cpu/CpuBackend.cpp): the softmax-
// attention families, MLA (absorbed) and lightning attention (whose states
// stay on the GPU: a plan with host slots is refused in prepare). It keeps the
// plan's placement and batching: streamed weights live in pinned host memory
// and are copied through the plan's weight ring on their own stream ahead of
// their ops; the KV of the slots beyond the plan's GPU share lives in pinned
// memory, in pages of a pool the slots take as they grow, and is staged per
// attention micro-batch on a load stream, new rows stored back on a store
// stream; activations stay within what the GPU
// budget leaves (larger batches run as several passes).
#pragma once

#include "runtime/engine/Backend.h"

#include <memory>

namespace moe::cuda {

struct BackendState;

struct CudaBackendOptions {
  // Mean rows per expert from which the routed experts run as one cuBLASLt
  // GEMM each (the host reads the counts) instead of one grouped launch.
  int64_t perExpertGemmRows = 128;
  // At most this much GPU memory for a step's activations and scratch (0:
  // all that the plan's GPU budget leaves). Less runs a pass in more chunks
  // of rows, their hidden states parked in host memory between layers.
  size_t maxStepBytes = 0;
  // Decode passes that allow it captured as CUDA graphs and replayed
  // (StepGraphs.h); off, every pass launches op by op.
  bool graphs = true;
  // Tokens of the host KV pool the host slots take pages from (0: the
  // plan's, or every host slot's whole context for a plan without one);
  // rounded up to whole pages.
  int64_t hostKvPoolTokens = 0;
  // Per-expert GEMMs of fp8 experts without biases take their inputs in
  // fp8 too (a scale per 128 of a token's inputs) and run cuBLASLt's
  // block-scaled FP8 GEMM; off, each layer's experts are widened to bf16
  // for bf16 GEMMs.
  bool fp8ExpertInputs = true;
};

class CudaBackend : public Backend {
public:
  explicit CudaBackend(CudaBackendOptions options = {});
  ~CudaBackend() override;

  Status prepare(const LoadedPlan &plan, const WeightSet &weights,
                 int32_t slots, int32_t maxContext) override;
  void resetSlot(int32_t slot) override;
  Status forward(const StepBatch &batch, std::vector<float> &logits) override;
  // Picks each row's token on the GPU: only the ids cross PCIe.
  Status forwardGreedy(const StepBatch &batch,
                       std::vector<int32_t> &tokens) override;
  std::vector<StageTime> stageSeconds() const override;
  BackendCounters counters() const override;

private:
  Status run(const StepBatch &batch, std::vector<float> *logits,
             std::vector<int32_t> *tokens);
  CudaBackendOptions options_;
  std::unique_ptr<BackendState> state_;
};

} // namespace moe::cuda
