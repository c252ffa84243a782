#include "runtime/model/ResolvedModel.h"

#include "runtime/model/Lightning.h"
#include "runtime/plan/LoadedPlan.h"

#include <algorithm>

namespace moe::model {
namespace {

using costmodel::Stage;

// OpKind k names OpSpec's alternative k.
template <OpKind kind>
using SpecOf = std::variant_alternative_t<static_cast<size_t>(kind), OpSpec>;
static_assert(std::is_same_v<SpecOf<OpKind::embedding>, EmbeddingSpec> &&
              std::is_same_v<SpecOf<OpKind::lightning>, LightningSpec> &&
              std::is_same_v<SpecOf<OpKind::head>, HeadSpec> &&
              std::variant_size_v<OpSpec> == size_t(OpKind::head) + 1);

// Ops' dimensions obey the params' bound (kMaxDimension) too.
bool withinDimensions(std::initializer_list<int64_t> dimensions) {
  return std::all_of(dimensions.begin(), dimensions.end(),
                     [](int64_t d) { return d <= kMaxDimension; });
}

template <typename... Ts> struct Overloaded : Ts... {
  using Ts::operator()...;
};
// Clang before 17 deduces no aggregate's template arguments by itself.
template <typename... Ts> Overloaded(Ts...) -> Overloaded<Ts...>;

/// The values an op of each module reads, by kind, and how many it makes.
struct Signature {
  std::vector<ValueKind> operands;
  size_t results = 1;
};

Signature signatureOf(plan::Module module) {
  switch (module) {
  case plan::Module::Embedding:
    return {{ValueKind::tokens}};
  case plan::Module::Router:
    return {{ValueKind::activations}, 2};
  case plan::Module::Experts:
    return {{ValueKind::activations, ValueKind::routeWeights,
             ValueKind::routeIndices}};
  case plan::Module::Residual:
    return {{ValueKind::activations, ValueKind::activations}};
  default:
    return {{ValueKind::activations}};
  }
}

const char *describe(ValueKind kind) {
  switch (kind) {
  case ValueKind::tokens:
    return "the token ids";
  case ValueKind::activations:
    return "an activation";
  default:
    return "a router result";
  }
}

/// What the op's results hold.
std::vector<ValueInfo> resultsOf(const OpSpec &spec) {
  auto activations = [](int64_t width) {
    return std::vector<ValueInfo>{{ValueKind::activations, width}};
  };
  return std::visit(
      Overloaded{[&](const EmbeddingSpec &s) { return activations(s.hidden); },
                 [&](const NormSpec &s) { return activations(s.width); },
                 [&](const ResidualSpec &s) { return activations(s.width); },
                 [](const RouterSpec &s) {
                   return std::vector<ValueInfo>{
                       {ValueKind::routeWeights, s.topK},
                       {ValueKind::routeIndices, s.topK, s.experts}};
                 },
                 [](const HeadSpec &s) {
                   return std::vector<ValueInfo>{{ValueKind::logits, s.vocab}};
                 },
                 [&](const auto &s) { return activations(s.hidden); }},
      spec);
}

/// The planner's stage of the op's module (MoECost.cpp's getModuleKind).
Stage stageOf(const OpSpec &spec) {
  return std::visit(
      Overloaded{[](const EmbeddingSpec &) { return Stage::Embedding; },
                 [](const NormSpec &) { return Stage::Norm; },
                 [](const AttentionSpec &) { return Stage::Attention; },
                 [](const LatentAttentionSpec &) { return Stage::Attention; },
                 [](const LightningSpec &) { return Stage::Attention; },
                 [](const RouterSpec &) { return Stage::Router; },
                 [](const ExpertsSpec &) { return Stage::Experts; },
                 [](const MlpSpec &s) {
                   return s.sharedExperts ? Stage::SharedExperts
                                          : Stage::DenseMlp;
                 },
                 [](const ResidualSpec &) { return Stage::Residual; },
                 [](const HeadSpec &) { return Stage::LmHead; }},
      spec);
}

class Resolver {
public:
  explicit Resolver(const plan::Model &model)
      : model_(model), numbering_(model.num_layers()) {}

