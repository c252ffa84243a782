#include "runtime/backends/cpu/CpuBackend.h"

#include "runtime/backends/cpu/Kernels.h"
#include "runtime/model/ResolvedModel.h"
#include "runtime/model/WeightFormat.h"
#include "runtime/trace/ChromeTrace.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <variant>

namespace moe {
namespace {

using cpu::RopeTable;

// Pages of a few tokens: a sequence leaves less than a page unused, and the
// reference reads its cache row by row, so pages cost it no copies.
constexpr int32_t kKvPageTokens = 16;

/// One expert as [out, in] Linear weights: gate and up [I, H], down [H, I].
struct ExpertWeights {
  const float *gate = nullptr, *up = nullptr, *down = nullptr;
  const float *gateBias = nullptr, *upBias = nullptr, *downBias = nullptr;
};

/// What the CPU binds to a resolved op besides its params: the RoPE table
/// of an attention or MLA, the per-expert weights of routed experts.
struct OpBindings {
  std::shared_ptr<const RopeTable> rope;
  std::vector<ExpertWeights> experts;
};

/// One value of the forward pass: fp32 rows, or i32 rows (token ids, expert
/// indices).
struct Value {
  std::vector<float> f;
  std::vector<int32_t> i;
};

/// Softmax-attention K/V of one cache: [slot][position][kvHeads·headDim].
struct KvCache {
  std::vector<float> k, v;
};

/// The plan's params in fp32, one array each, as the resolved specs index
/// them.
struct Params {
  std::vector<std::vector<float>> arrays;
  /// Null for an absent optional weight.
  const float *operator[](int index) const {
    return index == model::kAbsent ? nullptr : arrays[index].data();
  }
};

/// gate_up [E, H, 2I] with gate/up in alternating columns and down [E, I, H]
/// (GPT-OSS), re-laid out once as [out, in] weights for `linear`.
std::vector<ExpertWeights>
relayFusedExperts(const model::ExpertsSpec &e, const Params &params,
                  std::vector<std::vector<float>> &derived) {
  int64_t n = e.experts, h = e.hidden, w = e.width;
  const float *gateUp = params[e.gateUp], *gateUpBias = params[e.gateUpBias];
  const float *down = params[e.down], *downBias = params[e.downBias];
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
  // Moving a vector into `derived` keeps its buffer, so pointers hold.
  for (auto *array : {&gate, &up, &downT, &biases})
    derived.push_back(std::move(*array));
  const float *g = derived[derived.size() - 4].data();
  const float *u = derived[derived.size() - 3].data();
  const float *d = derived[derived.size() - 2].data();
  const float *b = gateUpBias ? derived.back().data() : nullptr;
  std::vector<ExpertWeights> experts(n);
  for (int64_t x = 0; x < n; ++x)
    experts[x] = {g + x * w * h,
                  u + x * w * h,
                  d + x * h * w,
                  b ? b + x * w : nullptr,
                  b ? b + (n + x) * w : nullptr,
                  downBias ? downBias + x * h : nullptr};
  return experts;
}

/// Separate [E, I, H] gate and up and [E, H, I] down, used in place.
std::vector<ExpertWeights> separateExperts(const model::ExpertsSpec &e,
                                           const Params &params) {
  int64_t h = e.hidden, w = e.width;
  const float *gate = params[e.gate], *up = params[e.up],
              *down = params[e.down], *downBias = params[e.downBias];
  std::vector<ExpertWeights> experts(e.experts);
  for (int64_t x = 0; x < e.experts; ++x)
    experts[x] = {.gate = gate + x * w * h,
                  .up = up + x * w * h,
                  .down = down + x * h * w,
                  .downBias = downBias ? downBias + x * h : nullptr};
  return experts;
}

} // namespace

struct CpuBackend::State {
  explicit State(int threads) : pool(threads) {}

