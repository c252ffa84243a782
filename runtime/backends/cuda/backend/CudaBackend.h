// The CUDA backend for plans whose weights all sit on the GPU: bf16 weights
// and activations, fp32 accumulation (cuBLASLt GEMMs, fp32 math in the
// kernels), logits returned in fp32. Two places stay fp32 because bf16
// rounding there costs far more accuracy than it saves: the residual stream
// (embedding, residual adds, the experts' weighted sum, norm inputs) and the
// routers (weights, inputs and logits), whose top-k picks hinge on near-ties.
// It interprets the plan's ops with the CPU backend's semantics
// (runtime/backends/cpu/CpuBackend.cpp), for the softmax-attention families;
// MLA and lightning attention are refused in prepare. Streaming placements, the
// plan's schedule and batching decisions are not used yet: every weight is
// uploaded and the ops run in program order on one stream.
#pragma once

#include "runtime/engine/Backend.h"

#include <memory>

namespace moe::cuda {

class CudaBackend : public Backend {
public:
  CudaBackend();
  ~CudaBackend() override;

  Status prepare(const LoadedPlan &plan, const WeightSet &weights,
                 int32_t slots, int32_t maxContext) override;
  void resetSlot(int32_t slot) override;
  Status forward(const StepBatch &batch, std::vector<float> &logits) override;
  std::vector<StageTime> stageSeconds() const override;

private:
  struct State;
  std::unique_ptr<State> state_;
};

} // namespace moe::cuda
