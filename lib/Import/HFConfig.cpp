//===- HFConfig.cpp - HuggingFace config.json → moe dialect ---------------===//
//
// Two steps: each family's reader turns config.json into a ModelSpec (the
// family's conventions: which layers are MoE, RoPE flavour, router rule,
// tensor names), then one emitter builds the IR from the spec. Adding a
// family means writing a reader; the emitter is shared.
//
//===----------------------------------------------------------------------===//

#include "moe/Import/HFConfig.h"

#include "dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

using namespace mlir;
using namespace mlir::moe;
namespace json = llvm::json;

namespace {

//===----------------------------------------------------------------------===//
// Reading config.json with errors that name the field
//===----------------------------------------------------------------------===//

/// Typed access to config.json. The first problem is reported as one error
/// at the file's location naming the field; later reads return neutral
/// values and `ok()` tells the caller to stop.
class ConfigReader {
public:
  ConfigReader(const json::Object &object, Location loc,
               std::string fieldPrefix = "")
      : object(object), loc(loc), fieldPrefix(std::move(fieldPrefix)) {}

  bool ok() const { return !failed; }
  void markFailed() { failed = true; }
  bool has(StringRef key) const {
    const json::Value *value = object.get(key);
    return value && value->kind() != json::Value::Null;
  }

  /// Reports `message` about `key` unless an error was already reported.
  void fail(StringRef key, const Twine &message) {
    if (failed)
      return;
    failed = true;
    emitError(loc) << "field '" << fieldPrefix << key << "' " << message;
  }
  /// Reports an inconsistency between fields (`key` is the one to fix).
  bool require(bool condition, StringRef key, const Twine &message) {
    if (!condition)
      fail(key, message);
    return condition;
  }

  std::optional<int64_t> optionalInteger(StringRef key) {
    if (!has(key))
      return std::nullopt;
    std::optional<int64_t> value = object.getInteger(key);
    // Some configs write integers as 4096.0.
    if (std::optional<double> number = object.getNumber(key);
        !value && number && *number == std::floor(*number) &&
        std::fabs(*number) < 0x1p62)
      value = static_cast<int64_t>(*number);
    if (!value) {
      fail(key, "must be an integer");
      return std::nullopt;
    }
    // Dimensions, counts and ids are int32 in the plan and the runtime.
    if (*value > INT32_MAX || *value < INT32_MIN) {
      fail(key,
           llvm::formatv("is {0}, beyond what a 32-bit integer holds", *value));
      return std::nullopt;
    }
    return value;
  }
  int64_t integer(StringRef key) {
    if (!has(key)) {
      fail(key, "is missing");
      return 0;
    }
    return optionalInteger(key).value_or(0);
  }
  int64_t integer(StringRef key, int64_t defaultValue) {
    return has(key) ? optionalInteger(key).value_or(0) : defaultValue;
  }
  /// A positive value; 1 after reporting any other, so that the readers
  /// computing with it go on to report the config's other errors.
  int64_t positive(StringRef key) { return checkPositive(key, integer(key)); }
  int64_t positive(StringRef key, int64_t defaultValue) {
    return checkPositive(key, integer(key, defaultValue));
  }
  int64_t checkPositive(StringRef key, int64_t value) {
    require(!ok() || value > 0, key,
            llvm::formatv("must be positive, got {0}", value));
    return value > 0 ? value : 1;
  }
  double number(StringRef key, std::optional<double> defaultValue = {}) {
    if (!has(key)) {
      if (defaultValue)
        return *defaultValue;
      fail(key, "is missing");
      return 0;
    }
    if (std::optional<double> value = object.getNumber(key))
      return *value;
    fail(key, "must be a number");
    return 0;
  }
  bool boolean(StringRef key, bool defaultValue) {
    if (!has(key))
      return defaultValue;
    if (std::optional<bool> value = object.getBoolean(key))
      return *value;
    fail(key, "must be true or false");
    return defaultValue;
  }
  std::string string(StringRef key, StringRef defaultValue = "") {
    if (!has(key))
      return defaultValue.str();
    if (std::optional<StringRef> value = object.getString(key))
      return value->str();
    fail(key, "must be a string");
    return defaultValue.str();
  }
  std::vector<std::string> strings(StringRef key) {
    std::vector<std::string> result;
    const json::Array *array = arrayOf(key);
    for (const json::Value &item : array ? *array : json::Array()) {
      if (std::optional<StringRef> text = item.getAsString())
        result.push_back(text->str());
      else
        fail(key, "must be a list of strings");
    }
    return result;
  }
  std::vector<int64_t> integers(StringRef key) {
    std::vector<int64_t> result;
    const json::Array *array = arrayOf(key);
    for (const json::Value &item : array ? *array : json::Array()) {
      if (std::optional<int64_t> value = item.getAsInteger())
        result.push_back(*value);
      else
        fail(key, "must be a list of integers");
    }
    return result;
  }
  /// Integer or list of integers (eos_token_id); empty when absent.
  std::vector<int64_t> integerOrList(StringRef key) {
    if (!has(key))
      return {};
    if (object.get(key)->getAsArray())
      return integers(key);
    return {integer(key)};
  }
  const json::Object *nestedObject(StringRef key) {
    if (!has(key))
      return nullptr;
    if (const json::Object *nested = object.getObject(key))
      return nested;
    fail(key, "must be an object");
    return nullptr;
  }

  Location location() const { return loc; }

private:
  const json::Array *arrayOf(StringRef key) {
    if (!has(key))
      return nullptr;
    if (const json::Array *array = object.getArray(key))
      return array;
    fail(key, "must be a list");
    return nullptr;
  }