  ThreadPool pool;
  bool prepared = false;
  model::ResolvedModel model;
  Params params;
  std::vector<std::vector<float>> derived; // fused experts re-laid out
  std::vector<OpBindings> bindings;        // per op
  int32_t slots = 0, maxContext = 0;
  std::vector<int32_t> lengths;
  std::vector<KvCache> kv;
  std::vector<std::vector<float>> latent;    // [slot][position][width]
  std::vector<std::vector<float>> lightning; // [slot][heads·d·d]
  // Seconds per stage since prepare: [prefill, decode][costmodel::Stage].
  std::array<std::array<double, costmodel::kNumStages>, 2> stageSeconds{};

  void allocate(int32_t slotCount, int32_t context, const KvPages &pages);
  // Routed experts' matrices as their fp8 form stands for (WeightFormat.h).
  Status quantizeExperts();
};

/// The first element of `values` that is NaN or infinite, or -1; blocks of
/// a large model's weights are scanned on all cores.
static int64_t firstNonFinite(ThreadPool &pool,
                              const std::vector<float> &values) {
  constexpr int64_t kBlock = int64_t{1} << 20;
  int64_t blocks = (int64_t(values.size()) + kBlock - 1) / kBlock;
  std::vector<int64_t> firstOf(size_t(blocks), -1);
  pool.parallelFor(blocks, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      auto begin = values.begin() + b * kBlock;
      auto end =
          values.begin() + std::min(int64_t(values.size()), (b + 1) * kBlock);
      auto bad = std::find_if(
          begin, end, [](float value) { return !std::isfinite(value); });
      if (bad != end)
        firstOf[size_t(b)] = bad - values.begin();
    }
  });
  for (int64_t first : firstOf)
    if (first >= 0)
      return first;
  return -1;
}

Status CpuBackend::State::quantizeExperts() {
  for (const model::ResolvedOp &op : model.ops) {
    const auto *e = std::get_if<model::ExpertsSpec>(&op.spec);
    if (!e)
      continue;
    // Each stacked matrix, expert by expert: a Linear's [out, in], stored
    // so or transposed ([in, out]: the fused layout).
    struct Stacked {
      int index;
      int64_t outs, ins;
      bool transposed;
    };
    bool fused = e->layout != plan::ExpertLayout::separate;
    for (Stacked m : {Stacked{e->gate, e->width, e->hidden, false},
                      Stacked{e->up, e->width, e->hidden, false},
                      Stacked{e->gateUp, 2 * e->width, e->hidden, true},
                      Stacked{e->down, e->hidden, e->width, fused}}) {
      if (m.index == model::kAbsent)
        continue;
      if (model.expertDtype == model::WeightDtype::mxfp4 &&
          m.ins % model::kMxfp4Block != 0)
        return makeError("mxfp4 experts need inputs of a multiple of {} "
                         "elements, not {}; plan with weight-dtype=bf16",
                         model::kMxfp4Block, m.ins);
      float *values = params.arrays[size_t(m.index)].data();
      pool.parallelFor(e->experts, [&](int64_t first, int64_t last) {
        for (int64_t x = first; x < last; ++x) {
          float *matrix = values + x * m.outs * m.ins;
          // fp8's square blocks hold the same elements either way round.
          if (model.expertDtype == model::WeightDtype::fp8)
            model::roundTripFp8Matrix(matrix, m.transposed ? m.ins : m.outs,
                                      m.transposed ? m.outs : m.ins);
          else if (m.transposed)
            model::roundTripMxfp4Matrix(matrix, m.outs, m.ins, 1, m.outs);
          else
            model::roundTripMxfp4Matrix(matrix, m.outs, m.ins, m.ins, 1);
        }
      });
    }
  }
  return Status::success();
}

