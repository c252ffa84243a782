#include "runtime/weights/Safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace moe {
namespace {

std::optional<ElementType> parseElementType(std::string_view name) {
  for (ElementType type :
       {ElementType::F32, ElementType::F16, ElementType::BF16,
        ElementType::F8_E4M3, ElementType::U8})
    if (name == elementTypeName(type))
      return type;
  return std::nullopt;
}

/// Header integers are unsigned and must fit the int64 sizes we compute with.
std::optional<int64_t> nonNegativeInteger(const nlohmann::json &value) {
  if (value.is_number_unsigned()) {
    uint64_t unsignedValue = value.get<uint64_t>();
    if (unsignedValue >
        static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return std::nullopt;
    return static_cast<int64_t>(unsignedValue);
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0)
    return value.get<int64_t>();
  return std::nullopt;
}

std::optional<std::vector<int64_t>> integerList(const nlohmann::json &value) {
  if (!value.is_array())
    return std::nullopt;
  std::vector<int64_t> list;
  for (const nlohmann::json &item : value) {
    std::optional<int64_t> integer = nonNegativeInteger(item);
    if (!integer)
      return std::nullopt;
    list.push_back(*integer);
  }
  return list;
}

/// A validated header entry, before the data area is known to hold it.
struct PendingTensor {
  ElementType type;
  std::vector<int64_t> shape;
  int64_t begin;
};

/// Where a tensor's bytes lie in the data area.
struct Extent {
  int64_t begin;
  int64_t end;
  size_t tensor; // index into the pending tensors
};

} // namespace

Result<std::unique_ptr<SafetensorsFile>>
SafetensorsFile::open(const std::string &path) {
  std::string label = std::filesystem::path(path).filename().string();
  int descriptor = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (descriptor < 0)
    return makeError("{}: cannot open: {}", path, std::strerror(errno));
  struct stat status;
  if (::fstat(descriptor, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(descriptor);
    return makeError("{}: not a regular file", path);
  }
  size_t size = static_cast<size_t>(status.st_size);
  if (size < 8) {
    ::close(descriptor);
    return makeError("{}: truncated: the file has {} bytes, fewer than the "
                     "8-byte header length",
                     label, size);
  }
  void *mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, descriptor, 0);
  int mapError = errno;
  ::close(descriptor);
  if (mapping == MAP_FAILED)
    return makeError("{}: cannot map: {}", path, std::strerror(mapError));
  std::unique_ptr<SafetensorsFile> file(
      new SafetensorsFile(std::move(label), mapping, size));
  MOE_RETURN_IF_ERROR(file->parseHeader());
  return file;
}

SafetensorsFile::~SafetensorsFile() { ::munmap(mapping_, size_); }

const TensorView *SafetensorsFile::find(std::string_view name) const {
  auto found = tensors_.find(name);
  return found == tensors_.end() ? nullptr : &found->second;
}

Status SafetensorsFile::parseHeader() {
  const auto *bytes = static_cast<const uint8_t *>(mapping_);
  uint64_t headerLength = 0;
  for (int i = 7; i >= 0; --i)
    headerLength = headerLength << 8 | bytes[i];
  if (headerLength > size_ - 8)
    return makeError("{}: header length {} exceeds the file ({} bytes after "
                     "the length)",
                     label_, headerLength, size_ - 8);

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + headerLength);
  } catch (const nlohmann::json::exception &error) {
    return makeError("{}: header is not valid JSON: {}", label_, error.what());
  }
  if (!header.is_object())
    return makeError("{}: header is not a JSON object", label_);

  // Validate every entry on its own first; the data area's bounds and the
  // overlaps are checked across all of them below.
  std::vector<Extent> extents;
  std::vector<std::pair<std::string, PendingTensor>> pending;
  int64_t claimedDataBytes = 0;
  for (const auto &[name, entry] : header.items()) {
    if (name == "__metadata__")
      continue;
    if (!entry.is_object())
      return makeError("{}: tensor '{}': entry is not a JSON object", label_,
                       name);
    auto dtype = entry.find("dtype");
    if (dtype == entry.end() || !dtype->is_string())
      return makeError("{}: tensor '{}': no dtype string", label_, name);
    std::optional<ElementType> type =
        parseElementType(dtype->get_ref<const std::string &>());
    if (!type)
      return makeError(
          "{}: tensor '{}': dtype {} is not supported (F32, "
          "F16, BF16, F8_E4M3 with scales and U8 MXFP4 blocks are)",
          label_, name, dtype->get_ref<const std::string &>());
    auto shapeField = entry.find("shape");
    std::optional<std::vector<int64_t>> shape;
    if (shapeField != entry.end())
      shape = integerList(*shapeField);
    if (!shape)
      return makeError("{}: tensor '{}': shape is not a list of non-negative "
                       "integers",
                       label_, name);
    auto offsetsField = entry.find("data_offsets");
    std::optional<std::vector<int64_t>> offsets;
    if (offsetsField != entry.end())
      offsets = integerList(*offsetsField);
    if (!offsets || offsets->size() != 2 || (*offsets)[0] > (*offsets)[1])
      return makeError("{}: tensor '{}': data_offsets is not a pair [begin, "
                       "end] of non-negative integers with begin <= end",
                       label_, name);
    int64_t begin = (*offsets)[0], end = (*offsets)[1];

    int64_t neededBytes = elementBytes(*type);
    for (int64_t dim : *shape)
      if (__builtin_mul_overflow(neededBytes, dim, &neededBytes))
        return makeError("{}: tensor '{}': shape [{}] of {} is too large",
                         label_, name, fmt::join(*shape, ", "),
                         elementTypeName(*type));
    if (neededBytes != end - begin)
      return makeError("{}: tensor '{}': data_offsets [{}, {}] hold {} bytes, "
                       "shape [{}] of {} needs {}",
                       label_, name, begin, end, end - begin,
                       fmt::join(*shape, ", "), elementTypeName(*type),
                       neededBytes);
    claimedDataBytes = std::max(claimedDataBytes, end);
    if (begin != end)
      extents.push_back({begin, end, pending.size()});
    pending.push_back({name, PendingTensor{*type, std::move(*shape), begin}});
  }

  const int64_t dataBytes = static_cast<int64_t>(size_ - 8 - headerLength);
  if (claimedDataBytes > dataBytes)
    return makeError("{}: truncated: header says {} bytes of data, file has {}",
                     label_, claimedDataBytes, dataBytes);

  std::sort(extents.begin(), extents.end(),
            [](const Extent &a, const Extent &b) {
              return std::tie(a.begin, a.end, a.tensor) <
                     std::tie(b.begin, b.end, b.tensor);
            });
  // Sorted by begin, two extents overlap only if some neighbours do.
  for (size_t i = 1; i < extents.size(); ++i) {
    const Extent &previous = extents[i - 1], &extent = extents[i];
    if (extent.begin < previous.end)
      return makeError("{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap",
                       label_, pending[previous.tensor].first, previous.begin,
                       previous.end, pending[extent.tensor].first, extent.begin,
                       extent.end);
  }

  const uint8_t *data = bytes + 8 + headerLength;
  for (auto &[name, tensor] : pending)
    tensors_.emplace(
        std::move(name),
        TensorView{tensor.type, std::move(tensor.shape), data + tensor.begin});
  return Status::success();
}

} // namespace moe
