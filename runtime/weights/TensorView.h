// Element types and read-only tensor views shared by the safetensors reader
// and WeightSet.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace moe {

enum class ElementType { F32, F16, BF16, F8_E4M3 };

constexpr int64_t elementBytes(ElementType type) {
  switch (type) {
  case ElementType::F32:
    return 4;
  case ElementType::F8_E4M3:
    return 1;
  default:
    return 2;
  }
}

/// The safetensors spelling ("F32", "F16", "BF16", "F8_E4M3"), used in
/// errors too.
constexpr std::string_view elementTypeName(ElementType type) {
  switch (type) {
  case ElementType::F32:
    return "F32";
  case ElementType::F16:
    return "F16";
  case ElementType::BF16:
    return "BF16";
  case ElementType::F8_E4M3:
    return "F8_E4M3";
  }
  return "?";
}

/// How an F8_E4M3 matrix [rows, cols] is dequantized: element (r, c) is its
/// E4M3 value times scale (r / blockRows, c / blockCols) of a row-major
/// [⌈rows / blockRows⌉, scaleCols] scale tensor (F32 or BF16). DeepSeek-V3
/// and Qwen3's FP8 checkpoints scale 128 × 128 blocks (`weight_scale_inv`),
/// compressed-tensors each output channel or the whole tensor
/// (`weight_scale`).
struct Fp8Scales {
  ElementType type = ElementType::F32;
  const void *data = nullptr;
  int64_t blockRows = 0, blockCols = 0, scaleCols = 0;
};

/// A read-only view of one stored tensor (memory-mapped file or owned).
/// `data` of a mapped tensor need not be aligned to its element size (the
/// safetensors header length is arbitrary): read elements with memcpy.
struct TensorView {
  ElementType type = ElementType::F32;
  std::vector<int64_t> shape;
  const void *data = nullptr;
  std::optional<Fp8Scales> scales; // F8_E4M3 only
  int64_t numElements() const {
    int64_t count = 1;
    for (int64_t dim : shape)
      count *= dim;
    return count;
  }
  int64_t numBytes() const { return numElements() * elementBytes(type); }
};

} // namespace moe
