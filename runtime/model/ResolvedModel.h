// A plan's model resolved once for every backend: each op's kind and
// dimensions, its weights as checked param indices, the values it reads and
// makes, and the caches and states the model keeps per sequence. Every check
// of the plan's ops is made here, once; a backend binds weights (whose sizes
// it may take as checked), allocates what the caches need and runs the ops.
// What a backend's kernels cannot run (head dims, expert counts) it still
// refuses itself.
#pragma once

#include "runtime/costmodel/CriticalPath.h"
#include "runtime/costmodel/ModelCosts.h"
#include "runtime/model/KvFormat.h"
#include "runtime/model/Rope.h"
#include "runtime/model/WeightFormat.h"
#include "runtime/schemas/plan_generated.h"
#include "runtime/support/Result.h"

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace moe::model {

// Weight fields are indices into the plan's params. A present one names a
// param holding exactly the elements the op needs, laid out as its comment
// says ([out, in] for a Linear); an optional weight the op lacks is kAbsent.
inline constexpr int kAbsent = -1;

struct EmbeddingSpec {
  int table; // [vocab, hidden]
  int64_t vocab, hidden;
};

struct NormSpec {
  int weight; // [width]
  int64_t width;
  double eps;
};

/// Softmax attention with grouped K/V heads.
struct AttentionSpec {
  int64_t hidden, heads, kvHeads, headDim;
  RopeParams rope; // rotaryDim 0: no rotation
  double scale;
  int q, o; // [heads·headDim, hidden], [hidden, heads·headDim]
  int k, v; // [kvHeads·headDim, hidden]; absent unless ownsKv
  int qBias, oBias, kBias, vBias; // optional; k and v's absent unless ownsKv
  plan::QKNorm qkNorm;
  // [headDim] (per_head) or the projection's width; absent without QK norm,
  // kNorm also unless ownsKv.
  int qNorm, kNorm;
  double qkEps;
  int64_t window; // 0: full; w: the token and the w − 1 before it
  int sinks;      // [heads], optional
  int cache;      // into ResolvedModel::kvCaches
  bool ownsKv;    // false: reads the cache of an earlier layer
};

/// DeepSeek's multi-head latent attention; the cache holds each token's
/// normed latent and roped k_pe.
struct LatentAttentionSpec {
  int64_t hidden, heads, qLoraRank, kvLoraRank, nope, ropeDim, vDim;
  RopeParams rope; // rotaryDim == ropeDim
  double scale, eps;
  int q;              // [heads·(nope + ropeDim), hidden]; qLoraRank 0 only
  int qA, qANorm, qB; // qLoraRank > 0 only
  int kvA;            // [kvLoraRank + ropeDim, hidden]
  int kvANorm;        // [kvLoraRank]
  int kvB;            // [heads·(nope + vDim), kvLoraRank]
  int o;              // [hidden, heads·vDim]
  int cache;          // into ResolvedModel::latentCaches
};

/// MiniMax's lightning attention: a decaying linear-attention state per head.
struct LightningSpec {
  int64_t hidden, heads, headDim, blockSize;
  double eps;
  std::vector<float> decays; // λ_h per head (lightningDecays)
  int qkv;                   // [3·heads·headDim, hidden], per head q|k|v
  int gate;                  // [heads·headDim, hidden]
  int norm;                  // [heads·headDim]
  int out;                   // [hidden, heads·headDim]
  int state;                 // into ResolvedModel::lightningStates
};

struct RouterSpec {
  int64_t hidden, experts, topK;
  plan::RouterScoring scoring;
  plan::RouterSelection selection;
  int64_t groups, keptGroups;
  bool normalize;
  double scaling;
  int weight;     // [experts, hidden]
  int bias;       // [experts], optional: added to the logits
  int correction; // [experts], optional: steers selection only (noaux_tc)
};

/// Routed experts. The layout and activation go together: separate gate/up
/// with SiLU, or GPT-OSS's fused gate_up with the clamped SwiGLU.
struct ExpertsSpec {
  int64_t hidden, width, experts, topK;
  plan::ExpertActivation activation;
  plan::ExpertLayout layout;
  double limit, alpha; // swiglu_clamped
  int gate, up;        // separate: [E, width, hidden] each
  int gateUp;     // fused: [E, hidden, 2·width], gate|up columns alternating
  int gateUpBias; // fused, optional: [E, 2·width], alternating
  int down;       // separate: [E, hidden, width]; fused: [E, width, hidden]
  int downBias;   // optional: [E, hidden]
  bool clamped() const {
    return activation == plan::ExpertActivation::swiglu_clamped;
  }
};

/// A gated SiLU MLP: a dense layer's, or a MoE layer's shared experts.
struct MlpSpec {
  int64_t hidden, width;
  int gate, up, down; // [width, hidden], [width, hidden], [hidden, width]
  int outputGate;     // [hidden], optional: σ(x·g) scales the output
  bool sharedExperts;
};

/// skip·skipScale + update·updateScale.
struct ResidualSpec {
  int64_t width;
  double skipScale, updateScale;
};

/// Logits of the batch's logit rows only.
struct HeadSpec {
  int weight; // [vocab, hidden]
  int64_t vocab, hidden;
};

/// The alternatives of OpSpec, in its order.
enum class OpKind {
  embedding,
  norm,
  attention,
  latentAttention,
  lightning,
  router,
  experts,
  mlp,
  residual,
  head
};

using OpSpec = std::variant<EmbeddingSpec, NormSpec, AttentionSpec,
                            LatentAttentionSpec, LightningSpec, RouterSpec,
                            ExpertsSpec, MlpSpec, ResidualSpec, HeadSpec>;

struct ResolvedOp {
  OpSpec spec;
  // Value ids. Operands: embedding (token ids), experts (activations, route
  // weights, route indices), residual (skip, update), others one activation.
  // Results: the router's route weights and indices, others one value.
  std::vector<int> operands, results;
  int layer = -1; // -1: embedding, final norm, LM head
  // Where the stats count the op's time: the planner's stage of its module
  // (costmodel::stageName), so measured and predicted stages line up.
  costmodel::Stage stage;
  // The op's module in the cost model's numbering (costmodel::
  // ModuleNumbering), which the plan's schedule uses; residual adds are no
  // module: {-1, -1}.
  costmodel::ModuleRef module;

  OpKind kind() const { return static_cast<OpKind>(spec.index()); }
};

/// What a value holds, so that no op reads rows it does not expect.
enum class ValueKind {
  undefined, // no op makes it
  tokens,    // value 0: one token id per row
  activations,
  routeWeights,
  routeIndices,
  logits // one row per logit row of the batch
};

struct ValueInfo {
  ValueKind kind = ValueKind::undefined;
  int64_t width = 0;   // per row
  int64_t experts = 0; // route indices: the router's expert count
  int definedBy = -1;  // the op making it; -1: the token ids, or no op
  // The last op reading it, after which it is dead; the logits live to the
  // end (ops.size()); -1: never read.
  int lastUse = -1;
};

/// Softmax attention's K and V of one layer, per slot and position
/// [kvHeads·headDim] each. Layers with a kv_source_layer read their source's.
struct KvCacheSpec {
  int64_t kvHeads, headDim;
  int layer;
  int64_t width() const { return kvHeads * headDim; }
  // Bytes of a token's K (or V) row; fp8 scales each head.
  int64_t rowBytes(KvDtype dtype) const {
    return kvRowBytes(dtype, kvHeads, headDim);
  }
};

/// MLA's cache of one layer, per slot and position: the normed latent then
/// the roped k_pe.
struct LatentCacheSpec {
  int64_t width; // kvLoraRank + ropeDim
  int layer;
  int64_t ropeDim; // fp8 scales groups of this many elements
  int64_t rowBytes(KvDtype dtype) const {
    return latentRowBytes(dtype, width - ropeDim, ropeDim);
  }
};

/// Lightning attention's state of one layer, per slot:
/// [heads][headDim][headDim] (d_k × d_v), fp32, zero for a new sequence.
struct LightningStateSpec {
  int64_t heads, headDim;
  int layer;
  int64_t elementsPerSlot() const { return heads * headDim * headDim; }
};

/// The elements a param holds: the product of its shape.
int64_t paramElements(const plan::Param &param);

/// The KV format a plan's batching names (bf16 without one).
KvDtype kvDtypeOf(const plan::Plan &plan);
/// The routed experts' weight format a plan's batching names (bf16 without
/// one).
WeightDtype expertDtypeOf(const plan::Plan &plan);

struct ResolvedModel {
  /// Resolves a verified plan model (LoadedPlan). Errors name the op as
  /// "op 7 (Attention, layer 2): ...".
  static Result<ResolvedModel> resolve(const plan::Model &model);
  /// The plan's model with the KV and expert formats its batching was
  /// planned for.
  static Result<ResolvedModel> resolve(const plan::Plan &plan);

  KvDtype kvDtype = KvDtype::bf16;             // of every KV and latent cache
  WeightDtype expertDtype = WeightDtype::bf16; // of routed experts' matrices

  std::string modelType; // HF's model_type, e.g. "gpt_oss"
  std::vector<ResolvedOp> ops;
  std::vector<ValueInfo> values; // by value id
  int logits = 0;                // the value an LM head makes
  std::vector<KvCacheSpec> kvCaches;
  std::vector<LatentCacheSpec> latentCaches;
  std::vector<LightningStateSpec> lightningStates;
  int64_t embeddingVocab = 0; // token ids are in [0, embeddingVocab)
  int64_t hidden = 0;         // the embedding's width
  int64_t headVocab = 0;      // the logits' width
  // The op of each module, by the cost model's (layer, module).
  std::map<std::pair<int64_t, int64_t>, int> opOfModule;
};

} // namespace moe::model
