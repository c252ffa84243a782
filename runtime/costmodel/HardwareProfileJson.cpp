// Hardware profiles as JSON: reading (every field checked, an error naming
// its path) and writing measured sections into an existing profile.
#include "runtime/costmodel/HardwareProfile.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

namespace moe::costmodel {
namespace {

using Json = nlohmann::json;

std::string fieldPath(std::string_view parent, std::string_view key) {
  return parent.empty() ? std::string(key) : fmt::format("{}.{}", parent, key);
}

Result<const Json *> requireField(const Json &object, std::string_view key,
                                  std::string_view parent) {
  auto it = object.find(key);
  if (it == object.end())
    return makeError("{}: missing", fieldPath(parent, key));
  return &*it;
}

Result<const Json *> requireObject(const Json &object, std::string_view key,
                                   std::string_view parent) {
  auto field = requireField(object, key, parent);
  MOE_RETURN_IF_ERROR(field);
  if (!(*field)->is_object())
    return makeError("{}: must be an object", fieldPath(parent, key));
  return *field;
}

Result<const Json *> requireArray(const Json &object, std::string_view key,
                                  std::string_view parent) {
  auto field = requireField(object, key, parent);
  MOE_RETURN_IF_ERROR(field);
  if (!(*field)->is_array())
    return makeError("{}: must be an array", fieldPath(parent, key));
  return *field;
}

Result<std::string> requireString(const Json &object, std::string_view key,
                                  std::string_view parent) {
  auto field = requireField(object, key, parent);
  MOE_RETURN_IF_ERROR(field);
  if (!(*field)->is_string())
    return makeError("{}: must be a string", fieldPath(parent, key));
  return (*field)->get<std::string>();
}

Result<int64_t> requirePositiveInteger(const Json &object, std::string_view key,
                                       std::string_view parent) {
  auto field = requireField(object, key, parent);
  MOE_RETURN_IF_ERROR(field);
  const Json &value = **field;
  if (!value.is_number_integer() ||
      (value.is_number_unsigned() &&
       value.get<uint64_t>() >
           static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) ||
      value.get<int64_t>() <= 0)
    return makeError("{}: must be a positive integer", fieldPath(parent, key));
  return value.get<int64_t>();
}

// Bytes of `memory_bytes` that a plan leaves to what runs beside it
// ("reserved_bytes", optional, 0 when absent).
Result<int64_t> reservedBytes(const Json &object, std::string_view parent,
                              int64_t memoryBytes) {
  if (!object.contains("reserved_bytes"))
    return int64_t{0};
  auto reserved = requirePositiveInteger(object, "reserved_bytes", parent);
  MOE_RETURN_IF_ERROR(reserved);
  if (*reserved >= memoryBytes)
    return makeError("{}: must be less than memory_bytes",
                     fieldPath(parent, "reserved_bytes"));
  return *reserved;
}

Result<double> requirePositiveNumber(const Json &object, std::string_view key,
                                     std::string_view parent) {
  auto field = requireField(object, key, parent);
  MOE_RETURN_IF_ERROR(field);
  const Json &value = **field;
  if (!value.is_number() || !(value.get<double>() > 0) ||
      !std::isfinite(value.get<double>()))
    return makeError("{}: must be a positive number", fieldPath(parent, key));
  return value.get<double>();
}

Result<int64_t> requireNonNegativeInteger(const Json &object,
                                          std::string_view key,
                                          std::string_view parent) {
  auto field = requireField(object, key, parent);
  MOE_RETURN_IF_ERROR(field);
  const Json &value = **field;
  if (!value.is_number_integer() ||
      (value.is_number_unsigned() &&
       value.get<uint64_t>() >
           static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) ||
      value.get<int64_t>() < 0)
    return makeError("{}: must be a non-negative integer",
                     fieldPath(parent, key));
  return value.get<int64_t>();
}

Result<bool> requireBool(const Json &object, std::string_view key,
                         std::string_view parent) {
  auto field = requireField(object, key, parent);
  MOE_RETURN_IF_ERROR(field);
  if (!(*field)->is_boolean())
    return makeError("{}: must be true or false", fieldPath(parent, key));
  return (*field)->get<bool>();
}

Result<DeviceInfo> parseDevice(const Json &root) {
  auto device = requireObject(root, "device", "");
  MOE_RETURN_IF_ERROR(device);
  DeviceInfo info;
  auto name = requireString(**device, "name", "device");
  MOE_RETURN_IF_ERROR(name);
  info.name = *name;
  auto memory = requirePositiveInteger(**device, "memory_bytes", "device");
  MOE_RETURN_IF_ERROR(memory);
  info.memoryBytes = *memory;
  auto reserved = reservedBytes(**device, "device", info.memoryBytes);
  MOE_RETURN_IF_ERROR(reserved);
  info.reservedBytes = *reserved;
  auto sms = requirePositiveInteger(**device, "sm_count", "device");
  MOE_RETURN_IF_ERROR(sms);
  info.smCount = *sms;
  auto capability = requireString(**device, "compute_capability", "device");
  MOE_RETURN_IF_ERROR(capability);
  int major = 0, minor = 0;
  char end = 0;
  if (std::sscanf(capability->c_str(), "%d.%d%c", &major, &minor, &end) != 2)
    return makeError("device.compute_capability: expected \"major.minor\" "
                     "such as \"9.0\", got \"{}\"",
                     *capability);
  info.computeCapability = *capability;
  return info;
}

Result<HostInfo> parseHost(const Json &root) {
  auto host = requireObject(root, "host", "");
  MOE_RETURN_IF_ERROR(host);
  HostInfo info;
  auto memory = requirePositiveInteger(**host, "memory_bytes", "host");
  MOE_RETURN_IF_ERROR(memory);
  info.memoryBytes = *memory;
  auto reserved = reservedBytes(**host, "host", info.memoryBytes);
  MOE_RETURN_IF_ERROR(reserved);
  info.reservedBytes = *reserved;
  auto cores = requirePositiveInteger(**host, "cpu_cores", "host");
  MOE_RETURN_IF_ERROR(cores);
  info.cpuCores = *cores;
  return info;
}

Result<LinkBandwidths> parseLinks(const Json &root) {
  auto links = requireObject(root, "links", "");
  MOE_RETURN_IF_ERROR(links);
  LinkBandwidths bandwidths;
  struct Field {
    std::string_view key;
    double LinkBandwidths::*member;
  };
  for (const Field &field :
       {Field{"h2d_pinned_bytes_per_s",
              &LinkBandwidths::h2dPinnedBytesPerSecond},
        Field{"d2h_pinned_bytes_per_s",
              &LinkBandwidths::d2hPinnedBytesPerSecond},
        Field{"h2d_pageable_bytes_per_s",
              &LinkBandwidths::h2dPageableBytesPerSecond},
        Field{"hbm_bytes_per_s", &LinkBandwidths::hbmBytesPerSecond}}) {
    auto value = requirePositiveNumber(**links, field.key, "links");
    MOE_RETURN_IF_ERROR(value);
    bandwidths.*field.member = *value;
  }
  return bandwidths;
}

// `path`.points: ≥ 1 objects, each read by `parse(point, pointPath)`.
template <typename Point, typename Parse>
Result<std::vector<Point>> parsePointObjects(const Json &shape,
                                             const std::string &path,
                                             const Parse &parse) {
  auto points = requireArray(shape, "points", path);
  MOE_RETURN_IF_ERROR(points);
  if ((*points)->empty())
    return makeError("{}.points: needs at least one point", path);
  std::vector<Point> result;
  for (size_t j = 0; j < (*points)->size(); ++j) {
    const Json &point = (**points)[j];
    std::string pointPath = fmt::format("{}.points[{}]", path, j);
    if (!point.is_object())
      return makeError("{}: must be an object", pointPath);
    Result<Point> parsed = parse(point, pointPath);
    MOE_RETURN_IF_ERROR(parsed);
    result.push_back(*parsed);
  }
  return result;
}

// `path`.points: ≥ 1 {xKey: positive integer, "seconds": positive number},
// each x once; returned sorted by x.
template <typename Point>
Result<std::vector<Point>> parsePoints(const Json &shape,
                                       const std::string &path,
                                       const char *xKey, int64_t Point::*x) {
  auto points = parsePointObjects<Point>(
      shape, path,
      [&](const Json &point, const std::string &pointPath) -> Result<Point> {
        auto value = requirePositiveInteger(point, xKey, pointPath);
        MOE_RETURN_IF_ERROR(value);
        auto seconds = requirePositiveNumber(point, "seconds", pointPath);
        MOE_RETURN_IF_ERROR(seconds);
        Point parsed;
        parsed.*x = *value;
        parsed.seconds = *seconds;
        return parsed;
      });
  MOE_RETURN_IF_ERROR(points);
  std::vector<Point> result = std::move(*points);
  std::sort(result.begin(), result.end(),
            [&](const Point &a, const Point &b) { return a.*x < b.*x; });
  for (size_t j = 1; j < result.size(); ++j)
    if (result[j].*x == result[j - 1].*x)
      return makeError("{}.points: {} = {} is measured twice", path, xKey,
                       result[j].*x);
  return result;
}

// GEMM shapes under `key`: required (at least one) or optional.
Result<std::vector<GemmShapeProfile>>
parseGemm(const Json &root, const char *key, bool required) {
  std::vector<GemmShapeProfile> result;
  if (!required && !root.contains(key))
    return result;
  auto shapes = requireArray(root, key, "");
  MOE_RETURN_IF_ERROR(shapes);
  if ((*shapes)->empty())
    return makeError("{}: needs at least one measured shape", key);
  for (size_t i = 0; i < (*shapes)->size(); ++i) {
    const Json &shape = (**shapes)[i];
    std::string path = fmt::format("{}[{}]", key, i);
    if (!shape.is_object())
      return makeError("{}: must be an object", path);
    GemmShapeProfile profile;
    auto n = requirePositiveInteger(shape, "n", path);
    MOE_RETURN_IF_ERROR(n);
    auto k = requirePositiveInteger(shape, "k", path);
    MOE_RETURN_IF_ERROR(k);
    profile.n = *n;
    profile.k = *k;
    auto points = parsePoints(shape, path, "m", &GemmPoint::m);
    MOE_RETURN_IF_ERROR(points);
    profile.points = std::move(*points);
    result.push_back(std::move(profile));
  }
  return result;
}

Result<std::vector<GroupedGemmShapeProfile>>
parseGroupedGemm(const Json &root) {
  // Optional: without it routed experts are priced as one GEMM per expert.
  if (!root.contains("grouped_gemm_bf16"))
    return std::vector<GroupedGemmShapeProfile>{};
  auto shapes = requireArray(root, "grouped_gemm_bf16", "");
  MOE_RETURN_IF_ERROR(shapes);
  std::vector<GroupedGemmShapeProfile> result;
  for (size_t i = 0; i < (*shapes)->size(); ++i) {
    const Json &shape = (**shapes)[i];
    std::string path = fmt::format("grouped_gemm_bf16[{}]", i);
    if (!shape.is_object())
      return makeError("{}: must be an object", path);
    GroupedGemmShapeProfile profile;
    for (auto [key, field] :
         {std::pair{"n", &GroupedGemmShapeProfile::n},
          std::pair{"k", &GroupedGemmShapeProfile::k},
          std::pair{"experts", &GroupedGemmShapeProfile::experts}}) {
      auto value = requirePositiveInteger(shape, key, path);
      MOE_RETURN_IF_ERROR(value);
      profile.*field = *value;
    }
    auto points = parsePoints(shape, path, "rows_per_expert",
                              &GroupedGemmPoint::rowsPerExpert);
    MOE_RETURN_IF_ERROR(points);
    profile.points = std::move(*points);
    result.push_back(std::move(profile));
  }
  return result;
}

// How a curve's points are ordered and interpolated: decode by tokens read
// (batch·context), prefill by (row, key) pairs.
using AttentionMeasure = double (*)(const AttentionPoint &);
double attentionTokensRead(const AttentionPoint &point) {
  return double(attentionTokens(point));
}

// `path`.points: ≥ 1 {"batch", "context": positive integers, "seconds":
// positive number}; returned sorted by `measure`.
Result<std::vector<AttentionPoint>>
parseAttentionPoints(const Json &shape, const std::string &path,
                     AttentionMeasure measure) {
  auto points = parsePointObjects<AttentionPoint>(
      shape, path,
      [](const Json &point,
         const std::string &pointPath) -> Result<AttentionPoint> {
        auto batch = requirePositiveInteger(point, "batch", pointPath);
        MOE_RETURN_IF_ERROR(batch);
        auto context = requirePositiveInteger(point, "context", pointPath);
        MOE_RETURN_IF_ERROR(context);
        auto seconds = requirePositiveNumber(point, "seconds", pointPath);
        MOE_RETURN_IF_ERROR(seconds);
        return AttentionPoint{*batch, *context, *seconds};
      });
  MOE_RETURN_IF_ERROR(points);
  std::vector<AttentionPoint> result = std::move(*points);
  std::sort(result.begin(), result.end(),
            [measure](const AttentionPoint &a, const AttentionPoint &b) {
              return measure(a) < measure(b);
            });
  return result;
}

// The optional array `key` of shapes, each with the positive integers
// `fields` and attention points.
template <typename Shape, size_t N>
Result<std::vector<Shape>> parseAttentionShapes(
    const Json &root, const char *key,
    const std::array<std::pair<const char *, int64_t Shape::*>, N> &fields,
    AttentionMeasure measure) {
  std::vector<Shape> result;
  if (!root.contains(key))
    return result;
  auto shapes = requireArray(root, key, "");
  MOE_RETURN_IF_ERROR(shapes);
  for (size_t i = 0; i < (*shapes)->size(); ++i) {
    const Json &shape = (**shapes)[i];
    std::string path = fmt::format("{}[{}]", key, i);
    if (!shape.is_object())
      return makeError("{}: must be an object", path);
    Shape profile;
    for (auto [name, field] : fields) {
      auto value = requirePositiveInteger(shape, name, path);
      MOE_RETURN_IF_ERROR(value);
      profile.*field = *value;
    }
    auto points = parseAttentionPoints(shape, path, measure);
    MOE_RETURN_IF_ERROR(points);
    profile.points = std::move(*points);
    result.push_back(std::move(profile));
  }
  return result;
}

// Optional: without measurements decode attention is priced by KV bytes /
// HBM, and prefill as decode rows over the prompts' causal pairs.
Result<std::vector<AttentionShapeProfile>>
parseAttention(const Json &root, const char *key, AttentionMeasure measure) {
  auto shapes = parseAttentionShapes<AttentionShapeProfile, 3>(
      root, key,
      {{{"heads", &AttentionShapeProfile::heads},
        {"kv_heads", &AttentionShapeProfile::kvHeads},
        {"head_dim", &AttentionShapeProfile::headDim}}},
      measure);
  MOE_RETURN_IF_ERROR(shapes);
  for (size_t i = 0; i < shapes->size(); ++i)
    if ((*shapes)[i].heads % (*shapes)[i].kvHeads != 0)
      return makeError("{}[{}].kv_heads: {} does not divide heads = {}", key, i,
                       (*shapes)[i].kvHeads, (*shapes)[i].heads);
  return shapes;
}

// Optional: without measurements MLA is priced by latent bytes and FLOPs.
Result<std::vector<MlaShapeProfile>> parseMla(const Json &root, const char *key,
                                              AttentionMeasure measure) {
  return parseAttentionShapes<MlaShapeProfile, 3>(
      root, key,
      {{{"heads", &MlaShapeProfile::heads},
        {"latent_dim", &MlaShapeProfile::latentDim},
        {"rope_dim", &MlaShapeProfile::ropeDim}}},
      measure);
}

// `path`.`key`: an array of objects each read by `parse(object, itemPath)`;
// an absent key is an empty array.
template <typename Item, typename Parse>
Result<std::vector<Item>>
parseOptionalItems(const Json &object, const char *key, const std::string &path,
                   const Parse &parse) {
  std::vector<Item> result;
  if (!object.contains(key))
    return result;
  auto items = requireArray(object, key, path);
  MOE_RETURN_IF_ERROR(items);
  for (size_t i = 0; i < (*items)->size(); ++i) {
    const Json &item = (**items)[i];
    std::string itemPath = fmt::format("{}.{}[{}]", path, key, i);
    if (!item.is_object())
      return makeError("{}: must be an object", itemPath);
    Result<Item> parsed = parse(item, itemPath);
    MOE_RETURN_IF_ERROR(parsed);
    result.push_back(std::move(*parsed));
  }
  return result;
}

// Points by thread count: each count once, returned sorted.
template <typename Point>
Result<std::vector<Point>> sortedByThreads(std::vector<Point> points,
                                           const std::string &path) {
  std::sort(points.begin(), points.end(), [](const Point &a, const Point &b) {
    return a.threads < b.threads;
  });
  for (size_t j = 1; j < points.size(); ++j)
    if (points[j].threads == points[j - 1].threads)
      return makeError("{}: threads = {} is measured twice", path,
                       points[j].threads);
  return points;
}

Result<std::string> requireKvDtype(const Json &object,
                                   const std::string &path) {
  auto dtype = requireString(object, "kv_dtype", path);
  MOE_RETURN_IF_ERROR(dtype);
  if (*dtype != "bf16" && *dtype != "fp8")
    return makeError("{}.kv_dtype: expected \"bf16\" or \"fp8\", got \"{}\"",
                     path, *dtype);
  return *dtype;
}

// A host attention shape: the positive integers `fields`, kv_dtype, threads
// and {kv_bytes, seconds} points.
template <typename Shape, size_t N>
Result<Shape> parseHostAttentionShape(
    const Json &shape, const std::string &path,
    const std::array<std::pair<const char *, int64_t Shape::*>, N> &fields) {
  Shape profile;
  for (auto [name, field] : fields) {
    auto value = requirePositiveInteger(shape, name, path);
    MOE_RETURN_IF_ERROR(value);
    profile.*field = *value;
  }
  auto dtype = requireKvDtype(shape, path);
  MOE_RETURN_IF_ERROR(dtype);
  profile.kvDtype = *dtype;
  auto threads = requirePositiveInteger(shape, "threads", path);
  MOE_RETURN_IF_ERROR(threads);
  profile.threads = *threads;
  auto points =
      parsePoints(shape, path, "kv_bytes", &HostAttentionPoint::kvBytes);
  MOE_RETURN_IF_ERROR(points);
  profile.points = std::move(*points);
  return profile;
}

// Optional: profiles measured before the host was have none.
Result<std::optional<HostCpuProfile>> parseHostCpu(const Json &root) {
  if (!root.contains("host_cpu"))
    return std::optional<HostCpuProfile>{};
  const std::string path = "host_cpu";
  auto host = requireObject(root, "host_cpu", "");
  MOE_RETURN_IF_ERROR(host);
  const Json &object = **host;
  HostCpuProfile profile;

  auto isa = requireObject(object, "isa", path);
  MOE_RETURN_IF_ERROR(isa);
  for (auto [key, member] :
       {std::pair{"avx2", &HostVectorIsa::avx2},
        std::pair{"avx512f", &HostVectorIsa::avx512f},
        std::pair{"avx512_bf16", &HostVectorIsa::avx512bf16},
        std::pair{"avx512_fp16", &HostVectorIsa::avx512fp16},
        std::pair{"amx_bf16", &HostVectorIsa::amxBf16}}) {
    auto value = requireBool(**isa, key, "host_cpu.isa");
    MOE_RETURN_IF_ERROR(value);
    profile.isa.*member = *value;
  }
  auto kernelIsa = requireString(object, "kernel_isa", path);
  MOE_RETURN_IF_ERROR(kernelIsa);
  if (*kernelIsa != "avx2" && *kernelIsa != "avx512" &&
      *kernelIsa != "avx512_amx")
    return makeError("host_cpu.kernel_isa: expected \"avx2\", \"avx512\" or "
                     "\"avx512_amx\", got \"{}\"",
                     *kernelIsa);
  profile.kernelIsa = *kernelIsa;

  auto nodes = parseOptionalItems<NumaNode>(
      object, "numa_nodes", path,
      [](const Json &item, const std::string &itemPath) -> Result<NumaNode> {
        NumaNode node;
        auto index = requireNonNegativeInteger(item, "node", itemPath);
        MOE_RETURN_IF_ERROR(index);
        node.node = *index;
        auto cpus = requireArray(item, "cpus", itemPath);
        MOE_RETURN_IF_ERROR(cpus);
        for (const Json &cpu : **cpus) {
          if (!cpu.is_number_integer() || cpu.get<int64_t>() < 0)
            return makeError("{}.cpus: must hold non-negative integers",
                             itemPath);
          node.cpus.push_back(cpu.get<int64_t>());
        }
        auto memory = requireNonNegativeInteger(item, "memory_bytes", itemPath);
        MOE_RETURN_IF_ERROR(memory);
        node.memoryBytes = *memory;
        return node;
      });
  MOE_RETURN_IF_ERROR(nodes);
  profile.numaNodes = std::move(*nodes);

  if (!object.contains("read_bandwidth"))
    return makeError("host_cpu.read_bandwidth: missing");
  auto reads = parseOptionalItems<HostReadPoint>(
      object, "read_bandwidth", path,
      [](const Json &item,
         const std::string &itemPath) -> Result<HostReadPoint> {
        auto threads = requirePositiveInteger(item, "threads", itemPath);
        MOE_RETURN_IF_ERROR(threads);
        auto rate = requirePositiveNumber(item, "bytes_per_s", itemPath);
        MOE_RETURN_IF_ERROR(rate);
        return HostReadPoint{*threads, *rate};
      });
  MOE_RETURN_IF_ERROR(reads);
  if (reads->empty())
    return makeError("host_cpu.read_bandwidth: needs at least one point");
  auto sortedReads =
      sortedByThreads(std::move(*reads), "host_cpu.read_bandwidth");
  MOE_RETURN_IF_ERROR(sortedReads);
  profile.readBandwidth = std::move(*sortedReads);

  auto withCopy = parseOptionalItems<HostReadWithCopyPoint>(
      object, "read_with_h2d", path,
      [](const Json &item,
         const std::string &itemPath) -> Result<HostReadWithCopyPoint> {
        auto threads = requirePositiveInteger(item, "threads", itemPath);
        MOE_RETURN_IF_ERROR(threads);
        auto read = requirePositiveNumber(item, "read_bytes_per_s", itemPath);
        MOE_RETURN_IF_ERROR(read);
        auto h2d = requirePositiveNumber(item, "h2d_bytes_per_s", itemPath);
        MOE_RETURN_IF_ERROR(h2d);
        return HostReadWithCopyPoint{*threads, *read, *h2d};
      });
  MOE_RETURN_IF_ERROR(withCopy);
  auto sortedWithCopy =
      sortedByThreads(std::move(*withCopy), "host_cpu.read_with_h2d");
  MOE_RETURN_IF_ERROR(sortedWithCopy);
  profile.readWithH2d = std::move(*sortedWithCopy);

  auto attention = parseOptionalItems<HostAttentionShapeProfile>(
      object, "attention_decode", path,
      [](const Json &item, const std::string &itemPath) {
        return parseHostAttentionShape<HostAttentionShapeProfile, 3>(
            item, itemPath,
            {{{"heads", &HostAttentionShapeProfile::heads},
              {"kv_heads", &HostAttentionShapeProfile::kvHeads},
              {"head_dim", &HostAttentionShapeProfile::headDim}}});
      });
  MOE_RETURN_IF_ERROR(attention);
  for (size_t i = 0; i < attention->size(); ++i)
    if ((*attention)[i].heads % (*attention)[i].kvHeads != 0)
      return makeError("host_cpu.attention_decode[{}].kv_heads: {} does not "
                       "divide heads = {}",
                       i, (*attention)[i].kvHeads, (*attention)[i].heads);
  profile.attention = std::move(*attention);
  auto mla = parseOptionalItems<HostMlaShapeProfile>(
      object, "mla_attention_decode", path,
      [](const Json &item, const std::string &itemPath) {
        return parseHostAttentionShape<HostMlaShapeProfile, 3>(
            item, itemPath,
            {{{"heads", &HostMlaShapeProfile::heads},
              {"latent_dim", &HostMlaShapeProfile::latentDim},
              {"rope_dim", &HostMlaShapeProfile::ropeDim}}});
      });
  MOE_RETURN_IF_ERROR(mla);
  profile.mla = std::move(*mla);
  return std::optional<HostCpuProfile>(std::move(profile));
}

} // namespace

std::string hostCpuProfileJson(const HostCpuProfile &p) {
  using OrderedJson = nlohmann::ordered_json;
  OrderedJson j;
  j["isa"] = {{"avx2", p.isa.avx2},
              {"avx512f", p.isa.avx512f},
              {"avx512_bf16", p.isa.avx512bf16},
              {"avx512_fp16", p.isa.avx512fp16},
              {"amx_bf16", p.isa.amxBf16}};
  j["kernel_isa"] = p.kernelIsa;
  OrderedJson nodes = OrderedJson::array();
  for (const NumaNode &node : p.numaNodes)
    nodes.push_back({{"node", node.node},
                     {"cpus", node.cpus},
                     {"memory_bytes", node.memoryBytes}});
  j["numa_nodes"] = std::move(nodes);
  OrderedJson reads = OrderedJson::array();
  for (const HostReadPoint &point : p.readBandwidth)
    reads.push_back(
        {{"threads", point.threads}, {"bytes_per_s", point.bytesPerSecond}});
  j["read_bandwidth"] = std::move(reads);
  if (!p.readWithH2d.empty()) {
    OrderedJson both = OrderedJson::array();
    for (const HostReadWithCopyPoint &point : p.readWithH2d)
      both.push_back({{"threads", point.threads},
                      {"read_bytes_per_s", point.readBytesPerSecond},
                      {"h2d_bytes_per_s", point.h2dBytesPerSecond}});
    j["read_with_h2d"] = std::move(both);
  }
  auto points = [](const std::vector<HostAttentionPoint> &measured) {
    OrderedJson list = OrderedJson::array();
    for (const HostAttentionPoint &point : measured)
      list.push_back({{"kv_bytes", point.kvBytes}, {"seconds", point.seconds}});
    return list;
  };
  OrderedJson attention = OrderedJson::array();
  for (const HostAttentionShapeProfile &a : p.attention)
    attention.push_back({{"heads", a.heads},
                         {"kv_heads", a.kvHeads},
                         {"head_dim", a.headDim},
                         {"kv_dtype", a.kvDtype},
                         {"threads", a.threads},
                         {"points", points(a.points)}});
  j["attention_decode"] = std::move(attention);
  OrderedJson mla = OrderedJson::array();
  for (const HostMlaShapeProfile &a : p.mla)
    mla.push_back({{"heads", a.heads},
                   {"latent_dim", a.latentDim},
                   {"rope_dim", a.ropeDim},
                   {"kv_dtype", a.kvDtype},
                   {"threads", a.threads},
                   {"points", points(a.points)}});
  j["mla_attention_decode"] = std::move(mla);
  return j.dump(2);
}

Status writeProfileWithSections(const std::string &inPath,
                                const std::string &outPath,
                                std::string_view measured,
                                const std::vector<std::string> &sections) {
  std::ifstream in(inPath, std::ios::binary);
  if (!in)
    return makeError("cannot open {}", inPath);
  std::ostringstream text;
  text << in.rdbuf();
  auto profile = nlohmann::ordered_json::parse(text.str(), nullptr, false);
  if (profile.is_discarded() || !profile.is_object())
    return makeError("{}: not a JSON object", inPath);
  auto update = nlohmann::ordered_json::parse(measured, nullptr, false);
  if (update.is_discarded() || !update.is_object())
    return makeError("the measured sections are not a JSON object");
  for (const std::string &section : sections) {
    if (update.contains(section))
      profile[section] = update[section];
    else
      profile.erase(section);
  }
  std::string json = profile.dump(2) + "\n";
  auto loaded = HardwareProfile::fromJson(json);
  if (!loaded)
    return loaded.error().withContext(inPath);
  std::ofstream out(outPath, std::ios::binary | std::ios::trunc);
  out << json;
  out.close();
  if (!out)
    return makeError("cannot write {}", outPath);
  return Status::success();
}

Status writeProfileWithHost(const std::string &inPath,
                            const std::string &outPath,
                            const HostCpuProfile &host) {
  return writeProfileWithSections(
      inPath, outPath, "{\"host_cpu\": " + hostCpuProfileJson(host) + "}",
      {"host_cpu"});
}

Result<HardwareProfile> HardwareProfile::fromJson(std::string_view text) {
  Json root = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    return makeError("hardware profile: not valid JSON");
  if (!root.is_object())
    return makeError("hardware profile: top level must be an object");
  auto schema = requireString(root, "schema", "");
  MOE_RETURN_IF_ERROR(schema);
  if (*schema != kHardwareProfileSchema)
    return makeError("schema: expected \"{}\", got \"{}\"",
                     kHardwareProfileSchema, *schema);

  HardwareProfile profile;
  auto device = parseDevice(root);
  MOE_RETURN_IF_ERROR(device);
  profile.device_ = std::move(*device);
  auto host = parseHost(root);
  MOE_RETURN_IF_ERROR(host);
  profile.host_ = *host;
  auto links = parseLinks(root);
  MOE_RETURN_IF_ERROR(links);
  profile.links_ = *links;
  auto gemm = parseGemm(root, "gemm_bf16", true);
  MOE_RETURN_IF_ERROR(gemm);
  profile.gemm_ = std::move(*gemm);
  auto gemmFp8 = parseGemm(root, "gemm_fp8_block", false);
  MOE_RETURN_IF_ERROR(gemmFp8);
  profile.gemmFp8_ = std::move(*gemmFp8);
  auto attention =
      parseAttention(root, "attention_decode_bf16", attentionTokensRead);
  MOE_RETURN_IF_ERROR(attention);
  profile.attention_ = std::move(*attention);
  auto attentionPrefill =
      parseAttention(root, "attention_prefill_bf16", attentionPairs);
  MOE_RETURN_IF_ERROR(attentionPrefill);
  profile.attentionPrefill_ = std::move(*attentionPrefill);
  auto mla = parseMla(root, "mla_attention_decode_bf16", attentionTokensRead);
  MOE_RETURN_IF_ERROR(mla);
  profile.mla_ = std::move(*mla);
  auto mlaPrefill =
      parseMla(root, "mla_attention_prefill_bf16", attentionPairs);
  MOE_RETURN_IF_ERROR(mlaPrefill);
  profile.mlaPrefill_ = std::move(*mlaPrefill);
  auto grouped = parseGroupedGemm(root);
  MOE_RETURN_IF_ERROR(grouped);
  profile.groupedGemm_ = std::move(*grouped);
  auto hostCpu = parseHostCpu(root);
  MOE_RETURN_IF_ERROR(hostCpu);
  profile.hostCpu_ = std::move(*hostCpu);

  profile.gpuBudgetBytes_ =
      profile.device_.memoryBytes - profile.device_.reservedBytes;
  profile.hostBudgetBytes_ =
      profile.host_.memoryBytes - profile.host_.reservedBytes;
  for (const GemmShapeProfile &shape : profile.gemm_)
    for (const GemmPoint &point : shape.points)
      profile.peakGemmFlops_ =
          std::max(profile.peakGemmFlops_,
                   2.0 * point.m * shape.n * shape.k / point.seconds);
  return profile;
}

Result<HardwareProfile> HardwareProfile::load(const std::string &path) {
  std::ifstream file(path, std::ios::binary);
  if (!file)
    return makeError("{}: cannot open hardware profile", path);
  std::ostringstream text;
  text << file.rdbuf();
  auto profile = fromJson(text.str());
  if (!profile.ok())
    return profile.error().withContext(path);
  return profile;
}

} // namespace moe::costmodel
