#include "runtime/backends/cpu/CpuBackend.h"

#include <array>
#include <chrono>

#include "runtime/backends/cpu/Kernels.h"
#include "runtime/model/Lightning.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <variant>

namespace moe {
namespace {

using cpu::RopeTable;

// Each plan op resolved against the weights: sizes checked, pointers bound.

struct EmbeddingKernel {
  const float *table;
  int64_t vocab, hidden;
};
struct NormKernel {
  const float *weight;
  int64_t width;
  double eps;
};
struct AttentionKernel {
  int64_t hidden, heads, kvHeads, headDim;
  std::shared_ptr<const RopeTable> rope;
  float scale;
  const float *q, *k, *v, *o, *qBias, *kBias, *vBias, *oBias;
  plan::QKNorm qkNorm;
  const float *qNorm, *kNorm;
  double qkEps;
  int64_t window; // 0 = full
  const float *sinks;
  int cache;
  bool ownsKv;
};
struct LatentKernel {
  int64_t hidden, heads, qLoraRank, kvLoraRank, nope, ropeDim, vDim;
  std::shared_ptr<const RopeTable> rope;
  float scale;
  double eps;
  const float *q, *qA, *qANorm, *qB, *kvA, *kvANorm, *kvB, *o;
  int cache;
};
struct LightningKernel {
  int64_t hidden, heads, headDim, blockSize;
  double eps;
  std::vector<float> decay; // λ_h per head
  const float *qkv, *gate, *norm, *out;
  int state;
};
struct RouterKernel {
  cpu::RouterParams params;
  int64_t hidden;
  const float *weight, *bias, *correction;
};
/// One expert as [out, in] Linear weights: gate and up [I, H], down [H, I].
struct ExpertWeights {
  const float *gate = nullptr, *up = nullptr, *down = nullptr;
  const float *gateBias = nullptr, *upBias = nullptr, *downBias = nullptr;
};
struct ExpertsKernel {
  int64_t hidden, width, topK;
  bool clamped;
  float limit, alpha;
  std::vector<ExpertWeights> experts;
};
struct MlpKernel {
  int64_t hidden, width;
  const float *gate, *up, *down, *outputGate;
};
struct ResidualKernel {
  float skipScale, updateScale;
};
struct HeadKernel {
  const float *weight;
  int64_t vocab, hidden;
};

using Kernel =
    std::variant<EmbeddingKernel, NormKernel, AttentionKernel, LatentKernel,
                 LightningKernel, RouterKernel, ExpertsKernel, MlpKernel,
                 ResidualKernel, HeadKernel>;

struct CompiledOp {
  Kernel kernel;
  std::vector<int> operands, results;
};

/// Stage names for the stats file, in the order of Kernel's alternatives.
constexpr std::array<const char *, std::variant_size_v<Kernel>> kStageNames = {
    "embedding",
    "norm",
    "attention",
    "latent attention",
    "lightning attention",
    "router",
    "routed experts",
    "mlp",
    "residual",
    "lm head"};

/// One value of the forward pass: fp32 rows, or i32 rows (token ids, expert
/// indices).
struct Value {
  std::vector<float> f;
  std::vector<int32_t> i;
};

/// Softmax-attention K/V of one layer: [slot][position][kvHeads·headDim].
struct KvCache {
  int64_t kvHeads = 0, headDim = 0;
  std::vector<float> k, v;
};
/// MLA: [slot][position][normed latent | roped k_pe].
struct LatentCache {
  int64_t width = 0;
  std::vector<float> data;
};
/// Lightning: [slot][head][d_k][d_v] fp32.
struct LightningState {
  int64_t heads = 0, headDim = 0;
  std::vector<float> data;
};

/// Consecutive rows of one slot in a batch.
struct SlotRun {
  int32_t slot;
  int64_t firstRow, count;
};

} // namespace

struct CpuBackend::State {
  explicit State(int threads) : pool(threads) {}

  ThreadPool pool;
  bool prepared = false;
  std::vector<std::vector<float>> params;
  std::vector<std::vector<float>> derived; // fused experts re-laid out
  std::vector<CompiledOp> ops;
  std::vector<int> lastUse; // the op after which a value is dead
  int numValues = 0, logitsValue = 0;
  int64_t embeddingVocab = 0;
  int32_t slots = 0, maxContext = 0;
  std::vector<int32_t> lengths;
  std::vector<KvCache> kv;
  std::vector<LatentCache> latent;
  std::vector<LightningState> lightning;
  // Seconds per kernel kind since prepare, for per-stage statistics.
  // [prefill, decode][kind]
  std::array<std::array<double, std::variant_size_v<Kernel>>, 2> stageSeconds{};

  Status compile(const plan::Model &model);
};

namespace {

/// Resolves one plan op into a kernel, checking every weight's size against
/// the op's dimensions and its operands' widths.
class OpCompiler {
public:
  OpCompiler(std::vector<std::vector<float>> &params,
             std::vector<std::vector<float>> &derived, int32_t slots,
             int32_t maxContext)
      : params_(params), derived_(derived), slots_(slots),
        maxContext_(maxContext) {}

  Status bind(const float *&out, int index, int64_t size, const char *field,
              bool optional = false) {
    out = nullptr;
    if (index < 0) {
      if (optional)
        return Status::success();
      return makeError("'{}' is missing", field);
    }
    if (index >= static_cast<int>(params_.size()))
      return makeError("'{}' refers to param {}, which does not exist", field,
                       index);
    if (static_cast<int64_t>(params_[index].size()) != size)
      return makeError("'{}' (param {}) has {} values, the op needs {}", field,
                       index, params_[index].size(), size);
    out = params_[index].data();
    return Status::success();
  }

  /// One table per distinct RoPE: at long contexts a table per layer would
  /// cost more than the KV cache.
  Result<std::shared_ptr<const RopeTable>> rope(const plan::Rope &plan,
                                                int64_t limit) {
    model::RopeParams p = model::RopeParams::fromPlan(plan);
    if (p.rotaryDim < 0 || p.rotaryDim % 2 != 0 || p.rotaryDim > limit)
      return makeError("rope rotary_dim {} must be even and at most {}",
                       p.rotaryDim, limit);
    if (p.rotaryDim > 0 && !(p.theta > 1.0))
      return makeError("rope theta {} must exceed 1", p.theta);
    if (p.yarn && (!(p.factor > 0) || p.originalMaxPosition <= 0))
      return makeError("yarn rope needs a positive factor and "
                       "original_max_position");
    for (const auto &[params, table] : ropeTables_)
      if (params == p)
        return table;
    ropeTables_.emplace_back(p, std::make_shared<RopeTable>(p, maxContext_));
    return ropeTables_.back().second;
  }