/// Builds the RoPE tables and expert weights of the ops and zeroes the
/// caches of `pages` and the states of `slotCount` slots of `context`
/// positions.
void CpuBackend::State::allocate(int32_t slotCount, int32_t context,
                                 const KvPages &pages) {
  slots = slotCount;
  maxContext = context;
  lengths.assign(slots, 0);
  // One table per distinct RoPE: at long contexts a table per layer would
  // cost more than the KV cache.
  std::vector<std::pair<model::RopeParams, std::shared_ptr<const RopeTable>>>
      ropes;
  auto ropeTable = [&](const model::RopeParams &p) {
    for (const auto &[params, table] : ropes)
      if (params == p)
        return table;
    ropes.emplace_back(p, std::make_shared<RopeTable>(p, maxContext));
    return ropes.back().second;
  };
  for (const model::ResolvedOp &op : model.ops) {
    OpBindings &t = bindings.emplace_back();
    if (const auto *a = std::get_if<model::AttentionSpec>(&op.spec))
      t.rope = ropeTable(a->rope);
    else if (const auto *a = std::get_if<model::LatentAttentionSpec>(&op.spec))
      t.rope = ropeTable(a->rope);
    else if (const auto *e = std::get_if<model::ExpertsSpec>(&op.spec))
      t.experts = e->layout == plan::ExpertLayout::separate
                      ? separateExperts(*e, params)
                      : relayFusedExperts(*e, params, derived);
  }
  size_t positions = size_t(pages.pages()) * size_t(pages.pageTokens());
  for (const model::KvCacheSpec &cache : model.kvCaches)
    kv.push_back({std::vector<float>(positions * cache.width()),
                  std::vector<float>(positions * cache.width())});
  for (const model::LatentCacheSpec &cache : model.latentCaches)
    latent.emplace_back(positions * cache.width);
  for (const model::LightningStateSpec &state : model.lightningStates)
    lightning.emplace_back(static_cast<size_t>(slots) *
                           state.elementsPerSlot());
}

//===----------------------------------------------------------------------===//
// Execution
//===----------------------------------------------------------------------===//

namespace {

/// Everything a kernel needs to know about the step.
struct Step {
  ThreadPool &pool;
  const Params &params;
  const StepBatch &batch;
  const std::vector<SlotRun> &runs;
  int32_t maxContext;
  const CpuBackendOptions &options;
  model::KvDtype kvDtype;
  const KvPages &pages;

  int64_t rows() const { return static_cast<int64_t>(batch.rows.size()); }
  /// The cache row of (row's slot, row's position).
  int64_t cacheRow(int64_t row) const {
    const TokenRow &t = batch.rows[row];
    return pages.row(t.slot, t.position);
  }
  /// The cached rows of `row`'s slot in `cache` (`stride` floats a row),
  /// from `offset` floats into each row.
  cpu::CachedRows cached(int64_t row, const std::vector<float> &cache,
                         int64_t stride, int64_t offset = 0) const {
    return {cache.data() + offset, stride, pages.table(batch.rows[row].slot),
            pages.pageTokens()};
  }
};

void forEachRow(const Step &step, int64_t rows,
                const std::function<void(int64_t)> &body) {
  step.pool.parallelFor(rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      body(r);
  });
}

void runEmbedding(const Step &step, const model::EmbeddingSpec &k,
                  const Value &ids, Value &out) {
  const float *table = step.params[k.table];
  out.f.resize(step.rows() * k.hidden);
  for (int64_t r = 0; r < step.rows(); ++r)
    std::memcpy(out.f.data() + r * k.hidden, table + ids.i[r] * k.hidden,
                k.hidden * sizeof(float));
}

void runNorm(const Step &step, const model::NormSpec &k, const Value &x,
             Value &out) {
  const float *weight = step.params[k.weight];
  out.f.resize(x.f.size());
  int64_t rows = static_cast<int64_t>(x.f.size()) / k.width;
  forEachRow(step, rows, [&](int64_t r) {
    cpu::rmsNorm(x.f.data() + r * k.width, weight, k.width, k.eps,
                 out.f.data() + r * k.width);
  });
}

