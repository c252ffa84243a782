// The weights of a plan's model, bound to its params by index: read from a
// HuggingFace checkpoint (safetensors, memory-mapped) or made up from a seed
// at the real shapes (benchmarks at full scale; nothing can be downloaded).
#pragma once

#include "runtime/plan/LoadedPlan.h"
#include "runtime/support/Result.h"
#include "runtime/weights/TensorView.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace moe {

/// One param of the plan. A stacked expert param (hf_name with "{e}") has
/// one part per expert, each of the param's shape without the leading E;
/// any other param has one part of its full shape.
struct BoundParam {
  std::string name; // the plan's param name
  std::vector<int64_t> shape;
  std::vector<TensorView> parts;
};

/// The error for param `index` (`name`) holding `value`, NaN or Inf, at
/// `element` of its flat array: one wording for every backend.
Error nonFiniteParam(size_t index, std::string_view name, float value,
                     int64_t element);

class WeightSet {
public:
  /// Binds every param of a verified plan to tensors of the checkpoint
  /// directory (any of F32, F16, BF16, whatever the plan's dtype, or
  /// F8_E4M3 with its scales: Fp8Scales, dequantized when read): either
  /// model.safetensors or the shards listed by model.safetensors.index.json.
  /// Missing, mis-shaped or unexpected dtypes fail naming file and tensor;
  /// tensors the plan does not use fail too (a checkpoint of another model),
  /// except HF's non-parameter buffers (rotary inv_freq, MiniMax's decay
  /// tables).
  static Result<WeightSet> fromCheckpoint(const std::string &directory,
                                          const plan::Model &model);
  /// Deterministic pseudo-random weights at the params' shapes and dtypes,
  /// scaled so activations stay O(1) through the layers: matrices with mean
  /// 0 and standard deviation 1/sqrt(fan_in), norm weights near 1, biases
  /// near 0, rounded to each param's dtype. Parts are split as
  /// fromCheckpoint splits them but hold no data: values are generated on
  /// all cores when toFloat32 reads them, so a model larger than host memory
  /// can be benchmarked. The same seed gives the same values whatever the
  /// core count.
  static Result<WeightSet> synthetic(const plan::Model &model, uint64_t seed);

  const BoundParam &param(size_t index) const { return params_[index]; }
  size_t size() const { return params_.size(); }

  /// The param as one contiguous fp32 array (parts concatenated).
  std::vector<float> toFloat32(size_t index) const;
  /// Elements [begin, begin + count) of that array into `out`, on the
  /// calling thread: callers split a large param into pieces read in
  /// parallel, without the whole of it in fp32.
  void readFloat32(size_t index, int64_t begin, int64_t count,
                   float *out) const;
  /// The param as bf16 bits (round to nearest even) into `out`, which holds
  /// exactly its elements; on all cores, without an fp32 copy, for loading
  /// full-scale models.
  void toBf16(size_t index, std::span<uint16_t> out) const;
  /// Whether every value the param stands for is finite: NaN or Inf (a
  /// damaged checkpoint, or fp8 codes times a scale past fp32's range) is
  /// nonFiniteParam's error for its first such element. Synthetic weights
  /// are finite as drawn. On all cores.
  Status checkFinite(size_t index) const;

private:
  struct Storage;
  std::vector<BoundParam> params_;
  std::shared_ptr<Storage> storage_; // keeps mappings / owned buffers alive
};

} // namespace moe
