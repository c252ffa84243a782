#include "runtime/backends/cuda/backend/CudaBackend.h"

#include "runtime/backends/cpu/Kernels.h"
#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/GemmRunner.h"
#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/Stream.h"
#include "runtime/backends/cuda/backend/BackendKernels.h"
#include "runtime/backends/cuda/kernels/Kernels.h"

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>
#include <variant>

namespace moe::cuda {
namespace {

using bf16 = __nv_bfloat16;
namespace kn = kernels;

// Each plan op resolved against the uploaded weights. fp32 arrays (sinks,
// correction biases, RoPE tables) are indices into State::floats, which are
// uploaded after all ops are compiled.

struct EmbeddingOp {
  const bf16 *table;
  int64_t vocab, hidden;
};
struct NormOp {
  const bf16 *weight;
  int64_t width;
  float eps;
};
struct AttentionOp {
  int64_t hidden, heads, kvHeads, headDim, rotaryDim;
  kn::RopeStyle style;
  int cos, sin; // fp32 arrays; -1 without rotation
  float scale;
  const bf16 *q, *k, *v, *o, *qBias, *kBias, *vBias, *oBias;
  plan::QKNorm qkNorm;
  const bf16 *qNorm, *kNorm;
  float qkEps;
  int64_t window;
  int sinks; // fp32 array or -1
  int cache;
  bool ownsKv;
};
// Router weights stay fp32 (fp32 arrays): see backend::routerLogits.
struct RouterOp {
  int64_t hidden, experts, topK;
  int weight, bias, correction; // fp32 arrays; bias and correction may be -1
  kn::RouterScoring scoring;
  kn::RouterSelection selection;
  int groups, keptGroups;
  bool normalize;
  float scaling;
};
// Gate and up as one [E, 2I, H] weight: separate layouts are concatenated
// (gate rows first, for siluMul); GPT-OSS's fused layout keeps its
// interleaved columns, transposed to [out, in] (for swigluClamped).
struct ExpertsOp {
  int64_t hidden, width, experts, topK;
  bool clamped;
  float limit, alpha;
  const bf16 *gateUp, *gateUpBias, *down, *downBias; // down [E, H, I]
};
struct MlpOp {
  int64_t hidden, width;
  const bf16 *gateUp, *down, *outputGate; // gateUp [2I, H]
};
struct ResidualOp {
  float skipScale, updateScale;
  int64_t width;
};
struct HeadOp {
  const bf16 *weight;
  int64_t vocab, hidden;
};

using Op = std::variant<EmbeddingOp, NormOp, AttentionOp, RouterOp, ExpertsOp,
                        MlpOp, ResidualOp, HeadOp>;
constexpr std::array<const char *, std::variant_size_v<Op>> kStageNames = {
    "embedding",      "norm", "attention", "router",
    "routed experts", "mlp",  "residual",  "lm head"};

struct CompiledOp {
  Op op;
  std::vector<int> operands, results;
};

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
  int64_t experts = 0;
};

// One value of a step on the device. Activations are bf16 (GEMM inputs and
// outputs) or fp32 (the residual stream: embedding, residual adds, the
// experts' weighted sum); each form is made from the other on first use.
// Routing weights are fp32, expert indices i32.
struct DeviceValue {
  bf16 *a = nullptr;
  float *f = nullptr;
  int32_t *i = nullptr;
  int64_t width = 0;
};

struct KvCache {
  int64_t kvHeads = 0, headDim = 0;
  bf16 *k = nullptr, *v = nullptr;
};

int64_t paramElements(const plan::Param &param) {
  int64_t n = 1;
  for (int64_t dim : *param.shape())
    n *= dim;
  return n;
}

std::vector<bf16> toBf16Host(const std::vector<float> &values) {
  std::vector<bf16> out(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    out[i] = __float2bfloat16_rn(values[i]);
  return out;
}

} // namespace

struct CudaBackend::State {
  std::optional<Stream> stream;
  std::unique_ptr<GemmRunner> gemm;
  std::optional<DeviceArena> weights; // bf16 weights
  std::optional<DeviceArena> cache;   // KV caches and fp32 arrays
  std::optional<DeviceArena> step;    // one forward's values and scratch
  std::vector<Event> events;          // one before each op, one after the last
  std::vector<CompiledOp> ops;
  std::vector<int64_t> valueWidths;
  std::vector<std::vector<float>> floats; // host copies until uploaded
  std::vector<float *> floatsOnDevice;
  std::vector<KvCache> kv;
  int numValues = 0, logitsValue = 0;
  int64_t embeddingVocab = 0, vocab = 0;
  int64_t rowBytes = 0; // step-arena bytes per batch row, all ops together
  int32_t slots = 0, maxContext = 0;
  std::vector<int32_t> lengths;
  bool prepared = false;
  bool gptOssNorm = false;
  std::array<double, std::variant_size_v<Op>> stageSeconds{};

  Status compile(const plan::Model &model, const WeightSet &weightSet);
};

namespace {

// Uploads params on first use, converted to bf16, checking sizes as the CPU
// backend does.
class Compiler {
public:
  Compiler(const plan::Model &model, const WeightSet &weights,
           DeviceArena &arena, std::vector<std::vector<float>> &floats,
           int32_t maxContext)
      : model_(model), weights_(weights), arena_(arena), floats_(floats),
        maxContext_(maxContext), uploaded_(model.params()->size(), nullptr) {}

  Status check(int index, int64_t size, const char *field) {
    if (index < 0 || index >= static_cast<int>(uploaded_.size()))
      return makeError("'{}' refers to param {}, which does not exist", field,
                       index);
    int64_t have = paramElements(*model_.params()->Get(index));
    if (have != size)
      return makeError("'{}' (param {}) has {} values, the op needs {}", field,
                       index, have, size);
    return Status::success();
  }

  Result<const bf16 *> upload(const std::vector<float> &values,
                              const char *what) {
    std::vector<bf16> host = toBf16Host(values);
    auto device = arena_.allocateArray<bf16>(host.size(), what);
    if (!device)
      return device.error();
    MOE_CUDA_TRY(cudaMemcpy(*device, host.data(), host.size() * sizeof(bf16),
                            cudaMemcpyHostToDevice));
    return static_cast<const bf16 *>(*device);
  }

