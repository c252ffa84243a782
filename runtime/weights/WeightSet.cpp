#include "runtime/weights/WeightSet.h"

#include "runtime/support/Float4.h"
#include "runtime/support/Float8.h"
#include "runtime/support/Parallel.h"
#include "runtime/weights/HalfFloat.h"
#include "runtime/weights/Safetensors.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <new>
#include <set>
#include <sstream>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

namespace moe {

namespace {
/// How one param's values are drawn: mean + scale * (roughly standard
/// normal).
struct Distribution {
  float mean;
  float scale;
};
/// A synthetic param's recipe: its values are generated when read.
struct Recipe {
  ElementType type;
  uint64_t key;
  Distribution distribution;
};
} // namespace

struct WeightSet::Storage {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::vector<Recipe> recipes; // one per param for synthetic weights
};

namespace {

namespace fs = std::filesystem;

constexpr const char *kSingleFile = "model.safetensors";
constexpr const char *kIndexFile = "model.safetensors.index.json";
constexpr std::string_view kExpertMarker = "{e}";

std::vector<int64_t> paramShape(const plan::Param &param) {
  return {param.shape()->begin(), param.shape()->end()};
}

bool isStackedExperts(const plan::Param &param) {
  return param.hf_name() && param.hf_name()->string_view().find(
                                kExpertMarker) != std::string_view::npos;
}

ElementType elementType(plan::DType dtype) {
  switch (dtype) {
  case plan::DType::f16:
    return ElementType::F16;
  case plan::DType::bf16:
    return ElementType::BF16;
  default:
    return ElementType::F32;
  }
}

//===----------------------------------------------------------------------===//
// Checkpoints
//===----------------------------------------------------------------------===//

/// A checkpoint tensor, where it lives and which param took it.
struct CheckpointTensor {
  const TensorView *view;
  const SafetensorsFile *file;
  std::string boundBy;
};
using CheckpointTensors = std::map<std::string, CheckpointTensor, std::less<>>;

/// Tensors HF checkpoints may carry that are computed, not learned: no plan
/// param binds them.
bool isNonParameterBuffer(std::string_view name) {
  for (std::string_view suffix :
       {"rotary_emb.inv_freq", ".slope_rate", ".query_decay", ".key_decay",
        ".diagonal_decay"})
    if (name.ends_with(suffix))
      return true;
  return false;
}

Status addFile(const fs::path &path,
               std::vector<std::unique_ptr<SafetensorsFile>> &files,
               CheckpointTensors &tensors) {
  Result<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::open(path.string());
  if (!file.ok())
    return file.error();
  for (const auto &[name, view] : (*file)->tensors())
    tensors.emplace(name, CheckpointTensor{&view, file->get(), ""});
  files.push_back(std::move(*file));
  return Status::success();
}

/// Opens the shards model.safetensors.index.json lists and takes from each
/// the tensors its weight_map assigns to it.
Status addShards(const fs::path &directory,
                 std::vector<std::unique_ptr<SafetensorsFile>> &files,
                 CheckpointTensors &tensors) {
  std::ifstream stream(directory / kIndexFile, std::ios::binary);
  std::stringstream text;
  text << stream.rdbuf();
  if (!stream)
    return makeError("{}: cannot read", (directory / kIndexFile).string());
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception &error) {
    return makeError("{}: not valid JSON: {}", kIndexFile, error.what());
  }
  auto weightMap = index.is_object() ? index.find("weight_map") : index.end();
  if (weightMap == index.end() || !weightMap->is_object())
    return makeError("{}: no \"weight_map\" object", kIndexFile);

