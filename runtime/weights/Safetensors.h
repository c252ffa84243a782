// One .safetensors file, memory-mapped read-only: an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets}} and the
// data area. Everything the header claims is checked against the file before
// a view is handed out, so views never point outside the mapping.
#pragma once

#include "runtime/support/Result.h"
#include "runtime/weights/TensorView.h"

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace moe {

class SafetensorsFile {
public:
  /// Maps and validates `path`. Errors start with the file's name and name
  /// the offending tensor.
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string &path);

  SafetensorsFile(const SafetensorsFile &) = delete;
  SafetensorsFile &operator=(const SafetensorsFile &) = delete;
  ~SafetensorsFile();

  /// The file's name without its directory, as errors spell it.
  const std::string &label() const { return label_; }
  /// Views into the mapping, by tensor name; valid while this file lives.
  const std::map<std::string, TensorView, std::less<>> &tensors() const {
    return tensors_;
  }
  const TensorView *find(std::string_view name) const;

private:
  SafetensorsFile(std::string label, void *mapping, size_t size)
      : label_(std::move(label)), mapping_(mapping), size_(size) {}
  Status parseHeader();

  std::string label_;
  void *mapping_;
  size_t size_;
  std::map<std::string, TensorView, std::less<>> tensors_;
};

} // namespace moe