void runAttention(const Step &step, const model::AttentionSpec &k,
                  const RopeTable &rope, KvCache &cache, const Value &x,
                  Value &out) {
  const Params &w = step.params;
  int64_t rows = step.rows(), hd = k.headDim;
  int64_t qw = k.heads * hd, kvw = k.kvHeads * hd;
  float scale = static_cast<float>(k.scale);
  const float *qNorm = w[k.qNorm], *kNorm = w[k.kNorm], *sinks = w[k.sinks];
  std::vector<float> q(rows * qw);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, w[k.q], qw, w[k.qBias],
              q.data());
  std::vector<float> key, value;
  if (k.ownsKv) {
    key.resize(rows * kvw);
    value.resize(rows * kvw);
    cpu::linear(step.pool, x.f.data(), rows, k.hidden, w[k.k], kvw, w[k.kBias],
                key.data());
    cpu::linear(step.pool, x.f.data(), rows, k.hidden, w[k.v], kvw, w[k.vBias],
                value.data());
  }
  forEachRow(step, rows, [&](int64_t r) {
    float *qr = q.data() + r * qw;
    float *kr = k.ownsKv ? key.data() + r * kvw : nullptr;
    // QK norm comes before RoPE: over the whole projection (OLMoE) or per
    // head with one shared weight (Qwen3).
    if (k.qkNorm == plan::QKNorm::full_width) {
      cpu::rmsNorm(qr, qNorm, qw, k.qkEps, qr);
      if (kr)
        cpu::rmsNorm(kr, kNorm, kvw, k.qkEps, kr);
    } else if (k.qkNorm == plan::QKNorm::per_head) {
      for (int64_t h = 0; h < k.heads; ++h)
        cpu::rmsNorm(qr + h * hd, qNorm, hd, k.qkEps, qr + h * hd);
      if (kr)
        for (int64_t h = 0; h < k.kvHeads; ++h)
          cpu::rmsNorm(kr + h * hd, kNorm, hd, k.qkEps, kr + h * hd);
    }
    int64_t position = step.batch.rows[r].position;
    for (int64_t h = 0; h < k.heads; ++h)
      rope.apply(qr + h * hd, position);
    if (kr) {
      for (int64_t h = 0; h < k.kvHeads; ++h)
        rope.apply(kr + h * hd, position);
      float *vr = value.data() + r * kvw;
      if (step.kvDtype == model::KvDtype::fp8) {
        model::roundTripFp8(kr, k.kvHeads, hd);
        model::roundTripFp8(vr, k.kvHeads, hd);
      }
      int64_t at = step.cacheRow(r) * kvw;
      std::memcpy(cache.k.data() + at, kr, kvw * sizeof(float));
      std::memcpy(cache.v.data() + at, vr, kvw * sizeof(float));
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
      cpu::attendHead(q.data() + r * qw + h * hd,
                      step.cached(r, cache.k, kvw, g * hd),
                      step.cached(r, cache.v, kvw, g * hd), first, n, hd, scale,
                      sinks ? sinks + h : nullptr, scores.data(),
                      o.data() + r * qw + h * hd);
    }
  });
  out.f.resize(rows * k.hidden);
  cpu::linear(step.pool, o.data(), rows, qw, w[k.o], k.hidden, w[k.oBias],
              out.f.data());
}