  std::map<std::string, std::vector<std::string>> namesByShard;
  for (const auto &[name, shard] : weightMap->items()) {
    if (!shard.is_string())
      return makeError("{}: weight_map: tensor '{}' maps to no file name",
                       kIndexFile, name);
    namesByShard[shard.get<std::string>()].push_back(name);
  }
  for (const auto &[shard, names] : namesByShard) {
    std::error_code error;
    if (!fs::is_regular_file(directory / shard, error))
      return makeError("{}: shard '{}' (holding '{}') does not exist",
                       kIndexFile, shard, names.front());
    Result<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::open((directory / shard).string());
    if (!file.ok())
      return file.error();
    for (const std::string &name : names) {
      const TensorView *view = (*file)->find(name);
      if (!view)
        return makeError("{}: tensor '{}' is listed in {}, which does not "
                         "hold it",
                         kIndexFile, name, shard);
      tensors.emplace(name, CheckpointTensor{view, file->get(), ""});
    }
    files.push_back(std::move(*file));
  }
  return Status::success();
}

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int64_t kMxfp4BlockElements = 32;

/// The scales of F8_E4M3 tensor `tensorName` (a [rows, cols] matrix):
/// `<name>_scale_inv` of 128 × 128 blocks (DeepSeek-V3, Qwen3-FP8) or
/// `<name>_scale` per output channel or per tensor (compressed-tensors),
/// F32 or BF16, taken by the param that takes the tensor. A static
/// activation scale beside it (`input_scale`) is taken too and not used:
/// activations stay bf16.
Result<Fp8Scales> bindFp8Scales(const std::string &tensorName,
                                const TensorView &view,
                                CheckpointTensors &tensors,
                                const std::string &param) {
  constexpr int64_t kBlock = 128;
  if (view.shape.size() != 2)
    return makeError("F8_E4M3 tensor '{}' has shape [{}]: only matrices are "
                     "dequantized (param {})",
                     tensorName, fmt::join(view.shape, ", "), param);
  int64_t rows = view.shape[0], cols = view.shape[1];
  auto scaleTensor = tensors.find(tensorName + "_scale_inv");
  if (scaleTensor == tensors.end())
    scaleTensor = tensors.find(tensorName + "_scale");
  if (scaleTensor == tensors.end())
    return makeError("F8_E4M3 tensor '{}' has no scales: the checkpoint "
                     "holds neither '{}_scale_inv' nor '{}_scale' (param {})",
                     tensorName, tensorName, tensorName, param);
  const std::string &scaleName = scaleTensor->first;
  const TensorView &scale = *scaleTensor->second.view;
  if (scale.type != ElementType::F32 && scale.type != ElementType::BF16)
    return makeError("scale tensor '{}' is {}; F32 or BF16 expected", scaleName,
                     elementTypeName(scale.type));
  Fp8Scales scales{scale.type, scale.data, 0, 0, 0};
  const std::vector<int64_t> &s = scale.shape;
  int64_t count = scale.numElements();
  if (s.size() == 2 && s[0] == ceilDiv(rows, kBlock) &&
      s[1] == ceilDiv(cols, kBlock))
    scales = {scale.type, scale.data, kBlock, kBlock, s[1]};
  else if (count == rows && (s.size() == 1 || (s.size() == 2 && s[1] == 1)) &&
           rows > 1)
    scales = {scale.type, scale.data, 1, cols, 1};
  else if (count == 1)
    scales = {scale.type, scale.data, rows, cols, 1};
  else
    return makeError("scale tensor '{}' has shape [{}]; for [{}, {}] "
                     "expected [{}, {}] (128 × 128 blocks), [{}, 1] (per "
                     "channel) or [1] (per tensor)",
                     scaleName, fmt::join(s, ", "), rows, cols,
                     ceilDiv(rows, kBlock), ceilDiv(cols, kBlock), rows);
  if (!scaleTensor->second.boundBy.empty())
    return makeError("scale tensor '{}' is bound by both param {} and param "
                     "{}",
                     scaleName, scaleTensor->second.boundBy, param);
  scaleTensor->second.boundBy = param;
  std::string prefix = tensorName.substr(0, tensorName.rfind('.') + 1);
  if (auto input = tensors.find(prefix + "input_scale"); input != tensors.end())
    input->second.boundBy = param;
  return scales;
}

/// Binds `tensorName` as the next part of `bound`, which wants it at `shape`.
Status bindTensor(const std::string &tensorName,
                  const std::vector<int64_t> &shape, bool perExpert,
                  CheckpointTensors &tensors, BoundParam &bound) {
  auto found = tensors.find(tensorName);
  if (found == tensors.end())
    return makeError("checkpoint has no tensor '{}' (param {})", tensorName,
                     bound.name);
  CheckpointTensor &tensor = found->second;
  if (!tensor.boundBy.empty())
    return makeError("checkpoint tensor '{}' is bound by both param {} and "
                     "param {}",
                     tensorName, tensor.boundBy, bound.name);
  if (tensor.view->shape != shape)
    return makeError("{}: tensor '{}' has shape [{}], param {} expects [{}]{}",
                     tensor.file->label(), tensorName,
                     fmt::join(tensor.view->shape, ", "), bound.name,
                     fmt::join(shape, ", "), perExpert ? " per expert" : "");
  tensor.boundBy = bound.name;
  TensorView part = *tensor.view;
  if (part.type == ElementType::U8)
    return makeError(
        "{}: tensor '{}' is U8: only MXFP4 blocks ('<name>_blocks' "
        "with '<name>_scales') load as weights (param {})",
        tensor.file->label(), tensorName, bound.name);
  if (part.type == ElementType::F8_E4M3) {
    Result<Fp8Scales> scales =
        bindFp8Scales(tensorName, part, tensors, bound.name);
    if (!scales.ok())
      return scales.error().withContext(tensor.file->label());
    part.scales = *scales;
  }
  bound.parts.push_back(std::move(part));
  return Status::success();
}

/// Binds MXFP4 `<tensorName>_blocks` and `_scales` (U8, [E, out, in / 32,
/// 16] and [E, out, in / 32]) as the whole of `bound`, a param of [E, in,
/// out] (Mxfp4Blocks).
Status bindMxfp4(const std::string &tensorName, CheckpointTensors &tensors,
                 BoundParam &bound) {
  auto blocks = tensors.find(tensorName + "_blocks");
  auto scales = tensors.find(tensorName + "_scales");
  if (scales == tensors.end())
    return makeError("{}: MXFP4 tensor '{}_blocks' has no scales: the "
                     "checkpoint holds no '{}_scales' (param {})",
                     blocks->second.file->label(), tensorName, tensorName,
                     bound.name);
  const std::vector<int64_t> &shape = bound.shape;
  if (shape.size() != 3 || shape[1] % kMxfp4BlockElements != 0)
    return makeError("param {} of shape [{}] cannot be read from MXFP4 '{}': "
                     "only stacked experts [E, in, out] with in a multiple of "
                     "32 are",
                     bound.name, fmt::join(shape, ", "), tensorName);
  std::vector<int64_t> blockShape{shape[0], shape[2],
                                  shape[1] / kMxfp4BlockElements, 16};
  std::vector<int64_t> scaleShape(blockShape.begin(), blockShape.end() - 1);
  for (auto [found, expected] :
       {std::pair{blocks, &blockShape}, std::pair{scales, &scaleShape}}) {
    const TensorView &view = *found->second.view;
    if (view.type != ElementType::U8 || view.shape != *expected)
      return makeError("{}: MXFP4 tensor '{}' is {} [{}]; param {} expects U8 "
                       "[{}]",
                       found->second.file->label(), found->first,
                       elementTypeName(view.type), fmt::join(view.shape, ", "),
                       bound.name, fmt::join(*expected, ", "));
    if (!found->second.boundBy.empty())
      return makeError("checkpoint tensor '{}' is bound by both param {} and "
                       "param {}",
                       found->first, found->second.boundBy, bound.name);
    found->second.boundBy = bound.name;
  }
  TensorView part{ElementType::U8, shape, blocks->second.view->data};
  part.mxfp4 =
      Mxfp4Blocks{static_cast<const uint8_t *>(scales->second.view->data)};
  bound.parts.push_back(std::move(part));
  return Status::success();
}

Result<BoundParam> bindParam(const plan::Param &param,
                             CheckpointTensors &tensors) {
  BoundParam bound{param.name()->str(), paramShape(param), {}};
  if (!param.hf_name() || param.hf_name()->size() == 0)
    return makeError("param {} has no hf_name: it cannot be bound to a "
                     "checkpoint",
                     bound.name);
  std::string hfName = param.hf_name()->str();
  size_t marker = hfName.find(kExpertMarker);
  if (marker == std::string::npos) {
    if (!tensors.count(hfName) && tensors.count(hfName + "_blocks"))
      MOE_RETURN_IF_ERROR(bindMxfp4(hfName, tensors, bound));
    else
      MOE_RETURN_IF_ERROR(
          bindTensor(hfName, bound.shape, /*perExpert=*/false, tensors, bound));
    return bound;
  }
  std::vector<int64_t> expertShape(bound.shape.begin() + 1, bound.shape.end());
  for (int64_t expert = 0; expert < bound.shape[0]; ++expert) {
    std::string expertName = hfName;
    expertName.replace(marker, kExpertMarker.size(), std::to_string(expert));
    MOE_RETURN_IF_ERROR(bindTensor(expertName, expertShape, /*perExpert=*/true,
                                   tensors, bound));
  }
  return bound;
}

//===----------------------------------------------------------------------===//
// Synthetic weights
//===----------------------------------------------------------------------===//

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr uint64_t kGoldenGamma = 0x9e3779b97f4a7c15ull;

/// Each param draws from its own stream, keyed by seed and name, so its
/// values do not depend on the other params of the plan.
uint64_t streamKey(uint64_t seed, std::string_view name) {
  uint64_t hash = 0xcbf29ce484222325ull; // FNV-1a
  for (char c : name)
    hash = (hash ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return mix64(seed ^ mix64(hash));
}

Distribution distributionFor(const plan::Param &param, bool transposed) {
  std::string_view name = param.name()->string_view();
  const auto &shape = *param.shape();
  if (name.ends_with("norm") || name.find("_norm") != std::string_view::npos)
    return {1.0f, 0.02f};
  if (shape.size() < 2 || name.find("bias") != std::string_view::npos)
    return {0.0f, 0.02f};
  // Weights are [out, in], except the fused transposed experts' [E, in, out].
  int64_t fanIn = shape.Get(shape.size() - (transposed ? 2 : 1));
  return {0.0f,
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(fanIn)))};
}

