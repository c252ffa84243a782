//===- FamilyReaders.cpp - config.json to ModelSpec, per family -----------===//
//
// Each family's conventions: which layers are MoE, RoPE flavour, router
// rule, tensor names; the defaults are what transformers' config classes
// mean when a key is left out.
//
//===----------------------------------------------------------------------===//

#include "FamilyReaders.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

namespace mlir::moe::hf {
namespace {

//===----------------------------------------------------------------------===//
// Shared readers
//===----------------------------------------------------------------------===//

/// A quantized checkpoint's method, checked before anything is planned,
/// and the format its routed experts are stored in. FP8 with 128 × 128
/// block scales (DeepSeek-V3, Qwen3-FP8) keeps its experts in that format
/// (runtime/model/WeightFormat.h) and MXFP4 (GPT-OSS) in its own; the
/// other weights of those checkpoints, and compressed-tensors' 8-bit float
/// weights (per channel or tensor, a format the backends do not hold),
/// load dequantized to bf16. Anything else would load as garbage: one
/// error naming the method.
static void readQuantizationMethod(ConfigReader &nested,
                                   const json::Object &quantization,
                                   ModelSpec &spec) {
  std::string method = nested.string("quant_method");
  if (method == "mxfp4") {
    spec.expertWeightDtype = "mxfp4";
    return;
  }
  if (method == "fp8") {
    std::vector<int64_t> block = nested.integers("weight_block_size");
    nested.require(block.empty() || block == std::vector<int64_t>{128, 128},
                   "weight_block_size",
                   "must be [128, 128]: the FP8 weights' loader reads 128 x "
                   "128 block scales");
    spec.expertWeightDtype = "fp8";
    return;
  }
  if (method == "compressed-tensors") {
    const json::Object *groups = quantization.getObject("config_groups");
    for (const auto &[name, group] : groups ? *groups : json::Object()) {
      const json::Object *weights =
          group.getAsObject() ? group.getAsObject()->getObject("weights")
                              : nullptr;
      std::optional<int64_t> bits =
          weights ? weights->getInteger("num_bits") : std::nullopt;
      std::optional<StringRef> type =
          weights ? weights->getString("type") : std::nullopt;
      nested.require(bits == 8 && type == "float",
                     ("config_groups." + name.str() + ".weights").c_str(),
                     "must be 8-bit float weights: only FP8 compressed-tensors "
                     "checkpoints load");
    }
    return;
  }
  nested.fail("quant_method",
              "'" + method +
                  "' is not supported (fp8 with 128 x 128 blocks, "
                  "compressed-tensors FP8 and mxfp4 load)");
}

static void readQuantization(ConfigReader &config, ModelSpec &spec) {
  const json::Object *quantization = config.nestedObject("quantization_config");
  if (!quantization)
    return;
  ConfigReader nested(*quantization, config, "quantization_config");
  readQuantizationMethod(nested, *quantization, spec);
}

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
  readQuantization(config, spec);
  // v5 writes "dtype"; older configs "torch_dtype": the dtype of the weights
  // a quantized checkpoint does not quantize.
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

/// A config's number as written (formatv's default shows two decimals).
static auto asWritten(double value) { return llvm::format("%g", value); }

/// rope_theta and rope_scaling (v4) or rope_parameters (v5), as transformers
/// standardizes them (RotaryEmbeddingConfigMixin): rope_scaling wins over
/// rope_parameters, a rope_theta inside either over the top-level one, and
/// YaRN's original_max_position_embeddings defaults to
/// max_position_embeddings.
static void readRope(ConfigReader &config, ModelSpec &spec,
                     double defaultTheta) {
  RopeSpec &rope = spec.rope;
  const json::Object *parameters = config.nestedObject("rope_parameters");
  const json::Object *scaling = config.nestedObject("rope_scaling");
  const json::Object *source =
      scaling && !scaling->empty() ? scaling : parameters;
  rope.theta = config.number("rope_theta", defaultTheta);
  // The frequencies are theta^(-2i/d): they must fall with i.
  auto requireTheta = [&](ConfigReader &reader) {
    reader.require(
        !reader.ok() || rope.theta > 1.0, "rope_theta",
        llvm::formatv("must exceed 1, got {0}", asWritten(rope.theta)));
  };
  if (!source) {
    requireTheta(config);
    return;
  }
  StringRef sourceKey = source == scaling ? "rope_scaling" : "rope_parameters";
  ConfigReader nested(*source, config, sourceKey);
  if (nested.has("rope_theta")) {
    rope.theta = nested.number("rope_theta");
    requireTheta(nested);
  } else {
    requireTheta(config);
  }
  std::string type =
      nested.string("rope_type", nested.string("type", "default"));
  if (type == "yarn") {
    rope.scaling = RopeScaling::yarn;
    rope.factor = nested.number("factor");
    rope.originalMaxPosition =
        nested.has("original_max_position_embeddings") || spec.maxPosition <= 0
            ? nested.positive("original_max_position_embeddings")
            : spec.maxPosition;
    nested.require(!nested.ok() || rope.factor >= 1.0, "factor",
                   llvm::formatv("must be at least 1 for yarn, got {0}",
                                 asWritten(rope.factor)));
    rope.betaFast = nested.number("beta_fast", 32.0);
    rope.betaSlow = nested.number("beta_slow", 1.0);
    nested.require(!nested.ok() || rope.betaFast > rope.betaSlow, "beta_fast",
                   llvm::formatv("({0}) must exceed beta_slow ({1})",
                                 asWritten(rope.betaFast),
                                 asWritten(rope.betaSlow)));
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
    nested.require(!nested.ok() || rope.attentionFactor > 0.0,
                   hasMscale && !nested.has("attention_factor")
                       ? "mscale"
                       : "attention_factor",
                   llvm::formatv("gives an attention factor of {0}; it must "
                                 "be positive",
                                 asWritten(rope.attentionFactor)));
    if (mscaleAllDim > 0) {
      double m = yarnMscale(rope.factor, mscaleAllDim);
      rope.softmaxScaleFactor = m * m;
    }
  } else if (type != "default") {
    nested.fail("rope_type", "'" + type + "' is not supported (default, yarn)");
  }
}

/// A per-layer list must have one entry per layer.
static bool hasOneEntryPerLayer(ConfigReader &config, StringRef key,
                                size_t entries, int64_t layers) {
  return config.require(
      static_cast<int64_t>(entries) == layers, key,
      llvm::formatv("has {0} entries but num_hidden_layers is {1}", entries,
                    layers));
}

/// Per-layer sliding windows from `layer_types` or, where config.json has
/// none, for the layers `slidingByDefault` picks (the pattern transformers'
/// class fills layer_types with).
static void
readLayerTypes(ConfigReader &config, ModelSpec &spec,
               llvm::function_ref<bool(int64_t)> slidingByDefault = nullptr) {
  std::vector<std::string> types = config.strings("layer_types");
  if (types.empty()) {
    for (int64_t l = 0; slidingByDefault && l < spec.layers; ++l)
      if (slidingByDefault(l))
        spec.layerSpecs[l].slidingWindow = config.positive("sliding_window");
    return;
  }
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
  spec.rope.rotaryDimKey =
      config.has("head_dim") ? "head_dim" : "num_attention_heads";
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
  moe.sharedWidth = config.nonNegative("n_shared_experts", 0) * moe.width;
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

// Mixtral's expert block, which MiniMax keeps: normalized top-k over
// num_local_experts experts, "block_sparse_moe" with w1 (gate), w3 (up) and
// w2 (down).
static void readMixtralExperts(ConfigReader &config, ModelSpec &spec) {
  readExpertCounts(config, spec.moe, "num_local_experts", "intermediate_size");
  spec.moe.normalize = true;
  spec.names.moeBlock = "block_sparse_moe";
  spec.names.expertGate = "w1";
  spec.names.expertUp = "w3";
  spec.names.expertDown = "w2";
}

static void readMixtral(ConfigReader &config, ModelSpec &spec) {
  readSoftmaxHeads(config, spec);
  readRope(config, spec, 1e6);
  readMixtralExperts(config, spec);
  std::optional<int64_t> window;
  if (config.has("sliding_window"))
    window = config.positive("sliding_window");
  for (LayerSpec &layer : spec.layerSpecs) {
    layer.moe = true;
    layer.slidingWindow = window;
  }
}

static void readQwenMoE(ConfigReader &config, ModelSpec &spec, bool qwen3) {
  readSoftmaxHeads(config, spec);
  readRope(config, spec, 10000.0);
  spec.softmax.qkvBias = qwen3 ? config.boolean("attention_bias", false)
                               : config.boolean("qkv_bias", true);
  spec.softmax.oBias = false;
  if (qwen3)
    spec.softmax.qkNorm = QKNorm::per_head;
  // Qwen3-MoE's num_experts is num_local_experts in transformers (the hub's
  // name is its alias, see classAliases); Qwen2-MoE keeps num_experts.
  readExpertCounts(config, spec.moe,
                   qwen3 ? "num_local_experts" : "num_experts",
                   "moe_intermediate_size");
  spec.moe.normalize = config.boolean("norm_topk_prob", false);
  spec.denseWidth = config.integer("intermediate_size", 0);
  if (!qwen3) {
    spec.moe.sharedWidth =
        config.nonNegative("shared_expert_intermediate_size", 0);
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
  // transformers' sliding layers: with use_sliding_window, Qwen3-MoE's
  // attention takes sliding_window in every layer (it reads no layer_types
  // and no max_window_layers), and Qwen2-MoE's class fills a missing
  // layer_types with sliding_attention in the even layers below
  // max_window_layers.
  bool sliding = config.boolean("use_sliding_window", false);
  if (qwen3) {
    if (sliding) {
      int64_t window = config.positive("sliding_window");
      for (LayerSpec &layer : spec.layerSpecs)
        layer.slidingWindow = window;
    }
    return;
  }
  int64_t belowLayer = sliding && !config.has("layer_types")
                           ? config.nonNegative("max_window_layers", 0)
                           : 0;
  readLayerTypes(config, spec,
                 [&](int64_t l) { return l % 2 == 0 && l < belowLayer; });
}

static void readDeepSeek(ConfigReader &config, ModelSpec &spec, bool v3) {
  LatentAttentionSpec &attn = spec.latent;
  attn.heads = config.positive("num_attention_heads");
  attn.qLoraRank = config.nonNegative("q_lora_rank", 0);
  attn.kvLoraRank = config.positive("kv_lora_rank");
  attn.nopeDim = config.positive("qk_nope_head_dim");
  attn.ropeDim = config.positive("qk_rope_head_dim");
  attn.vDim = config.positive("v_head_dim");
  readRope(config, spec, 10000.0);
  // The hub weights pair rope dims GPT-J style; HF V3 permutes them on the
  // fly (rope_interleave), which gives the same attention output.
  spec.rope.style = (!v3 || config.boolean("rope_interleave", true))
                        ? RopeStyle::interleaved
                        : RopeStyle::neox;
  spec.rope.rotaryDim = attn.ropeDim;
  spec.rope.rotaryDimKey = "qk_rope_head_dim";
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
    int64_t groupSize = moe.experts / moe.groups;
    config.require(!config.ok() || moe.topK <= moe.keptGroups * groupSize,
                   "num_experts_per_tok",
                   llvm::formatv("({0}) exceeds the {1} experts of the "
                                 "topk_group ({2}) groups kept",
                                 moe.topK, moe.keptGroups * groupSize,
                                 moe.keptGroups));
    // noaux_tc ranks the groups by the sum of their two best experts.
    config.require(!config.ok() || moe.selection != RouterSelection::noaux_tc ||
                       groupSize >= 2,
                   "n_group",
                   llvm::formatv("({0}) leaves {1} expert per group; noaux_tc "
                                 "needs at least 2",
                                 moe.groups, groupSize));
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
  readRope(config, spec, legacy ? 10000.0 : 1e6);
  int64_t headDim = spec.softmax.headDim;
  if (legacy) {
    if (config.has("rotary_dim")) {
      spec.rope.rotaryDim = config.integer("rotary_dim");
      spec.rope.rotaryDimKey = "rotary_dim";
      config.require(!config.ok() || spec.rope.rotaryDim <= headDim,
                     "rotary_dim",
                     llvm::formatv("({0}) exceeds the head dimension ({1})",
                                   spec.rope.rotaryDim, headDim));
    }
  } else {
    double partial = config.number("partial_rotary_factor", 1.0);
    StringRef partialKey = "partial_rotary_factor";
    if (const json::Object *parameters = config.nestedObject("rope_parameters"))
      if (std::optional<double> value =
              parameters->getNumber("partial_rotary_factor")) {
        partial = *value;
        partialKey = "rope_parameters.partial_rotary_factor";
      }
    if (config.require(
            !config.ok() || (partial > 0.0 && partial <= 1.0), partialKey,
            llvm::formatv("must be in (0, 1], got {0}", asWritten(partial)))) {
      spec.rope.rotaryDim = static_cast<int64_t>(headDim * partial);
      spec.rope.rotaryDimKey = partialKey;
    }
  }
  spec.lightning.heads = spec.softmax.heads;
  spec.lightning.headDim = headDim;
  spec.lightning.blockSize = config.positive("block_size", 256);

  readMixtralExperts(config, spec);
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
  } else if (!config.has("layer_types")) {
    // transformers' class: full attention in the even layers.
    for (int64_t l = 0; l < spec.layers; ++l)
      softmaxLayer.push_back(l % 2 == 0);
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
  readRope(config, spec, 150000.0);
  bool bias = config.boolean("attention_bias", true);
  spec.softmax.qkvBias = bias;
  spec.softmax.oBias = bias;
  spec.softmax.sinks = true;
  MoESpec &moe = spec.moe;
  // transformers reads num_experts_per_tok (default 4) and ignores the
  // original checkpoints' experts_per_token.
  readExpertCounts(config, moe, "num_local_experts", "intermediate_size");
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
  // transformers' class: sliding windows in the even layers.
  readLayerTypes(config, spec, [](int64_t l) { return l % 2 == 0; });
}

/// This project's Yi-Lightning-style definition (no public config exists):
/// DeepSeekMoE-style fine-grained + shared experts, a sliding-window/full
/// hybrid, and cross-layer KV sharing (`kv_source_layers`).
static void readYiLightning(ConfigReader &config, ModelSpec &spec) {
  readSoftmaxHeads(config, spec);
  readRope(config, spec, 10000.0);
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
// transformers' class defaults
//===----------------------------------------------------------------------===//

/// The field defaults of transformers' config class for `modelType`
/// (models/<type>/configuration_<type>.py in transformers 5.17), for the
/// keys the readers read. A field whose default is None is not listed: the
/// readers derive from other fields what transformers derives (head_dim from
/// hidden_size and num_attention_heads, the layer_types patterns, the RoPE
/// parameters from rope_theta and the family's default theta).
static json::Object classDefaults(StringRef modelType) {
  if (modelType == "mixtral")
    return json::Object{{"vocab_size", 32000},
                        {"hidden_size", 4096},
                        {"intermediate_size", 14336},
                        {"num_hidden_layers", 32},
                        {"num_attention_heads", 32},
                        {"num_key_value_heads", 8},
                        {"max_position_embeddings", 131072},
                        {"rms_norm_eps", 1e-5},
                        {"bos_token_id", 1},
                        {"eos_token_id", 2},
                        {"tie_word_embeddings", false},
                        {"num_local_experts", 8},
                        {"num_experts_per_tok", 2}};
  if (modelType == "deepseek_v2")
    return json::Object{{"vocab_size", 102400},
                        {"hidden_size", 4096},
                        {"intermediate_size", 11008},
                        {"moe_intermediate_size", 1407},
                        {"num_hidden_layers", 32},
                        {"num_attention_heads", 32},
                        {"max_position_embeddings", 2048},
                        {"rms_norm_eps", 1e-6},
                        {"bos_token_id", 1},
                        {"eos_token_id", 2},
                        {"tie_word_embeddings", false},
                        {"first_k_dense_replace", 0},
                        {"kv_lora_rank", 512},
                        {"q_lora_rank", 1536},
                        {"qk_nope_head_dim", 128},
                        {"qk_rope_head_dim", 64},
                        {"v_head_dim", 128},
                        {"n_routed_experts", 64},
                        {"n_shared_experts", 2},
                        {"routed_scaling_factor", 1.0},
                        {"topk_method", "greedy"},
                        {"norm_topk_prob", false}};
  if (modelType == "deepseek_v3")
    return json::Object{
        {"vocab_size", 129280},
        {"hidden_size", 7168},
        {"intermediate_size", 18432},
        {"moe_intermediate_size", 2048},
        {"num_hidden_layers", 61},
        {"num_attention_heads", 128},
        {"max_position_embeddings", 4096},
        {"rms_norm_eps", 1e-6},
        {"bos_token_id", 0},
        {"eos_token_id", 1},
        {"tie_word_embeddings", false},
        {"first_k_dense_replace", 3},
        {"kv_lora_rank", 512},
        {"q_lora_rank", 1536},
        {"qk_nope_head_dim", 128},
        {"qk_rope_head_dim", 64},
        {"v_head_dim", 128},
        {"n_routed_experts", 256},
        {"n_shared_experts", 1},
        {"routed_scaling_factor", 2.5},
        {"num_experts_per_tok", 8},
        {"n_group", 8},
        {"topk_group", 4},
        {"norm_topk_prob", true},
        {"rope_interleave", true},
        // Not fields of the class: its router always scores with a sigmoid
        // and picks groups and experts on the bias-corrected scores
        // (DeepseekV3TopkRouter).
        {"scoring_func", "sigmoid"},
        {"topk_method", "noaux_tc"}};
  if (modelType == "qwen2_moe")
    return json::Object{{"vocab_size", 151936},
                        {"hidden_size", 2048},
                        {"intermediate_size", 5632},
                        {"moe_intermediate_size", 1408},
                        {"num_hidden_layers", 24},
                        {"num_attention_heads", 16},
                        {"num_key_value_heads", 16},
                        {"max_position_embeddings", 32768},
                        {"rms_norm_eps", 1e-6},
                        {"tie_word_embeddings", false},
                        {"qkv_bias", true},
                        {"num_experts", 60},
                        {"num_experts_per_tok", 4},
                        {"norm_topk_prob", false},
                        {"shared_expert_intermediate_size", 5632},
                        {"decoder_sparse_step", 1},
                        {"use_sliding_window", false},
                        {"sliding_window", 4096},
                        {"max_window_layers", 28}};
  if (modelType == "qwen3_moe")
    return json::Object{
        {"vocab_size", 151936},      {"hidden_size", 2048},
        {"intermediate_size", 6144}, {"moe_intermediate_size", 768},
        {"num_hidden_layers", 24},   {"num_attention_heads", 32},
        {"num_key_value_heads", 4},  {"max_position_embeddings", 32768},
        {"rms_norm_eps", 1e-6},      {"tie_word_embeddings", false},
        {"attention_bias", false},   {"num_local_experts", 128},
        {"num_experts_per_tok", 8},  {"norm_topk_prob", false},
        {"decoder_sparse_step", 1},  {"use_sliding_window", false},
        {"sliding_window", 4096}};
  if (modelType == "minimax") {
    // MiniMaxConfig holds MixtralConfig's defaults and its own factors.
    json::Object defaults = classDefaults("mixtral");
    for (StringRef factor :
         {"full_attn_alpha_factor", "full_attn_beta_factor",
          "linear_attn_alpha_factor", "linear_attn_beta_factor",
          "mlp_alpha_factor", "mlp_beta_factor"})
      defaults.try_emplace(factor, 1);
    defaults.try_emplace("block_size", 256);
    return defaults;
  }
  if (modelType == "gpt_oss")
    return json::Object{
        {"vocab_size", 201088},
        {"hidden_size", 2880},
        {"intermediate_size", 2880},
        {"num_hidden_layers", 36},
        {"num_attention_heads", 64},
        {"num_key_value_heads", 8},
        {"head_dim", 64},
        {"max_position_embeddings", 131072},
        {"rms_norm_eps", 1e-5},
        {"tie_word_embeddings", false},
        {"attention_bias", true},
        {"num_local_experts", 128},
        {"num_experts_per_tok", 4},
        {"sliding_window", 128},
        // Set in __post_init__ when config.json has neither rope_parameters
        // nor rope_scaling.
        {"rope_parameters",
         json::Object{{"rope_type", "yarn"},
                      {"factor", 32.0},
                      {"beta_fast", 32.0},
                      {"beta_slow", 1.0},
                      {"truncate", false},
                      {"original_max_position_embeddings", 4096}}}};
  return {};
}

/// The class's attribute_map: (the name config.json may use, the field).
static std::vector<std::pair<StringRef, StringRef>>
classAliases(StringRef modelType) {
  if (modelType == "deepseek_v2")
    return {{"num_experts", "n_routed_experts"}};
  if (modelType == "deepseek_v3")
    return {{"num_local_experts", "n_routed_experts"}};
  if (modelType == "mixtral" || modelType == "qwen3_moe" ||
      modelType == "minimax" || modelType == "gpt_oss")
    return {{"num_experts", "num_local_experts"}};
  return {};
}

} // namespace

json::Object withClassDefaults(const json::Object &config,
                               StringRef modelType) {
  json::Object merged = config;
  for (auto [alias, key] : classAliases(modelType))
    if (const json::Value *value = config.get(alias); value && !config.get(key))
      merged.try_emplace(key, *value);
  for (const auto &[key, value] : classDefaults(modelType))
    merged.try_emplace(key, value);
  return merged;
}

void readModelSpec(ConfigReader &config, ModelSpec &spec,
                   MLIRContext *context) {
  readCommon(config, spec, context);
  if (!config.ok())
    return;
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
  // RoPE turns pairs of dimensions.
  config.require(!config.ok() ||
                     (spec.rope.rotaryDim > 0 && spec.rope.rotaryDim % 2 == 0),
                 spec.rope.rotaryDimKey,
                 llvm::formatv("gives a RoPE rotary dimension of {0}; it must "
                               "be positive and even",
                               spec.rope.rotaryDim));
}

} // namespace mlir::moe::hf