void runLatent(const Step &step, const model::LatentAttentionSpec &k,
               const RopeTable &rope, std::vector<float> &cache, const Value &x,
               Value &out) {
  const Params &w = step.params;
  int64_t rows = step.rows(), qkDim = k.nope + k.ropeDim;
  int64_t qw = k.heads * qkDim, r = k.kvLoraRank, cw = r + k.ropeDim;
  float scale = static_cast<float>(k.scale);
  std::vector<float> q(rows * qw);
  if (k.qLoraRank > 0) {
    std::vector<float> qa(rows * k.qLoraRank);
    cpu::linear(step.pool, x.f.data(), rows, k.hidden, w[k.qA], k.qLoraRank,
                nullptr, qa.data());
    forEachRow(step, rows, [&](int64_t row) {
      float *a = qa.data() + row * k.qLoraRank;
      cpu::rmsNorm(a, w[k.qANorm], k.qLoraRank, k.eps, a);
    });
    cpu::linear(step.pool, qa.data(), rows, k.qLoraRank, w[k.qB], qw, nullptr,
                q.data());
  } else {
    cpu::linear(step.pool, x.f.data(), rows, k.hidden, w[k.q], qw, nullptr,
                q.data());
  }
  std::vector<float> kv(rows * cw);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, w[k.kvA], cw, nullptr,
              kv.data());
  forEachRow(step, rows, [&](int64_t row) {
    int64_t position = step.batch.rows[row].position;
    float *c = kv.data() + row * cw;
    cpu::rmsNorm(c, w[k.kvANorm], r, k.eps, c);
    rope.apply(c + r, position);
    if (step.kvDtype == model::KvDtype::fp8)
      model::roundTripFp8(c, cw / k.ropeDim, k.ropeDim);
    std::memcpy(cache.data() + step.cacheRow(row) * cw, c, cw * sizeof(float));
    for (int64_t h = 0; h < k.heads; ++h)
      rope.apply(q.data() + row * qw + h * qkDim + k.nope, position);
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
      cpu::CachedRows latents = step.cached(row, cache, cw);
      const float *qn = q.data() + row * qw + h * qkDim, *qr = qn + k.nope;
      const float *wk = w[k.kvB] + h * kvbRows * r; // W_UK,h [nope, r]
      const float *wv = wk + k.nope * r;            // W_UV,h [vDim, r]
      float *oh = o.data() + row * ow + h * k.vDim;
      if (absorbed) {
        // q̃ = W_UKᵀ q_nope scores the cached latents directly.
        std::fill(folded.begin(), folded.end(), 0.0f);
        for (int64_t d = 0; d < k.nope; ++d)
          for (int64_t c = 0; c < r; ++c)
            folded[c] += wk[d * r + c] * qn[d];
        cpu::attendLatentHead(folded.data(), qr, latents, n, r, k.ropeDim,
                              scale, scores.data(), mixed.data());
        for (int64_t d = 0; d < k.vDim; ++d)
          oh[d] = cpu::dot(wv + d * r, mixed.data(), r);
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const float *lj = latents.at(j);
          for (int64_t d = 0; d < k.nope; ++d)
            keyNope[d] = cpu::dot(wk + d * r, lj, r);
          scores[j] = (cpu::dot(qn, keyNope.data(), k.nope) +
                       cpu::dot(qr, lj + r, k.ropeDim)) *
                      scale;
        }
        cpu::softmaxWithSink(scores.data(), n, nullptr);
        std::fill(oh, oh + k.vDim, 0.0f);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t d = 0; d < k.vDim; ++d)
            oh[d] += scores[j] * cpu::dot(wv + d * r, latents.at(j), r);
      }
    }
  });
  out.f.resize(rows * k.hidden);
  cpu::linear(step.pool, o.data(), rows, ow, w[k.o], k.hidden, nullptr,
              out.f.data());
}