/// Params read as [in, out] by the fused_interleaved_transposed experts.
std::set<int> transposedParams(const plan::Model &model) {
  std::set<int> transposed;
  for (const plan::Op *op : *model.ops()) {
    const plan::Experts *experts = op->spec_as_Experts();
    if (experts &&
        experts->layout() == plan::ExpertLayout::fused_interleaved_transposed) {
      transposed.insert(experts->gate_up());
      transposed.insert(experts->down());
    }
  }
  return transposed;
}

/// Element i of a stream: splitmix64 at counter i, its four 16-bit lanes
/// summed (Irwin-Hall, n = 4) and standardised. Counter-based, so any split
/// of the work into chunks gives the same values; the bounded tails
/// (|x| <= 3.46) suit weights.
float approximatelyNormal(uint64_t key, int64_t i) {
  uint64_t bits = mix64(key + static_cast<uint64_t>(i + 1) * kGoldenGamma);
  uint32_t sum =
      static_cast<uint32_t>((bits & 0xffff) + ((bits >> 16) & 0xffff) +
                            ((bits >> 32) & 0xffff) + (bits >> 48));
  // Four lanes: mean 4 * 32767.5, standard deviation 2 * 65536 / sqrt(12).
  constexpr float kInverseStd = 1.7320508f / 65536.0f;
  return (static_cast<float>(sum) - 131070.0f) * kInverseStd;
}