  Status bind(const bf16 *&out, int index, int64_t size, const char *field,
              bool optional = false) {
    out = nullptr;
    if (index < 0 && optional)
      return Status::success();
    if (index < 0)
      return makeError("'{}' is missing", field);
    MOE_RETURN_IF_ERROR(check(index, size, field));
    if (!uploaded_[index]) {
      auto device = upload(weights_.toFloat32(index), field);
      if (!device)
        return device.error();
      uploaded_[index] = *device;
    }
    out = uploaded_[index];
    return Status::success();
  }

  // An fp32 param kept in fp32 (sinks, correction biases): -1 when absent.
  Result<int> bindFloat(int index, int64_t size, const char *field) {
    if (index < 0)
      return -1;
    MOE_RETURN_IF_ERROR(check(index, size, field));
    floats_.push_back(weights_.toFloat32(index));
    return static_cast<int>(floats_.size()) - 1;
  }

  // cos and sin tables, shared by the layers of one RoPE.
  Result<std::pair<int, int>> rope(const plan::Rope &plan, int64_t limit) {
    cpu::RopeParams p = cpu::RopeParams::fromPlan(plan);
    if (p.rotaryDim < 0 || p.rotaryDim % 2 != 0 || p.rotaryDim > limit)
      return makeError("rope rotary_dim {} must be even and at most {}",
                       p.rotaryDim, limit);
    if (p.rotaryDim == 0)
      return std::pair{-1, -1};
    if (!(p.theta > 1.0))
      return makeError("rope theta {} must exceed 1", p.theta);
    if (p.yarn && (!(p.factor > 0) || p.originalMaxPosition <= 0))
      return makeError("yarn rope needs a positive factor and "
                       "original_max_position");
    for (const auto &[params, tables] : ropes_)
      if (params == p)
        return tables;
    std::vector<float> inverse = cpu::ropeInverseFrequencies(p);
    int64_t half = p.rotaryDim / 2;
    std::vector<float> cos(maxContext_ * half), sin(maxContext_ * half);
    kn::buildRopeTable(inverse.data(), half, p.attentionFactor, maxContext_,
                       cos.data(), sin.data());
    floats_.push_back(std::move(cos));
    floats_.push_back(std::move(sin));
    int at = static_cast<int>(floats_.size()) - 2;
    ropes_.emplace_back(p, std::pair{at, at + 1});
    return ropes_.back().second;
  }

  Result<Op> attention(const plan::Attention &a, int64_t hidden, int layer,
                       std::vector<KvCache> &caches) {
    AttentionOp k{};
    k.hidden = hidden;
    k.heads = a.num_heads();
    k.kvHeads = a.num_kv_heads();
    k.headDim = a.head_dim();
    if (k.heads <= 0 || k.kvHeads <= 0 || k.headDim <= 0 ||
        k.heads % k.kvHeads != 0)
      return makeError("heads {} / kv heads {} / head_dim {} are invalid",
                       k.heads, k.kvHeads, k.headDim);
    if (k.headDim > 256)
      return makeError("head_dim {} exceeds the attention kernel's 256",
                       k.headDim);
    auto tables = rope(*a.rope(), k.headDim);
    if (!tables)
      return tables.error();
    std::tie(k.cos, k.sin) = *tables;
    k.rotaryDim = a.rope()->rotary_dim();
    k.style = static_cast<kn::RopeStyle>(a.rope()->style());
    k.scale = static_cast<float>(a.scale());
    k.ownsKv = a.kv_source_layer() < 0;
    int64_t qw = k.heads * k.headDim, kvw = k.kvHeads * k.headDim;
    MOE_RETURN_IF_ERROR(bind(k.q, a.q(), qw * hidden, "q"));
    MOE_RETURN_IF_ERROR(bind(k.o, a.o(), hidden * qw, "o"));
    MOE_RETURN_IF_ERROR(bind(k.qBias, a.q_bias(), qw, "q_bias", true));
    MOE_RETURN_IF_ERROR(bind(k.oBias, a.o_bias(), hidden, "o_bias", true));
    auto sinks = bindFloat(a.sinks(), k.heads, "sinks");
    if (!sinks)
      return sinks.error();
    k.sinks = *sinks;
    k.qkNorm = a.qk_norm();
    k.qkEps = static_cast<float>(a.qk_norm_eps());
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
      k.cache = static_cast<int>(caches.size());
      caches.push_back({k.kvHeads, k.headDim});
      layerCaches_.emplace_back(layer, k.cache);
      return Op(k);
    }
    auto source = std::find_if(
        layerCaches_.begin(), layerCaches_.end(),
        [&](const auto &entry) { return entry.first == a.kv_source_layer(); });
    if (source == layerCaches_.end())
      return makeError("kv_source_layer {} has no K/V cache before this op",
                       a.kv_source_layer());
    k.cache = source->second;
    if (caches[k.cache].kvHeads != k.kvHeads ||
        caches[k.cache].headDim != k.headDim)
      return makeError("kv_source_layer {} caches {} heads of {}, this layer "
                       "reads {} of {}",
                       a.kv_source_layer(), caches[k.cache].kvHeads,
                       caches[k.cache].headDim, k.kvHeads, k.headDim);
    return Op(k);
  }

  Result<Op> router(const plan::Router &r, int64_t hidden) {
    RouterOp k{};
    k.hidden = hidden;
    k.experts = r.num_experts();
    k.topK = r.top_k();
    k.groups = r.n_group();
    k.keptGroups = r.topk_group();
    if (k.experts <= 0 || k.experts > 256 || k.topK < 1 || k.topK > 8 ||
        k.topK > k.experts)
      return makeError("router of {} experts, top {}: the CUDA router takes "
                       "at most 256 experts and top 8",
                       k.experts, k.topK);
    if (k.groups <= 0 || k.groups > 8 || k.experts % k.groups != 0 ||
        k.keptGroups <= 0 || k.keptGroups > k.groups)
      return makeError("router groups {} / kept {} do not fit {} experts",
                       k.groups, k.keptGroups, k.experts);
    k.scoring = static_cast<kn::RouterScoring>(r.scoring());
    k.selection = static_cast<kn::RouterSelection>(r.selection());
    k.normalize = r.normalize();
    k.scaling = static_cast<float>(r.scaling());
    if (r.weight() < 0)
      return makeError("'weight' is missing");
    auto weight = bindFloat(r.weight(), k.experts * hidden, "weight");
    if (!weight)
      return weight.error();
    k.weight = *weight;
    auto bias = bindFloat(r.bias(), k.experts, "bias");
    if (!bias)
      return bias.error();
    k.bias = *bias;
    auto correction =
        bindFloat(r.correction_bias(), k.experts, "correction_bias");
    if (!correction)
      return correction.error();
    k.correction = *correction;
    return Op(k);
  }