  Result<ResolvedModel> resolve() {
    int numValues = model_.num_values();
    if (numValues <= 0)
      return makeError("the plan defines no values");
    out_.modelType = model_.model_type()->str();
    out_.logits = model_.logits();
    out_.values.assign(numValues, ValueInfo{});
    out_.values[0] = {ValueKind::tokens, 1};
    const auto &ops = *model_.ops();
    for (uint32_t index = 0; index < ops.size(); ++index) {
      const plan::Op &op = *ops.Get(index);
      Status status = add(op, static_cast<int>(index));
      if (!status.ok())
        return status.error().withContext(
            fmt::format("op {} ({}, layer {})", index,
                        plan::EnumNameModule(op.spec_type()), op.layer()));
    }
    if (out_.logits <= 0 || out_.logits >= numValues ||
        out_.values[out_.logits].kind != ValueKind::logits)
      return makeError("the logits value {} is not an LM head's result",
                       out_.logits);
    out_.headVocab = out_.values[out_.logits].width;
    out_.values[out_.logits].lastUse = static_cast<int>(out_.ops.size());
    return std::move(out_);
  }

private:
  Status add(const plan::Op &op, int index) {
    ResolvedOp resolved;
    resolved.operands.assign(op.operands()->begin(), op.operands()->end());
    resolved.results.assign(op.results()->begin(), op.results()->end());
    resolved.layer = op.layer();
    Signature signature = signatureOf(op.spec_type());
    if (resolved.operands.size() != signature.operands.size() ||
        resolved.results.size() != signature.results)
      return makeError("expects {} operands and {} results",
                       signature.operands.size(), signature.results);
    int numValues = static_cast<int>(out_.values.size());
    for (int value : resolved.operands)
      if (value < 0 || value >= numValues)
        return makeError("operand value {} does not exist", value);
    for (int value : resolved.results)
      if (value <= 0 || value >= numValues)
        return makeError("result value {} is invalid", value);
    for (size_t i = 0; i < signature.operands.size(); ++i)
      if (out_.values[resolved.operands[i]].kind != signature.operands[i])
        return makeError("operand {} (value {}) is not {}", i,
                         resolved.operands[i], describe(signature.operands[i]));
    Result<OpSpec> spec = resolveSpec(op, resolved.operands);
    if (!spec.ok())
      return spec.error();
    resolved.spec = std::move(*spec);
    resolved.stage = stageOf(resolved.spec);
    if (resolved.kind() != OpKind::residual) {
      MOE_ASSIGN_OR_RETURN(resolved.module, numbering_.next(op.layer()));
      out_.opOfModule[{resolved.module.layer, resolved.module.module}] = index;
    }
    std::vector<ValueInfo> results = resultsOf(resolved.spec);
    for (size_t r = 0; r < results.size(); ++r) {
      results[r].definedBy = index;
      out_.values[resolved.results[r]] = results[r];
    }
    for (int value : resolved.operands)
      out_.values[value].lastUse = index;
    out_.ops.push_back(std::move(resolved));
    return Status::success();
  }

  Result<OpSpec> resolveSpec(const plan::Op &op,
                             const std::vector<int> &operands) {
    int64_t in = out_.values[operands[0]].width;
    switch (op.spec_type()) {
    case plan::Module::Embedding:
      return widen(embedding(*op.spec_as_Embedding()));
    case plan::Module::RMSNorm:
      return widen(norm(*op.spec_as_RMSNorm(), in));
    case plan::Module::Attention:
      return widen(attention(*op.spec_as_Attention(), in, op.layer()));
    case plan::Module::MLAttention:
      return widen(latentAttention(*op.spec_as_MLAttention(), in, op.layer()));
    case plan::Module::LightningAttention:
      return widen(lightning(*op.spec_as_LightningAttention(), in, op.layer()));
    case plan::Module::Router:
      return widen(router(*op.spec_as_Router(), in));
    case plan::Module::Experts:
      return widen(experts(*op.spec_as_Experts(), in, out_.values[operands[1]],
                           out_.values[operands[2]]));
    case plan::Module::MLP:
      return widen(mlp(*op.spec_as_MLP(), in));
    case plan::Module::Residual:
      return widen(
          residual(*op.spec_as_Residual(), in, out_.values[operands[1]].width));
    case plan::Module::LMHead:
      return widen(head(*op.spec_as_LMHead(), in));
    case plan::Module::NONE:
      break;
    }
    return makeError("unsupported module");
  }

