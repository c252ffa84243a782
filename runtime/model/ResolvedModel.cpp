#include "runtime/model/ResolvedModel.h"

#include "runtime/model/Lightning.h"

#include <algorithm>

namespace moe::model {
namespace {

using costmodel::Stage;

template <typename... Ts> struct Overloaded : Ts... {
  using Ts::operator()...;
};

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

int64_t elements(const plan::Param &param) {
  int64_t n = 1;
  for (int64_t dim : *param.shape())
    n *= dim;
  return n;
}

class Resolver {
public:
  explicit Resolver(const plan::Model &model) : model_(model) {}

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

  /// Checks that weight `index` exists with `size` elements; an optional one
  /// may be absent (any negative index becomes kAbsent).
  Status param(int &index, int64_t size, const char *field,
               bool optional = false) {
    if (index < 0) {
      index = kAbsent;
      return optional ? Status::success()
                      : Status(makeError("'{}' is missing", field));
    }
    const auto &params = *model_.params();
    if (index >= static_cast<int>(params.size()))
      return makeError("'{}' refers to param {}, which does not exist", field,
                       index);
    int64_t have = elements(*params.Get(index));
    if (have != size)
      return makeError("'{}' (param {}) has {} values, the op needs {}", field,
                       index, have, size);
    return Status::success();
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
    EmbeddingSpec s{e.table(), 0, 0};
    const auto &params = *model_.params();
    if (s.table >= 0 && s.table < static_cast<int>(params.size())) {
      const auto &shape = *params.Get(s.table)->shape();
      if (shape.size() != 2)
        return makeError("needs a [vocab, hidden] table");
      s.vocab = shape.Get(0);
      s.hidden = shape.Get(1);
    }
    MOE_RETURN_IF_ERROR(param(s.table, s.vocab * s.hidden, "table"));
    out_.embeddingVocab = s.vocab;
    out_.hidden = s.hidden;
    return s;
  }

  Result<NormSpec> norm(const plan::RMSNorm &n, int64_t in) {
    NormSpec s{n.weight(), in, n.eps()};
    MOE_RETURN_IF_ERROR(param(s.weight, in, "weight"));
    return s;
  }