template <typename Store>
void fillRangeWith(uint8_t *buffer, int64_t begin, int64_t end, uint64_t key,
                   Distribution distribution, Store store) {
  for (int64_t i = begin; i < end; ++i)
    store(buffer, i,
          distribution.mean + distribution.scale * approximatelyNormal(key, i));
}

void fillRange(uint8_t *buffer, ElementType type, int64_t begin, int64_t end,
               uint64_t key, Distribution distribution) {
  switch (type) {
  case ElementType::F32:
    fillRangeWith(buffer, begin, end, key, distribution,
                  [](uint8_t *out, int64_t i, float value) {
                    std::memcpy(out + 4 * i, &value, 4);
                  });
    return;
  case ElementType::F16:
    fillRangeWith(buffer, begin, end, key, distribution,
                  [](uint8_t *out, int64_t i, float value) {
                    uint16_t half = floatToF16(value);
                    std::memcpy(out + 2 * i, &half, 2);
                  });
    return;
  case ElementType::BF16:
    fillRangeWith(buffer, begin, end, key, distribution,
                  [](uint8_t *out, int64_t i, float value) {
                    uint16_t half = floatToBf16(value);
                    std::memcpy(out + 2 * i, &half, 2);
                  });
    return;
  case ElementType::F8_E4M3: // plans declare no fp8 or U8 params
  case ElementType::U8:
    return;
  }
}

