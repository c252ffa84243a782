// The weights of a plan's model, bound to its params by index: read from a
// HuggingFace checkpoint (safetensors, memory-mapped) or made up from a seed
// at the real shapes (benchmarks at full scale; nothing can be downloaded).
#pragma once

#include "runtime/plan/LoadedPlan.h"
#include "runtime/support/Result.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace moe {

enum class ElementType { F32, F16, BF16 };
int64_t elementBytes(ElementType type);

/// A read-only view of one stored tensor (memory-mapped file or owned).
struct TensorView {
  ElementType type = ElementType::F32;
  std::vector<int64_t> shape;
  const void *data = nullptr;
  int64_t numElements() const;
  int64_t numBytes() const { return numElements() * elementBytes(type); }
};

/// One param of the plan. A stacked expert param (hf_name with "{e}") has
/// one part per expert, each of the param's shape without the leading E;
/// any other param has one part of its full shape.
struct BoundParam {
  std::string name; // the plan's param name
  std::vector<int64_t> shape;
  std::vector<TensorView> parts;
};

class WeightSet {
public:
  /// Binds every plan param to tensors of the checkpoint directory: either
  /// model.safetensors or the shards listed by model.safetensors.index.json.
  /// Missing, mis-shaped or unexpected dtypes fail naming file and tensor;
  /// tensors the plan does not use fail too (a checkpoint of another model),
  /// except HF's non-parameter buffers (rotary inv_freq, MiniMax's decay
  /// tables).
  static Result<WeightSet> fromCheckpoint(const std::string &directory,
                                          const plan::Model &model);
  /// Deterministic pseudo-random weights at the params' shapes and dtypes,
  /// scaled so activations stay O(1) through the layers.
  static Result<WeightSet> synthetic(const plan::Model &model, uint64_t seed);

  const BoundParam &param(size_t index) const { return params_[index]; }
  size_t size() const { return params_.size(); }

  /// The param as one contiguous fp32 array (parts concatenated).
  std::vector<float> toFloat32(size_t index) const;

private:
  struct Storage;
  std::vector<BoundParam> params_;
  std::shared_ptr<Storage> storage_; // keeps mappings / owned buffers alive
};

} // namespace moe