  Result<Op> experts(const plan::Experts &e, int64_t hidden, int64_t topK) {
    ExpertsOp k{};
    k.hidden = hidden;
    k.width = e.intermediate_size();
    k.experts = e.num_experts();
    k.topK = topK;
    int64_t n = k.experts, h = hidden, w = k.width;
    if (n <= 0 || w <= 0)
      return makeError("experts and intermediate_size must be positive");
    if (n > 1024)
      return makeError("{} experts exceed the dispatch kernel's 1024", n);
    k.clamped = e.activation() == plan::ExpertActivation::swiglu_clamped;
    k.limit = static_cast<float>(e.swiglu_limit());
    k.alpha = static_cast<float>(e.swiglu_alpha());
    MOE_RETURN_IF_ERROR(
        bind(k.downBias, e.down_bias(), n * h, "down_bias", true));
    if (e.layout() == plan::ExpertLayout::separate) {
      if (k.clamped)
        return makeError("swiglu_clamped needs the fused layout");
      if (e.gate_up_bias() >= 0)
        return makeError("gate_up_bias needs the fused layout");
      MOE_RETURN_IF_ERROR(check(e.gate(), n * w * h, "gate"));
      MOE_RETURN_IF_ERROR(check(e.up(), n * w * h, "up"));
      std::vector<float> gate = weights_.toFloat32(e.gate());
      std::vector<float> up = weights_.toFloat32(e.up());
      std::vector<float> gateUp(2 * n * w * h);
      for (int64_t x = 0; x < n; ++x) {
        std::copy_n(gate.begin() + x * w * h, w * h,
                    gateUp.begin() + 2 * x * w * h);
        std::copy_n(up.begin() + x * w * h, w * h,
                    gateUp.begin() + (2 * x + 1) * w * h);
      }
      auto device = upload(gateUp, "experts gate|up");
      if (!device)
        return device.error();
      k.gateUp = *device;
      MOE_RETURN_IF_ERROR(bind(k.down, e.down(), n * h * w, "down"));
      return Op(k);
    }
    if (!k.clamped)
      return makeError("the fused layout needs swiglu_clamped");
    // gate_up [E, H, 2I] and down [E, I, H] are [in, out]: transposed once.
    MOE_RETURN_IF_ERROR(check(e.gate_up(), n * h * 2 * w, "gate_up"));
    MOE_RETURN_IF_ERROR(check(e.down(), n * w * h, "down"));
    MOE_RETURN_IF_ERROR(
        bind(k.gateUpBias, e.gate_up_bias(), n * 2 * w, "gate_up_bias", true));
    std::vector<float> gateUp = weights_.toFloat32(e.gate_up());
    std::vector<float> down = weights_.toFloat32(e.down());
    std::vector<float> gateUpT(gateUp.size()), downT(down.size());
    for (int64_t x = 0; x < n; ++x) {
      for (int64_t j = 0; j < h; ++j)
        for (int64_t c = 0; c < 2 * w; ++c)
          gateUpT[(x * 2 * w + c) * h + j] = gateUp[(x * h + j) * 2 * w + c];
      for (int64_t i = 0; i < w; ++i)
        for (int64_t j = 0; j < h; ++j)
          downT[(x * h + j) * w + i] = down[(x * w + i) * h + j];
    }
    auto gu = upload(gateUpT, "experts gate_up");
    if (!gu)
      return gu.error();
    auto d = upload(downT, "experts down");
    if (!d)
      return d.error();
    k.gateUp = *gu;
    k.down = *d;
    return Op(k);
  }

  Result<Op> mlp(const plan::MLP &m, int64_t hidden) {
    MlpOp k{};
    k.hidden = hidden;
    k.width = m.intermediate_size();
    int64_t h = hidden, w = k.width;
    if (w <= 0)
      return makeError("intermediate_size must be positive");
    MOE_RETURN_IF_ERROR(check(m.gate(), w * h, "gate"));
    MOE_RETURN_IF_ERROR(check(m.up(), w * h, "up"));
    std::vector<float> gateUp = weights_.toFloat32(m.gate());
    std::vector<float> up = weights_.toFloat32(m.up());
    gateUp.insert(gateUp.end(), up.begin(), up.end());
    auto device = upload(gateUp, "mlp gate|up");
    if (!device)
      return device.error();
    k.gateUp = *device;
    MOE_RETURN_IF_ERROR(bind(k.down, m.down(), h * w, "down"));
    MOE_RETURN_IF_ERROR(
        bind(k.outputGate, m.output_gate(), h, "output_gate", true));
    return Op(k);
  }

private:
  const plan::Model &model_;
  const WeightSet &weights_;
  DeviceArena &arena_;
  std::vector<std::vector<float>> &floats_;
  int32_t maxContext_;
  std::vector<const bf16 *> uploaded_;
  std::vector<std::pair<cpu::RopeParams, std::pair<int, int>>> ropes_;
  std::vector<std::pair<int, int>> layerCaches_; // layer → KV cache
};

// Step-arena bytes per row that an op takes (its results and scratch); a
// little generous, the arena is sized from it.
int64_t opRowBytes(const Op &op) {
  constexpr int64_t b = sizeof(bf16);
  return std::visit(
      [](const auto &k) -> int64_t {
        using K = std::decay_t<decltype(k)>;
        if constexpr (std::is_same_v<K, EmbeddingOp>)
          return k.hidden * b;
        else if constexpr (std::is_same_v<K, NormOp>)
          return k.width * b;
        else if constexpr (std::is_same_v<K, AttentionOp>)
          return (2 * k.heads * k.headDim + 2 * k.kvHeads * k.headDim +
                  k.hidden) *
                 b;
        else if constexpr (std::is_same_v<K, RouterOp>)
          return k.experts * (b + 4) + k.topK * 8;
        else if constexpr (std::is_same_v<K, ExpertsOp>)
          return k.topK * ((2 * k.hidden + 3 * k.width) * b + 8) +
                 k.hidden * (4 + b);
        else if constexpr (std::is_same_v<K, MlpOp>)
          return (3 * k.width + k.hidden + 1) * b;
        else if constexpr (std::is_same_v<K, ResidualOp>)
          return k.width * b;
        else
          return k.hidden * b;
      },
      op);
}

} // namespace