  Result<Kernel> attention(const plan::Attention &a, int64_t hidden, int layer,
                           std::vector<KvCache> &caches,
                           std::vector<std::pair<int, int>> &layerCaches) {
    AttentionKernel k{};
    k.hidden = hidden;
    k.heads = a.num_heads();
    k.kvHeads = a.num_kv_heads();
    k.headDim = a.head_dim();
    if (k.heads <= 0 || k.kvHeads <= 0 || k.headDim <= 0 ||
        k.heads % k.kvHeads != 0)
      return makeError("heads {} / kv heads {} / head_dim {} are invalid",
                       k.heads, k.kvHeads, k.headDim);
    Result<std::shared_ptr<const RopeTable>> table = rope(*a.rope(), k.headDim);
    if (!table.ok())
      return table.error();
    k.rope = std::move(*table);
    k.scale = static_cast<float>(a.scale());
    k.ownsKv = a.kv_source_layer() < 0;
    int64_t qw = k.heads * k.headDim, kvw = k.kvHeads * k.headDim;
    MOE_RETURN_IF_ERROR(bind(k.q, a.q(), qw * hidden, "q"));
    MOE_RETURN_IF_ERROR(bind(k.o, a.o(), hidden * qw, "o"));
    MOE_RETURN_IF_ERROR(bind(k.qBias, a.q_bias(), qw, "q_bias", true));
    MOE_RETURN_IF_ERROR(bind(k.oBias, a.o_bias(), hidden, "o_bias", true));
    MOE_RETURN_IF_ERROR(bind(k.sinks, a.sinks(), k.heads, "sinks", true));
    k.qkNorm = a.qk_norm();
    k.qkEps = a.qk_norm_eps();
    bool perHead = k.qkNorm == plan::QKNorm::per_head;
    if (k.qkNorm != plan::QKNorm::none)
      MOE_RETURN_IF_ERROR(
          bind(k.qNorm, a.q_norm(), perHead ? k.headDim : qw, "q_norm"));
    if (a.sliding_window() < 0)
      return makeError("sliding_window {} is negative", a.sliding_window());
    k.window = a.sliding_window();
    if (k.ownsKv) {
      MOE_RETURN_IF_ERROR(bind(k.k, a.k(), kvw * hidden, "k"));
      MOE_RETURN_IF_ERROR(bind(k.v, a.v(), kvw * hidden, "v"));
      MOE_RETURN_IF_ERROR(bind(k.kBias, a.k_bias(), kvw, "k_bias", true));
      MOE_RETURN_IF_ERROR(bind(k.vBias, a.v_bias(), kvw, "v_bias", true));
      if (k.qkNorm != plan::QKNorm::none)
        MOE_RETURN_IF_ERROR(
            bind(k.kNorm, a.k_norm(), perHead ? k.headDim : kvw, "k_norm"));
      KvCache cache;
      cache.kvHeads = k.kvHeads;
      cache.headDim = k.headDim;
      size_t size = static_cast<size_t>(slots_) * maxContext_ * kvw;
      cache.k.assign(size, 0.0f);
      cache.v.assign(size, 0.0f);
      k.cache = static_cast<int>(caches.size());
      caches.push_back(std::move(cache));
      layerCaches.emplace_back(layer, k.cache);
      return Kernel(std::move(k));
    }
    auto source = std::find_if(
        layerCaches.begin(), layerCaches.end(),
        [&](const auto &entry) { return entry.first == a.kv_source_layer(); });
    if (source == layerCaches.end())
      return makeError("kv_source_layer {} has no K/V cache before this op",
                       a.kv_source_layer());
    k.cache = source->second;
    const KvCache &shared = caches[k.cache];
    if (shared.kvHeads != k.kvHeads || shared.headDim != k.headDim)
      return makeError("kv_source_layer {} caches {} heads of {}, this layer "
                       "reads {} of {}",
                       a.kv_source_layer(), shared.kvHeads, shared.headDim,
                       k.kvHeads, k.headDim);
    return Kernel(std::move(k));
  }

  Result<Kernel> latent(const plan::MLAttention &a, int64_t hidden,
                        std::vector<LatentCache> &caches) {
    LatentKernel k{};
    k.hidden = hidden;
    k.heads = a.num_heads();
    k.qLoraRank = a.q_lora_rank();
    k.kvLoraRank = a.kv_lora_rank();
    k.nope = a.qk_nope_head_dim();
    k.ropeDim = a.qk_rope_head_dim();
    k.vDim = a.v_head_dim();
    if (k.heads <= 0 || k.qLoraRank < 0 || k.kvLoraRank <= 0 || k.nope < 0 ||
        k.ropeDim <= 0 || k.vDim <= 0)
      return makeError("MLA dimensions are invalid");
    if (a.rope()->rotary_dim() != k.ropeDim)
      return makeError("rope rotary_dim {} differs from qk_rope_head_dim {}",
                       a.rope()->rotary_dim(), k.ropeDim);
    Result<std::shared_ptr<const RopeTable>> table = rope(*a.rope(), k.ropeDim);
    if (!table.ok())
      return table.error();
    k.rope = std::move(*table);
    k.scale = static_cast<float>(a.scale());
    k.eps = a.norm_eps();
    int64_t qw = k.heads * (k.nope + k.ropeDim);
    if (k.qLoraRank > 0) {
      MOE_RETURN_IF_ERROR(bind(k.qA, a.q_a(), k.qLoraRank * hidden, "q_a"));
      MOE_RETURN_IF_ERROR(
          bind(k.qANorm, a.q_a_norm(), k.qLoraRank, "q_a_norm"));
      MOE_RETURN_IF_ERROR(bind(k.qB, a.q_b(), qw * k.qLoraRank, "q_b"));
    } else {
      MOE_RETURN_IF_ERROR(bind(k.q, a.q(), qw * hidden, "q"));
    }
    MOE_RETURN_IF_ERROR(
        bind(k.kvA, a.kv_a(), (k.kvLoraRank + k.ropeDim) * hidden, "kv_a"));
    MOE_RETURN_IF_ERROR(
        bind(k.kvANorm, a.kv_a_norm(), k.kvLoraRank, "kv_a_norm"));
    MOE_RETURN_IF_ERROR(bind(
        k.kvB, a.kv_b(), k.heads * (k.nope + k.vDim) * k.kvLoraRank, "kv_b"));
    MOE_RETURN_IF_ERROR(bind(k.o, a.o(), hidden * k.heads * k.vDim, "o"));
    LatentCache cache;
    cache.width = k.kvLoraRank + k.ropeDim;
    cache.data.assign(static_cast<size_t>(slots_) * maxContext_ * cache.width,
                      0.0f);
    k.cache = static_cast<int>(caches.size());
    caches.push_back(std::move(cache));
    return Kernel(std::move(k));
  }