void runLightning(const Step &step, const model::LightningSpec &k,
                  std::vector<float> &state, const Value &x, Value &out) {
  const Params &params = step.params;
  int64_t rows = step.rows(), d = k.headDim, w = k.heads * d;
  std::vector<float> qkv(rows * 3 * w);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, params[k.qkv], 3 * w,
              nullptr, qkv.data());
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
          float *s = state.data() + (run.slot * heads + h) * d * d;
          // Per head the qkv row is [q | k | v], heads side by side.
          const float *base = qkv.data() + run.firstRow * 3 * w + h * 3 * d;
          float *o = attention.data() + run.firstRow * w + h * d;
          if (run.count > 1 && step.options.lightningBlocks)
            cpu::lightningBlocks(base, base + d, base + 2 * d, 3 * w, run.count,
                                 d, k.decays[h], k.blockSize, s, o, w);
          else
            cpu::lightningRecurrent(base, base + d, base + 2 * d, 3 * w,
                                    run.count, d, k.decays[h], s, o, w);
        }
      });
  std::vector<float> gate(rows * w);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, params[k.gate], w, nullptr,
              gate.data());
  forEachRow(step, rows, [&](int64_t r) {
    float *a = attention.data() + r * w;
    cpu::rmsNorm(a, params[k.norm], w, k.eps, a);
    for (int64_t i = 0; i < w; ++i)
      a[i] = cpu::sigmoid(gate[r * w + i]) * a[i];
  });
  out.f.resize(rows * k.hidden);
  cpu::linear(step.pool, attention.data(), rows, w, params[k.out], k.hidden,
              nullptr, out.f.data());
}

void runRouter(const Step &step, const model::RouterSpec &k, const Value &x,
               Value &weights, Value &indices) {
  int64_t rows = static_cast<int64_t>(x.f.size()) / k.hidden;
  int64_t e = k.experts, top = k.topK;
  const float *correction = step.params[k.correction];
  std::vector<float> logits(rows * e);
  cpu::linear(step.pool, x.f.data(), rows, k.hidden, step.params[k.weight], e,
              step.params[k.bias], logits.data());
  weights.f.resize(rows * top);
  indices.i.resize(rows * top);
  forEachRow(step, rows, [&](int64_t r) {
    cpu::routeToken(k, logits.data() + r * e, correction,
                    weights.f.data() + r * top, indices.i.data() + r * top);
  });
}