  const json::Object &object;
  Location loc;
  std::string fieldPrefix; // "rope_scaling." for a nested object
  bool failed = false;
};

//===----------------------------------------------------------------------===//
// The spec every family's reader fills in
//===----------------------------------------------------------------------===//

enum class AttentionKind { Softmax, Latent, Lightning };

struct LayerSpec {
  AttentionKind attention = AttentionKind::Softmax;
  std::optional<int64_t> slidingWindow;
  std::optional<int64_t> kvSourceLayer; // set only for a sharing layer
  bool moe = false;                     // else a dense MLP
};

struct SoftmaxAttentionSpec {
  int64_t heads = 0, kvHeads = 0, headDim = 0;
  bool qkvBias = false, oBias = false, sinks = false;
  QKNorm qkNorm = QKNorm::none;
  double scale = 0;
};

struct LatentAttentionSpec {
  int64_t heads = 0, qLoraRank = 0, kvLoraRank = 0, nopeDim = 0, ropeDim = 0,
          vDim = 0;
  double scale = 0;
};

struct LightningSpec {
  int64_t heads = 0, headDim = 0, blockSize = 256;
  double normEps = 1e-6;
};

struct MoESpec {
  int64_t experts = 0, topK = 0, width = 0;
  RouterScoring scoring = RouterScoring::softmax;
  RouterSelection selection = RouterSelection::greedy;
  int64_t groups = 1, keptGroups = 1;
  bool normalize = false, routerBias = false, correctionBias = false;
  double scaling = 1.0;
  ExpertActivation activation = ExpertActivation::silu_gated;
  ExpertLayout layout = ExpertLayout::separate;
  double swigluLimit = 0, swigluAlpha = 0;
  int64_t sharedWidth = 0; // 0: no shared experts
  bool sharedGated = false;
};

/// Where a family keeps its tensors in the hub checkpoint.
struct TensorNaming {
  std::string moeBlock = "mlp"; // "block_sparse_moe" in Mixtral/MiniMax
  std::string router = "gate";  // "router" in GPT-OSS
  std::string expertGate = "gate_proj", expertUp = "up_proj",
              expertDown = "down_proj";
  std::string shared = "shared_experts"; // "shared_expert" in Qwen2-MoE
};

struct RopeSpec {
  RopeStyle style = RopeStyle::neox;
  double theta = 10000.0;
  int64_t rotaryDim = 0;
  RopeScaling scaling = RopeScaling::none;
  double factor = 1.0, betaFast = 32.0, betaSlow = 1.0, attentionFactor = 1.0;
  int64_t originalMaxPosition = 0;
  bool truncate = true;
  // DeepSeek folds YaRN's mscale² into the softmax scale.
  double softmaxScaleFactor = 1.0;
};

struct ModelSpec {
  std::string modelType, architecture;
  int64_t vocab = 0, hidden = 0, layers = 0, maxPosition = 0, bos = -1;
  std::vector<int64_t> eos;
  bool tieEmbeddings = false;
  double normEps = 1e-6;
  Type dtype;
  RopeSpec rope;
  SoftmaxAttentionSpec softmax;
  LatentAttentionSpec latent;
  LightningSpec lightning;
  MoESpec moe;
  int64_t denseWidth = 0;
  TensorNaming names;
  std::vector<LayerSpec> layerSpecs;
  // DeepNorm-style residual (MiniMax): the residual stream carries the normed
  // input, scaled by alpha; the module output is scaled by beta.
  bool postNorm = false;
  std::vector<double> attnAlpha, attnBeta; // per layer (softmax vs lightning)
  double mlpAlpha = 1.0, mlpBeta = 1.0;
};

//===----------------------------------------------------------------------===//
// Shared readers
//===----------------------------------------------------------------------===//

static void readCommon(ConfigReader &config, ModelSpec &spec,
                       MLIRContext *context) {
  std::vector<std::string> architectures = config.strings("architectures");
  spec.architecture = architectures.empty() ? "" : architectures.front();
  spec.vocab = config.positive("vocab_size");
  spec.hidden = config.positive("hidden_size");
  spec.layers = config.positive("num_hidden_layers");
  // Every layer becomes ops and params: a count beyond any model's is a
  // broken config, not a model to build.
  constexpr int64_t kMaxLayers = 4096;
  if (!config.require(spec.layers <= kMaxLayers, "num_hidden_layers",
                      llvm::formatv("is {0}; at most {1} are supported",
                                    spec.layers, kMaxLayers)))
    spec.layers = 1;
  spec.maxPosition = config.integer("max_position_embeddings", 0);
  spec.normEps = config.number("rms_norm_eps", 1e-6);
  spec.tieEmbeddings = config.boolean("tie_word_embeddings", false);
  spec.bos = config.integer("bos_token_id", -1);
  spec.eos = config.integerOrList("eos_token_id");
  // v5 writes "dtype"; older configs "torch_dtype". Quantized checkpoints
  // (fp8, mxfp4) are planned at bf16, the dtype the runtime streams today.
  std::string dtype =
      config.string("dtype", config.string("torch_dtype", "bfloat16"));
  if (dtype == "float32")
    spec.dtype = Float32Type::get(context);
  else if (dtype == "float16")
    spec.dtype = Float16Type::get(context);
  else if (dtype == "bfloat16")
    spec.dtype = BFloat16Type::get(context);
  else
    config.fail(config.has("dtype") ? "dtype" : "torch_dtype",
                "must be float32, float16 or bfloat16, got '" + dtype + "'");
}

/// rope_theta and rope_scaling (v4) or rope_parameters (v5).
static void readRope(ConfigReader &config, RopeSpec &rope,
                     double defaultTheta) {
  const json::Object *parameters = config.nestedObject("rope_parameters");
  const json::Object *scaling = config.nestedObject("rope_scaling");
  const json::Object *source = parameters ? parameters : scaling;
  rope.theta = config.number("rope_theta", defaultTheta);
  if (!source)
    return;
  StringRef sourceKey = parameters ? "rope_parameters" : "rope_scaling";
  ConfigReader nested(*source, config.location(), (sourceKey + ".").str());
  if (parameters)
    rope.theta = nested.number("rope_theta", rope.theta);
  std::string type =
      nested.string("rope_type", nested.string("type", "default"));
  if (type == "yarn") {
    rope.scaling = RopeScaling::yarn;
    rope.factor = nested.number("factor");
    rope.originalMaxPosition =
        nested.positive("original_max_position_embeddings");
    rope.betaFast = nested.number("beta_fast", 32.0);
    rope.betaSlow = nested.number("beta_slow", 1.0);
    rope.truncate = nested.boolean("truncate", true);
    auto yarnMscale = [&](double scale, double m) {
      return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
    };
    bool hasMscale = nested.has("mscale") && nested.has("mscale_all_dim");
    double mscale = nested.number("mscale", 1.0);
    double mscaleAllDim = nested.number("mscale_all_dim", 0.0);
    if (nested.has("attention_factor"))
      rope.attentionFactor = nested.number("attention_factor");
    else if (hasMscale)
      rope.attentionFactor = yarnMscale(rope.factor, mscale) /
                             yarnMscale(rope.factor, mscaleAllDim);
    else
      rope.attentionFactor = yarnMscale(rope.factor, 1.0);
    if (mscaleAllDim > 0) {
      double m = yarnMscale(rope.factor, mscaleAllDim);
      rope.softmaxScaleFactor = m * m;
    }
  } else if (type != "default") {
    nested.fail("rope_type", "'" + type + "' is not supported (default, yarn)");
  }
  // The nested reader reported the problem; stop the outer one too.
  if (!nested.ok())
    config.markFailed();
}

/// A per-layer list must have one entry per layer.
static bool hasOneEntryPerLayer(ConfigReader &config, StringRef key,
                                size_t entries, int64_t layers) {
  return config.require(
      static_cast<int64_t>(entries) == layers, key,
      llvm::formatv("has {0} entries but num_hidden_layers is {1}", entries,
                    layers));
}

/// Per-layer sliding windows from `layer_types`.
static void readLayerTypes(ConfigReader &config, ModelSpec &spec) {
  std::vector<std::string> types = config.strings("layer_types");
  if (types.empty())
    return;
  if (!hasOneEntryPerLayer(config, "layer_types", types.size(), spec.layers))
    return;
  for (auto [layer, type] : llvm::enumerate(types)) {
    if (type == "sliding_attention") {
      spec.layerSpecs[layer].slidingWindow = config.positive("sliding_window");
    } else if (type != "full_attention") {
      config.fail("layer_types", "entry " + std::to_string(layer) + " is '" +
                                     type +
                                     "', expected sliding_attention or "
                                     "full_attention");
    }
  }
}

static void readSoftmaxHeads(ConfigReader &config, ModelSpec &spec) {
  SoftmaxAttentionSpec &attn = spec.softmax;
  attn.heads = config.positive("num_attention_heads");
  attn.kvHeads = config.positive("num_key_value_heads", attn.heads);
  if (config.has("head_dim")) {
    attn.headDim = config.positive("head_dim");
  } else if (config.require(attn.heads > 0 && spec.hidden % attn.heads == 0,
                            "num_attention_heads",
                            llvm::formatv("({0}) must divide hidden_size ({1}) "
                                          "when head_dim is not given",
                                          attn.heads, spec.hidden))) {
    attn.headDim = spec.hidden / attn.heads;
  }
  config.require(!config.ok() || attn.heads % attn.kvHeads == 0,
                 "num_key_value_heads",
                 llvm::formatv("({0}) must divide num_attention_heads ({1})",
                               attn.kvHeads, attn.heads));
  attn.scale = 1.0 / std::sqrt(static_cast<double>(attn.headDim));
  spec.rope.rotaryDim = attn.headDim;
}

static void readExpertCounts(ConfigReader &config, MoESpec &moe,
                             StringRef expertsKey, StringRef widthKey,
                             StringRef topKKey = "num_experts_per_tok") {
  moe.experts = config.positive(expertsKey);
  moe.topK = config.positive(topKKey);
  moe.width = config.positive(widthKey);
  config.require(!config.ok() || moe.topK <= moe.experts, topKKey,
                 llvm::formatv("({0}) exceeds the number of experts ({1})",
                               moe.topK, moe.experts));
}

/// DeepSeekMoE's routed + shared experts and router scoring (DeepSeek,
/// Yi-Lightning).
static void readDeepSeekMoE(ConfigReader &config, MoESpec &moe,
                            bool normalizeByDefault) {
  readExpertCounts(config, moe, "n_routed_experts", "moe_intermediate_size");
  moe.sharedWidth = config.integer("n_shared_experts", 0) * moe.width;
  moe.scaling = config.number("routed_scaling_factor", 1.0);
  moe.normalize = config.boolean("norm_topk_prob", normalizeByDefault);
  std::string scoring = config.string("scoring_func", "softmax");
  if (scoring == "sigmoid")
    moe.scoring = RouterScoring::sigmoid;
  else if (scoring != "softmax")
    config.fail("scoring_func", "'" + scoring + "' is not softmax or sigmoid");
}

//===----------------------------------------------------------------------===//
// Family readers
//===----------------------------------------------------------------------===//

static void readMixtral(ConfigReader &config, ModelSpec &spec) {
  readSoftmaxHeads(config, spec);
  readRope(config, spec.rope, 1e6);
  readExpertCounts(config, spec.moe, "num_local_experts", "intermediate_size");
  spec.moe.normalize = true;
  spec.names.moeBlock = "block_sparse_moe";
  spec.names.expertGate = "w1";
  spec.names.expertUp = "w3";
  spec.names.expertDown = "w2";
  std::optional<int64_t> window = config.optionalInteger("sliding_window");
  for (LayerSpec &layer : spec.layerSpecs) {
    layer.moe = true;
    layer.slidingWindow = window;
  }
}

static void readQwenMoE(ConfigReader &config, ModelSpec &spec, bool qwen3) {
  readSoftmaxHeads(config, spec);
  readRope(config, spec.rope, 10000.0);
  spec.softmax.qkvBias = qwen3 ? config.boolean("attention_bias", false)
                               : config.boolean("qkv_bias", true);
  spec.softmax.oBias = false;
  if (qwen3)
    spec.softmax.qkNorm = QKNorm::per_head;
  // transformers 5 writes num_local_experts where the hub has num_experts.
  readExpertCounts(config, spec.moe,
                   config.has("num_experts") ? "num_experts"
                                             : "num_local_experts",
                   "moe_intermediate_size");
  spec.moe.normalize = config.boolean("norm_topk_prob", qwen3);
  spec.denseWidth = config.integer("intermediate_size", 0);
  if (!qwen3) {
    spec.moe.sharedWidth = config.integer("shared_expert_intermediate_size", 0);
    spec.moe.sharedGated = spec.moe.sharedWidth > 0;
    spec.names.shared = "shared_expert";
  }
  int64_t sparseStep = config.positive("decoder_sparse_step", 1);
  std::vector<int64_t> mlpOnly = config.integers("mlp_only_layers");
  for (auto [index, layer] : llvm::enumerate(spec.layerSpecs)) {
    int64_t l = index;
    layer.moe = !llvm::is_contained(mlpOnly, l) && (l + 1) % sparseStep == 0;
    if (!layer.moe)
      config.require(spec.denseWidth > 0, "intermediate_size",
                     "must be positive: layer " + std::to_string(l) +
                         " is a dense MLP layer");
  }
  if (config.has("layer_types")) {
    readLayerTypes(config, spec);
  } else if (config.boolean("use_sliding_window", false)) {
    int64_t window = config.positive("sliding_window");
    int64_t fromLayer = config.integer("max_window_layers", 0);
    for (int64_t l = fromLayer; l < spec.layers; ++l)
      spec.layerSpecs[l].slidingWindow = window;
  }
}

static void readDeepSeek(ConfigReader &config, ModelSpec &spec, bool v3) {
  LatentAttentionSpec &attn = spec.latent;
  attn.heads = config.positive("num_attention_heads");
  attn.qLoraRank = config.integer("q_lora_rank", 0);
  attn.kvLoraRank = config.positive("kv_lora_rank");
  attn.nopeDim = config.positive("qk_nope_head_dim");
  attn.ropeDim = config.positive("qk_rope_head_dim");
  attn.vDim = config.positive("v_head_dim");
  readRope(config, spec.rope, 10000.0);
  // The hub weights pair rope dims GPT-J style; HF V3 permutes them on the
  // fly (rope_interleave), which gives the same attention output.
  spec.rope.style = (!v3 || config.boolean("rope_interleave", true))
                        ? RopeStyle::interleaved
                        : RopeStyle::neox;
  spec.rope.rotaryDim = attn.ropeDim;
  attn.scale = spec.rope.softmaxScaleFactor /
               std::sqrt(static_cast<double>(attn.nopeDim + attn.ropeDim));

  MoESpec &moe = spec.moe;
  readDeepSeekMoE(config, moe, /*normalizeByDefault=*/false);
  std::string method = config.string("topk_method", "greedy");
  if (method == "group_limited_greedy")
    moe.selection = RouterSelection::group_limited_greedy;
  else if (method == "noaux_tc")
    moe.selection = RouterSelection::noaux_tc;
  else if (method != "greedy")
    config.fail("topk_method", "'" + method +
                                   "' is not greedy, group_limited_greedy or "
                                   "noaux_tc");
  moe.correctionBias = moe.selection == RouterSelection::noaux_tc;
  if (moe.selection != RouterSelection::greedy) {
    moe.groups = config.positive("n_group", 1);
    moe.keptGroups = config.positive("topk_group", 1);
    config.require(!config.ok() || moe.experts % moe.groups == 0, "n_group",
                   llvm::formatv("({0}) must divide n_routed_experts ({1})",
                                 moe.groups, moe.experts));
    config.require(!config.ok() || moe.keptGroups <= moe.groups, "topk_group",
                   llvm::formatv("({0}) exceeds n_group ({1})", moe.keptGroups,
                                 moe.groups));
  }
  spec.denseWidth = config.integer("intermediate_size", 0);
  int64_t firstDense = config.integer("first_k_dense_replace", 0);
  int64_t frequency = config.positive("moe_layer_freq", 1);
  for (auto [index, layer] : llvm::enumerate(spec.layerSpecs)) {
    int64_t l = index;
    layer.attention = AttentionKind::Latent;
    layer.moe = l >= firstDense && l % frequency == 0;
    if (!layer.moe)
      config.require(spec.denseWidth > 0, "intermediate_size",
                     "must be positive: layer " + std::to_string(l) +
                         " is a dense MLP layer");
  }
}

/// MiniMax-Text-01 / M1, with the HF-native keys (model_type "minimax") or
/// the original remote-code keys (minimax_text_01, minimax_m1).
static void readMiniMax(ConfigReader &config, ModelSpec &spec, bool legacy) {
  readSoftmaxHeads(config, spec);
  readRope(config, spec.rope, 10000.0);
  int64_t headDim = spec.softmax.headDim;
  if (legacy) {
    spec.rope.rotaryDim = config.integer("rotary_dim", headDim);
  } else {
    double partial = config.number("partial_rotary_factor", 1.0);
    if (const json::Object *parameters = config.nestedObject("rope_parameters"))
      if (std::optional<double> value =
              parameters->getNumber("partial_rotary_factor"))
        partial = *value;
    spec.rope.rotaryDim = static_cast<int64_t>(headDim * partial);
  }
  spec.lightning.heads = spec.softmax.heads;
  spec.lightning.headDim = headDim;
  spec.lightning.blockSize = config.positive("block_size", 256);

  readExpertCounts(config, spec.moe, "num_local_experts", "intermediate_size");
  spec.moe.normalize = true;
  spec.names.moeBlock = "block_sparse_moe";
  spec.names.expertGate = "w1";
  spec.names.expertUp = "w3";
  spec.names.expertDown = "w2";
  int64_t shared = config.integer("shared_intermediate_size", 0);
  config.require(shared == 0, "shared_intermediate_size",
                 "must be 0: MiniMax shared experts are not supported");
  spec.postNorm = config.boolean("postnorm", !legacy);

  std::vector<bool> softmaxLayer;
  if (legacy) {
    for (int64_t type : config.integers("attn_type_list")) {
      config.require(type == 0 || type == 1, "attn_type_list",
                     "entries must be 0 (lightning) or 1 (softmax)");
      softmaxLayer.push_back(type == 1);
    }
  } else {
    for (const std::string &type : config.strings("layer_types")) {
      config.require(
          type == "linear_attention" || type == "full_attention", "layer_types",
          "entries must be linear_attention or full_attention, got '" + type +
              "'");
      softmaxLayer.push_back(type == "full_attention");
    }
  }
  StringRef typesKey = legacy ? "attn_type_list" : "layer_types";
  if (!hasOneEntryPerLayer(config, typesKey, softmaxLayer.size(), spec.layers))
    return;
  auto factor = [&](StringRef native, StringRef old) {
    return legacy ? config.number(old, 1.0) : config.number(native, 1.0);
  };
  double fullAlpha =
      factor("full_attn_alpha_factor", "layernorm_full_attention_alpha");
  double fullBeta =
      factor("full_attn_beta_factor", "layernorm_full_attention_beta");
  double linearAlpha =
      factor("linear_attn_alpha_factor", "layernorm_linear_attention_alpha");
  double linearBeta =
      factor("linear_attn_beta_factor", "layernorm_linear_attention_beta");
  spec.mlpAlpha = factor("mlp_alpha_factor", "layernorm_mlp_alpha");
  spec.mlpBeta = factor("mlp_beta_factor", "layernorm_mlp_beta");
  for (auto [index, layer] : llvm::enumerate(spec.layerSpecs)) {
    bool full = softmaxLayer[index];
    layer.attention = full ? AttentionKind::Softmax : AttentionKind::Lightning;
    layer.moe = true;
    spec.attnAlpha[index] = full ? fullAlpha : linearAlpha;
    spec.attnBeta[index] = full ? fullBeta : linearBeta;
  }
}

static void readGptOss(ConfigReader &config, ModelSpec &spec) {
  readSoftmaxHeads(config, spec);
  readRope(config, spec.rope, 150000.0);
  bool bias = config.boolean("attention_bias", true);
  spec.softmax.qkvBias = bias;
  spec.softmax.oBias = bias;
  spec.softmax.sinks = true;
  MoESpec &moe = spec.moe;
  readExpertCounts(config, moe, "num_local_experts", "intermediate_size",
                   config.has("num_experts_per_tok") ? "num_experts_per_tok"
                                                     : "experts_per_token");
  // top-k of the biased logits, softmax over the selection: the same as
  // softmax, top-k, renormalise.
  moe.normalize = true;
  moe.routerBias = true;
  moe.activation = ExpertActivation::swiglu_clamped;
  moe.layout = ExpertLayout::fused_interleaved_transposed;
  moe.swigluLimit = config.number("swiglu_limit", 7.0);
  moe.swigluAlpha = 1.702; // fixed in the reference implementation
  spec.names.router = "router";
  for (LayerSpec &layer : spec.layerSpecs)
    layer.moe = true;
  readLayerTypes(config, spec);
}

/// This project's Yi-Lightning-style definition (no public config exists):
/// DeepSeekMoE-style fine-grained + shared experts, a sliding-window/full
/// hybrid, and cross-layer KV sharing (`kv_source_layers`).
static void readYiLightning(ConfigReader &config, ModelSpec &spec) {
  readSoftmaxHeads(config, spec);
  readRope(config, spec.rope, 10000.0);
  readDeepSeekMoE(config, spec.moe, /*normalizeByDefault=*/true);
  spec.denseWidth = config.integer("intermediate_size", 0);
  int64_t firstDense = config.integer("first_k_dense_replace", 0);
  for (auto [index, layer] : llvm::enumerate(spec.layerSpecs)) {
    layer.moe = static_cast<int64_t>(index) >= firstDense;
    if (!layer.moe)
      config.require(spec.denseWidth > 0, "intermediate_size",
                     "must be positive for the dense first layers");
  }
  readLayerTypes(config, spec);
  std::vector<int64_t> sources = config.integers("kv_source_layers");
  if (sources.empty())
    return;
  if (!hasOneEntryPerLayer(config, "kv_source_layers", sources.size(),
                           spec.layers))
    return;
  for (auto [index, source] : llvm::enumerate(sources)) {
    int64_t l = index;
    if (source == l)
      continue;
    if (!config.require(source >= 0 && source < l, "kv_source_layers",
                        llvm::formatv("entry {0} is {1}: a layer can only read "
                                      "the K/V of an earlier layer",
                                      l, source)) ||
        !config.require(sources[source] == source, "kv_source_layers",
                        llvm::formatv("entry {0} reads layer {1}, which itself "
                                      "reads layer {2}",
                                      l, source, sources[source])) ||
        !config.require(spec.layerSpecs[source].slidingWindow ==
                            spec.layerSpecs[l].slidingWindow,
                        "kv_source_layers",
                        llvm::formatv("entry {0} reads layer {1}, which has a "
                                      "different attention window",
                                      l, source)))
      return;
    spec.layerSpecs[l].kvSourceLayer = source;
  }
}

//===----------------------------------------------------------------------===//
// Emitting the IR
//===----------------------------------------------------------------------===//

class ModelEmitter {
public:
  ModelEmitter(const ModelSpec &spec, ModuleOp module)
      : spec(spec), module(module), context(module.getContext()),
        builder(context), loc(module.getLoc()) {}

