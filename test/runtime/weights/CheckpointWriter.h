// Writes small safetensors files and checkpoint directories for the weights
// tests, including deliberately broken ones.
#pragma once

#include "runtime/weights/HalfFloat.h"
#include "test/runtime/ScratchDirectory.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace moe::testing {

struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

template <typename T>
std::vector<uint8_t> rawBytes(const std::vector<T> &values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(T));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

inline std::vector<uint8_t> f32Bytes(const std::vector<float> &values) {
  return rawBytes(values);
}

inline std::vector<uint8_t> bf16Bytes(const std::vector<float> &values) {
  std::vector<uint16_t> halves;
  for (float value : values)
    halves.push_back(floatToBf16(value));
  return rawBytes(halves);
}

inline std::vector<uint8_t> f16Bytes(const std::vector<float> &values) {
  std::vector<uint16_t> halves;
  for (float value : values)
    halves.push_back(floatToF16(value));
  return rawBytes(halves);
}

/// `count` F32 values start, start + 1, ...: easy to check after binding.
inline TensorSpec counting(const std::string &name,
                           const std::vector<int64_t> &shape, float start) {
  int64_t count = 1;
  for (int64_t dim : shape)
    count *= dim;
  std::vector<float> values;
  for (int64_t i = 0; i < count; ++i)
    values.push_back(start + static_cast<float>(i));
  return {name, "F32", shape, f32Bytes(values)};
}

/// The length prefix, `header` as given and `data`.
inline void writeRawSafetensors(const std::string &path,
                                const std::string &header,
                                const std::vector<uint8_t> &data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i)
    out.put(static_cast<char>((length >> (8 * i)) & 0xff));
  out << header;
  out.write(reinterpret_cast<const char *>(data.data()),
            static_cast<std::streamsize>(data.size()));
}

/// A well-formed file: tensors laid out back to back in the given order.
inline void writeSafetensors(const std::string &path,
                             const std::vector<TensorSpec> &tensors) {
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  std::vector<uint8_t> data;
  for (const TensorSpec &tensor : tensors) {
    header[tensor.name] = {
        {"dtype", tensor.dtype},
        {"shape", tensor.shape},
        {"data_offsets", {data.size(), data.size() + tensor.data.size()}}};
    data.insert(data.end(), tensor.data.begin(), tensor.data.end());
  }
  writeRawSafetensors(path, header.dump(), data);
}

inline void writeText(const std::string &path, const std::string &text) {
  std::ofstream(path, std::ios::binary) << text;
}

} // namespace moe::testing