  template <typename Spec> static Result<OpSpec> widen(Result<Spec> spec) {
    if (!spec.ok())
      return spec.error();
    return OpSpec(std::move(*spec));
  }

  /// Whether an op reads a weight: always, where the plan gives one, or not
  /// at all (a weight of the op's other form, whose index is ignored).
  enum class Use { required, optional, unused };
  static Use when(bool read, Use use = Use::required) {
    return read ? use : Use::unused;
  }

  /// One weight of an op: the spec's field, the plan's index, the elements
  /// the op needs and the plan's name for it.
  struct Weight {
    int &field;
    int index;
    int64_t size;
    const char *name;
    Use use = Use::required;
  };

  /// Sets each weight's field to its index once the param is found to hold
  /// exactly `size` elements, or to kAbsent for one the op goes without.
  Status bind(std::initializer_list<Weight> weights) {
    const auto &params = *model_.params();
    for (const Weight &w : weights) {
      w.field = kAbsent;
      if (w.use == Use::unused || (w.use == Use::optional && w.index < 0))
        continue;
      if (w.index < 0)
        return makeError("'{}' is missing", w.name);
      if (w.index >= static_cast<int>(params.size()))
        return makeError("'{}' refers to param {}, which does not exist",
                         w.name, w.index);
      int64_t have = paramElements(*params.Get(w.index));
      if (have != w.size)
        return makeError("'{}' (param {}) has {} values, the op needs {}",
                         w.name, w.index, have, w.size);
      w.field = w.index;
    }
    return Status::success();
  }

  /// The first dimension of param `index`, 0 if there is no such param.
  int64_t rows(int index) const {
    const auto &params = *model_.params();
    return index >= 0 && index < static_cast<int>(params.size())
               ? params.Get(index)->shape()->Get(0)
               : 0;
  }

  Result<RopeParams> rope(const plan::Rope &plan, int64_t limit) {
    RopeParams p = RopeParams::fromPlan(plan);
    if (p.rotaryDim < 0 || p.rotaryDim % 2 != 0 || p.rotaryDim > limit)
      return makeError("rope rotary_dim {} must be even and at most {}",
                       p.rotaryDim, limit);
    if (p.rotaryDim > 0 && !(p.theta > 1.0))
      return makeError("rope theta {} must exceed 1", p.theta);
    if (p.yarn && (!(p.factor > 0) || p.originalMaxPosition <= 0))
      return makeError("yarn rope needs a positive factor and "
                       "original_max_position");
    return p;
  }

  Result<EmbeddingSpec> embedding(const plan::Embedding &e) {
    EmbeddingSpec s{.vocab = rows(e.table())};
    if (s.vocab > 0) {
      const auto &shape = *model_.params()->Get(e.table())->shape();
      if (shape.size() != 2)
        return makeError("needs a [vocab, hidden] table");
      s.hidden = shape.Get(1);
    }
    MOE_RETURN_IF_ERROR(
        bind({{s.table, e.table(), s.vocab * s.hidden, "table"}}));
    out_.embeddingVocab = s.vocab;
    out_.hidden = s.hidden;
    return s;
  }

  Result<NormSpec> norm(const plan::RMSNorm &n, int64_t in) {
    NormSpec s{.width = in, .eps = n.eps()};
    MOE_RETURN_IF_ERROR(bind({{s.weight, n.weight(), in, "weight"}}));
    return s;
  }