  void emit();

private:
  FlatSymbolRefAttr param(StringRef symbol, ArrayRef<int64_t> shape,
                          StringRef hfName, Type elementType = {}) {
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPoint(function);
    auto type =
        RankedTensorType::get(shape, elementType ? elementType : spec.dtype);
    ParamOp::create(builder, loc, symbol, type,
                    hfName.empty() ? StringAttr()
                                   : builder.getStringAttr(hfName),
                    PlacementAttr(), IntegerAttr());
    return FlatSymbolRefAttr::get(context, symbol);
  }
  /// A parameter of layer `l`: symbol "l<l>.<name>", hub name under
  /// "model.layers.<l>.".
  FlatSymbolRefAttr layerParam(int64_t l, StringRef name,
                               ArrayRef<int64_t> shape, StringRef hubSuffix,
                               Type elementType = {}) {
    return param(("l" + Twine(l) + "." + name).str(), shape,
                 ("model.layers." + Twine(l) + "." + hubSuffix).str(),
                 elementType);
  }

  RankedTensorType activations(int64_t width) {
    return RankedTensorType::get({ShapedType::kDynamic, width},
                                 builder.getF32Type());
  }
  RopeAttr ropeAttr() {
    const RopeSpec &r = spec.rope;
    return RopeAttr::get(context, r.style, APFloat(r.theta), r.rotaryDim,
                         r.scaling, APFloat(r.factor), r.originalMaxPosition,
                         APFloat(r.betaFast), APFloat(r.betaSlow), r.truncate,
                         APFloat(r.attentionFactor));
  }

