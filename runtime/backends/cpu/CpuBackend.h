// The CPU backend: every op of the plan in fp32, multi-threaded, with the
// semantics of HuggingFace transformers' eager fp32 forward. It is the
// reference the CUDA backend and the golden fixtures are checked against.
// It runs the model as model::ResolvedModel resolved and checked it, adding
// only fp32 weights, RoPE tables, GPT-OSS's experts re-laid out, and caches.
#pragma once

#include "runtime/engine/Backend.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace moe {

struct CpuBackendOptions {
  /// Threads including the caller; 0 = std::thread::hardware_concurrency.
  int threads = 0;
  /// MLA over the latent cache with kv_b absorbed into q and the output
  /// (true), or with per-head K/V expanded from each cached latent (false).
  bool mlaAbsorbed = true;
  /// Lightning prefill by Lightning Attention-2 blocks (true) or by the
  /// token-by-token recurrence (false). Decode always uses the recurrence.
  bool lightningBlocks = true;
  /// Tokens of KV the caches hold for all slots together, in pages the
  /// sequences take as they grow; 0: every slot's whole context. The engine
  /// admits and pauses sequences by what is left (Engine.h).
  int64_t kvPoolTokens = 0;
};

class CpuBackend : public Backend {
public:
  explicit CpuBackend(int threads = 0);
  explicit CpuBackend(const CpuBackendOptions &options);
  ~CpuBackend() override;

  Status prepare(const LoadedPlan &plan, const WeightSet &weights,
                 int32_t slots, int32_t maxContext) override;
  /// The same with the weights already in fp32: one contiguous array per
  /// plan param, in plan order (each a WeightSet::toFloat32 result).
  Status prepare(const LoadedPlan &plan, std::vector<std::vector<float>> params,
                 int32_t slots, int32_t maxContext);
  void resetSlot(int32_t slot) override;
  Status forward(const StepBatch &batch, std::vector<float> &logits) override;
  std::vector<StageTime> stageSeconds() const override;

  int threads() const;

private:
  struct State;
  CpuBackendOptions options_;
  std::unique_ptr<State> state_;
};

} // namespace moe