  Result<Kernel> lightning(const plan::LightningAttention &a, int64_t hidden,
                           std::vector<LightningState> &states) {
    LightningKernel k{};
    k.hidden = hidden;
    k.heads = a.num_heads();
    k.headDim = a.head_dim();
    k.blockSize = a.block_size();
    k.eps = a.norm_eps();
    if (k.heads <= 0 || k.headDim <= 0 || k.blockSize <= 0)
      return makeError("lightning heads, head_dim and block_size must be "
                       "positive");
    int64_t w = k.heads * k.headDim;
    MOE_RETURN_IF_ERROR(bind(k.qkv, a.qkv(), 3 * w * hidden, "qkv"));
    MOE_RETURN_IF_ERROR(bind(k.gate, a.gate(), w * hidden, "gate"));
    MOE_RETURN_IF_ERROR(bind(k.norm, a.norm(), w, "norm"));
    MOE_RETURN_IF_ERROR(bind(k.out, a.out(), hidden * w, "out"));
    k.decay = model::lightningDecays(k.heads, a.decay_scale());
    LightningState state;
    state.heads = k.heads;
    state.headDim = k.headDim;
    state.data.assign(
        static_cast<size_t>(slots_) * k.heads * k.headDim * k.headDim, 0.0f);
    k.state = static_cast<int>(states.size());
    states.push_back(std::move(state));
    return Kernel(std::move(k));
  }

  Result<Kernel> router(const plan::Router &r, int64_t hidden) {
    RouterKernel k{};
    k.hidden = hidden;
    cpu::RouterParams &p = k.params;
    p.experts = r.num_experts();
    p.topK = r.top_k();
    p.scoring = r.scoring();
    p.selection = r.selection();
    p.groups = r.n_group();
    p.keptGroups = r.topk_group();
    p.normalize = r.normalize();
    p.scaling = r.scaling();
    if (p.groups <= 0 || p.experts % p.groups != 0 || p.keptGroups <= 0 ||
        p.keptGroups > p.groups)
      return makeError("router groups {} / kept {} do not fit {} experts",
                       p.groups, p.keptGroups, p.experts);
    MOE_RETURN_IF_ERROR(
        bind(k.weight, r.weight(), p.experts * hidden, "weight"));
    MOE_RETURN_IF_ERROR(bind(k.bias, r.bias(), p.experts, "bias", true));
    MOE_RETURN_IF_ERROR(bind(k.correction, r.correction_bias(), p.experts,
                             "correction_bias", true));
    return Kernel(std::move(k));
  }

  Result<Kernel> experts(const plan::Experts &e, int64_t hidden, int64_t topK) {
    ExpertsKernel k{};
    k.hidden = hidden;
    k.width = e.intermediate_size();
    k.topK = topK;
    int64_t n = e.num_experts(), h = hidden, w = k.width;
    if (n <= 0 || w <= 0)
      return makeError("experts and intermediate_size must be positive");
    k.clamped = e.activation() == plan::ExpertActivation::swiglu_clamped;
    k.limit = static_cast<float>(e.swiglu_limit());
    k.alpha = static_cast<float>(e.swiglu_alpha());
    k.experts.resize(n);
    const float *down, *downBias;
    MOE_RETURN_IF_ERROR(
        bind(downBias, e.down_bias(), n * h, "down_bias", true));
    if (e.layout() == plan::ExpertLayout::separate) {
      const float *gate, *up;
      MOE_RETURN_IF_ERROR(bind(gate, e.gate(), n * w * h, "gate"));
      MOE_RETURN_IF_ERROR(bind(up, e.up(), n * w * h, "up"));
      MOE_RETURN_IF_ERROR(bind(down, e.down(), n * h * w, "down"));
      if (e.gate_up_bias() >= 0)
        return makeError("gate_up_bias needs the fused layout");
      for (int64_t x = 0; x < n; ++x)
        k.experts[x] = {.gate = gate + x * w * h,
                        .up = up + x * w * h,
                        .down = down + x * h * w,
                        .downBias = downBias ? downBias + x * h : nullptr};
      return Kernel(std::move(k));
    }
    // gate_up [E, H, 2I] with gate/up in alternating columns and down
    // [E, I, H]: re-laid out once as [out, in] weights for `linear`.
    const float *gateUp, *gateUpBias;
    MOE_RETURN_IF_ERROR(bind(gateUp, e.gate_up(), n * h * 2 * w, "gate_up"));
    MOE_RETURN_IF_ERROR(
        bind(gateUpBias, e.gate_up_bias(), n * 2 * w, "gate_up_bias", true));
    MOE_RETURN_IF_ERROR(bind(down, e.down(), n * w * h, "down"));
    std::vector<float> gate(n * w * h), up(n * w * h), downT(n * h * w);
    std::vector<float> biases(gateUpBias ? 2 * n * w : 0);
    for (int64_t x = 0; x < n; ++x) {
      const float *src = gateUp + x * h * 2 * w;
      for (int64_t i = 0; i < w; ++i)
        for (int64_t j = 0; j < h; ++j) {
          gate[(x * w + i) * h + j] = src[j * 2 * w + 2 * i];
          up[(x * w + i) * h + j] = src[j * 2 * w + 2 * i + 1];
        }
      for (int64_t j = 0; j < h; ++j)
        for (int64_t i = 0; i < w; ++i)
          downT[(x * h + j) * w + i] = down[(x * w + i) * h + j];
      if (gateUpBias)
        for (int64_t i = 0; i < w; ++i) {
          biases[x * w + i] = gateUpBias[x * 2 * w + 2 * i];
          biases[(n + x) * w + i] = gateUpBias[x * 2 * w + 2 * i + 1];
        }
    }
    // Moving a vector into `derived_` keeps its buffer, so pointers hold.
    for (auto *array : {&gate, &up, &downT, &biases})
      derived_.push_back(std::move(*array));
    const float *g = derived_[derived_.size() - 4].data();
    const float *u = derived_[derived_.size() - 3].data();
    const float *d = derived_[derived_.size() - 2].data();
    const float *b = gateUpBias ? derived_.back().data() : nullptr;
    for (int64_t x = 0; x < n; ++x)
      k.experts[x] = {g + x * w * h,
                      u + x * w * h,
                      d + x * h * w,
                      b ? b + x * w : nullptr,
                      b ? b + (n + x) * w : nullptr,
                      downBias ? downBias + x * h : nullptr};
    return Kernel(std::move(k));
  }