  Result<AttentionSpec> attention(const plan::Attention &a, int64_t hidden,
                                  int layer) {
    AttentionSpec s{};
    s.hidden = hidden;
    s.heads = a.num_heads();
    s.kvHeads = a.num_kv_heads();
    s.headDim = a.head_dim();
    if (s.heads <= 0 || s.kvHeads <= 0 || s.headDim <= 0 ||
        s.heads % s.kvHeads != 0)
      return makeError("heads {} / kv heads {} / head_dim {} are invalid",
                       s.heads, s.kvHeads, s.headDim);
    Result<RopeParams> rotation = rope(*a.rope(), s.headDim);
    if (!rotation.ok())
      return rotation.error();
    s.rope = *rotation;
    s.scale = a.scale();
    s.ownsKv = a.kv_source_layer() < 0;
    int64_t qw = s.heads * s.headDim, kvw = s.kvHeads * s.headDim;
    s.q = a.q();
    s.o = a.o();
    s.qBias = a.q_bias();
    s.oBias = a.o_bias();
    s.sinks = a.sinks();
    MOE_RETURN_IF_ERROR(param(s.q, qw * hidden, "q"));
    MOE_RETURN_IF_ERROR(param(s.o, hidden * qw, "o"));
    MOE_RETURN_IF_ERROR(param(s.qBias, qw, "q_bias", true));
    MOE_RETURN_IF_ERROR(param(s.oBias, hidden, "o_bias", true));
    MOE_RETURN_IF_ERROR(param(s.sinks, s.heads, "sinks", true));
    s.qkNorm = a.qk_norm();
    s.qkEps = a.qk_norm_eps();
    bool normed = s.qkNorm != plan::QKNorm::none;
    bool perHead = s.qkNorm == plan::QKNorm::per_head;
    s.qNorm = normed ? a.q_norm() : kAbsent;
    if (normed)
      MOE_RETURN_IF_ERROR(param(s.qNorm, perHead ? s.headDim : qw, "q_norm"));
    if (a.sliding_window() < 0)
      return makeError("sliding_window {} is negative", a.sliding_window());
    s.window = a.sliding_window();
    s.k = s.v = s.kBias = s.vBias = s.kNorm = kAbsent;
    if (s.ownsKv) {
      s.k = a.k();
      s.v = a.v();
      s.kBias = a.k_bias();
      s.vBias = a.v_bias();
      MOE_RETURN_IF_ERROR(param(s.k, kvw * hidden, "k"));
      MOE_RETURN_IF_ERROR(param(s.v, kvw * hidden, "v"));
      MOE_RETURN_IF_ERROR(param(s.kBias, kvw, "k_bias", true));
      MOE_RETURN_IF_ERROR(param(s.vBias, kvw, "v_bias", true));
      if (normed) {
        s.kNorm = a.k_norm();
        MOE_RETURN_IF_ERROR(
            param(s.kNorm, perHead ? s.headDim : kvw, "k_norm"));
      }
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
    LatentAttentionSpec s{};
    s.hidden = hidden;
    s.heads = a.num_heads();
    s.qLoraRank = a.q_lora_rank();
    s.kvLoraRank = a.kv_lora_rank();
    s.nope = a.qk_nope_head_dim();
    s.ropeDim = a.qk_rope_head_dim();
    s.vDim = a.v_head_dim();
    if (s.heads <= 0 || s.qLoraRank < 0 || s.kvLoraRank <= 0 || s.nope < 0 ||
        s.ropeDim <= 0 || s.vDim <= 0)
      return makeError("MLA dimensions are invalid");
    if (a.rope()->rotary_dim() != s.ropeDim)
      return makeError("rope rotary_dim {} differs from qk_rope_head_dim {}",
                       a.rope()->rotary_dim(), s.ropeDim);
    Result<RopeParams> rotation = rope(*a.rope(), s.ropeDim);
    if (!rotation.ok())
      return rotation.error();
    s.rope = *rotation;
    s.scale = a.scale();
    s.eps = a.norm_eps();
    int64_t qw = s.heads * (s.nope + s.ropeDim);
    s.q = s.qA = s.qANorm = s.qB = kAbsent;
    if (s.qLoraRank > 0) {
      s.qA = a.q_a();
      s.qANorm = a.q_a_norm();
      s.qB = a.q_b();
      MOE_RETURN_IF_ERROR(param(s.qA, s.qLoraRank * hidden, "q_a"));
      MOE_RETURN_IF_ERROR(param(s.qANorm, s.qLoraRank, "q_a_norm"));
      MOE_RETURN_IF_ERROR(param(s.qB, qw * s.qLoraRank, "q_b"));
    } else {
      s.q = a.q();
      MOE_RETURN_IF_ERROR(param(s.q, qw * hidden, "q"));
    }
    s.kvA = a.kv_a();
    s.kvANorm = a.kv_a_norm();
    s.kvB = a.kv_b();
    s.o = a.o();
    MOE_RETURN_IF_ERROR(
        param(s.kvA, (s.kvLoraRank + s.ropeDim) * hidden, "kv_a"));
    MOE_RETURN_IF_ERROR(param(s.kvANorm, s.kvLoraRank, "kv_a_norm"));
    MOE_RETURN_IF_ERROR(
        param(s.kvB, s.heads * (s.nope + s.vDim) * s.kvLoraRank, "kv_b"));
    MOE_RETURN_IF_ERROR(param(s.o, hidden * s.heads * s.vDim, "o"));
    s.cache = static_cast<int>(out_.latentCaches.size());
    out_.latentCaches.push_back({s.kvLoraRank + s.ropeDim, layer});
    return s;
  }

  Result<LightningSpec> lightning(const plan::LightningAttention &a,
                                  int64_t hidden, int layer) {
    LightningSpec s{};
    s.hidden = hidden;
    s.heads = a.num_heads();
    s.headDim = a.head_dim();
    s.blockSize = a.block_size();
    s.eps = a.norm_eps();
    if (s.heads <= 0 || s.headDim <= 0 || s.blockSize <= 0)
      return makeError("lightning heads, head_dim and block_size must be "
                       "positive");
    int64_t w = s.heads * s.headDim;
    s.qkv = a.qkv();
    s.gate = a.gate();
    s.norm = a.norm();
    s.out = a.out();
    MOE_RETURN_IF_ERROR(param(s.qkv, 3 * w * hidden, "qkv"));
    MOE_RETURN_IF_ERROR(param(s.gate, w * hidden, "gate"));
    MOE_RETURN_IF_ERROR(param(s.norm, w, "norm"));
    MOE_RETURN_IF_ERROR(param(s.out, hidden * w, "out"));
    s.decays = lightningDecays(s.heads, a.decay_scale());
    s.state = static_cast<int>(out_.lightningStates.size());
    out_.lightningStates.push_back({s.heads, s.headDim, layer});
    return s;
  }

  Result<RouterSpec> router(const plan::Router &r, int64_t hidden) {
    RouterSpec s{};
    s.hidden = hidden;
    s.experts = r.num_experts();
    s.topK = r.top_k();
    s.scoring = r.scoring();
    s.selection = r.selection();
    s.groups = r.n_group();
    s.keptGroups = r.topk_group();
    s.normalize = r.normalize();
    s.scaling = r.scaling();
    if (s.topK <= 0 || s.topK > s.experts)
      return makeError("router top_k {} is not in 1..{}", s.topK, s.experts);
    if (s.groups <= 0 || s.experts % s.groups != 0 || s.keptGroups <= 0 ||
        s.keptGroups > s.groups)
      return makeError("router groups {} / kept {} do not fit {} experts",
                       s.groups, s.keptGroups, s.experts);
    s.weight = r.weight();
    s.bias = r.bias();
    s.correction = r.correction_bias();
    MOE_RETURN_IF_ERROR(param(s.weight, s.experts * hidden, "weight"));
    MOE_RETURN_IF_ERROR(param(s.bias, s.experts, "bias", true));
    MOE_RETURN_IF_ERROR(
        param(s.correction, s.experts, "correction_bias", true));
    return s;
  }

  Result<ExpertsSpec> experts(const plan::Experts &e, int64_t hidden,
                              const ValueInfo &routeWeights,
                              const ValueInfo &routeIndices) {
    ExpertsSpec s{};
    s.hidden = hidden;
    s.width = e.intermediate_size();
    s.experts = e.num_experts();
    s.topK = routeWeights.width;
    if (routeWeights.width != routeIndices.width ||
        routeIndices.experts > s.experts)
      return makeError("the routing weights and indices do not match "
                       "{} experts",
                       s.experts);
    int64_t n = s.experts, h = hidden, w = s.width;
    if (n <= 0 || w <= 0)
      return makeError("experts and intermediate_size must be positive");
    s.activation = e.activation();
    s.layout = e.layout();
    s.limit = e.swiglu_limit();
    s.alpha = e.swiglu_alpha();
    bool separate = s.layout == plan::ExpertLayout::separate;
    if (separate && s.clamped())
      return makeError("swiglu_clamped needs the fused layout");
    if (separate && e.gate_up_bias() >= 0)
      return makeError("gate_up_bias needs the fused layout");
    if (!separate && !s.clamped())
      return makeError("the fused layout needs swiglu_clamped");
    s.down = e.down();
    s.downBias = e.down_bias();
    MOE_RETURN_IF_ERROR(param(s.downBias, n * h, "down_bias", true));
    s.gate = s.up = s.gateUp = s.gateUpBias = kAbsent;
    if (separate) {
      s.gate = e.gate();
      s.up = e.up();
      MOE_RETURN_IF_ERROR(param(s.gate, n * w * h, "gate"));
      MOE_RETURN_IF_ERROR(param(s.up, n * w * h, "up"));
      MOE_RETURN_IF_ERROR(param(s.down, n * h * w, "down"));
      return s;
    }
    s.gateUp = e.gate_up();
    s.gateUpBias = e.gate_up_bias();
    MOE_RETURN_IF_ERROR(param(s.gateUp, n * h * 2 * w, "gate_up"));
    MOE_RETURN_IF_ERROR(param(s.gateUpBias, n * 2 * w, "gate_up_bias", true));
    MOE_RETURN_IF_ERROR(param(s.down, n * w * h, "down"));
    return s;
  }

  Result<MlpSpec> mlp(const plan::MLP &m, int64_t hidden) {
    MlpSpec s{hidden,   m.intermediate_size(), m.gate(),          m.up(),
              m.down(), m.output_gate(),       m.shared_experts()};
    if (s.width <= 0)
      return makeError("intermediate_size must be positive");
    MOE_RETURN_IF_ERROR(param(s.gate, s.width * hidden, "gate"));
    MOE_RETURN_IF_ERROR(param(s.up, s.width * hidden, "up"));
    MOE_RETURN_IF_ERROR(param(s.down, hidden * s.width, "down"));
    MOE_RETURN_IF_ERROR(param(s.outputGate, hidden, "output_gate", true));
    return s;
  }

  Result<ResidualSpec> residual(const plan::Residual &r, int64_t skip,
                                int64_t update) {
    if (update != skip)
      return makeError("skip and update differ in width");
    return ResidualSpec{skip, r.skip_scale(), r.update_scale()};
  }

  Result<HeadSpec> head(const plan::LMHead &h, int64_t hidden) {
    HeadSpec s{h.weight(), 0, hidden};
    const auto &params = *model_.params();
    if (s.weight >= 0 && s.weight < static_cast<int>(params.size()))
      s.vocab = params.Get(s.weight)->shape()->Get(0);
    MOE_RETURN_IF_ERROR(param(s.weight, s.vocab * hidden, "weight"));
    return s;
  }

  const plan::Model &model_;
  ResolvedModel out_;
};

} // namespace

Result<ResolvedModel> ResolvedModel::resolve(const plan::Model &model) {
  return Resolver(model).resolve();
}

} // namespace moe::model