Status CudaBackend::State::compile(const plan::Model &model,
                                   const WeightSet &weightSet) {
  Compiler compiler(model, weightSet, *weights, floats, maxContext);
  numValues = model.num_values();
  logitsValue = model.logits();
  gptOssNorm = model.model_type()->str() == "gpt_oss";
  std::vector<ValueInfo> infos(numValues);
  if (numValues <= 0)
    return makeError("the plan defines no values");
  infos[0] = {ValueKind::tokens, 1, 0};
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
    size_t operands = 1, results = 1;
    std::vector<ValueKind> wanted{ValueKind::activations};
    switch (op.spec_type()) {
    case plan::Module::Embedding:
      wanted = {ValueKind::tokens};
      break;
    case plan::Module::Router:
      results = 2;
      break;
    case plan::Module::Experts:
      operands = 3;
      wanted = {ValueKind::activations, ValueKind::routeWeights,
                ValueKind::routeIndices};
      break;
    case plan::Module::Residual:
      operands = 2;
      wanted = {ValueKind::activations, ValueKind::activations};
      break;
    default:
      break;
    }
    if (compiled.operands.size() != operands ||
        compiled.results.size() != results)
      return fail(
          makeError("expects {} operands and {} results", operands, results));
    for (int value : compiled.operands)
      if (value < 0 || value >= numValues)
        return fail(makeError("operand value {} does not exist", value));
    for (int value : compiled.results)
      if (value <= 0 || value >= numValues)
        return fail(makeError("result value {} is invalid", value));
    for (size_t i = 0; i < wanted.size(); ++i)
      if (infos[compiled.operands[i]].kind != wanted[i])
        return fail(makeError(
            "operand {} (value {}) is not {}", i, compiled.operands[i],
            wanted[i] == ValueKind::tokens        ? "the token ids"
            : wanted[i] == ValueKind::activations ? "an activation"
                                                  : "a router result"));
    int64_t in = infos[compiled.operands[0]].width;
    Result<Op> kernel = makeError("unsupported module");
    std::vector<ValueInfo> resultInfos{{ValueKind::activations, in, 0}};
    switch (op.spec_type()) {
    case plan::Module::Embedding: {
      int table = op.spec_as_Embedding()->table();
      if (table < 0 || table >= static_cast<int>(planParams.size()) ||
          planParams.Get(table)->shape()->size() != 2) {
        kernel = makeError("needs a [vocab, hidden] table");
        break;
      }
      EmbeddingOp k{};
      k.vocab = planParams.Get(table)->shape()->Get(0);
      k.hidden = planParams.Get(table)->shape()->Get(1);
      Status bound = compiler.bind(k.table, table, k.vocab * k.hidden, "table");
      kernel = bound.ok() ? Result<Op>(k) : Result<Op>(bound.error());
      resultInfos = {{ValueKind::activations, k.hidden, 0}};
      embeddingVocab = k.vocab;
      break;
    }
    case plan::Module::RMSNorm: {
      const plan::RMSNorm &n = *op.spec_as_RMSNorm();
      NormOp k{nullptr, in, static_cast<float>(n.eps())};
      Status bound = compiler.bind(k.weight, n.weight(), in, "weight");
      kernel = bound.ok() ? Result<Op>(k) : Result<Op>(bound.error());
      break;
    }
    case plan::Module::Attention:
      kernel = compiler.attention(*op.spec_as_Attention(), in, op.layer(), kv);
      break;
    case plan::Module::Router: {
      const plan::Router &r = *op.spec_as_Router();
      kernel = compiler.router(r, in);
      resultInfos = {{ValueKind::routeWeights, r.top_k(), 0},
                     {ValueKind::routeIndices, r.top_k(), r.num_experts()}};
      break;
    }
    case plan::Module::Experts: {
      const ValueInfo &routeWeights = infos[compiled.operands[1]];
      const ValueInfo &indices = infos[compiled.operands[2]];
      const plan::Experts &e = *op.spec_as_Experts();
      if (routeWeights.width != indices.width ||
          indices.experts > e.num_experts()) {
        kernel = makeError("the routing weights and indices do not match "
                           "{} experts",
                           e.num_experts());
        break;
      }
      kernel = compiler.experts(e, in, routeWeights.width);
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
      kernel = Op(ResidualOp{static_cast<float>(r.skip_scale()),
                             static_cast<float>(r.update_scale()), in});
      break;
    }
    case plan::Module::LMHead: {
      int weight = op.spec_as_LMHead()->weight();
      if (weight < 0 || weight >= static_cast<int>(planParams.size())) {
        kernel = makeError("weight param {} does not exist", weight);
        break;
      }
      HeadOp k{nullptr, planParams.Get(weight)->shape()->Get(0), in};
      Status bound = compiler.bind(k.weight, weight, k.vocab * in, "weight");
      kernel = bound.ok() ? Result<Op>(k) : Result<Op>(bound.error());
      resultInfos = {{ValueKind::logits, k.vocab, 0}};
      logitsFromHead |= compiled.results[0] == logitsValue;
      vocab = std::max(vocab, k.vocab);
      break;
    }
    case plan::Module::MLAttention:
      kernel = makeError("the CUDA backend does not run mla_attention yet");
      break;
    case plan::Module::LightningAttention:
      kernel =
          makeError("the CUDA backend does not run lightning_attention yet");
      break;
    case plan::Module::NONE:
      break;
    }
    if (!kernel.ok())
      return fail(kernel.error());
    compiled.op = std::move(*kernel);
    // Plus both forms of the operands and the result (conversions).
    rowBytes += opRowBytes(compiled.op) + 6 * (2 * in + resultInfos[0].width);
    for (size_t r = 0; r < compiled.results.size(); ++r)
      infos[compiled.results[r]] = resultInfos[r];
    ops.push_back(std::move(compiled));
  }
  for (const ValueInfo &info : infos)
    valueWidths.push_back(info.width);
  if (!logitsFromHead)
    return makeError("the logits value {} is not an LM head's result",
                     logitsValue);
  return Status::success();
}

CudaBackend::CudaBackend() = default;
CudaBackend::~CudaBackend() = default;