  Result<Kernel> mlp(const plan::MLP &m, int64_t hidden) {
    MlpKernel k{};
    k.hidden = hidden;
    k.width = m.intermediate_size();
    if (k.width <= 0)
      return makeError("intermediate_size must be positive");
    MOE_RETURN_IF_ERROR(bind(k.gate, m.gate(), k.width * hidden, "gate"));
    MOE_RETURN_IF_ERROR(bind(k.up, m.up(), k.width * hidden, "up"));
    MOE_RETURN_IF_ERROR(bind(k.down, m.down(), hidden * k.width, "down"));
    MOE_RETURN_IF_ERROR(
        bind(k.outputGate, m.output_gate(), hidden, "output_gate", true));
    return Kernel(std::move(k));
  }

private:
  std::vector<std::vector<float>> &params_;
  std::vector<std::vector<float>> &derived_;
  int32_t slots_, maxContext_;
  std::vector<std::pair<model::RopeParams, std::shared_ptr<const RopeTable>>>
      ropeTables_;
};

int64_t paramElements(const plan::Param &param) {
  int64_t n = 1;
  for (int64_t dim : *param.shape())
    n *= dim;
  return n;
}

} // namespace

namespace {

/// What a value holds, so that no kernel reads rows it does not expect (the
/// LM head's rows are the logit rows only; expert indices must come from a
/// router that knows the expert count).
enum class ValueKind {
  undefined,
  tokens,
  activations,
  routeWeights,
  routeIndices,
  logits
};
struct ValueInfo {
  ValueKind kind = ValueKind::undefined;
  int64_t width = 0;
  int64_t experts = 0; // route indices: the router's expert count
};

} // namespace

Status CpuBackend::State::compile(const plan::Model &model) {
  OpCompiler compiler(params, derived, slots, maxContext);
  numValues = model.num_values();
  logitsValue = model.logits();
  std::vector<ValueInfo> infos(numValues);
  infos[0] = {ValueKind::tokens, 1, 0};
  std::vector<std::pair<int, int>> layerCaches; // layer → KV cache index
  const auto &planParams = *model.params();
  bool logitsFromHead = false;
  const auto &planOps = *model.ops();
  for (uint32_t index = 0; index < planOps.size(); ++index) {
    const plan::Op &op = *planOps.Get(index);
    CompiledOp compiled;
    compiled.operands.assign(op.operands()->begin(), op.operands()->end());
    compiled.results.assign(op.results()->begin(), op.results()->end());
    auto fail = [&](const Error &error) {
      return error.withContext(fmt::format("op {} ({}, layer {})", index,
                                           plan::EnumNameModule(op.spec_type()),
                                           op.layer()));
    };
    auto expect = [&](size_t operands, size_t results) -> Status {
      if (compiled.operands.size() != operands ||
          compiled.results.size() != results)
        return makeError("expects {} operands and {} results", operands,
                         results);
      return Status::success();
    };
    Status shape = Status::success();
    switch (op.spec_type()) {
    case plan::Module::Embedding:
    case plan::Module::LMHead:
      shape = expect(1, 1);
      break;
    case plan::Module::Router:
      shape = expect(1, 2);
      break;
    case plan::Module::Experts:
      shape = expect(3, 1);
      break;
    case plan::Module::Residual:
      shape = expect(2, 1);
      break;
    default:
      shape = expect(1, 1);
      break;
    }
    if (!shape.ok())
      return fail(shape.error());
    std::vector<ValueKind> wanted(compiled.operands.size(),
                                  ValueKind::activations);
    if (op.spec_type() == plan::Module::Embedding)
      wanted = {ValueKind::tokens};
    else if (op.spec_type() == plan::Module::Experts)
      wanted = {ValueKind::activations, ValueKind::routeWeights,
                ValueKind::routeIndices};
    for (size_t i = 0; i < wanted.size(); ++i)
      if (infos[compiled.operands[i]].kind != wanted[i])
        return fail(makeError(
            "operand {} (value {}) is not {}", i, compiled.operands[i],
            wanted[i] == ValueKind::tokens        ? "the token ids"
            : wanted[i] == ValueKind::activations ? "an activation"
                                                  : "a router result"));
    int64_t in = infos[compiled.operands[0]].width;
    Result<Kernel> kernel = makeError("unsupported module");
    std::vector<ValueInfo> resultInfos{{ValueKind::activations, in, 0}};
    switch (op.spec_type()) {
    case plan::Module::Embedding: {
      int table = op.spec_as_Embedding()->table();
      const plan::Param &param = *planParams.Get(table);
      if (compiled.operands[0] != 0 || param.shape()->size() != 2) {
        kernel = makeError("needs the token ids and a [vocab, hidden] table");
        break;
      }
      EmbeddingKernel k{};
      k.vocab = param.shape()->Get(0);
      k.hidden = param.shape()->Get(1);
      Status bound = compiler.bind(k.table, table, k.vocab * k.hidden, "table");
      kernel = bound.ok() ? Result<Kernel>(k) : Result<Kernel>(bound.error());
      resultInfos = {{ValueKind::activations, k.hidden, 0}};
      embeddingVocab = k.vocab;
      break;
    }
    case plan::Module::RMSNorm: {
      const plan::RMSNorm &n = *op.spec_as_RMSNorm();
      NormKernel k{nullptr, in, n.eps()};
      Status bound = compiler.bind(k.weight, n.weight(), in, "weight");
      kernel = bound.ok() ? Result<Kernel>(k) : Result<Kernel>(bound.error());
      break;
    }
    case plan::Module::Attention:
      kernel = compiler.attention(*op.spec_as_Attention(), in, op.layer(), kv,
                                  layerCaches);
      break;
    case plan::Module::MLAttention:
      kernel = compiler.latent(*op.spec_as_MLAttention(), in, latent);
      break;
    case plan::Module::LightningAttention:
      kernel =
          compiler.lightning(*op.spec_as_LightningAttention(), in, lightning);
      break;
    case plan::Module::Router: {
      const plan::Router &r = *op.spec_as_Router();
      kernel = compiler.router(r, in);
      resultInfos = {{ValueKind::routeWeights, r.top_k(), 0},
                     {ValueKind::routeIndices, r.top_k(), r.num_experts()}};
      break;
    }
    case plan::Module::Experts: {
      const ValueInfo &weights = infos[compiled.operands[1]];
      const ValueInfo &indices = infos[compiled.operands[2]];
      const plan::Experts &e = *op.spec_as_Experts();
      if (weights.width != indices.width || indices.experts > e.num_experts()) {
        kernel = makeError("the routing weights and indices do not match "
                           "{} experts",
                           e.num_experts());
        break;
      }
      kernel = compiler.experts(e, in, weights.width);
      break;
    }
    case plan::Module::MLP:
      kernel = compiler.mlp(*op.spec_as_MLP(), in);
      break;
    case plan::Module::Residual: {
      const plan::Residual &r = *op.spec_as_Residual();
      if (infos[compiled.operands[1]].width != in) {
        kernel = makeError("skip and update differ in width");
        break;
      }
      kernel = Kernel(ResidualKernel{static_cast<float>(r.skip_scale()),
                                     static_cast<float>(r.update_scale())});
      break;
    }
    case plan::Module::LMHead: {
      int weight = op.spec_as_LMHead()->weight();
      const plan::Param &param = *planParams.Get(weight);
      HeadKernel k{nullptr, param.shape()->Get(0), in};
      Status bound = compiler.bind(k.weight, weight, k.vocab * in, "weight");
      kernel = bound.ok() ? Result<Kernel>(k) : Result<Kernel>(bound.error());
      resultInfos = {{ValueKind::logits, k.vocab, 0}};
      logitsFromHead |= compiled.results[0] == logitsValue;
      break;
    }
    case plan::Module::NONE:
      break;
    }
    if (!kernel.ok())
      return fail(kernel.error());
    compiled.kernel = std::move(*kernel);
    for (size_t r = 0; r < compiled.results.size(); ++r)
      infos[compiled.results[r]] = resultInfos[r];
    ops.push_back(std::move(compiled));
  }
  if (!logitsFromHead)
    return makeError("the logits value {} is not an LM head's result",
                     logitsValue);
  lastUse.assign(numValues, -1);
  for (size_t i = 0; i < ops.size(); ++i)
    for (int operand : ops[i].operands)
      lastUse[operand] = static_cast<int>(i);
  lastUse[logitsValue] = static_cast<int>(ops.size());
  return Status::success();
}

//===----------------------------------------------------------------------===//
// Execution
//===----------------------------------------------------------------------===//

namespace {

/// Everything a kernel needs to know about the step.
struct Step {
  ThreadPool &pool;
  const StepBatch &batch;
  const std::vector<SlotRun> &runs;
  int32_t maxContext;
  const CpuBackendOptions &options;