float scalarAt(ElementType type, const void *data, int64_t i) {
  const auto *bytes = static_cast<const uint8_t *>(data);
  if (type == ElementType::F32) {
    float value;
    std::memcpy(&value, bytes + 4 * i, 4);
    return value;
  }
  uint16_t half;
  std::memcpy(&half, bytes + 2 * i, 2);
  return type == ElementType::F16 ? f16ToFloat(half) : bf16ToFloat(half);
}

/// Elements [begin, end) of `part` as fp32 into `out`; F8_E4M3 ones
/// dequantized by their scales, MXFP4 ones (U8) by theirs.
void appendFloat32(const TensorView &part, int64_t begin, int64_t end,
                   float *out) {
  const auto *bytes = static_cast<const uint8_t *>(part.data);
  switch (part.type) {
  case ElementType::F32:
    std::memcpy(out, bytes + 4 * begin, (end - begin) * 4);
    return;
  case ElementType::F16:
  case ElementType::BF16:
    for (int64_t i = begin; i < end; ++i)
      out[i - begin] = scalarAt(part.type, bytes, i);
    return;
  case ElementType::F8_E4M3: {
    // Every code's value, once: the loop below runs over whole checkpoints.
    static const std::array<float, 256> values = [] {
      std::array<float, 256> table;
      for (int code = 0; code < 256; ++code)
        table[code] = floatFromFp8(uint8_t(code));
      return table;
    }();
    const Fp8Scales &s = *part.scales;
    int64_t cols = part.shape.back();
    // A run of elements within one row and one block shares its scale.
    for (int64_t i = begin; i < end;) {
      int64_t r = i / cols, c = i % cols;
      int64_t run =
          std::min({end - i, cols - c, s.blockCols - c % s.blockCols});
      float scale = scalarAt(s.type, s.data,
                             r / s.blockRows * s.scaleCols + c / s.blockCols);
      for (int64_t k = 0; k < run; ++k)
        out[i - begin + k] = values[bytes[i + k]] * scale;
      i += run;
    }
    return;
  }
  case ElementType::U8: { // Mxfp4Blocks: the view is [E, in, out]
    static const std::array<float, 256> scaleValues = [] {
      std::array<float, 256> table;
      for (int code = 0; code < 256; ++code)
        table[code] = floatFromE8m0(uint8_t(code));
      return table;
    }();
    int64_t ins = part.shape[1], outs = part.shape[2];
    int64_t rowBytes = ins / 2, blocks = ins / kMxfp4BlockElements;
    // A run of the view's elements of one (expert, input) walks the stored
    // rows, one an output: the same nibble and scale column of each.
    for (int64_t i = begin; i < end;) {
      int64_t e = i / (ins * outs), in = i % (ins * outs) / outs, o = i % outs;
      int64_t run = std::min(end - i, outs - o);
      const uint8_t *code = bytes + (e * outs + o) * rowBytes + in / 2;
      const uint8_t *scale = part.mxfp4->scales + (e * outs + o) * blocks +
                             in / kMxfp4BlockElements;
      int shift = in % 2 ? 4 : 0;
      float *values = out + (i - begin);
      for (int64_t k = 0; k < run; ++k, code += rowBytes, scale += blocks)
        values[k] =
            floatFromFp4(uint8_t(*code >> shift) & 15) * scaleValues[*scale];
      i += run;
    }
    return;
  }
  }
}