Status CudaBackend::prepare(const LoadedPlan &plan, const WeightSet &weights,
                            int32_t slots, int32_t maxContext) {
  auto fail = [](const Error &error) {
    return error.withContext("cuda backend");
  };
  state_.reset();
  const plan::Model &model = plan.model();
  // Unsupported attention kinds fail before anything is uploaded.
  for (const plan::Op *op : *model.ops()) {
    if (op->spec_type() == plan::Module::MLAttention)
      return fail(makeError("the CUDA backend does not run mla_attention yet "
                            "(layer {})",
                            op->layer()));
    if (op->spec_type() == plan::Module::LightningAttention)
      return fail(makeError("the CUDA backend does not run "
                            "lightning_attention yet (layer {})",
                            op->layer()));
  }
  if (slots <= 0 || maxContext <= 0)
    return fail(makeError("slots ({}) and max context ({}) must be positive",
                          slots, maxContext));
  size_t count = model.params()->size();
  if (weights.size() != count)
    return fail(makeError("the weights hold {} params, the plan {}",
                          weights.size(), count));
  auto s = std::make_unique<State>();
  s->slots = slots;
  s->maxContext = maxContext;
  s->lengths.assign(slots, 0);

  // Every param at most once in bf16 (expert re-layouts replace their
  // sources), each allocation rounded up to the pool alignment.
  size_t weightBytes = 0;
  for (const plan::Param *param : *model.params())
    weightBytes +=
        size_t(paramElements(*param)) * sizeof(bf16) + 2 * kPoolAlignment;
  weightBytes += model.ops()->size() * 2 * kPoolAlignment;
  auto arena = DeviceArena::create(weightBytes, "weights");
  if (!arena)
    return fail(arena.error());
  s->weights.emplace(std::move(*arena));
  Status compiled = s->compile(model, weights);
  if (!compiled.ok())
    return fail(compiled.error());

  size_t cacheBytes = 0;
  for (const KvCache &cache : s->kv)
    cacheBytes += 2 * (size_t(slots) * maxContext * cache.kvHeads *
                           cache.headDim * sizeof(bf16) +
                       kPoolAlignment);
  for (const std::vector<float> &values : s->floats)
    cacheBytes += values.size() * sizeof(float) + kPoolAlignment;
  auto cacheArena = DeviceArena::create(cacheBytes + kPoolAlignment, "kv");
  if (!cacheArena)
    return fail(cacheArena.error());
  s->cache.emplace(std::move(*cacheArena));
  for (KvCache &cache : s->kv) {
    size_t elements =
        size_t(slots) * maxContext * cache.kvHeads * cache.headDim;
    auto k = s->cache->allocateArray<bf16>(elements, "k cache");
    auto v = s->cache->allocateArray<bf16>(elements, "v cache");
    if (!k || !v)
      return fail(!k ? k.error() : v.error());
    cache.k = *k;
    cache.v = *v;
  }
  for (const std::vector<float> &values : s->floats) {
    auto device = s->cache->allocateArray<float>(values.size(), "fp32 param");
    if (!device)
      return fail(device.error());
    Status copied = checkCuda(cudaMemcpy(*device, values.data(),
                                         values.size() * sizeof(float),
                                         cudaMemcpyHostToDevice),
                              "cudaMemcpy(fp32 param)");
    if (!copied.ok())
      return fail(copied.error());
    s->floatsOnDevice.push_back(*device);
  }
  s->floats.clear();

  auto stream = Stream::create();
  if (!stream)
    return fail(stream.error());
  s->stream.emplace(std::move(*stream));
  auto gemm = GemmRunner::create();
  if (!gemm)
    return fail(gemm.error());
  s->gemm = std::move(*gemm);
  for (size_t i = 0; i <= s->ops.size(); ++i) {
    auto event = Event::create();
    if (!event)
      return fail(event.error());
    s->events.push_back(std::move(*event));
  }
  s->prepared = true;
  state_ = std::move(s);
  return Status::success();
}

void CudaBackend::resetSlot(int32_t slot) {
  if (state_ && slot >= 0 && slot < state_->slots)
    state_->lengths[slot] = 0;
}

namespace {

// What one op sees of the step: the batch's device arrays, the arena and
// the stream.
struct Step {
  DeviceArena &arena;
  GemmRunner &gemm;
  cudaStream_t stream;
  int64_t rows;
  const int32_t *slots, *positions, *cacheRows, *logitRows;
  int64_t logitCount;
  int32_t maxContext;
  bool gptOssNorm;
  const std::vector<float *> &floats;

