// What the cost model knows about a model: per layer, the modules with their
// weight bytes, FLOPs, KV and state sizes, and the GEMM shapes that let the
// hardware profile price them. The compiler fills these from its op cost
// interface; tests build them by hand.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "runtime/model/KvFormat.h"
#include "runtime/support/Result.h"

namespace moe::costmodel {

enum class ModuleKind {
  Attention,
  Router,
  RoutedExperts,
  SharedExperts,
  DenseMlp,
  Norm,
  Embedding,
  LmHead,
};

std::string_view moduleKindName(ModuleKind kind);

// One GEMM a token goes through: y[n] = W[n,k]·x[k].
struct GemmShape {
  int64_t n = 0;
  int64_t k = 0;
};

// Head layout of softmax attention, so that measured decode-attention points
// of the hardware profile apply. Absent for MLA and linear attention.
struct AttentionHeads {
  int64_t heads = 0;
  int64_t kvHeads = 0;
  int64_t headDim = 0;
};
// MLA's shape, for the profile's measured MLA decode points. Without those
// (and for linear attention) attention is priced from KV bytes and FLOPs.
struct MlaHeads {
  int64_t heads = 0;
  int64_t latentDim = 0;
  int64_t ropeDim = 0;
};

struct ModuleCosts {
  ModuleKind kind = ModuleKind::Norm;
  // All of the module's weights; for routed experts, all experts together.
  int64_t weightBytes = 0;
  // FLOPs per token independent of context (projections, FFNs, norms).
  double flopsPerToken = 0;
  // Attention FLOPs per token per attended context token.
  double flopsPerContextToken = 0;
  int64_t kvBytesPerToken = 0;
  // Sliding window length; 0 attends to the whole context.
  int64_t kvWindowTokens = 0;
  // Fixed recurrent state per sequence (linear attention).
  int64_t stateBytesPerSequence = 0;
  // Routed experts: expert count, experts per token, bytes of one expert.
  int64_t numExperts = 0;
  int64_t topK = 0;
  int64_t expertWeightBytes = 0;
  // Routed experts held in fp8 or mxfp4 (runtime/model/WeightFormat.h): the
  // bytes the GPU reads and writes each pass to widen them to bf16 for its
  // GEMMs, and the bf16 scratch they are widened into (the largest matrix
  // of all experts). Both 0 for bf16 experts.
  int64_t widenBytes = 0;
  int64_t widenScratchBytes = 0;
  // fp8 experts: the CUDA backend's per-expert GEMMs multiply their codes
  // with inputs quantized on the fly (W8A8) instead of widening them.
  bool fp8Experts = false;
  // Step memory one batch row takes for the module's own buffers while it
  // runs (runtime/model/ActivationBytes.h); the values it reads and makes
  // are counted apart.
  int64_t activationRowBytes = 0;
  // GEMMs per token; for routed experts, those of one expert.
  std::vector<GemmShape> gemms;
  std::optional<AttentionHeads> attentionHeads;
  std::optional<MlaHeads> mlaHeads;
};

struct LayerCosts {
  std::vector<ModuleCosts> modules;
};

// Layers are the units weights stream in; embedding and LM head may sit in
// their own leading / trailing layer.
struct ModelCosts {
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  // Bytes of one activation element (bf16: 2).
  int64_t activationElementBytes = 2;
  // The KV caches' format (kvBytesPerToken is already priced in it); the
  // host's attention kernels run at another rate per byte for each.
  model::KvDtype kvDtype = model::KvDtype::bf16;
  std::vector<LayerCosts> layers;
};

// Where a module sits in ModelCosts: layers[layer].modules[module].
struct ModuleRef {
  int64_t layer = -1;
  int64_t module = -1;
};

// The cost model's numbering of a model's modules in program order: cost
// layer 0 holds what precedes the model's first layer (the embedding),
// cost layer l + 1 the model's layer l, the last one what follows the
// layers (final norm, LM head); modules are counted within their cost
// layer. The compiler builds ModelCosts in this order and the runtime
// numbers plan ops with it, so a schedule's (layer, module) names the same
// op on both sides.
class ModuleNumbering {
public:
  explicit ModuleNumbering(int64_t numLayers);
  // The next module in program order; `modelLayer` is -1 outside the
  // model's layers. Errors on a layer beyond the model's.
  Result<ModuleRef> next(int64_t modelLayer);

private:
  int64_t numLayers_;
  bool seenLayer_ = false;
  std::vector<int64_t> counts_; // modules so far per cost layer
};

// Rejects inconsistent costs (top-k above expert count, expert bytes not
// adding up, ...) with an error naming layer and module.
Status validateModelCosts(const ModelCosts &model);

// Tokens of context a module reads per sequence at `context` tokens.
int64_t attendedTokens(const ModuleCosts &module, int64_t context);

int64_t totalWeightBytes(const ModelCosts &model);

// KV plus state bytes the backends hold for one sequence of `context`
// tokens: of one module, and of all layers. A sliding window bounds what
// attention reads (attendedTokens), not what its cache keeps: a prompt's
// rows are all appended before any is attended.
int64_t heldKvBytes(const ModuleCosts &module, int64_t context);
int64_t kvBytesPerSequence(const ModelCosts &model, int64_t context);

} // namespace moe::costmodel
