// Element types and read-only tensor views shared by the safetensors reader
// and WeightSet.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace moe {

enum class ElementType { F32, F16, BF16, F8_E4M3, U8 };

constexpr int64_t elementBytes(ElementType type) {
  switch (type) {
  case ElementType::F32:
    return 4;
  case ElementType::F8_E4M3:
  case ElementType::U8:
    return 1;
  default:
    return 2;
  }
}

/// The safetensors spelling ("F32", "F16", "BF16", "F8_E4M3", "U8"), used
/// in errors too.
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
  case ElementType::U8:
    return "U8";
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

/// How a param stored as MXFP4 (GPT-OSS's experts) reads. Its view's
/// `data` holds the `<name>_blocks` codes, U8 [E, out, in / 32, 16], and
/// `scales` the `<name>_scales`, U8 [E, out, in / 32] E8M0 exponents, while
/// the view's shape is the param's [E, in, out] (transformers' dequantized
/// `gate_up_proj` / `down_proj`): element (e, i, o) is the E2M1 code in
/// nibble i % 2 (low first) of byte i / 2 of row (e, o), times
/// 2^(scale − 127), as transformers' convert_moe_packed_tensors reads it.
struct Mxfp4Blocks {
  const uint8_t *scales = nullptr;
};

/// A read-only view of one stored tensor (memory-mapped file or owned).
/// `data` of a mapped tensor need not be aligned to its element size (the
/// safetensors header length is arbitrary): read elements with memcpy.
struct TensorView {
  ElementType type = ElementType::F32;
  std::vector<int64_t> shape;
  const void *data = nullptr;
  std::optional<Fp8Scales> scales;  // F8_E4M3 only
  std::optional<Mxfp4Blocks> mxfp4; // U8 codes of an MXFP4 param only
  int64_t numElements() const {
    int64_t count = 1;
    for (int64_t dim : shape)
      count *= dim;
    return count;
  }
  int64_t numBytes() const { return numElements() * elementBytes(type); }
};

} // namespace moe