  Result<AttentionSpec> attention(const plan::Attention &a, int64_t hidden,
                                  int layer) {
    AttentionSpec s{.hidden = hidden,
                    .heads = a.num_heads(),
                    .kvHeads = a.num_kv_heads(),
                    .headDim = a.head_dim(),
                    .scale = a.scale(),
                    .qkNorm = a.qk_norm(),
                    .qkEps = a.qk_norm_eps(),
                    .window = a.sliding_window(),
                    .ownsKv = a.kv_source_layer() < 0};
    if (s.heads <= 0 || s.kvHeads <= 0 || s.headDim <= 0 ||
        s.heads % s.kvHeads != 0 || !withinDimensions({s.heads, s.headDim}))
      return makeError("heads {} / kv heads {} / head_dim {} are invalid",
                       s.heads, s.kvHeads, s.headDim);
    Result<RopeParams> rotation = rope(*a.rope(), s.headDim);
    if (!rotation.ok())
      return rotation.error();
    s.rope = *rotation;
    int64_t qw = s.heads * s.headDim, kvw = s.kvHeads * s.headDim;
    // QK norm weights are per head (one for all heads) or over the whole
    // projection; K's and V's weights only where the layer makes its own.
    bool normed = s.qkNorm != plan::QKNorm::none;
    bool perHead = s.qkNorm == plan::QKNorm::per_head;
    MOE_RETURN_IF_ERROR(bind({
        {s.q, a.q(), qw * hidden, "q"},
        {s.o, a.out(), hidden * qw, "o"},
        {s.qBias, a.q_bias(), qw, "q_bias", Use::optional},
        {s.oBias, a.o_bias(), hidden, "o_bias", Use::optional},
        {s.sinks, a.sinks(), s.heads, "sinks", Use::optional},
        {s.qNorm, a.q_norm(), perHead ? s.headDim : qw, "q_norm", when(normed)},
    }));
    if (s.window < 0)
      return makeError("sliding_window {} is negative", s.window);
    MOE_RETURN_IF_ERROR(bind({
        {s.k, a.k(), kvw * hidden, "k", when(s.ownsKv)},
        {s.v, a.v(), kvw * hidden, "v", when(s.ownsKv)},
        {s.kBias, a.k_bias(), kvw, "k_bias", when(s.ownsKv, Use::optional)},
        {s.vBias, a.v_bias(), kvw, "v_bias", when(s.ownsKv, Use::optional)},
        {s.kNorm, a.k_norm(), perHead ? s.headDim : kvw, "k_norm",
         when(s.ownsKv && normed)},
    }));
    if (s.ownsKv) {
      s.cache = static_cast<int>(out_.kvCaches.size());
      out_.kvCaches.push_back({s.kvHeads, s.headDim, layer});
      return s;
    }
    auto source = std::find_if(
        out_.kvCaches.begin(), out_.kvCaches.end(),
        [&](const KvCacheSpec &c) { return c.layer == a.kv_source_layer(); });
    if (source == out_.kvCaches.end())
      return makeError("kv_source_layer {} has no K/V cache before this op",
                       a.kv_source_layer());
    if (source->kvHeads != s.kvHeads || source->headDim != s.headDim)
      return makeError("kv_source_layer {} caches {} heads of {}, this layer "
                       "reads {} of {}",
                       a.kv_source_layer(), source->kvHeads, source->headDim,
                       s.kvHeads, s.headDim);
    s.cache = static_cast<int>(source - out_.kvCaches.begin());
    return s;
  }

  Result<LatentAttentionSpec> latentAttention(const plan::MLAttention &a,
                                              int64_t hidden, int layer) {
    LatentAttentionSpec s{.hidden = hidden,
                          .heads = a.num_heads(),
                          .qLoraRank = a.q_lora_rank(),
                          .kvLoraRank = a.kv_lora_rank(),
                          .nope = a.qk_nope_head_dim(),
                          .ropeDim = a.qk_rope_head_dim(),
                          .vDim = a.v_head_dim(),
                          .scale = a.scale(),
                          .eps = a.norm_eps()};
    if (s.heads <= 0 || s.qLoraRank < 0 || s.kvLoraRank <= 0 || s.nope < 0 ||
        s.ropeDim <= 0 || s.vDim <= 0 ||
        !withinDimensions(
            {s.heads, s.qLoraRank, s.kvLoraRank, s.nope, s.ropeDim, s.vDim}))
      return makeError("MLA dimensions are invalid");
    if (a.rope()->rotary_dim() != s.ropeDim)
      return makeError("rope rotary_dim {} differs from qk_rope_head_dim {}",
                       a.rope()->rotary_dim(), s.ropeDim);
    Result<RopeParams> rotation = rope(*a.rope(), s.ropeDim);
    if (!rotation.ok())
      return rotation.error();
    s.rope = *rotation;
    // q in one projection, or through the low rank qLoraRank.
    int64_t qw = s.heads * (s.nope + s.ropeDim), rank = s.qLoraRank;
    bool lowRank = rank > 0;
    MOE_RETURN_IF_ERROR(bind({
        {s.q, a.q(), qw * hidden, "q", when(!lowRank)},
        {s.qA, a.q_a(), rank * hidden, "q_a", when(lowRank)},
        {s.qANorm, a.q_a_norm(), rank, "q_a_norm", when(lowRank)},
        {s.qB, a.q_b(), qw * rank, "q_b", when(lowRank)},
        {s.kvA, a.kv_a(), (s.kvLoraRank + s.ropeDim) * hidden, "kv_a"},
        {s.kvANorm, a.kv_a_norm(), s.kvLoraRank, "kv_a_norm"},
        {s.kvB, a.kv_b(), s.heads * (s.nope + s.vDim) * s.kvLoraRank, "kv_b"},
        {s.o, a.out(), hidden * s.heads * s.vDim, "o"},
    }));
    s.cache = static_cast<int>(out_.latentCaches.size());
    out_.latentCaches.push_back({s.kvLoraRank + s.ropeDim, layer, s.ropeDim});
    return s;
  }