  template <typename T> Result<T *> alloc(int64_t count, const char *what) {
    return arena.allocateArray<T>(size_t(count), what);
  }
  const float *floatArray(int index) const {
    return index < 0 ? nullptr : floats[index];
  }
  // The bf16 / fp32 form of an activation, converted on first use.
  Result<const bf16 *> bf16Of(DeviceValue &value) {
    if (!value.a) {
      auto out = alloc<bf16>(rows * value.width, "bf16 activation");
      if (!out)
        return out.error();
      MOE_CUDA_TRY(backend::toBf16(value.f, rows * value.width, *out, stream));
      value.a = *out;
    }
    return static_cast<const bf16 *>(value.a);
  }
  Result<const float *> f32Of(DeviceValue &value) {
    if (!value.f) {
      auto out = alloc<float>(rows * value.width, "fp32 activation");
      if (!out)
        return out.error();
      MOE_CUDA_TRY(backend::toFloat(value.a, rows * value.width, *out, stream));
      value.f = *out;
    }
    return static_cast<const float *>(value.f);
  }
  Status linear(const bf16 *x, int64_t m, int64_t k, const bf16 *w, int64_t n,
                const bf16 *bias, bf16 *y) {
    return gemm.run(
        {.x = x, .w = w, .bias = bias, .y = y, .m = m, .n = n, .k = k}, stream);
  }
};

#define MOE_INPUT(var, expr)                                                   \
  auto var##Result_ = (expr);                                                  \
  if (!var##Result_)                                                           \
    return var##Result_.error();                                               \
  auto var = *var##Result_;

#define MOE_ALLOC(var, T, count, what)                                         \
  T *var = nullptr;                                                            \
  {                                                                            \
    auto moeAlloc_ = step.alloc<T>(count, what);                               \
    if (!moeAlloc_)                                                            \
      return moeAlloc_.error();                                                \
    var = *moeAlloc_;                                                          \
  }

Status runEmbedding(Step &step, const EmbeddingOp &k, const DeviceValue &ids,
                    DeviceValue &out) {
  MOE_ALLOC(y, float, step.rows *k.hidden, "embedding");
  MOE_CUDA_TRY(
      backend::embedRows(k.table, ids.i, step.rows, k.hidden, y, step.stream));
  out.f = y;
  return Status::success();
}

Status runNorm(Step &step, const NormOp &k, const DeviceValue &x,
               DeviceValue &out) {
  MOE_ALLOC(y, bf16, step.rows * k.width, "norm");
  out.a = y;
  if (x.f) {
    MOE_ALLOC(y32, float, step.rows *k.width, "norm fp32");
    MOE_CUDA_TRY(backend::rmsNormF32(x.f, k.weight, step.rows, k.width, k.eps,
                                     y, y32, step.stream));
    out.f = y32;
    return Status::success();
  }
  kn::RmsNormArgs args;
  args.x = x.a;
  args.weight = k.weight;
  args.out = y;
  args.rows = step.rows;
  args.width = k.width;
  args.eps = k.eps;
  args.weightAfterCast = !step.gptOssNorm;
  MOE_CUDA_TRY(kn::rmsNorm(args, step.stream));
  return Status::success();
}

Status runAttention(Step &step, const AttentionOp &k, const KvCache &cache,
                    DeviceValue &in, DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t rows = step.rows, qw = k.heads * k.headDim;
  int64_t kvw = k.kvHeads * k.headDim;
  MOE_ALLOC(q, bf16, rows * qw, "attention q");
  MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.q, qw, k.qBias, q));
  bf16 *key = nullptr, *value = nullptr;
  if (k.ownsKv) {
    MOE_ALLOC(kk, bf16, rows * kvw, "attention k");
    MOE_ALLOC(vv, bf16, rows * kvw, "attention v");
    MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.k, kvw, k.kBias, kk));
    MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.v, kvw, k.vBias, vv));
    key = kk;
    value = vv;
    if (k.qkNorm == plan::QKNorm::full_width) {
      kn::RmsNormArgs norm;
      norm.x = kk;
      norm.weight = k.kNorm;
      norm.out = kk;
      norm.rows = rows;
      norm.width = kvw;
      norm.eps = k.qkEps;
      norm.weightAfterCast = false;
      MOE_CUDA_TRY(kn::rmsNorm(norm, step.stream));
    }
  }
  if (k.qkNorm == plan::QKNorm::full_width) {
    kn::RmsNormArgs norm;
    norm.x = q;
    norm.weight = k.qNorm;
    norm.out = q;
    norm.rows = rows;
    norm.width = qw;
    norm.eps = k.qkEps;
    norm.weightAfterCast = false;
    MOE_CUDA_TRY(kn::rmsNorm(norm, step.stream));
  }
  bool perHead = k.qkNorm == plan::QKNorm::per_head;
  if (k.rotaryDim > 0 || perHead) {
    kn::RopeArgs rope;
    rope.q = q;
    rope.k = key;
    rope.rows = rows;
    rope.heads = static_cast<int>(k.heads);
    rope.kvHeads = key ? static_cast<int>(k.kvHeads) : 0;
    rope.headDim = static_cast<int>(k.headDim);
    rope.rotaryDim = static_cast<int>(k.rotaryDim);
    rope.style = k.style;
    rope.positions = k.rotaryDim > 0 ? step.positions : nullptr;
    rope.cos = step.floatArray(k.cos);
    rope.sin = step.floatArray(k.sin);
    rope.qNorm = perHead ? k.qNorm : nullptr;
    rope.kNorm = perHead && key ? k.kNorm : nullptr;
    rope.normEps = k.qkEps;
    MOE_CUDA_TRY(kn::applyRope(rope, step.stream));
  }
  if (k.ownsKv)
    MOE_CUDA_TRY(backend::appendKv(key, value, step.cacheRows, rows, kvw,
                                   cache.k, cache.v, step.stream));
  MOE_ALLOC(o, bf16, rows * qw, "attention o");
  backend::AttentionArgs args;
  args.q = q;
  args.kCache = cache.k;
  args.vCache = cache.v;
  args.slots = step.slots;
  args.positions = step.positions;
  args.sinks = step.floatArray(k.sinks);
  args.out = o;
  args.rows = rows;
  args.heads = static_cast<int>(k.heads);
  args.kvHeads = static_cast<int>(k.kvHeads);
  args.headDim = static_cast<int>(k.headDim);
  args.maxContext = step.maxContext;
  args.window = k.window;
  args.scale = k.scale;
  MOE_CUDA_TRY(backend::attention(args, step.stream));
  MOE_ALLOC(y, bf16, rows * k.hidden, "attention out");
  MOE_RETURN_IF_ERROR(step.linear(o, rows, qw, k.o, k.hidden, k.oBias, y));
  out.a = y;
  return Status::success();
}

Status runRouter(Step &step, const RouterOp &k, DeviceValue &in,
                 DeviceValue &weights, DeviceValue &indices) {
  MOE_INPUT(x, step.f32Of(in));
  int64_t rows = step.rows;
  MOE_ALLOC(logits32, float, rows *k.experts, "router logits");
  MOE_ALLOC(w, float, rows *k.topK, "route weights");
  MOE_ALLOC(idx, int32_t, rows * k.topK, "route indices");
  MOE_CUDA_TRY(backend::routerLogits(x, step.floatArray(k.weight),
                                     step.floatArray(k.bias), rows, k.hidden,
                                     k.experts, logits32, step.stream));
  kn::RouterArgs args;
  args.logits = logits32;
  args.correctionBias = step.floatArray(k.correction);
  args.weights = w;
  args.indices = idx;
  args.rows = rows;
  args.experts = static_cast<int>(k.experts);
  args.topK = static_cast<int>(k.topK);
  args.scoring = k.scoring;
  args.selection = k.selection;
  args.groups = k.groups;
  args.keptGroups = k.keptGroups;
  args.normalize = k.normalize;
  args.scaling = k.scaling;
  MOE_CUDA_TRY(kn::routeTopK(args, step.stream));
  weights.f = w;
  indices.i = idx;
  return Status::success();
}