  int64_t rows() const { return static_cast<int64_t>(batch.rows.size()); }
  /// Offset of (row's slot, row's position) in a [slot][position] cache.
  int64_t cacheRow(int64_t row) const {
    const TokenRow &t = batch.rows[row];
    return static_cast<int64_t>(t.slot) * maxContext + t.position;
  }
};

void forEachRow(const Step &step, int64_t rows,
                const std::function<void(int64_t)> &body) {
  step.pool.parallelFor(rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      body(r);
  });
}

/// Softmax over scores[0, n) (with an optional sink logit joining the
/// denominator), in place.
void softmaxWithSink(float *scores, int64_t n, const float *sink) {
  float max = sink ? *sink : scores[0];
  for (int64_t j = 0; j < n; ++j)
    max = std::max(max, scores[j]);
  float sum = 0;
  for (int64_t j = 0; j < n; ++j)
    sum += scores[j] = std::exp(scores[j] - max);
  if (sink)
    sum += std::exp(*sink - max);
  for (int64_t j = 0; j < n; ++j)
    scores[j] /= sum;
}

void runEmbedding(const Step &step, const EmbeddingKernel &k, const Value &ids,
                  Value &out) {
  out.f.resize(step.rows() * k.hidden);
  for (int64_t r = 0; r < step.rows(); ++r)
    std::memcpy(out.f.data() + r * k.hidden, k.table + ids.i[r] * k.hidden,
                k.hidden * sizeof(float));
}

void runNorm(const Step &step, const NormKernel &k, const Value &x,
             Value &out) {
  out.f.resize(x.f.size());
  int64_t rows = static_cast<int64_t>(x.f.size()) / k.width;
  forEachRow(step, rows, [&](int64_t r) {
    cpu::rmsNorm(x.f.data() + r * k.width, k.weight, k.width, k.eps,
                 out.f.data() + r * k.width);
  });
}

void runAttention(const Step &step, const AttentionKernel &k, KvCache &cache,
                  const Value &x, Value &out) {
  int64_t rows = step.rows(), hd = k.headDim;
  int64_t qw = k.heads * hd, kvw = k.kvHeads * hd;
  std::vector<float> q(rows * qw);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.q, qw, k.qBias,
              q.data());
  std::vector<float> key, value;
  if (k.ownsKv) {
    key.resize(rows * kvw);
    value.resize(rows * kvw);
    cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.k, kvw, k.kBias,
                key.data());
    cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.v, kvw, k.vBias,
                value.data());
  }
  forEachRow(step, rows, [&](int64_t r) {
    float *qr = q.data() + r * qw;
    float *kr = k.ownsKv ? key.data() + r * kvw : nullptr;
    // QK norm comes before RoPE: over the whole projection (OLMoE) or per
    // head with one shared weight (Qwen3).
    if (k.qkNorm == plan::QKNorm::full_width) {
      cpu::rmsNorm(qr, k.qNorm, qw, k.qkEps, qr);
      if (kr)
        cpu::rmsNorm(kr, k.kNorm, kvw, k.qkEps, kr);
    } else if (k.qkNorm == plan::QKNorm::per_head) {
      for (int64_t h = 0; h < k.heads; ++h)
        cpu::rmsNorm(qr + h * hd, k.qNorm, hd, k.qkEps, qr + h * hd);
      if (kr)
        for (int64_t h = 0; h < k.kvHeads; ++h)
          cpu::rmsNorm(kr + h * hd, k.kNorm, hd, k.qkEps, kr + h * hd);
    }
    int64_t position = step.batch.rows[r].position;
    for (int64_t h = 0; h < k.heads; ++h)
      k.rope->apply(qr + h * hd, position);
    if (kr) {
      for (int64_t h = 0; h < k.kvHeads; ++h)
        k.rope->apply(kr + h * hd, position);
      int64_t at = step.cacheRow(r) * kvw;
      std::memcpy(cache.k.data() + at, kr, kvw * sizeof(float));
      std::memcpy(cache.v.data() + at, value.data() + r * kvw,
                  kvw * sizeof(float));
    }
  });
  std::vector<float> o(rows * qw);
  int64_t group = k.heads / k.kvHeads;
  step.pool.parallelFor(rows * k.heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(step.maxContext);
    for (int64_t task = begin; task < end; ++task) {
      int64_t r = task / k.heads, h = task % k.heads, g = h / group;
      int64_t position = step.batch.rows[r].position;
      // A window w covers the token and the w − 1 before it.
      int64_t first =
          k.window > 0 ? std::max<int64_t>(0, position - k.window + 1) : 0;
      int64_t n = position - first + 1;
      int64_t base = (step.cacheRow(r) - position + first) * kvw + g * hd;
      const float *qh = q.data() + r * qw + h * hd;
      for (int64_t j = 0; j < n; ++j)
        scores[j] = cpu::dot(qh, cache.k.data() + base + j * kvw, hd) * k.scale;
      softmaxWithSink(scores.data(), n, k.sinks ? k.sinks + h : nullptr);
      float *oh = o.data() + r * qw + h * hd;
      std::fill(oh, oh + hd, 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        const float *vj = cache.v.data() + base + j * kvw;
        for (int64_t d = 0; d < hd; ++d)
          oh[d] += scores[j] * vj[d];
      }
    }
  });
  out.f.resize(rows * k.hidden);
  cpu::linear(step.pool, o.data(), rows, qw, k.o, k.hidden, k.oBias,
              out.f.data());
}