  Result<LightningSpec> lightning(const plan::LightningAttention &a,
                                  int64_t hidden, int layer) {
    LightningSpec s{.hidden = hidden,
                    .heads = a.num_heads(),
                    .headDim = a.head_dim(),
                    .blockSize = a.block_size(),
                    .eps = a.norm_eps()};
    if (s.heads <= 0 || s.headDim <= 0 || s.blockSize <= 0 ||
        !withinDimensions({s.heads, s.headDim}))
      return makeError("lightning heads, head_dim and block_size must be "
                       "positive and at most {}",
                       kMaxDimension);
    int64_t w = s.heads * s.headDim;
    MOE_RETURN_IF_ERROR(bind({
        {s.qkv, a.qkv(), 3 * w * hidden, "qkv"},
        {s.gate, a.gate(), w * hidden, "gate"},
        {s.norm, a.norm(), w, "norm"},
        {s.out, a.out(), hidden * w, "out"},
    }));
    s.decays = lightningDecays(s.heads, a.decay_scale());
    s.state = static_cast<int>(out_.lightningStates.size());
    out_.lightningStates.push_back({s.heads, s.headDim, layer});
    return s;
  }

  Result<RouterSpec> router(const plan::Router &r, int64_t hidden) {
    RouterSpec s{.hidden = hidden,
                 .experts = r.num_experts(),
                 .topK = r.top_k(),
                 .scoring = r.scoring(),
                 .selection = r.selection(),
                 .groups = r.n_group(),
                 .keptGroups = r.topk_group(),
                 .normalize = r.normalize(),
                 .scaling = r.scaling()};
    if (!withinDimensions({s.experts}))
      return makeError("router: {} experts, beyond {}", s.experts,
                       kMaxDimension);
    if (s.topK <= 0 || s.topK > s.experts)
      return makeError("router top_k {} is not in 1..{}", s.topK, s.experts);
    if (s.groups <= 0 || s.experts % s.groups != 0 || s.keptGroups <= 0 ||
        s.keptGroups > s.groups)
      return makeError("router groups {} / kept {} do not fit {} experts",
                       s.groups, s.keptGroups, s.experts);
    MOE_RETURN_IF_ERROR(bind({
        {s.weight, r.weight(), s.experts * hidden, "weight"},
        {s.bias, r.bias(), s.experts, "bias", Use::optional},
        {s.correction, r.correction_bias(), s.experts, "correction_bias",
         Use::optional},
    }));
    return s;
  }