  Value rmsNorm(Value input, FlatSymbolRefAttr weight,
                std::optional<int64_t> layer) {
    return RMSNormOp::create(builder, loc, input.getType(), input, weight,
                             builder.getF64FloatAttr(spec.normEps),
                             layer ? builder.getI64IntegerAttr(*layer)
                                   : IntegerAttr());
  }
  Value residual(Value skip, Value update, double skipScale = 1.0,
                 double updateScale = 1.0) {
    return ResidualOp::create(builder, loc, skip.getType(), skip, update,
                              builder.getF64FloatAttr(skipScale),
                              builder.getF64FloatAttr(updateScale));
  }

  Value softmaxAttention(Value input, int64_t l);
  Value latentAttention(Value input, int64_t l);
  Value lightningAttention(Value input, int64_t l);
  Value moeBlock(Value input, int64_t l);
  Value mlp(Value input, int64_t l, int64_t width, StringRef symbolPrefix,
            StringRef hubPrefix, bool sharedExperts, bool gated);

  const ModelSpec &spec;
  ModuleOp module;
  MLIRContext *context;
  OpBuilder builder;
  Location loc;
  func::FuncOp function;
};

Value ModelEmitter::softmaxAttention(Value input, int64_t l) {
  const SoftmaxAttentionSpec &a = spec.softmax;
  const LayerSpec &layer = spec.layerSpecs[l];
  int64_t h = spec.hidden, qWidth = a.heads * a.headDim,
          kvWidth = a.kvHeads * a.headDim;
  bool ownsKv = !layer.kvSourceLayer;
  auto proj = [&](StringRef name, ArrayRef<int64_t> shape, bool present) {
    return present ? layerParam(l, ("attn." + name).str(), shape,
                                ("self_attn." + name + "_proj.weight").str())
                   : FlatSymbolRefAttr();
  };
  auto bias = [&](StringRef name, int64_t width, bool present) {
    return present ? layerParam(l, ("attn." + name + "_bias").str(), {width},
                                ("self_attn." + name + "_proj.bias").str())
                   : FlatSymbolRefAttr();
  };
  FlatSymbolRefAttr q = proj("q", {qWidth, h}, true);
  FlatSymbolRefAttr k = proj("k", {kvWidth, h}, ownsKv);
  FlatSymbolRefAttr v = proj("v", {kvWidth, h}, ownsKv);
  FlatSymbolRefAttr o = proj("o", {h, qWidth}, true);
  FlatSymbolRefAttr qBias = bias("q", qWidth, a.qkvBias);
  FlatSymbolRefAttr kBias = bias("k", kvWidth, a.qkvBias && ownsKv);
  FlatSymbolRefAttr vBias = bias("v", kvWidth, a.qkvBias && ownsKv);
  FlatSymbolRefAttr oBias = bias("o", h, a.oBias);
  FlatSymbolRefAttr qNorm, kNorm;
  if (a.qkNorm != QKNorm::none) {
    bool perHead = a.qkNorm == QKNorm::per_head;
    qNorm = layerParam(l, "attn.q_norm", {perHead ? a.headDim : qWidth},
                       "self_attn.q_norm.weight");
    if (ownsKv)
      kNorm = layerParam(l, "attn.k_norm", {perHead ? a.headDim : kvWidth},
                         "self_attn.k_norm.weight");
  }
  FlatSymbolRefAttr sinks =
      a.sinks ? layerParam(l, "attn.sinks", {a.heads}, "self_attn.sinks")
              : FlatSymbolRefAttr();
  auto optionalInt = [&](std::optional<int64_t> value) {
    return value ? builder.getI64IntegerAttr(*value) : IntegerAttr();
  };
  return AttentionOp::create(
      builder, loc, input.getType(), input, builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(a.heads), builder.getI64IntegerAttr(a.kvHeads),
      builder.getI64IntegerAttr(a.headDim), ropeAttr(),
      builder.getF64FloatAttr(a.scale), q, k, v, o, qBias, kBias, vBias, oBias,
      QKNormAttr::get(context, a.qkNorm), qNorm, kNorm,
      a.qkNorm != QKNorm::none ? builder.getF64FloatAttr(spec.normEps)
                               : FloatAttr(),
      optionalInt(layer.slidingWindow), sinks,
      optionalInt(layer.kvSourceLayer));
}

Value ModelEmitter::latentAttention(Value input, int64_t l) {
  const LatentAttentionSpec &a = spec.latent;
  int64_t h = spec.hidden, qkDim = a.nopeDim + a.ropeDim;
  FlatSymbolRefAttr q, qA, qANorm, qB;
  if (a.qLoraRank == 0) {
    q = layerParam(l, "attn.q", {a.heads * qkDim, h},
                   "self_attn.q_proj.weight");
  } else {
    qA = layerParam(l, "attn.q_a", {a.qLoraRank, h},
                    "self_attn.q_a_proj.weight");
    qANorm = layerParam(l, "attn.q_a_norm", {a.qLoraRank},
                        "self_attn.q_a_layernorm.weight");
    qB = layerParam(l, "attn.q_b", {a.heads * qkDim, a.qLoraRank},
                    "self_attn.q_b_proj.weight");
  }
  FlatSymbolRefAttr kvA =
      layerParam(l, "attn.kv_a", {a.kvLoraRank + a.ropeDim, h},
                 "self_attn.kv_a_proj_with_mqa.weight");
  FlatSymbolRefAttr kvANorm = layerParam(l, "attn.kv_a_norm", {a.kvLoraRank},
                                         "self_attn.kv_a_layernorm.weight");
  FlatSymbolRefAttr kvB =
      layerParam(l, "attn.kv_b", {a.heads * (a.nopeDim + a.vDim), a.kvLoraRank},
                 "self_attn.kv_b_proj.weight");
  FlatSymbolRefAttr o =
      layerParam(l, "attn.o", {h, a.heads * a.vDim}, "self_attn.o_proj.weight");
  return MLAttentionOp::create(
      builder, loc, input.getType(), input, builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(a.heads),
      builder.getI64IntegerAttr(a.qLoraRank),
      builder.getI64IntegerAttr(a.kvLoraRank),
      builder.getI64IntegerAttr(a.nopeDim),
      builder.getI64IntegerAttr(a.ropeDim), builder.getI64IntegerAttr(a.vDim),
      ropeAttr(), builder.getF64FloatAttr(a.scale),
      builder.getF64FloatAttr(spec.normEps), q, qA, qANorm, qB, kvA, kvANorm,
      kvB, o);
}

Value ModelEmitter::lightningAttention(Value input, int64_t l) {
  const LightningSpec &a = spec.lightning;
  int64_t h = spec.hidden, width = a.heads * a.headDim;
  // HF's per-layer decay factor; layer 0 decays fastest, the last barely.
  double decayScale =
      1.0 -
      static_cast<double>(l) / (static_cast<double>(spec.layers) - 1.0 + 1e-5) +
      1e-5;
  FlatSymbolRefAttr qkv =
      layerParam(l, "attn.qkv", {3 * width, h}, "self_attn.qkv_proj.weight");
  FlatSymbolRefAttr gate =
      layerParam(l, "attn.gate", {width, h}, "self_attn.output_gate.weight");
  FlatSymbolRefAttr norm =
      layerParam(l, "attn.norm", {width}, "self_attn.norm.weight");
  FlatSymbolRefAttr out =
      layerParam(l, "attn.out", {h, width}, "self_attn.out_proj.weight");
  return LightningAttentionOp::create(
      builder, loc, input.getType(), input, builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(a.heads), builder.getI64IntegerAttr(a.headDim),
      builder.getF64FloatAttr(decayScale),
      builder.getI64IntegerAttr(a.blockSize),
      builder.getF64FloatAttr(a.normEps), qkv, gate, norm, out);
}

Value ModelEmitter::mlp(Value input, int64_t l, int64_t width,
                        StringRef symbolPrefix, StringRef hubPrefix,
                        bool sharedExperts, bool gated) {
  int64_t h = spec.hidden;
  auto weight = [&](StringRef name, ArrayRef<int64_t> shape) {
    return layerParam(l, (symbolPrefix + "." + name).str(), shape,
                      (hubPrefix + "." + name + "_proj.weight").str());
  };
  FlatSymbolRefAttr gate = weight("gate", {width, h});
  FlatSymbolRefAttr up = weight("up", {width, h});
  FlatSymbolRefAttr down = weight("down", {h, width});
  FlatSymbolRefAttr outputGate =
      gated ? layerParam(l, (symbolPrefix + ".gate_logit").str(), {1, h},
                         (hubPrefix + "_gate.weight").str())
            : FlatSymbolRefAttr();
  return MLPOp::create(
      builder, loc, input.getType(), input, builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(width), gate, up, down, outputGate,
      sharedExperts ? builder.getUnitAttr() : UnitAttr());
}

Value ModelEmitter::moeBlock(Value input, int64_t l) {
  const MoESpec &m = spec.moe;
  const TensorNaming &names = spec.names;
  int64_t h = spec.hidden, e = m.experts, w = m.width;
  std::string block = names.moeBlock;
  std::string router = block + "." + names.router;
  Type f32 = builder.getF32Type();
  FlatSymbolRefAttr routerWeight =
      layerParam(l, "router.weight", {e, h}, router + ".weight");
  FlatSymbolRefAttr routerBias =
      m.routerBias ? layerParam(l, "router.bias", {e}, router + ".bias")
                   : FlatSymbolRefAttr();
  // DeepSeek-V3 keeps the correction bias in fp32 in every checkpoint.
  FlatSymbolRefAttr correction =
      m.correctionBias ? layerParam(l, "router.correction_bias", {e},
                                    router + ".e_score_correction_bias", f32)
                       : FlatSymbolRefAttr();
  auto weightsType = RankedTensorType::get({ShapedType::kDynamic, m.topK}, f32);
  auto indicesType = RankedTensorType::get({ShapedType::kDynamic, m.topK},
                                           builder.getI32Type());
  auto route = RouterOp::create(
      builder, loc, weightsType, indicesType, input,
      builder.getI64IntegerAttr(l), builder.getI64IntegerAttr(e),
      builder.getI64IntegerAttr(m.topK),
      RouterScoringAttr::get(context, m.scoring),
      RouterSelectionAttr::get(context, m.selection),
      builder.getI64IntegerAttr(m.groups),
      builder.getI64IntegerAttr(m.keptGroups), builder.getBoolAttr(m.normalize),
      builder.getF64FloatAttr(m.scaling), routerWeight, routerBias, correction);

  std::string experts = block + ".experts";
  FlatSymbolRefAttr gate, up, gateUp, down, gateUpBias, downBias;
  if (m.layout == ExpertLayout::separate) {
    auto stacked = [&](StringRef name, StringRef hubName,
                       ArrayRef<int64_t> shape) {
      return layerParam(l, ("experts." + name).str(), shape,
                        (experts + ".{e}." + hubName + ".weight").str());
    };
    gate = stacked("gate", names.expertGate, {e, w, h});
    up = stacked("up", names.expertUp, {e, w, h});
    down = stacked("down", names.expertDown, {e, h, w});
  } else {
    gateUp = layerParam(l, "experts.gate_up", {e, h, 2 * w},
                        experts + ".gate_up_proj");
    gateUpBias = layerParam(l, "experts.gate_up_bias", {e, 2 * w},
                            experts + ".gate_up_proj_bias");
    down = layerParam(l, "experts.down", {e, w, h}, experts + ".down_proj");
    downBias =
        layerParam(l, "experts.down_bias", {e, h}, experts + ".down_proj_bias");
  }
  bool clamped = m.activation == ExpertActivation::swiglu_clamped;
  Value routed = ExpertsOp::create(
      builder, loc, input.getType(), input, route.getWeights(),
      route.getIndices(), builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(e), builder.getI64IntegerAttr(w),
      ExpertActivationAttr::get(context, m.activation),
      ExpertLayoutAttr::get(context, m.layout),
      clamped ? builder.getF64FloatAttr(m.swigluLimit) : FloatAttr(),
      clamped ? builder.getF64FloatAttr(m.swigluAlpha) : FloatAttr(), gate, up,
      gateUp, down, gateUpBias, downBias);
  if (m.sharedWidth == 0)
    return routed;
  Value shared =
      mlp(input, l, m.sharedWidth, "shared", block + "." + names.shared,
          /*sharedExperts=*/true, m.sharedGated);
  return residual(routed, shared);
}

void ModelEmitter::emit() {
  builder.setInsertionPointToEnd(module.getBody());
  auto idsType =
      RankedTensorType::get({ShapedType::kDynamic}, builder.getI32Type());
  auto logitsType = activations(spec.vocab);
  function = func::FuncOp::create(builder, loc, "forward",
                                  builder.getFunctionType(idsType, logitsType));
  Block *body = function.addEntryBlock();

  FlatSymbolRefAttr embed =
      param("embed", {spec.vocab, spec.hidden}, "model.embed_tokens.weight");
  builder.setInsertionPointToEnd(body);
  Value x = EmbeddingOp::create(builder, loc, activations(spec.hidden),
                                body->getArgument(0), embed);
  for (int64_t l = 0; l < spec.layers; ++l) {
    const LayerSpec &layer = spec.layerSpecs[l];
    Value h = rmsNorm(
        x, layerParam(l, "input_norm", {spec.hidden}, "input_layernorm.weight"),
        l);
    Value a;
    switch (layer.attention) {
    case AttentionKind::Softmax:
      a = softmaxAttention(h, l);
      break;
    case AttentionKind::Latent:
      a = latentAttention(h, l);
      break;
    case AttentionKind::Lightning:
      a = lightningAttention(h, l);
      break;
    }
    x = spec.postNorm ? residual(h, a, spec.attnAlpha[l], spec.attnBeta[l])
                      : residual(x, a);
    Value h2 = rmsNorm(x,
                       layerParam(l, "post_norm", {spec.hidden},
                                  "post_attention_layernorm.weight"),
                       l);
    Value m = layer.moe ? moeBlock(h2, l)
                        : mlp(h2, l, spec.denseWidth, "mlp", "mlp",
                              /*sharedExperts=*/false, /*gated=*/false);
    x = spec.postNorm ? residual(h2, m, spec.mlpAlpha, spec.mlpBeta)
                      : residual(x, m);
  }
  Value normed = rmsNorm(
      x, param("final_norm", {spec.hidden}, "model.norm.weight"), std::nullopt);
  FlatSymbolRefAttr head =
      spec.tieEmbeddings
          ? embed
          : param("lm_head", {spec.vocab, spec.hidden}, "lm_head.weight");
  Value logits = LMHeadOp::create(builder, loc, logitsType, normed, head);
  func::ReturnOp::create(builder, loc, logits);

  module->setAttr(MoEDialect::kModelAttrName,
                  ModelAttr::get(context, spec.modelType, spec.architecture,
                                 spec.vocab, spec.hidden, spec.layers,
                                 spec.maxPosition, spec.bos, spec.eos));
}

} // namespace

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