void runLatent(const Step &step, const LatentKernel &k, LatentCache &cache,
               const Value &x, Value &out) {
  int64_t rows = step.rows(), qkDim = k.nope + k.ropeDim;
  int64_t qw = k.heads * qkDim, r = k.kvLoraRank, cw = cache.width;
  std::vector<float> q(rows * qw);
  if (k.qLoraRank > 0) {
    std::vector<float> qa(rows * k.qLoraRank);
    cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.qA, k.qLoraRank,
                nullptr, qa.data());
    forEachRow(step, rows, [&](int64_t row) {
      float *a = qa.data() + row * k.qLoraRank;
      cpu::rmsNorm(a, k.qANorm, k.qLoraRank, k.eps, a);
    });
    cpu::linear(step.pool, qa.data(), rows, k.qLoraRank, k.qB, qw, nullptr,
                q.data());
  } else {
    cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.q, qw, nullptr,
                q.data());
  }
  std::vector<float> kv(rows * cw);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.kvA, cw, nullptr,
              kv.data());
  forEachRow(step, rows, [&](int64_t row) {
    int64_t position = step.batch.rows[row].position;
    float *c = kv.data() + row * cw;
    cpu::rmsNorm(c, k.kvANorm, r, k.eps, c);
    k.rope->apply(c + r, position);
    std::memcpy(cache.data.data() + step.cacheRow(row) * cw, c,
                cw * sizeof(float));
    for (int64_t h = 0; h < k.heads; ++h)
      k.rope->apply(q.data() + row * qw + h * qkDim + k.nope, position);
  });
  int64_t ow = k.heads * k.vDim, kvbRows = k.nope + k.vDim;
  std::vector<float> o(rows * ow);
  bool absorbed = step.options.mlaAbsorbed;
  step.pool.parallelFor(rows * k.heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(step.maxContext), folded(r), mixed(r),
        keyNope(k.nope);
    for (int64_t task = begin; task < end; ++task) {
      int64_t row = task / k.heads, h = task % k.heads;
      int64_t n = step.batch.rows[row].position + 1;
      const float *latents =
          cache.data.data() + (step.cacheRow(row) - n + 1) * cw;
      const float *qn = q.data() + row * qw + h * qkDim, *qr = qn + k.nope;
      const float *wk = k.kvB + h * kvbRows * r; // W_UK,h [nope, r]
      const float *wv = wk + k.nope * r;         // W_UV,h [vDim, r]
      float *oh = o.data() + row * ow + h * k.vDim;
      if (absorbed) {
        // q̃ = W_UKᵀ q_nope scores the cached latents directly.
        std::fill(folded.begin(), folded.end(), 0.0f);
        for (int64_t d = 0; d < k.nope; ++d)
          for (int64_t c = 0; c < r; ++c)
            folded[c] += wk[d * r + c] * qn[d];
        for (int64_t j = 0; j < n; ++j) {
          const float *lj = latents + j * cw;
          scores[j] = (cpu::dot(folded.data(), lj, r) +
                       cpu::dot(qr, lj + r, k.ropeDim)) *
                      k.scale;
        }
        softmaxWithSink(scores.data(), n, nullptr);
        std::fill(mixed.begin(), mixed.end(), 0.0f);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t c = 0; c < r; ++c)
            mixed[c] += scores[j] * latents[j * cw + c];
        for (int64_t d = 0; d < k.vDim; ++d)
          oh[d] = cpu::dot(wv + d * r, mixed.data(), r);
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const float *lj = latents + j * cw;
          for (int64_t d = 0; d < k.nope; ++d)
            keyNope[d] = cpu::dot(wk + d * r, lj, r);
          scores[j] = (cpu::dot(qn, keyNope.data(), k.nope) +
                       cpu::dot(qr, lj + r, k.ropeDim)) *
                      k.scale;
        }
        softmaxWithSink(scores.data(), n, nullptr);
        std::fill(oh, oh + k.vDim, 0.0f);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t d = 0; d < k.vDim; ++d)
            oh[d] += scores[j] * cpu::dot(wv + d * r, latents + j * cw, r);
      }
    }
  });
  out.f.resize(rows * k.hidden);
  cpu::linear(step.pool, o.data(), rows, ow, k.o, k.hidden, nullptr,
              out.f.data());
}

void runLightning(const Step &step, const LightningKernel &k,
                  LightningState &state, const Value &x, Value &out) {
  int64_t rows = step.rows(), d = k.headDim, w = k.heads * d;
  std::vector<float> qkv(rows * 3 * w);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.qkv, 3 * w, nullptr,
              qkv.data());
  forEachRow(step, rows, [&](int64_t r) {
    for (int64_t i = 0; i < 3 * w; ++i)
      qkv[r * 3 * w + i] = cpu::silu(qkv[r * 3 * w + i]);
  });
  std::vector<float> attention(rows * w);
  int64_t heads = k.heads;
  step.pool.parallelFor(
      static_cast<int64_t>(step.runs.size()) * heads,
      [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const SlotRun &run = step.runs[task / heads];
          int64_t h = task % heads;
          float *s = state.data.data() + (run.slot * heads + h) * d * d;
          // Per head the qkv row is [q | k | v], heads side by side.
          const float *base = qkv.data() + run.firstRow * 3 * w + h * 3 * d;
          float *o = attention.data() + run.firstRow * w + h * d;
          if (run.count > 1 && step.options.lightningBlocks)
            cpu::lightningBlocks(base, base + d, base + 2 * d, 3 * w, run.count,
                                 d, k.decay[h], k.blockSize, s, o, w);
          else
            cpu::lightningRecurrent(base, base + d, base + 2 * d, 3 * w,
                                    run.count, d, k.decay[h], s, o, w);
        }
      });
  std::vector<float> gate(rows * w);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.gate, w, nullptr,
              gate.data());
  forEachRow(step, rows, [&](int64_t r) {
    float *a = attention.data() + r * w;
    cpu::rmsNorm(a, k.norm, w, k.eps, a);
    for (int64_t i = 0; i < w; ++i)
      a[i] = cpu::sigmoid(gate[r * w + i]) * a[i];
  });
  out.f.resize(rows * k.hidden);
  cpu::linear(step.pool, attention.data(), rows, w, k.out, k.hidden, nullptr,
              out.f.data());
}