  Result<ExpertsSpec> experts(const plan::Experts &e, int64_t hidden,
                              const ValueInfo &routeWeights,
                              const ValueInfo &routeIndices) {
    ExpertsSpec s{.hidden = hidden,
                  .width = e.intermediate_size(),
                  .experts = e.num_experts(),
                  .topK = routeWeights.width,
                  .activation = e.activation(),
                  .layout = e.layout(),
                  .limit = e.swiglu_limit(),
                  .alpha = e.swiglu_alpha()};
    if (routeWeights.width != routeIndices.width ||
        routeIndices.experts > s.experts)
      return makeError("the routing weights and indices do not match "
                       "{} experts",
                       s.experts);
    int64_t n = s.experts, h = hidden, w = s.width;
    if (n <= 0 || w <= 0 || !withinDimensions({n, w}))
      return makeError("experts and intermediate_size must be positive and "
                       "at most {}",
                       kMaxDimension);
    bool separate = s.layout == plan::ExpertLayout::separate;
    if (separate && s.clamped())
      return makeError("swiglu_clamped needs the fused layout");
    if (separate && e.gate_up_bias() >= 0)
      return makeError("gate_up_bias needs the fused layout");
    if (!separate && !s.clamped())
      return makeError("the fused layout needs swiglu_clamped");
    MOE_RETURN_IF_ERROR(bind({
        {s.downBias, e.down_bias(), n * h, "down_bias", Use::optional},
        {s.gate, e.gate(), n * w * h, "gate", when(separate)},
        {s.up, e.up(), n * w * h, "up", when(separate)},
        {s.gateUp, e.gate_up(), n * h * 2 * w, "gate_up", when(!separate)},
        {s.gateUpBias, e.gate_up_bias(), n * 2 * w, "gate_up_bias",
         when(!separate, Use::optional)},
        {s.down, e.down(), n * w * h, "down"},
    }));
    return s;
  }

  Result<MlpSpec> mlp(const plan::MLP &m, int64_t hidden) {
    MlpSpec s{.hidden = hidden,
              .width = m.intermediate_size(),
              .sharedExperts = m.shared_experts()};
    if (s.width <= 0 || !withinDimensions({s.width}))
      return makeError("intermediate_size must be positive and at most {}",
                       kMaxDimension);
    MOE_RETURN_IF_ERROR(bind({
        {s.gate, m.gate(), s.width * hidden, "gate"},
        {s.up, m.up(), s.width * hidden, "up"},
        {s.down, m.down(), hidden * s.width, "down"},
        {s.outputGate, m.output_gate(), hidden, "output_gate", Use::optional},
    }));
    return s;
  }

  Result<ResidualSpec> residual(const plan::Residual &r, int64_t skip,
                                int64_t update) {
    if (update != skip)
      return makeError("skip and update differ in width");
    return ResidualSpec{skip, r.skip_scale(), r.update_scale()};
  }

  Result<HeadSpec> head(const plan::LMHead &h, int64_t hidden) {
    HeadSpec s{.vocab = rows(h.weight()), .hidden = hidden};
    MOE_RETURN_IF_ERROR(
        bind({{s.weight, h.weight(), s.vocab * hidden, "weight"}}));
    return s;
  }

  const plan::Model &model_;
  costmodel::ModuleNumbering numbering_;
  ResolvedModel out_;
};

} // namespace

int64_t paramElements(const plan::Param &param) {
  int64_t n = 1;
  for (int64_t dim : *param.shape())
    n *= dim;
  return n;
}

Result<ResolvedModel> ResolvedModel::resolve(const plan::Model &model) {
  return Resolver(model).resolve();
}

KvDtype kvDtypeOf(const plan::Plan &plan) {
  const plan::Batching *batching = plan.batching();
  return batching && batching->kv_dtype() == plan::KvDType::fp8
             ? KvDtype::fp8
             : KvDtype::bf16;
}

WeightDtype expertDtypeOf(const plan::Plan &plan) {
  const plan::Batching *batching = plan.batching();
  if (!batching)
    return WeightDtype::bf16;
  switch (batching->weight_dtype()) {
  case plan::WeightDType::fp8:
    return WeightDtype::fp8;
  case plan::WeightDType::mxfp4:
    return WeightDtype::mxfp4;
  default:
    return WeightDtype::bf16;
  }
}

Result<ResolvedModel> ResolvedModel::resolve(const plan::Plan &plan) {
  MOE_ASSIGN_OR_RETURN(ResolvedModel model, resolve(*plan.model()));
  model.kvDtype = kvDtypeOf(plan);
  model.expertDtype = expertDtypeOf(plan);
  if (model.kvDtype == KvDtype::fp8)
    for (const LatentCacheSpec &cache : model.latentCaches)
      if (cache.width % cache.ropeDim != 0)
        return makeError("an fp8 latent cache scales groups of the rope "
                         "dim ({}), which must divide its width {} (layer {})",
                         cache.ropeDim, cache.width, cache.layer);
  return model;
}

} // namespace moe::model