void runExperts(const Step &step, const model::ExpertsSpec &k,
                const std::vector<ExpertWeights> &experts, const Value &x,
                const Value &weights, const Value &indices, Value &out) {
  int64_t h = k.hidden, w = k.width, top = k.topK;
  int64_t rows = static_cast<int64_t>(x.f.size()) / h;
  bool clamped = k.clamped();
  float limit = static_cast<float>(k.limit),
        alpha = static_cast<float>(k.alpha);
  // (row, choice) pairs per expert, then one batched FFN per expert.
  std::vector<std::vector<int64_t>> assigned(experts.size());
  for (int64_t i = 0; i < rows * top; ++i)
    assigned[indices.i[i]].push_back(i);
  std::vector<float> results(rows * top * h);
  std::vector<float> xs, gate, up, down;
  for (size_t e = 0; e < experts.size(); ++e) {
    const std::vector<int64_t> &picks = assigned[e];
    if (picks.empty())
      continue;
    const ExpertWeights &ew = experts[e];
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
      if (clamped) {
        // GPT-OSS: gate clamped above, up both ways, (up + 1)·gate·σ(α·gate).
        float g = std::min(gate[i], limit);
        float u = std::clamp(up[i], -limit, limit);
        gate[i] = (u + 1.0f) * (g * cpu::sigmoid(g * alpha));
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

void runMlp(const Step &step, const model::MlpSpec &k, const Value &x,
            Value &out) {
  const Params &params = step.params;
  int64_t h = k.hidden, w = k.width;
  int64_t rows = static_cast<int64_t>(x.f.size()) / h;
  std::vector<float> gate(rows * w), up(rows * w);
  cpu::linear(step.pool, x.f.data(), rows, h, params[k.gate], w, nullptr,
              gate.data());
  cpu::linear(step.pool, x.f.data(), rows, h, params[k.up], w, nullptr,
              up.data());
  for (int64_t i = 0; i < rows * w; ++i)
    gate[i] = cpu::silu(gate[i]) * up[i];
  out.f.resize(rows * h);
  cpu::linear(step.pool, gate.data(), rows, w, params[k.down], h, nullptr,
              out.f.data());
  if (const float *outputGate = params[k.outputGate])
    forEachRow(step, rows, [&](int64_t r) {
      float g = cpu::sigmoid(cpu::dot(x.f.data() + r * h, outputGate, h));
      for (int64_t i = 0; i < h; ++i)
        out.f[r * h + i] = g * out.f[r * h + i];
    });
}

void runResidual(const model::ResidualSpec &k, const Value &skip,
                 const Value &update, Value &out) {
  float skipScale = static_cast<float>(k.skipScale);
  float updateScale = static_cast<float>(k.updateScale);
  out.f.resize(skip.f.size());
  for (size_t i = 0; i < skip.f.size(); ++i)
    out.f[i] = skipScale * skip.f[i] + updateScale * update.f[i];
}

void runHead(const Step &step, const model::HeadSpec &k, const Value &x,
             Value &out) {
  int64_t n = static_cast<int64_t>(step.batch.logitRows.size());
  std::vector<float> picked(n * k.hidden);
  for (int64_t j = 0; j < n; ++j)
    std::memcpy(picked.data() + j * k.hidden,
                x.f.data() + step.batch.logitRows[j] * k.hidden,
                k.hidden * sizeof(float));
  out.f.resize(n * k.vocab);
  cpu::linear(step.pool, picked.data(), n, k.hidden, step.params[k.weight],
              k.vocab, nullptr, out.f.data());
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
    if (static_cast<int64_t>(params[i].size()) != model::paramElements(param))
      return fail(makeError("param {} ('{}') has {} values, its shape {}", i,
                            param.name()->str(), params[i].size(),
                            model::paramElements(param)));
    int64_t bad = firstNonFinite(s.pool, params[i]);
    if (bad >= 0)
      return fail(
          nonFiniteParam(i, param.name()->str(), params[i][size_t(bad)], bad));
  }
  Result<model::ResolvedModel> resolved =
      model::ResolvedModel::resolve(plan.plan());
  if (!resolved.ok())
    return fail(resolved.error());
  s.model = std::move(*resolved);
  s.params.arrays = std::move(params);
  if (s.model.expertDtype != model::WeightDtype::bf16)
    if (Status status = s.quantizeExperts(); !status.ok())
      return fail(status.error());
  if (options_.kvPoolTokens > 0) {
    Result<KvPages> pages = KvPages::create(
        slots, maxContext, kKvPageTokens,
        (options_.kvPoolTokens + kKvPageTokens - 1) / kKvPageTokens);
    if (!pages.ok())
      return fail(pages.error());
    kvPages_ = std::move(*pages);
  } else {
    kvPages_ = KvPages::wholeContext(slots, maxContext, kKvPageTokens);
  }
  s.allocate(slots, maxContext, kvPages_);
  s.prepared = true;
  return Status::success();
}

void CpuBackend::resetSlot(int32_t slot) {
  State &s = *state_;
  if (!s.prepared || slot < 0 || slot >= s.slots)
    return;
  s.lengths[slot] = 0;
  kvPages_.release(slot);
  for (size_t i = 0; i < s.lightning.size(); ++i) {
    int64_t size = s.model.lightningStates[i].elementsPerSlot();
    std::fill_n(s.lightning[i].begin() + slot * size, size, 0.0f);
  }
}

Status CpuBackend::forward(const StepBatch &batch, std::vector<float> &logits) {
  State &s = *state_;
  auto fail = [](const Error &error) {
    return error.withContext("cpu backend");
  };
  if (!s.prepared)
    return fail(makeError("forward before prepare"));
  Result<std::vector<SlotRun>> runs =
      validateStepBatch(batch, s.lengths, s.maxContext, s.model.embeddingVocab);
  if (!runs.ok())
    return fail(runs.error());
  if (Status held = holdKvRows(batch, *runs, kvPages_); !held.ok())
    return fail(held.error());
  logits.clear();
  if (batch.rows.empty())
    return Status::success();

  bool prefill = isPrefill(batch.rows);
  ChromeTrace *trace = traceFor(batch);
  int timeline = trace ? trace->addTimeline("cpu backend: decode step "
                                            "(measured)")
                       : -1;
  auto stepStart = std::chrono::steady_clock::now();
  Step step{s.pool,       s.params, batch,           *runs,
            s.maxContext, options_, s.model.kvDtype, kvPages_};
  std::vector<Value> values(s.model.values.size());
  values[0].i = batch.tokenIds;
  for (size_t index = 0; index < s.model.ops.size(); ++index) {
    const model::ResolvedOp &op = s.model.ops[index];
    const OpBindings &bound = s.bindings[index];
    const Value &in = values[op.operands[0]];
    Value &out = values[op.results[0]];
    auto start = std::chrono::steady_clock::now();
    std::visit(
        [&](const auto &k) {
          using K = std::decay_t<decltype(k)>;
          if constexpr (std::is_same_v<K, model::EmbeddingSpec>)
            runEmbedding(step, k, in, out);
          else if constexpr (std::is_same_v<K, model::NormSpec>)
            runNorm(step, k, in, out);
          else if constexpr (std::is_same_v<K, model::AttentionSpec>)
            runAttention(step, k, *bound.rope, s.kv[k.cache], in, out);
          else if constexpr (std::is_same_v<K, model::LatentAttentionSpec>)
            runLatent(step, k, *bound.rope, s.latent[k.cache], in, out);
          else if constexpr (std::is_same_v<K, model::LightningSpec>)
            runLightning(step, k, s.lightning[k.state], in, out);
          else if constexpr (std::is_same_v<K, model::RouterSpec>)
            runRouter(step, k, in, out, values[op.results[1]]);
          else if constexpr (std::is_same_v<K, model::ExpertsSpec>)
            runExperts(step, k, bound.experts, in, values[op.operands[1]],
                       values[op.operands[2]], out);
          else if constexpr (std::is_same_v<K, model::MlpSpec>)
            runMlp(step, k, in, out);
          else if constexpr (std::is_same_v<K, model::ResidualSpec>)
            runResidual(k, in, values[op.operands[1]], out);
          else
            runHead(step, k, in, out);
        },
        op.spec);
    auto stop = std::chrono::steady_clock::now();
    double seconds = std::chrono::duration<double>(stop - start).count();
    s.stageSeconds[prefill ? 0 : 1][static_cast<size_t>(op.stage)] += seconds;
    if (trace) {
      std::string_view stage = costmodel::stageName(op.stage);
      trace->addSpan(timeline, "cpu",
                     {layerSpanName(op.layer, stage),
                      std::string(stage),
                      std::chrono::duration<double>(start - stepStart).count(),
                      seconds,
                      {{"op", std::to_string(index)}}});
    }
    for (int operand : op.operands)
      if (s.model.values[operand].lastUse == static_cast<int>(index)) {
        values[operand].f = {};
        values[operand].i = {};
      }
  }
  for (const SlotRun &run : *runs)
    s.lengths[run.slot] += static_cast<int32_t>(run.count);
  logits = std::move(values[s.model.logits].f);
  return Status::success();
}

std::vector<StageTime> CpuBackend::stageSeconds() const {
  std::vector<StageTime> stages;
  if (!state_)
    return stages;
  for (int phase = 0; phase < 2; ++phase)
    for (size_t stage = 0; stage < costmodel::kNumStages; ++stage)
      if (double seconds = state_->stageSeconds[phase][stage]; seconds > 0)
        stages.push_back(
            {phase == 0 ? "prefill" : "decode",
             std::string(costmodel::stageName(costmodel::Stage(stage))),
             seconds});
  return stages;
}

} // namespace moe