void runRouter(const Step &step, const RouterKernel &k, const Value &x,
               Value &weights, Value &indices) {
  int64_t rows = static_cast<int64_t>(x.f.size()) / k.hidden;
  int64_t e = k.params.experts, top = k.params.topK;
  std::vector<float> logits(rows * e);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, k.weight, e, k.bias,
              logits.data());
  weights.f.resize(rows * top);
  indices.i.resize(rows * top);
  forEachRow(step, rows, [&](int64_t r) {
    cpu::routeToken(k.params, logits.data() + r * e, k.correction,
                    weights.f.data() + r * top, indices.i.data() + r * top);
  });
}

void runExperts(const Step &step, const ExpertsKernel &k, const Value &x,
                const Value &weights, const Value &indices, Value &out) {
  int64_t h = k.hidden, w = k.width, top = k.topK;
  int64_t rows = static_cast<int64_t>(x.f.size()) / h;
  // (row, choice) pairs per expert, then one batched FFN per expert.
  std::vector<std::vector<int64_t>> assigned(k.experts.size());
  for (int64_t i = 0; i < rows * top; ++i)
    assigned[indices.i[i]].push_back(i);
  std::vector<float> results(rows * top * h);
  std::vector<float> xs, gate, up, down;
  for (size_t e = 0; e < k.experts.size(); ++e) {
    const std::vector<int64_t> &picks = assigned[e];
    if (picks.empty())
      continue;
    const ExpertWeights &ew = k.experts[e];
    int64_t n = static_cast<int64_t>(picks.size());
    xs.resize(n * h);
    gate.resize(n * w);
    up.resize(n * w);
    down.resize(n * h);
    for (int64_t j = 0; j < n; ++j)
      std::memcpy(xs.data() + j * h, x.f.data() + (picks[j] / top) * h,
                  h * sizeof(float));
    cpu::linear(step.pool, xs.data(), n, h, ew.gate, w, ew.gateBias,
                gate.data());
    cpu::linear(step.pool, xs.data(), n, h, ew.up, w, ew.upBias, up.data());
    for (int64_t i = 0; i < n * w; ++i) {
      if (k.clamped) {
        // GPT-OSS: gate clamped above, up both ways, (up + 1)·gate·σ(α·gate).
        float g = std::min(gate[i], k.limit);
        float u = std::clamp(up[i], -k.limit, k.limit);
        gate[i] = (u + 1.0f) * (g * cpu::sigmoid(g * k.alpha));
      } else {
        gate[i] = cpu::silu(gate[i]) * up[i];
      }
    }
    cpu::linear(step.pool, gate.data(), n, w, ew.down, h, ew.downBias,
                down.data());
    for (int64_t j = 0; j < n; ++j)
      std::memcpy(results.data() + picks[j] * h, down.data() + j * h,
                  h * sizeof(float));
  }
  // HF adds w·E(x) expert by expert in index order; so do we, per row.
  out.f.assign(rows * h, 0.0f);
  forEachRow(step, rows, [&](int64_t r) {
    std::vector<int64_t> order(top);
    std::iota(order.begin(), order.end(), r * top);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return indices.i[a] < indices.i[b];
    });
    float *y = out.f.data() + r * h;
    for (int64_t pick : order) {
      float weight = weights.f[pick];
      const float *result = results.data() + pick * h;
      for (int64_t i = 0; i < h; ++i)
        y[i] += result[i] * weight;
    }
  });
}

void runMlp(const Step &step, const MlpKernel &k, const Value &x, Value &out) {
  int64_t h = k.hidden, w = k.width;
  int64_t rows = static_cast<int64_t>(x.f.size()) / h;
  std::vector<float> gate(rows * w), up(rows * w);
  cpu::linear(step.pool, x.f.data(), rows, h, k.gate, w, nullptr, gate.data());
  cpu::linear(step.pool, x.f.data(), rows, h, k.up, w, nullptr, up.data());
  for (int64_t i = 0; i < rows * w; ++i)
    gate[i] = cpu::silu(gate[i]) * up[i];
  out.f.resize(rows * h);
  cpu::linear(step.pool, gate.data(), rows, w, k.down, h, nullptr,
              out.f.data());
  if (k.outputGate)
    forEachRow(step, rows, [&](int64_t r) {
      float g = cpu::sigmoid(cpu::dot(x.f.data() + r * h, k.outputGate, h));
      for (int64_t i = 0; i < h; ++i)
        out.f[r * h + i] = g * out.f[r * h + i];
    });
}

void runResidual(const ResidualKernel &k, const Value &skip,
                 const Value &update, Value &out) {
  out.f.resize(skip.f.size());
  for (size_t i = 0; i < skip.f.size(); ++i)
    out.f[i] = k.skipScale * skip.f[i] + k.updateScale * update.f[i];
}

void runHead(const Step &step, const HeadKernel &k, const Value &x,
             Value &out) {
  int64_t n = static_cast<int64_t>(step.batch.logitRows.size());
  std::vector<float> picked(n * k.hidden);
  for (int64_t j = 0; j < n; ++j)
    std::memcpy(picked.data() + j * k.hidden,
                x.f.data() + step.batch.logitRows[j] * k.hidden,
                k.hidden * sizeof(float));
  out.f.resize(n * k.vocab);
  cpu::linear(step.pool, picked.data(), n, k.hidden, k.weight, k.vocab, nullptr,
              out.f.data());
}

} // namespace

CpuBackend::CpuBackend(int threads)
    : CpuBackend(CpuBackendOptions{threads, true, true}) {}

CpuBackend::CpuBackend(const CpuBackendOptions &options)
    : options_(options), state_(std::make_unique<State>(options.threads)) {}

CpuBackend::~CpuBackend() = default;

int CpuBackend::threads() const { return state_->pool.size(); }

Status CpuBackend::prepare(const LoadedPlan &plan, const WeightSet &weights,
                           int32_t slots, int32_t maxContext) {
  size_t count = plan.model().params()->size();
  if (weights.size() != count)
    return makeError("cpu backend: the weights hold {} params, the plan {}",
                     weights.size(), count);
  std::vector<std::vector<float>> params;
  params.reserve(count);
  for (size_t i = 0; i < count; ++i)
    params.push_back(weights.toFloat32(i));
  return prepare(plan, std::move(params), slots, maxContext);
}