Status runExperts(Step &step, const ExpertsOp &k, DeviceValue &in,
                  const DeviceValue &weights, const DeviceValue &indices,
                  DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t rows = step.rows, pairs = rows * k.topK;
  int64_t h = k.hidden, w = k.width;
  MOE_ALLOC(counts, int32_t, k.experts, "expert counts");
  MOE_ALLOC(offsets, int32_t, k.experts + 1, "expert offsets");
  MOE_ALLOC(slotToPair, int32_t, pairs, "slot to pair");
  MOE_ALLOC(pairToSlot, int32_t, pairs, "pair to slot");
  MOE_ALLOC(xs, bf16, pairs * h, "expert inputs");
  MOE_ALLOC(gu, bf16, pairs * 2 * w, "expert gate|up");
  MOE_ALLOC(act, bf16, pairs * w, "expert activations");
  MOE_ALLOC(down, bf16, pairs * h, "expert outputs");
  MOE_ALLOC(sum, float, rows *h, "expert sum");
  kn::DispatchArgs dispatch;
  dispatch.indices = indices.i;
  dispatch.rows = rows;
  dispatch.topK = static_cast<int>(k.topK);
  dispatch.experts = static_cast<int>(k.experts);
  dispatch.counts = counts;
  dispatch.offsets = offsets;
  dispatch.slotToPair = slotToPair;
  dispatch.pairToSlot = pairToSlot;
  MOE_CUDA_TRY(kn::buildDispatch(dispatch, step.stream));
  MOE_CUDA_TRY(
      kn::gatherRows(x, slotToPair, pairs, dispatch.topK, h, xs, step.stream));
  // The GEMM sizes are the per-expert counts: the host needs them.
  std::vector<int32_t> hostOffsets(k.experts + 1);
  MOE_CUDA_TRY(cudaMemcpyAsync(hostOffsets.data(), offsets,
                               hostOffsets.size() * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, step.stream));
  MOE_CUDA_TRY(cudaStreamSynchronize(step.stream));
  std::vector<GemmArgs> upProblems, downProblems;
  for (int64_t e = 0; e < k.experts; ++e) {
    int64_t first = hostOffsets[e], m = hostOffsets[e + 1] - first;
    if (m == 0)
      continue;
    upProblems.push_back(
        {.x = xs + first * h,
         .w = k.gateUp + e * 2 * w * h,
         .bias = k.gateUpBias ? k.gateUpBias + e * 2 * w : nullptr,
         .y = gu + first * 2 * w,
         .m = m,
         .n = 2 * w,
         .k = h});
    downProblems.push_back({.x = act + first * w,
                            .w = k.down + e * h * w,
                            .bias = k.downBias ? k.downBias + e * h : nullptr,
                            .y = down + first * h,
                            .m = m,
                            .n = h,
                            .k = w});
  }
  MOE_RETURN_IF_ERROR(step.gemm.runGrouped(upProblems, step.stream));
  if (k.clamped)
    MOE_CUDA_TRY(
        kn::swigluClamped(gu, act, pairs, w, k.limit, k.alpha, step.stream));
  else
    MOE_CUDA_TRY(kn::siluMul(gu, act, pairs, w, step.stream));
  MOE_RETURN_IF_ERROR(step.gemm.runGrouped(downProblems, step.stream));
  kn::CombineArgs combine;
  combine.expertOut = down;
  combine.weights = weights.f;
  combine.indices = indices.i;
  combine.pairToSlot = pairToSlot;
  combine.rows = rows;
  combine.topK = dispatch.topK;
  combine.width = h;
  combine.out = sum;
  MOE_CUDA_TRY(kn::combineExperts(combine, step.stream));
  out.f = sum;
  return Status::success();
}

Status runMlp(Step &step, const MlpOp &k, DeviceValue &in, DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t rows = step.rows, h = k.hidden, w = k.width;
  MOE_ALLOC(gu, bf16, rows * 2 * w, "mlp gate|up");
  MOE_ALLOC(act, bf16, rows * w, "mlp activations");
  MOE_ALLOC(y, bf16, rows * h, "mlp out");
  MOE_RETURN_IF_ERROR(step.linear(x, rows, h, k.gateUp, 2 * w, nullptr, gu));
  MOE_CUDA_TRY(kn::siluMul(gu, act, rows, w, step.stream));
  MOE_RETURN_IF_ERROR(step.linear(act, rows, w, k.down, h, nullptr, y));
  if (k.outputGate) {
    MOE_ALLOC(gate, bf16, rows, "mlp output gate");
    MOE_RETURN_IF_ERROR(
        step.linear(x, rows, h, k.outputGate, 1, nullptr, gate));
    MOE_CUDA_TRY(backend::sigmoidGate(gate, rows, h, y, step.stream));
  }
  out.a = y;
  return Status::success();
}

Status runResidual(Step &step, const ResidualOp &k, DeviceValue &skipValue,
                   DeviceValue &updateValue, DeviceValue &out) {
  MOE_INPUT(skip, step.f32Of(skipValue));
  MOE_INPUT(update, step.f32Of(updateValue));
  MOE_ALLOC(y, float, step.rows *k.width, "residual");
  MOE_CUDA_TRY(backend::scaledAdd(skip, update, k.skipScale, k.updateScale,
                                  step.rows * k.width, y, step.stream));
  out.f = y;
  return Status::success();
}

Status runHead(Step &step, const HeadOp &k, DeviceValue &in, DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t n = step.logitCount;
  MOE_ALLOC(picked, bf16, n * k.hidden, "head rows");
  MOE_ALLOC(logits, bf16, n * k.vocab, "logits");
  MOE_ALLOC(logits32, float, n *k.vocab, "logits fp32");
  // gatherRows with topK 1 picks rows by index.
  MOE_CUDA_TRY(
      kn::gatherRows(x, step.logitRows, n, 1, k.hidden, picked, step.stream));
  MOE_RETURN_IF_ERROR(
      step.linear(picked, n, k.hidden, k.weight, k.vocab, nullptr, logits));
  MOE_CUDA_TRY(backend::toFloat(logits, n * k.vocab, logits32, step.stream));
  out.f = logits32;
  return Status::success();
}

#undef MOE_ALLOC
#undef MOE_INPUT

} // namespace

