// Element types and read-only tensor views shared by the safetensors reader
// and WeightSet.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace moe {

enum class ElementType { F32, F16, BF16 };

constexpr int64_t elementBytes(ElementType type) {
  return type == ElementType::F32 ? 4 : 2;
}

/// The safetensors spelling ("F32", "F16", "BF16"), used in errors too.
constexpr std::string_view elementTypeName(ElementType type) {
  switch (type) {
  case ElementType::F32:
    return "F32";
  case ElementType::F16:
    return "F16";
  case ElementType::BF16:
    return "BF16";
  }
  return "?";
}

/// A read-only view of one stored tensor (memory-mapped file or owned).
/// `data` of a mapped tensor need not be aligned to its element size (the
/// safetensors header length is arbitrary): read elements with memcpy.
struct TensorView {
  ElementType type = ElementType::F32;
  std::vector<int64_t> shape;
  const void *data = nullptr;
  int64_t numElements() const {
    int64_t count = 1;
    for (int64_t dim : shape)
      count *= dim;
    return count;
  }
  int64_t numBytes() const { return numElements() * elementBytes(type); }
};

} // namespace moe