/// Element i of a synthetic param: drawn, then rounded to the param's dtype
/// as fillRange stores it.
float syntheticValue(const Recipe &recipe, int64_t i) {
  float value = recipe.distribution.mean +
                recipe.distribution.scale * approximatelyNormal(recipe.key, i);
  switch (recipe.type) {
  case ElementType::F16:
    return f16ToFloat(floatToF16(value));
  case ElementType::BF16:
    return bf16ToFloat(floatToBf16(value));
  default:
    return value;
  }
}

/// A synthetic param's values, made in its dtype on all cores (so they are
/// rounded as a checkpoint of that dtype would be) and widened to fp32.
/// Chunks are small enough to balance the cores, large enough to amortise
/// the dispatch; the values do not depend on the split.
std::vector<float> generate(const Recipe &recipe,
                            const std::vector<int64_t> &shape) {
  constexpr int64_t kJobElements = int64_t{1} << 20;
  TensorView whole{recipe.type, shape, nullptr};
  int64_t count = whole.numElements();
  size_t elementBytes = whole.numBytes() / size_t(std::max<int64_t>(count, 1));
  std::vector<uint8_t> buffer(whole.numBytes());
  std::vector<float> values(count);
  runOnAllCores(
      size_t((count + kJobElements - 1) / kJobElements), [&](size_t job) {
        int64_t begin = int64_t(job) * kJobElements;
        int64_t end = std::min(count, begin + kJobElements);
        fillRange(buffer.data(), recipe.type, begin, end, recipe.key,
                  recipe.distribution);
        TensorView slice{recipe.type,
                         {end - begin},
                         buffer.data() + size_t(begin) * elementBytes};
        appendFloat32(slice, 0, end - begin, values.data() + begin);
      });
  return values;
}

} // namespace

Result<WeightSet> WeightSet::fromCheckpoint(const std::string &directory,
                                            const plan::Model &model) {
  WeightSet weights;
  weights.storage_ = std::make_shared<Storage>();
  CheckpointTensors tensors;
  fs::path root(directory);
  std::error_code error;
  // Like transformers, a single file wins over an index.
  if (fs::is_regular_file(root / kSingleFile, error))
    MOE_RETURN_IF_ERROR(
        addFile(root / kSingleFile, weights.storage_->files, tensors));
  else if (fs::is_regular_file(root / kIndexFile, error))
    MOE_RETURN_IF_ERROR(addShards(root, weights.storage_->files, tensors));
  else
    return makeError("{}: no {} or {}", directory, kSingleFile, kIndexFile);

  for (const plan::Param *param : *model.params()) {
    Result<BoundParam> bound = bindParam(*param, tensors);
    if (!bound.ok())
      return bound.error();
    weights.params_.push_back(std::move(*bound));
  }
  for (const auto &[name, tensor] : tensors)
    if (tensor.boundBy.empty() && !isNonParameterBuffer(name))
      return makeError("checkpoint tensor '{}' is not used by the plan (a "
                       "checkpoint of another model?)",
                       name);
  return weights;
}