ArrayRef<StringLiteral> mlir::moe::supportedModelTypes() {
  static constexpr StringLiteral types[] = {
      "mixtral", "deepseek_v2",     "deepseek_v3", "qwen2_moe", "qwen3_moe",
      "minimax", "minimax_text_01", "minimax_m1",  "gpt_oss",   "yi_lightning"};
  return types;
}

bool mlir::moe::isHFConfigPath(StringRef path) {
  return llvm::sys::fs::is_directory(path) || path.ends_with(".json");
}

OwningOpRef<ModuleOp> mlir::moe::importHFConfigText(MLIRContext *context,
                                                    StringRef text,
                                                    StringRef fileName) {
  context->loadDialect<MoEDialect, func::FuncDialect>();
  Location loc = FileLineColLoc::get(context, fileName, 1, 1);
  llvm::Expected<json::Value> parsed = json::parse(text);
  if (!parsed) {
    emitError(loc) << "not valid JSON: " << llvm::toString(parsed.takeError());
    return nullptr;
  }
  const json::Object *object = parsed->getAsObject();
  if (!object) {
    emitError(loc) << "expected a JSON object at the top level";
    return nullptr;
  }
  ConfigReader config(*object, loc);
  ModelSpec spec;
  spec.modelType = config.string("model_type");
  if (!config.ok())
    return nullptr;
  if (spec.modelType.empty()) {
    config.fail("model_type", "is missing");
    return nullptr;
  }
  if (!llvm::is_contained(supportedModelTypes(), spec.modelType)) {
    config.fail("model_type",
                "'" + spec.modelType + "' is not supported (supported: " +
                    llvm::join(supportedModelTypes(), ", ") + ")");
    return nullptr;
  }
  readCommon(config, spec, context);
  if (!config.ok())
    return nullptr;
  spec.layerSpecs.resize(spec.layers);
  spec.attnAlpha.assign(spec.layers, 1.0);
  spec.attnBeta.assign(spec.layers, 1.0);

  StringRef type = spec.modelType;
  if (type == "mixtral")
    readMixtral(config, spec);
  else if (type == "deepseek_v2" || type == "deepseek_v3")
    readDeepSeek(config, spec, type == "deepseek_v3");
  else if (type == "qwen2_moe" || type == "qwen3_moe")
    readQwenMoE(config, spec, type == "qwen3_moe");
  else if (type == "minimax" || type == "minimax_text_01" ||
           type == "minimax_m1")
    readMiniMax(config, spec, type != "minimax");
  else if (type == "gpt_oss")
    readGptOss(config, spec);
  else if (type == "yi_lightning")
    readYiLightning(config, spec);
  if (!config.ok())
    return nullptr;

  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  ModelEmitter(spec, *module).emit();
  if (failed(mlir::verify(*module))) {
    emitError(loc) << "the imported model does not verify";
    return nullptr;
  }
  return module;
}

OwningOpRef<ModuleOp> mlir::moe::importHFConfig(MLIRContext *context,
                                                StringRef path) {
  llvm::SmallString<256> file(path);
  if (llvm::sys::fs::is_directory(path))
    llvm::sys::path::append(file, "config.json");
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(file);
  if (!buffer) {
    emitError(UnknownLoc::get(context))
        << "cannot read " << file << ": " << buffer.getError().message();
    return nullptr;
  }
  return importHFConfigText(context, (*buffer)->getBuffer(), file);
}