Status CpuBackend::prepare(const LoadedPlan &plan,
                           std::vector<std::vector<float>> params,
                           int32_t slots, int32_t maxContext) {
  state_ = std::make_unique<State>(options_.threads);
  State &s = *state_;
  auto fail = [](const Error &error) {
    return error.withContext("cpu backend");
  };
  const plan::Model &model = plan.model();
  if (slots <= 0 || maxContext <= 0)
    return fail(makeError("slots ({}) and max context ({}) must be positive",
                          slots, maxContext));
  if (params.size() != model.params()->size())
    return fail(makeError("{} weight arrays for {} params", params.size(),
                          model.params()->size()));
  for (size_t i = 0; i < params.size(); ++i) {
    const plan::Param &param = *model.params()->Get(i);
    if (static_cast<int64_t>(params[i].size()) != paramElements(param))
      return fail(makeError("param {} ('{}') has {} values, its shape {}", i,
                            param.name()->str(), params[i].size(),
                            paramElements(param)));
  }
  s.params = std::move(params);
  s.slots = slots;
  s.maxContext = maxContext;
  s.lengths.assign(slots, 0);
  Status status = s.compile(model);
  if (!status.ok())
    return fail(status.error());
  s.prepared = true;
  return Status::success();
}

void CpuBackend::resetSlot(int32_t slot) {
  State &s = *state_;
  if (!s.prepared || slot < 0 || slot >= s.slots)
    return;
  s.lengths[slot] = 0;
  for (LightningState &state : s.lightning) {
    size_t size = state.heads * state.headDim * state.headDim;
    std::fill_n(state.data.begin() + slot * size, size, 0.0f);
  }
}

Status CpuBackend::forward(const StepBatch &batch, std::vector<float> &logits) {
  State &s = *state_;
  auto fail = [](const Error &error) {
    return error.withContext("cpu backend");
  };
  if (!s.prepared)
    return fail(makeError("forward before prepare"));
  int64_t rows = static_cast<int64_t>(batch.rows.size());
  if (static_cast<int64_t>(batch.tokenIds.size()) != rows)
    return fail(
        makeError("{} token ids for {} rows", batch.tokenIds.size(), rows));
  bool prefill = isPrefill(batch.rows);
  // Each slot is one run of consecutive positions continuing its cache.
  std::vector<SlotRun> runs;
  std::vector<bool> seen(s.slots, false);
  for (int64_t r = 0; r < rows; ++r) {
    const TokenRow &row = batch.rows[r];
    if (row.slot < 0 || row.slot >= s.slots)
      return fail(makeError("row {}: slot {} is not in 0..{}", r, row.slot,
                            s.slots - 1));
    bool starts = r == 0 || batch.rows[r - 1].slot != row.slot;
    if (starts) {
      if (seen[row.slot])
        return fail(
            makeError("row {}: slot {} appears in two runs", r, row.slot));
      seen[row.slot] = true;
      if (row.position != s.lengths[row.slot])
        return fail(makeError("row {}: slot {} continues at position {}, "
                              "not {}",
                              r, row.slot, s.lengths[row.slot], row.position));
      runs.push_back({row.slot, r, 1});
    } else {
      if (row.position != batch.rows[r - 1].position + 1)
        return fail(makeError("row {}: positions of slot {} are not "
                              "consecutive",
                              r, row.slot));
      ++runs.back().count;
    }
    if (row.position >= s.maxContext)
      return fail(makeError("row {}: position {} exceeds the context of {}", r,
                            row.position, s.maxContext));
    if (batch.tokenIds[r] < 0 || batch.tokenIds[r] >= s.embeddingVocab)
      return fail(makeError("row {}: token id {} is not in 0..{}", r,
                            batch.tokenIds[r], s.embeddingVocab - 1));
  }
  for (int32_t row : batch.logitRows)
    if (row < 0 || row >= rows)
      return fail(makeError("logit row {} is not in 0..{}", row, rows - 1));
  logits.clear();
  if (rows == 0)
    return Status::success();

  Step step{s.pool, batch, runs, s.maxContext, options_};
  std::vector<Value> values(s.numValues);
  values[0].i = batch.tokenIds;
  for (size_t index = 0; index < s.ops.size(); ++index) {
    const CompiledOp &op = s.ops[index];
    const Value &in = values[op.operands[0]];
    Value &out = values[op.results[0]];
    auto start = std::chrono::steady_clock::now();
    std::visit(
        [&](const auto &k) {
          using K = std::decay_t<decltype(k)>;
          if constexpr (std::is_same_v<K, EmbeddingKernel>)
            runEmbedding(step, k, in, out);
          else if constexpr (std::is_same_v<K, NormKernel>)
            runNorm(step, k, in, out);
          else if constexpr (std::is_same_v<K, AttentionKernel>)
            runAttention(step, k, s.kv[k.cache], in, out);
          else if constexpr (std::is_same_v<K, LatentKernel>)
            runLatent(step, k, s.latent[k.cache], in, out);
          else if constexpr (std::is_same_v<K, LightningKernel>)
            runLightning(step, k, s.lightning[k.state], in, out);
          else if constexpr (std::is_same_v<K, RouterKernel>)
            runRouter(step, k, in, out, values[op.results[1]]);
          else if constexpr (std::is_same_v<K, ExpertsKernel>)
            runExperts(step, k, in, values[op.operands[1]],
                       values[op.operands[2]], out);
          else if constexpr (std::is_same_v<K, MlpKernel>)
            runMlp(step, k, in, out);
          else if constexpr (std::is_same_v<K, ResidualKernel>)
            runResidual(k, in, values[op.operands[1]], out);
          else
            runHead(step, k, in, out);
        },
        op.kernel);
    s.stageSeconds[prefill ? 0 : 1][op.kernel.index()] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    for (int operand : op.operands)
      if (s.lastUse[operand] == static_cast<int>(index)) {
        values[operand].f = {};
        values[operand].i = {};
      }
  }
  for (const SlotRun &run : runs)
    s.lengths[run.slot] += static_cast<int32_t>(run.count);
  logits = std::move(values[s.logitsValue].f);
  return Status::success();
}

std::vector<StageTime> CpuBackend::stageSeconds() const {
  std::vector<StageTime> stages;
  if (!state_)
    return stages;
  for (int phase = 0; phase < 2; ++phase)
    for (size_t kind = 0; kind < kStageNames.size(); ++kind)
      if (state_->stageSeconds[phase][kind] > 0)
        stages.push_back({phase == 0 ? "prefill" : "decode", kStageNames[kind],
                          state_->stageSeconds[phase][kind]});
  return stages;
}

} // namespace moe