Result<WeightSet> WeightSet::synthetic(const plan::Model &model,
                                       uint64_t seed) {
  WeightSet weights;
  weights.storage_ = std::make_shared<Storage>();
  std::set<int> transposed = transposedParams(model);
  for (uint32_t index = 0; index < model.params()->size(); ++index) {
    const plan::Param &param = *model.params()->Get(index);
    BoundParam bound{param.name()->str(), paramShape(param), {}};
    ElementType type = elementType(param.dtype());
    weights.storage_->recipes.push_back(
        {type, streamKey(seed, bound.name),
         distributionFor(param, transposed.count(index))});
    if (isStackedExperts(param)) {
      TensorView expert{
          type, {bound.shape.begin() + 1, bound.shape.end()}, nullptr};
      bound.parts.assign(bound.shape[0], expert);
    } else {
      bound.parts.push_back({type, bound.shape, nullptr});
    }
    weights.params_.push_back(std::move(bound));
  }
  return weights;
}

namespace {

// A run of at most kSliceElements elements of one part, the unit of work
// that conversions and checks spread over all cores.
struct PartSlice {
  const TensorView *part;
  int64_t begin, end; // elements of the part
  int64_t first;      // index of its first element in the param
};
constexpr int64_t kSliceElements = int64_t{1} << 20;

std::vector<PartSlice> partSlices(const std::vector<TensorView> &parts) {
  std::vector<PartSlice> slices;
  int64_t at = 0;
  for (const TensorView &part : parts) {
    int64_t count = part.numElements();
    for (int64_t begin = 0; begin < count; begin += kSliceElements)
      slices.push_back(
          {&part, begin, std::min(count, begin + kSliceElements), at + begin});
    at += count;
  }
  return slices;
}

} // namespace

void WeightSet::toBf16(size_t index, std::span<uint16_t> out) const {
  const BoundParam &bound = params_[index];
  // A synthetic param is made in its own dtype first; no zero-filling, as
  // its slices are filled on all cores.
  std::unique_ptr<uint8_t[]> generated;
  TensorView whole{bound.parts[0].type, bound.shape, nullptr};
  std::vector<TensorView> parts = bound.parts;
  if (!storage_->recipes.empty()) {
    generated = std::make_unique_for_overwrite<uint8_t[]>(whole.numBytes());
    whole.data = generated.get();
    parts = {whole};
  }
  // Converted through a small fp32 buffer; bf16 sources are copied.
  std::vector<PartSlice> slices = partSlices(parts);
  const Recipe *recipe =
      storage_->recipes.empty() ? nullptr : &storage_->recipes[index];
  runOnAllCores(slices.size(), [&](size_t job) {
    const PartSlice &slice = slices[job];
    const TensorView &part = *slice.part;
    int64_t count = slice.end - slice.begin;
    uint16_t *to = out.data() + slice.first;
    if (recipe) // made here, in the param's dtype, before converting
      fillRange(generated.get(), recipe->type, slice.first, slice.first + count,
                recipe->key, recipe->distribution);
    if (part.type == ElementType::BF16) {
      std::memcpy(to, static_cast<const uint8_t *>(part.data) + 2 * slice.begin,
                  size_t(count) * 2);
      return;
    }
    std::vector<float> values(count);
    appendFloat32(part, slice.begin, slice.end, values.data());
    for (int64_t i = 0; i < count; ++i)
      to[i] = floatToBf16(values[i]);
  });
}

void WeightSet::readFloat32(size_t index, int64_t begin, int64_t count,
                            float *out) const {
  const BoundParam &bound = params_[index];
  if (!storage_->recipes.empty()) {
    const Recipe &recipe = storage_->recipes[index];
    for (int64_t i = begin; i < begin + count; ++i)
      out[i - begin] = syntheticValue(recipe, i);
    return;
  }
  int64_t at = 0; // the first element of the part
  for (const TensorView &part : bound.parts) {
    int64_t size = part.numElements();
    int64_t first = std::max(begin, at),
            last = std::min(begin + count, at + size);
    if (first < last)
      appendFloat32(part, first - at, last - at, out + (first - begin));
    at += size;
  }
}