Status CudaBackend::forward(const StepBatch &batch,
                            std::vector<float> &logits) {
  auto fail = [](const Error &error) {
    return error.withContext("cuda backend");
  };
  if (!state_ || !state_->prepared)
    return fail(makeError("forward before prepare"));
  State &s = *state_;
  int64_t rows = static_cast<int64_t>(batch.rows.size());
  if (static_cast<int64_t>(batch.tokenIds.size()) != rows)
    return fail(
        makeError("{} token ids for {} rows", batch.tokenIds.size(), rows));
  // Each slot is one run of consecutive positions continuing its cache.
  std::vector<bool> seen(s.slots, false);
  std::vector<int32_t> slots(rows), positions(rows), cacheRows(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const TokenRow &row = batch.rows[r];
    if (row.slot < 0 || row.slot >= s.slots)
      return fail(makeError("row {}: slot {} is not in 0..{}", r, row.slot,
                            s.slots - 1));
    if (r == 0 || batch.rows[r - 1].slot != row.slot) {
      if (seen[row.slot])
        return fail(
            makeError("row {}: slot {} appears in two runs", r, row.slot));
      seen[row.slot] = true;
      if (row.position != s.lengths[row.slot])
        return fail(makeError("row {}: slot {} continues at position {}, "
                              "not {}",
                              r, row.slot, s.lengths[row.slot], row.position));
    } else if (row.position != batch.rows[r - 1].position + 1) {
      return fail(makeError("row {}: positions of slot {} are not "
                            "consecutive",
                            r, row.slot));
    }
    if (row.position >= s.maxContext)
      return fail(makeError("row {}: position {} exceeds the context of {}", r,
                            row.position, s.maxContext));
    if (batch.tokenIds[r] < 0 || batch.tokenIds[r] >= s.embeddingVocab)
      return fail(makeError("row {}: token id {} is not in 0..{}", r,
                            batch.tokenIds[r], s.embeddingVocab - 1));
    slots[r] = row.slot;
    positions[r] = row.position;
    cacheRows[r] = row.slot * s.maxContext + row.position;
  }
  for (int32_t row : batch.logitRows)
    if (row < 0 || row >= rows)
      return fail(makeError("logit row {} is not in 0..{}", row, rows - 1));
  logits.clear();
  if (rows == 0)
    return Status::success();

  int64_t logitCount = static_cast<int64_t>(batch.logitRows.size());
  size_t needed = size_t(rows) * (s.rowBytes + 5 * sizeof(int32_t)) +
                  size_t(logitCount) * (s.vocab * 6 + sizeof(int32_t)) +
                  (s.ops.size() * 12 + 8) * kPoolAlignment;
  if (!s.step || s.step->capacity() < needed) {
    s.step.reset();
    auto arena = DeviceArena::create(needed, "step");
    if (!arena)
      return fail(arena.error());
    s.step.emplace(std::move(*arena));
  }
  s.step->reset();
  Status status = [&]() -> Status {
    std::vector<int32_t> meta;
    const std::array<const std::vector<int32_t> *, 5> parts = {
        &batch.tokenIds, &slots, &positions, &cacheRows, &batch.logitRows};
    for (const std::vector<int32_t> *part : parts)
      meta.insert(meta.end(), part->begin(), part->end());
    auto device = s.step->allocateArray<int32_t>(meta.size(), "batch");
    if (!device)
      return device.error();
    cudaStream_t stream = s.stream->get();
    MOE_CUDA_TRY(cudaMemcpyAsync(*device, meta.data(),
                                 meta.size() * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream));
    int32_t *base = *device;
    Step step{*s.step,     *s.gemm,         stream,          rows,
              base + rows, base + 2 * rows, base + 3 * rows, base + 4 * rows,
              logitCount,  s.maxContext,    s.gptOssNorm,    s.floatsOnDevice};
    std::vector<DeviceValue> values(s.numValues);
    for (int v = 0; v < s.numValues; ++v)
      values[v].width = s.valueWidths[v];
    values[0].i = base;
    for (size_t index = 0; index < s.ops.size(); ++index) {
      const CompiledOp &op = s.ops[index];
      DeviceValue &in = values[op.operands[0]];
      DeviceValue &out = values[op.results[0]];
      MOE_RETURN_IF_ERROR(s.events[index].record(stream));
      Status ran = std::visit(
          [&](const auto &k) -> Status {
            using K = std::decay_t<decltype(k)>;
            if constexpr (std::is_same_v<K, EmbeddingOp>)
              return runEmbedding(step, k, in, out);
            else if constexpr (std::is_same_v<K, NormOp>)
              return runNorm(step, k, in, out);
            else if constexpr (std::is_same_v<K, AttentionOp>)
              return runAttention(step, k, s.kv[k.cache], in, out);
            else if constexpr (std::is_same_v<K, RouterOp>)
              return runRouter(step, k, in, out, values[op.results[1]]);
            else if constexpr (std::is_same_v<K, ExpertsOp>)
              return runExperts(step, k, in, values[op.operands[1]],
                                values[op.operands[2]], out);
            else if constexpr (std::is_same_v<K, MlpOp>)
              return runMlp(step, k, in, out);
            else if constexpr (std::is_same_v<K, ResidualOp>)
              return runResidual(step, k, in, values[op.operands[1]], out);
            else
              return runHead(step, k, in, out);
          },
          op.op);
      if (!ran.ok())
        return ran.error().withContext(fmt::format("op {}", index));
    }
    MOE_RETURN_IF_ERROR(s.events[s.ops.size()].record(stream));
    logits.resize(size_t(logitCount) * s.vocab);
    MOE_CUDA_TRY(cudaMemcpyAsync(logits.data(), values[s.logitsValue].f,
                                 logits.size() * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream));
    MOE_RETURN_IF_ERROR(s.stream->synchronize());
    for (size_t index = 0; index < s.ops.size(); ++index) {
      auto seconds = elapsedSeconds(s.events[index], s.events[index + 1]);
      if (!seconds)
        return seconds.error();
      s.stageSeconds[s.ops[index].op.index()] += *seconds;
    }
    return Status::success();
  }();
  if (!status.ok())
    return fail(status.error());
  for (int64_t r = 0; r < rows; ++r)
    if (r + 1 == rows || batch.rows[r + 1].slot != batch.rows[r].slot)
      s.lengths[batch.rows[r].slot] = batch.rows[r].position + 1;
  return Status::success();
}

std::vector<StageTime> CudaBackend::stageSeconds() const {
  std::vector<StageTime> stages;
  if (!state_)
    return stages;
  for (size_t kind = 0; kind < kStageNames.size(); ++kind)
    if (state_->stageSeconds[kind] > 0)
      stages.push_back({kStageNames[kind], state_->stageSeconds[kind]});
  return stages;
}

} // namespace moe::cuda
