#include "runtime/costmodel/ModelCosts.h"

#include <algorithm>

namespace moe::costmodel {

std::string_view moduleKindName(ModuleKind kind) {
  switch (kind) {
  case ModuleKind::Attention:
    return "attention";
  case ModuleKind::Router:
    return "router";
  case ModuleKind::RoutedExperts:
    return "routed_experts";
  case ModuleKind::SharedExperts:
    return "shared_experts";
  case ModuleKind::DenseMlp:
    return "dense_mlp";
  case ModuleKind::Norm:
    return "norm";
  case ModuleKind::Embedding:
    return "embedding";
  case ModuleKind::LmHead:
    return "lm_head";
  }
  return "unknown";
}

Status validateModelCosts(const ModelCosts &model) {
  if (model.hiddenSize <= 0)
    return makeError("model costs: hidden size must be positive");
  if (model.vocabSize <= 0)
    return makeError("model costs: vocab size must be positive");
  if (model.activationElementBytes <= 0)
    return makeError("model costs: activation element bytes must be positive");
  if (model.layers.empty())
    return makeError("model costs: no layers");
  for (size_t l = 0; l < model.layers.size(); ++l) {
    for (size_t m = 0; m < model.layers[l].modules.size(); ++m) {
      const ModuleCosts &module = model.layers[l].modules[m];
      auto fail = [&](std::string_view what) {
        return makeError("model costs: layer {} module {} ({}): {}", l, m,
                         moduleKindName(module.kind), what);
      };
      if (module.weightBytes < 0 || module.flopsPerToken < 0 ||
          module.flopsPerContextToken < 0 || module.kvBytesPerToken < 0 ||
          module.kvWindowTokens < 0 || module.stateBytesPerSequence < 0 ||
          module.widenBytes < 0 || module.widenScratchBytes < 0)
        return fail("sizes must not be negative");
      for (const GemmShape &gemm : module.gemms)
        if (gemm.n <= 0 || gemm.k <= 0)
          return fail("GEMM shapes must be positive");
      if (module.attentionHeads) {
        const AttentionHeads &heads = *module.attentionHeads;
        if (heads.heads <= 0 || heads.kvHeads <= 0 || heads.headDim <= 0 ||
            heads.heads % heads.kvHeads != 0)
          return fail("attention heads must be positive and kv heads must "
                      "divide heads");
      }
      if (module.mlaHeads &&
          (module.mlaHeads->heads <= 0 || module.mlaHeads->latentDim <= 0 ||
           module.mlaHeads->ropeDim <= 0))
        return fail("MLA heads, latent and rope dims must be positive");
      if (module.kind != ModuleKind::RoutedExperts)
        continue;
      if (module.numExperts <= 0)
        return fail("needs a positive expert count");
      if (module.topK <= 0 || module.topK > module.numExperts)
        return fail(fmt::format("top-k {} must be in [1, {}]", module.topK,
                                module.numExperts));
      if (module.expertWeightBytes <= 0 ||
          module.expertWeightBytes * module.numExperts > module.weightBytes)
        return fail(fmt::format(
            "{} experts of {} bytes exceed the module's {} weight bytes",
            module.numExperts, module.expertWeightBytes, module.weightBytes));
    }
  }
  return Status::success();
}

int64_t attendedTokens(const ModuleCosts &module, int64_t context) {
  if (module.kvWindowTokens > 0)
    return std::min(context, module.kvWindowTokens);
  return context;
}

int64_t totalWeightBytes(const ModelCosts &model) {
  int64_t total = 0;
  for (const LayerCosts &layer : model.layers)
    for (const ModuleCosts &module : layer.modules)
      total += module.weightBytes;
  return total;
}

int64_t heldKvBytes(const ModuleCosts &module, int64_t context) {
  return context * module.kvBytesPerToken + module.stateBytesPerSequence;
}

int64_t kvBytesPerSequence(const ModelCosts &model, int64_t context) {
  int64_t total = 0;
  for (const LayerCosts &layer : model.layers)
    for (const ModuleCosts &module : layer.modules)
      total += heldKvBytes(module, context);
  return total;
}

ModuleNumbering::ModuleNumbering(int64_t numLayers)
    : numLayers_(numLayers), counts_(size_t(numLayers + 2), 0) {}

Result<ModuleRef> ModuleNumbering::next(int64_t modelLayer) {
  if (modelLayer >= numLayers_)
    return makeError("layer {} is beyond the model's {}", modelLayer,
                     numLayers_);
  int64_t layer;
  if (modelLayer >= 0) {
    layer = modelLayer + 1;
    seenLayer_ = true;
  } else {
    layer = seenLayer_ ? numLayers_ + 1 : 0;
  }
  return ModuleRef{layer, counts_[size_t(layer)]++};
}

} // namespace moe::costmodel