Error nonFiniteParam(size_t index, std::string_view name, float value,
                     int64_t element) {
  return makeError("param {} ('{}') holds {} at element {}: the checkpoint is "
                   "damaged",
                   index, name, std::isnan(value) ? "NaN" : "Inf", element);
}

namespace {

// Whether any value of an MXFP4 param can be other than finite: a code is at
// most 6, so only the two largest scale codes (254: 2^127; 255, NaN in the
// OCP format) can make one.
bool mxfp4MayHoldNonFinite(const TensorView &part) {
  int64_t scales =
      part.shape[0] * part.shape[2] * (part.shape[1] / kMxfp4BlockElements);
  return std::any_of(part.mxfp4->scales, part.mxfp4->scales + scales,
                     [](uint8_t code) { return code >= 254; });
}

// The first element of [begin, end) of `part` that is not finite, or -1;
// its value in `value`.
int64_t firstNonFinite(const TensorView &part, int64_t begin, int64_t end,
                       float &value) {
  const auto *bytes = static_cast<const uint8_t *>(part.data);
  auto scanBits = [&]<typename Bits>(Bits exponent) -> int64_t {
    for (int64_t i = begin; i < end; ++i) {
      Bits bits;
      std::memcpy(&bits, bytes + sizeof(Bits) * i, sizeof(Bits));
      if ((bits & exponent) == exponent) {
        value = scalarAt(part.type, bytes, i);
        return i;
      }
    }
    return -1;
  };
  switch (part.type) {
  case ElementType::F32:
    return scanBits(uint32_t{0x7F800000u});
  case ElementType::BF16:
    return scanBits(uint16_t{0x7F80u});
  case ElementType::F16:
    return scanBits(uint16_t{0x7C00u});
  case ElementType::F8_E4M3:
  case ElementType::U8: {
    std::vector<float> values(size_t(end - begin));
    appendFloat32(part, begin, end, values.data());
    auto bad = std::find_if(values.begin(), values.end(),
                            [](float v) { return !std::isfinite(v); });
    if (bad == values.end())
      return -1;
    value = *bad;
    return begin + (bad - values.begin());
  }
  }
  return -1;
}

} // namespace

Status WeightSet::checkFinite(size_t index) const {
  if (!storage_->recipes.empty())
    return Status::success();
  const BoundParam &bound = params_[index];
  std::vector<bool> skipped; // MXFP4 parts whose scales bound every value
  for (const TensorView &part : bound.parts)
    skipped.push_back(part.type == ElementType::U8 &&
                      !mxfp4MayHoldNonFinite(part));
  std::vector<PartSlice> slices = partSlices(bound.parts);
  std::vector<int64_t> bad(slices.size(), -1);
  std::vector<float> values(slices.size());
  runOnAllCores(slices.size(), [&](size_t job) {
    const PartSlice &slice = slices[job];
    if (skipped[size_t(slice.part - bound.parts.data())])
      return;
    int64_t i =
        firstNonFinite(*slice.part, slice.begin, slice.end, values[job]);
    if (i >= 0)
      bad[job] = slice.first + (i - slice.begin);
  });
  for (size_t job = 0; job < slices.size(); ++job)
    if (bad[job] >= 0)
      return nonFiniteParam(index, bound.name, values[job], bad[job]);
  return Status::success();
}

std::vector<float> WeightSet::toFloat32(size_t index) const {
  const BoundParam &bound = params_[index];
  if (!storage_->recipes.empty())
    return generate(storage_->recipes[index], bound.shape);
  int64_t count = 0;
  for (const TensorView &part : bound.parts)
    count += part.numElements();
  std::vector<float> values(count);
  readFloat32(index, 0, count, values.data());
  return values;
}

} // namespace moe
