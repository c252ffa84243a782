//===- ModelSpec.h - what a family's config reader fills in ---------------===//
//
// Part of the config importer: each family's reader (FamilyReaders.cpp)
// turns config.json into a ModelSpec, from which the emitter
// (ModelEmitter.cpp) builds the IR.
//
//===----------------------------------------------------------------------===//

#pragma once

#include "dialects/MoE/MoEOps.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mlir::moe::hf {

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
  StringRef rotaryDimKey; // the config field it comes from, for errors
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
  // Routed experts as the checkpoint stores them ("bf16", "fp8", "mxfp4"):
  // what weight-dtype=declared plans.
  std::string expertWeightDtype = "bf16";
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

} // namespace mlir::moe::hf
