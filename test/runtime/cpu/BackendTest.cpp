// The CPU backend over whole tiny models of every family: incremental
// decoding equals one pass, batching and thread count change nothing, the
// alternative MLA and lightning forms agree; and single ops against
// double-precision references.

#include "runtime/backends/cpu/CpuBackend.h"
#include "test/runtime/model/TinyModels.h"

#include <gtest/gtest.h>

#include <limits>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moe {
namespace {

using test::AttentionKind;
using test::buildModel;
using test::ModelConfig;
using test::modelConfigs;
using test::OpHarness;
using test::PlanBuilder;
using test::TestModel;
using Logits = std::vector<std::vector<float>>; // per position

//===----------------------------------------------------------------------===//
// Running sequences
//===----------------------------------------------------------------------===//

std::vector<int32_t> tokens(int n, int vocab, int seed) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i)
    ids[i] = (seed * 7 + i * 13 + i * i) % vocab;
  return ids;
}

/// One chunk of a slot's tokens in a step.
struct Chunk {
  int32_t slot;
  int32_t begin, count;
};

/// Runs steps of chunks over per-slot token lists; returns every position's
/// logits per slot.
std::vector<Logits> runSteps(CpuBackend &backend,
                             const std::vector<std::vector<int32_t>> &ids,
                             const std::vector<std::vector<Chunk>> &steps) {
  std::vector<Logits> out(ids.size());
  for (const std::vector<Chunk> &step : steps) {
    StepBatch batch;
    for (const Chunk &c : step)
      for (int32_t p = c.begin; p < c.begin + c.count; ++p) {
        batch.logitRows.push_back(static_cast<int32_t>(batch.rows.size()));
        batch.rows.push_back({c.slot, p});
        batch.tokenIds.push_back(ids[c.slot][p]);
      }
    std::vector<float> logits;
    Status status = backend.forward(batch, logits);
    EXPECT_TRUE(status.ok()) << status.error().message();
    if (!status.ok())
      return out;
    size_t vocab = logits.size() / batch.rows.size();
    size_t row = 0;
    for (const Chunk &c : step)
      for (int32_t p = 0; p < c.count; ++p, ++row)
        out[c.slot].emplace_back(logits.begin() + row * vocab,
                                 logits.begin() + (row + 1) * vocab);
  }
  return out;
}

/// One sequence in slot 0, fed in chunks of the given sizes.
Logits runChunks(CpuBackend &backend, const std::vector<int32_t> &ids,
                 const std::vector<int32_t> &sizes) {
  std::vector<std::vector<Chunk>> steps;
  int32_t at = 0;
  for (int32_t n : sizes) {
    steps.push_back({{0, at, n}});
    at += n;
  }
  return runSteps(backend, {ids}, steps)[0];
}

std::unique_ptr<CpuBackend> prepared(const TestModel &model,
                                     CpuBackendOptions options = {},
                                     int32_t slots = 2) {
  auto backend = std::make_unique<CpuBackend>(options);
  Status status = backend->prepare(model.plan(), model.weights, slots, 32);
  EXPECT_TRUE(status.ok()) << status.error().message();
  return backend;
}

/// max|a − b| ≤ tolerance · max|b| at every position.
void expectClose(const Logits &a, const Logits &b, double tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t p = 0; p < a.size(); ++p) {
    ASSERT_EQ(a[p].size(), b[p].size());
    double scale = 0, diff = 0;
    for (size_t i = 0; i < a[p].size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(b[p][i])));
      diff = std::max(diff, std::abs(static_cast<double>(a[p][i]) - b[p][i]));
    }
    EXPECT_LE(diff, tolerance * scale) << "position " << p;
  }
}

class Models : public testing::TestWithParam<ModelConfig> {};

TEST_P(Models, PrefillThenDecodeMatchesOnePass) {
  TestModel model = buildModel(GetParam());
  std::vector<int32_t> ids = tokens(11, GetParam().vocab, 3);
  Logits whole = runChunks(*prepared(model), ids, {11});
  ASSERT_EQ(whole.size(), 11u);
  for (float v : whole.back())
    ASSERT_TRUE(std::isfinite(v));
  expectClose(runChunks(*prepared(model), ids, {7, 1, 1, 1, 1}), whole, 1e-5);
  expectClose(runChunks(*prepared(model), ids, {3, 5, 1, 2}), whole, 1e-5);
}

TEST_P(Models, BatchedSequencesMatchEachAlone) {
  TestModel model = buildModel(GetParam());
  std::vector<std::vector<int32_t>> ids{tokens(8, GetParam().vocab, 1),
                                        tokens(10, GetParam().vocab, 2)};
  std::vector<Logits> together = runSteps(*prepared(model), ids,
                                          {{{0, 0, 5}, {1, 0, 3}},
                                           {{0, 5, 1}, {1, 3, 4}},
                                           {{0, 6, 1}, {1, 7, 1}},
                                           {{0, 7, 1}, {1, 8, 2}}});
  // Alone, in slot 0 and in slot 1, with the same chunks.
  Logits first = runChunks(*prepared(model), ids[0], {5, 1, 1, 1});
  std::vector<Logits> second =
      runSteps(*prepared(model), ids,
               {{{1, 0, 3}}, {{1, 3, 4}}, {{1, 7, 1}}, {{1, 8, 2}}});
  EXPECT_EQ(together[0], first);
  EXPECT_EQ(together[1], second[1]);
}

TEST_P(Models, ThreadCountDoesNotChangeResults) {
  TestModel model = buildModel(GetParam());
  std::vector<int32_t> ids = tokens(10, GetParam().vocab, 5);
  Logits one = runChunks(*prepared(model, {1}), ids, {6, 1, 3});
  Logits three = runChunks(*prepared(model, {3}), ids, {6, 1, 3});
  EXPECT_EQ(one, three);
}

TEST_P(Models, ResetSlotStartsAFreshSequence) {
  TestModel model = buildModel(GetParam());
  std::vector<int32_t> a = tokens(6, GetParam().vocab, 7),
                       b = tokens(5, GetParam().vocab, 8);
  auto backend = prepared(model);
  runChunks(*backend, a, {4, 2});
  backend->resetSlot(0);
  EXPECT_EQ(runChunks(*backend, b, {3, 2}),
            runChunks(*prepared(model), b, {3, 2}));
}

INSTANTIATE_TEST_SUITE_P(Cpu, Models, testing::ValuesIn(modelConfigs()),
                         [](const testing::TestParamInfo<ModelConfig> &config) {
                           return config.param.name;
                         });

TEST(CpuBackend, MlaAbsorbedEqualsNaive) {
  for (const ModelConfig &config : modelConfigs()) {
    if (config.layers[1].attention != AttentionKind::mla)
      continue;
    TestModel model = buildModel(config);
    std::vector<int32_t> ids = tokens(9, config.vocab, 4);
    CpuBackendOptions naive;
    naive.mlaAbsorbed = false;
    expectClose(runChunks(*prepared(model, naive), ids, {6, 1, 2}),
                runChunks(*prepared(model), ids, {6, 1, 2}), 1e-5);
  }
}

TEST(CpuBackend, LightningBlocksEqualRecurrence) {
  ModelConfig config = modelConfigs()[7];
  ASSERT_EQ(config.name, "minimax");
  TestModel model = buildModel(config);
  std::vector<int32_t> ids = tokens(13, config.vocab, 6);
  CpuBackendOptions recurrent;
  recurrent.lightningBlocks = false;
  expectClose(runChunks(*prepared(model, recurrent), ids, {10, 1, 2}),
              runChunks(*prepared(model), ids, {10, 1, 2}), 1e-5);
}

// validateStepBatch's contract (test/runtime/engine), as the backend reports
// it.
TEST(CpuBackend, RejectsBatchesOutsideTheContract) {
  TestModel model = buildModel(modelConfigs()[0]);
  auto backend = prepared(model);
  std::vector<float> logits;
  StepBatch gap{{1, 2}, {{0, 0}, {0, 2}}, {1}};
  EXPECT_EQ(backend->forward(gap, logits).error().message(),
            "cpu backend: row 1: positions of slot 0 are not consecutive");
  StepBatch late{{1}, {{1, 3}}, {0}};
  EXPECT_EQ(backend->forward(late, logits).error().message(),
            "cpu backend: row 0: slot 1 continues at position 0, not 3");
  StepBatch reversed{{1, 2}, {{1, 0}, {0, 0}}, {0, 1}};
  EXPECT_EQ(backend->forward(reversed, logits).error().message(),
            "cpu backend: row 1: slot 0 follows slot 1; runs must be in slot "
            "order");
  StepBatch badToken{{400}, {{0, 0}}, {0}};
  EXPECT_FALSE(backend->forward(badToken, logits).ok());
}

TEST(CpuBackend, RejectsWeightsOfTheWrongSize) {
  TestModel model = buildModel(modelConfigs()[0]);
  model.weights[3].pop_back();
  CpuBackend backend(1);
  Status status = backend.prepare(model.plan(), model.weights, 1, 8);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("param 3"), std::string::npos)
      << status.error().message();
}

// A damaged checkpoint (NaN or Inf in a weight) is refused, naming the
// param and the element.
TEST(CpuBackend, RejectsWeightsThatAreNotFinite) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    -std::numeric_limits<float>::infinity()}) {
    TestModel model = buildModel(modelConfigs()[0]);
    model.weights[3][5] = bad;
    CpuBackend backend(1);
    Status status = backend.prepare(model.plan(), model.weights, 1, 8);
    ASSERT_FALSE(status.ok());
    std::string name = model.plan().model().params()->Get(3)->name()->str();
    EXPECT_EQ(status.error().message(),
              fmt::format("cpu backend: param 3 ('{}') holds {} at element 5: "
                          "the checkpoint is damaged",
                          name, std::isnan(bad) ? "NaN" : "Inf"));
  }
}

TEST(CpuBackend, PreparesFromAWeightSet) {
  TestModel model = buildModel(modelConfigs()[5]);
  LoadedPlan plan = model.plan();
  Result<WeightSet> weights = WeightSet::synthetic(plan.model(), 7);
  ASSERT_TRUE(weights.ok()) << weights.error().message();
  std::vector<std::vector<float>> arrays;
  for (size_t i = 0; i < weights->size(); ++i)
    arrays.push_back(weights->toFloat32(i));
  CpuBackend fromSet(2), fromArrays(2);
  Status status = fromSet.prepare(plan, *weights, 1, 16);
  ASSERT_TRUE(status.ok()) << status.error().message();
  status = fromArrays.prepare(plan, std::move(arrays), 1, 16);
  ASSERT_TRUE(status.ok()) << status.error().message();
  std::vector<int32_t> ids = tokens(6, 40, 9);
  Logits logits = runChunks(fromSet, ids, {5, 1});
  EXPECT_EQ(logits, runChunks(fromArrays, ids, {5, 1}));
  for (float v : logits.back())
    EXPECT_TRUE(std::isfinite(v));
}

//===----------------------------------------------------------------------===//
// Single ops against double-precision references
//===----------------------------------------------------------------------===//

using Matrix = std::vector<std::vector<double>>; // [row][column]

Matrix inputs(const TestModel &m, int table, const std::vector<int32_t> &ids,
              int64_t hidden) {
  Matrix x;
  for (int32_t id : ids)
    x.emplace_back(m.weights[table].begin() + id * hidden,
                   m.weights[table].begin() + (id + 1) * hidden);
  return x;
}

std::vector<double> project(const std::vector<float> &w, const float *bias,
                            const std::vector<double> &x, int64_t out) {
  int64_t in = static_cast<int64_t>(x.size());
  std::vector<double> y(out);
  for (int64_t o = 0; o < out; ++o) {
    y[o] = bias ? bias[o] : 0.0;
    for (int64_t i = 0; i < in; ++i)
      y[o] += w[o * in + i] * x[i];
  }
  return y;
}

void normalize(double *x, const float *w, int64_t n, double eps) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i)
    sum += x[i] * x[i];
  double inverse = 1.0 / std::sqrt(sum / n + eps);
  for (int64_t i = 0; i < n; ++i)
    x[i] = w[i] * x[i] * inverse;
}

void rotate(double *x, int64_t position, int64_t dim, double theta,
            bool interleaved) {
  int64_t half = dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    double angle = position * std::pow(theta, -2.0 * i / dim);
    int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    double xa = x[a], xb = x[b];
    x[a] = xa * std::cos(angle) - xb * std::sin(angle);
    x[b] = xb * std::cos(angle) + xa * std::sin(angle);
  }
}

void expectMatches(const Logits &actual, const Matrix &expected,
                   double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t p = 0; p < actual.size(); ++p)
    for (size_t i = 0; i < expected[p].size(); ++i)
      EXPECT_NEAR(actual[p][i], expected[p][i], tolerance)
          << "position " << p << " column " << i;
}

struct GqaWeights {
  int q, k, v, o, qb, kb, vb, ob, qn, kn, sinks;
};

TEST(CpuOps, AttentionWithSinksWindowBiasesAndKvSharing) {
  // Layer 0: GQA 4/2 heads, per-head QK norm, biases, sinks, window 3.
  // Layer 1 reads layer 0's K/V with its own q (full-width q norm off).
  int64_t h = 16, heads = 4, kvHeads = 2, hd = 4, window = 3;
  OpHarness t(h);
  PlanBuilder &b = t.b;
  GqaWeights w0{b.linear(heads * hd, h),
                b.linear(kvHeads * hd, h),
                b.linear(kvHeads * hd, h),
                b.linear(h, heads * hd),
                b.bias(heads * hd),
                b.bias(kvHeads * hd),
                b.bias(kvHeads * hd),
                b.bias(h),
                b.norm(hd),
                b.norm(hd),
                b.random({heads}, 1.0f)};
  GqaWeights w1{b.linear(heads * hd, h),
                -1,
                -1,
                b.linear(h, heads * hd),
                -1,
                -1,
                -1,
                -1,
                -1,
                -1,
                -1};
  double scale = 0.45;
  auto ropeSpec = [&] {
    return plan::CreateRope(b.fb, plan::RopeStyle::neox, 10000.0, hd);
  };
  b.op(plan::Module::Attention,
       plan::CreateAttention(b.fb, heads, kvHeads, hd, ropeSpec(), scale, w0.q,
                             w0.k, w0.v, w0.o, w0.qb, w0.kb, w0.vb, w0.ob,
                             plan::QKNorm::per_head, w0.qn, w0.kn, 1e-6, window,
                             w0.sinks),
       {t.embedding}, 1, 0);
  int shared = b.op(plan::Module::Attention,
                    plan::CreateAttention(b.fb, heads, kvHeads, hd, ropeSpec(),
                                          scale, w1.q, -1, -1, w1.o, -1, -1, -1,
                                          -1, plan::QKNorm::none, -1, -1, 0.0,
                                          window, -1, 0),
                    {t.embedding}, 1, 1);
  TestModel model = t.finish(shared);
  std::vector<int32_t> ids{3, 17, 5, 9, 0, 12, 4, 4, 19};
  Logits actual = runChunks(*prepared(model), ids, {5, 1, 3});

  const auto &W = model.weights;
  Matrix x = inputs(model, t.table, ids, h);
  int64_t n = static_cast<int64_t>(ids.size());
  Matrix keys(n), values(n);
  for (int64_t p = 0; p < n; ++p) {
    keys[p] = project(W[w0.k], W[w0.kb].data(), x[p], kvHeads * hd);
    values[p] = project(W[w0.v], W[w0.vb].data(), x[p], kvHeads * hd);
    for (int64_t g = 0; g < kvHeads; ++g) {
      normalize(keys[p].data() + g * hd, W[w0.kn].data(), hd, 1e-6);
      rotate(keys[p].data() + g * hd, p, hd, 10000.0, false);
    }
  }
  Matrix expected(n);
  for (int64_t p = 0; p < n; ++p) {
    std::vector<double> q = project(W[w1.q], nullptr, x[p], heads * hd);
    std::vector<double> o(heads * hd, 0.0);
    for (int64_t hh = 0; hh < heads; ++hh) {
      double *qh = q.data() + hh * hd;
      rotate(qh, p, hd, 10000.0, false);
      int64_t g = hh / (heads / kvHeads);
      int64_t first = std::max<int64_t>(0, p - window + 1);
      std::vector<double> z;
      for (int64_t s = first; s <= p; ++s) {
        double dotted = 0;
        for (int64_t d = 0; d < hd; ++d)
          dotted += qh[d] * keys[s][g * hd + d];
        z.push_back(dotted * scale);
      }
      double sum = 0;
      for (double &e : z)
        sum += e = std::exp(e);
      for (int64_t s = first; s <= p; ++s)
        for (int64_t d = 0; d < hd; ++d)
          o[hh * hd + d] += z[s - first] / sum * values[s][g * hd + d];
    }
    expected[p] = project(W[w1.o], nullptr, o, h);
  }
  expectMatches(actual, expected, 2e-5);
}

TEST(CpuOps, AttentionSinksAndQkNormInTheSourceLayer) {
  int64_t h = 16, heads = 4, kvHeads = 2, hd = 4, window = 3;
  OpHarness t(h);
  PlanBuilder &b = t.b;
  GqaWeights w{b.linear(heads * hd, h),   b.linear(kvHeads * hd, h),
               b.linear(kvHeads * hd, h), b.linear(h, heads * hd),
               b.bias(heads * hd),        b.bias(kvHeads * hd),
               b.bias(kvHeads * hd),      b.bias(h),
               b.norm(heads * hd),        b.norm(kvHeads * hd),
               b.random({heads}, 1.0f)};
  double scale = 0.5;
  int out =
      b.op(plan::Module::Attention,
           plan::CreateAttention(
               b.fb, heads, kvHeads, hd,
               plan::CreateRope(b.fb, plan::RopeStyle::neox, 10000.0, hd),
               scale, w.q, w.k, w.v, w.o, w.qb, w.kb, w.vb, w.ob,
               plan::QKNorm::full_width, w.qn, w.kn, 1e-6, window, w.sinks),
           {t.embedding}, 1, 0);
  TestModel model = t.finish(out);
  std::vector<int32_t> ids{3, 17, 5, 9, 0, 12, 4};
  Logits actual = runChunks(*prepared(model), ids, {4, 1, 2});

  const auto &W = model.weights;
  Matrix x = inputs(model, t.table, ids, h);
  int64_t n = static_cast<int64_t>(ids.size());
  Matrix queries(n), keys(n), values(n);
  for (int64_t p = 0; p < n; ++p) {
    queries[p] = project(W[w.q], W[w.qb].data(), x[p], heads * hd);
    keys[p] = project(W[w.k], W[w.kb].data(), x[p], kvHeads * hd);
    values[p] = project(W[w.v], W[w.vb].data(), x[p], kvHeads * hd);
    // OLMoE: the norm spans the whole projection, before RoPE.
    normalize(queries[p].data(), W[w.qn].data(), heads * hd, 1e-6);
    normalize(keys[p].data(), W[w.kn].data(), kvHeads * hd, 1e-6);
    for (int64_t hh = 0; hh < heads; ++hh)
      rotate(queries[p].data() + hh * hd, p, hd, 10000.0, false);
    for (int64_t g = 0; g < kvHeads; ++g)
      rotate(keys[p].data() + g * hd, p, hd, 10000.0, false);
  }
  Matrix expected(n);
  for (int64_t p = 0; p < n; ++p) {
    std::vector<double> o(heads * hd, 0.0);
    for (int64_t hh = 0; hh < heads; ++hh) {
      int64_t g = hh / (heads / kvHeads);
      int64_t first = std::max<int64_t>(0, p - window + 1);
      std::vector<double> z;
      for (int64_t s = first; s <= p; ++s) {
        double dotted = 0;
        for (int64_t d = 0; d < hd; ++d)
          dotted += queries[p][hh * hd + d] * keys[s][g * hd + d];
        z.push_back(std::exp(dotted * scale));
      }
      // The sink joins the denominator only.
      double sum = std::exp(static_cast<double>(W[w.sinks][hh]));
      for (double e : z)
        sum += e;
      for (int64_t s = first; s <= p; ++s)
        for (int64_t d = 0; d < hd; ++d)
          o[hh * hd + d] += z[s - first] / sum * values[s][g * hd + d];
    }
    expected[p] = project(W[w.o], W[w.ob].data(), o, h);
  }
  expectMatches(actual, expected, 2e-5);
}

TEST(CpuOps, LatentAttentionMatchesNaiveDoubleReference) {
  int64_t h = 16, heads = 3, qRank = 8, kvRank = 6, nope = 4, ropeDim = 4,
          vDim = 5, qk = nope + ropeDim;
  OpHarness t(h);
  PlanBuilder &b = t.b;
  int qa = b.linear(qRank, h), qaNorm = b.norm(qRank),
      qb = b.linear(heads * qk, qRank), kva = b.linear(kvRank + ropeDim, h),
      kvaNorm = b.norm(kvRank), kvb = b.linear(heads * (nope + vDim), kvRank),
      o = b.linear(h, heads * vDim);
  double scale = 0.4;
  int out = b.op(plan::Module::MLAttention,
                 plan::CreateMLAttention(
                     b.fb, heads, qRank, kvRank, nope, ropeDim, vDim,
                     plan::CreateRope(b.fb, plan::RopeStyle::interleaved,
                                      10000.0, ropeDim),
                     scale, 1e-6, -1, qa, qaNorm, qb, kva, kvaNorm, kvb, o),
                 {t.embedding}, 1, 0);
  TestModel model = t.finish(out);
  std::vector<int32_t> ids{2, 8, 14, 1, 19, 6, 7};
  const auto &W = model.weights;
  Matrix x = inputs(model, t.table, ids, h);
  int64_t n = static_cast<int64_t>(ids.size());
  Matrix latents(n), kpe(n), queries(n);
  for (int64_t p = 0; p < n; ++p) {
    std::vector<double> a = project(W[qa], nullptr, x[p], qRank);
    normalize(a.data(), W[qaNorm].data(), qRank, 1e-6);
    queries[p] = project(W[qb], nullptr, a, heads * qk);
    for (int64_t hh = 0; hh < heads; ++hh)
      rotate(queries[p].data() + hh * qk + nope, p, ropeDim, 10000.0, true);
    std::vector<double> kv = project(W[kva], nullptr, x[p], kvRank + ropeDim);
    latents[p].assign(kv.begin(), kv.begin() + kvRank);
    normalize(latents[p].data(), W[kvaNorm].data(), kvRank, 1e-6);
    kpe[p].assign(kv.begin() + kvRank, kv.end());
    rotate(kpe[p].data(), p, ropeDim, 10000.0, true);
  }
  Matrix expected(n);
  for (int64_t p = 0; p < n; ++p) {
    std::vector<double> attended(heads * vDim, 0.0);
    for (int64_t hh = 0; hh < heads; ++hh) {
      std::vector<double> z;
      Matrix v;
      for (int64_t s = 0; s <= p; ++s) {
        std::vector<double> kvHead =
            project(std::vector<float>(
                        W[kvb].begin() + hh * (nope + vDim) * kvRank,
                        W[kvb].begin() + (hh + 1) * (nope + vDim) * kvRank),
                    nullptr, latents[s], nope + vDim);
        double dotted = 0;
        for (int64_t d = 0; d < nope; ++d)
          dotted += queries[p][hh * qk + d] * kvHead[d];
        for (int64_t d = 0; d < ropeDim; ++d)
          dotted += queries[p][hh * qk + nope + d] * kpe[s][d];
        z.push_back(std::exp(dotted * scale));
        v.emplace_back(kvHead.begin() + nope, kvHead.end());
      }
      double sum = std::accumulate(z.begin(), z.end(), 0.0);
      for (int64_t s = 0; s <= p; ++s)
        for (int64_t d = 0; d < vDim; ++d)
          attended[hh * vDim + d] += z[s] / sum * v[s][d];
    }
    expected[p] = project(W[o], nullptr, attended, h);
  }
  for (bool absorbed : {true, false}) {
    CpuBackendOptions options;
    options.mlaAbsorbed = absorbed;
    expectMatches(runChunks(*prepared(model, options), ids, {4, 1, 2}),
                  expected, 2e-5);
  }
}

TEST(CpuOps, LightningMatchesItsDefinition) {
  int64_t h = 16, heads = 2, d = 4, w = heads * d;
  double decayScale = 0.8;
  OpHarness t(h);
  PlanBuilder &b = t.b;
  int qkv = b.linear(3 * w, h), gate = b.linear(w, h), norm = b.norm(w),
      out = b.linear(h, w);
  int result =
      b.op(plan::Module::LightningAttention,
           plan::CreateLightningAttention(b.fb, heads, d, decayScale, 3, 1e-6,
                                          qkv, gate, norm, out),
           {t.embedding}, 1, 0);
  TestModel model = t.finish(result);
  std::vector<int32_t> ids{11, 3, 3, 18, 0, 7, 9, 2};
  const auto &W = model.weights;
  Matrix x = inputs(model, t.table, ids, h);
  int64_t n = static_cast<int64_t>(ids.size());
  Matrix act(n);
  for (int64_t p = 0; p < n; ++p) {
    act[p] = project(W[qkv], nullptr, x[p], 3 * w);
    for (double &v : act[p])
      v = v / (1 + std::exp(-v));
  }
  Matrix expected(n);
  for (int64_t p = 0; p < n; ++p) {
    std::vector<double> o(w, 0.0);
    for (int64_t hh = 0; hh < heads; ++hh) {
      double lambda = std::pow(2.0, -8.0 * (hh + 1) / heads) * decayScale;
      const double *q = act[p].data() + hh * 3 * d;
      for (int64_t s = 0; s <= p; ++s) {
        const double *k = act[s].data() + hh * 3 * d + d,
                     *v = act[s].data() + hh * 3 * d + 2 * d;
        double qk = 0;
        for (int64_t a = 0; a < d; ++a)
          qk += q[a] * k[a];
        for (int64_t c = 0; c < d; ++c)
          o[hh * d + c] += std::exp(-lambda * double(p - s)) * qk * v[c];
      }
    }
    normalize(o.data(), W[norm].data(), w, 1e-6);
    std::vector<double> g = project(W[gate], nullptr, x[p], w);
    for (int64_t i = 0; i < w; ++i)
      o[i] *= 1 / (1 + std::exp(-g[i]));
    expected[p] = project(W[out], nullptr, o, h);
  }
  for (bool blocks : {true, false}) {
    CpuBackendOptions options;
    options.lightningBlocks = blocks;
    expectMatches(runChunks(*prepared(model, options), ids, {7, 1}), expected,
                  2e-5);
  }
}

TEST(CpuOps, FusedClampedExpertsWithRouterBias) {
  // GPT-OSS: top-k of biased logits, softmax over the selection; gate_up
  // [E, H, 2I] with gate/up in alternating columns, clamped SwiGLU.
  int64_t h = 8, e = 4, k = 2, w = 5;
  double limit = 0.7, alpha = 1.702;
  OpHarness t(h);
  PlanBuilder &b = t.b;
  int router = b.linear(e, h), routerBias = b.bias(e);
  int gateUp = b.random({e, h, 2 * w}, 1.0f), gateUpBias = b.bias(e * 2 * w),
      down = b.random({e, w, h}, 0.8f), downBias = b.bias(e * h);
  int routed = b.op(plan::Module::Router,
                    plan::CreateRouter(b.fb, e, k, plan::RouterScoring::softmax,
                                       plan::RouterSelection::greedy, 1, 1,
                                       true, 1.0, router, routerBias),
                    {t.embedding}, 2, 0);
  int out = b.op(plan::Module::Experts,
                 plan::CreateExperts(
                     b.fb, e, w, plan::ExpertActivation::swiglu_clamped,
                     plan::ExpertLayout::fused_interleaved_transposed, limit,
                     alpha, -1, -1, gateUp, down, gateUpBias, downBias),
                 {t.embedding, routed, routed + 1}, 1, 0);
  TestModel model = t.finish(out);
  std::vector<int32_t> ids{0, 5, 9, 13, 17};
  const auto &W = model.weights;
  Matrix x = inputs(model, t.table, ids, h);
  Matrix expected;
  for (const std::vector<double> &row : x) {
    std::vector<double> z = project(W[router], W[routerBias].data(), row, e);
    std::vector<int> order(e);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int a, int c) { return z[a] > z[c]; });
    double sum = std::exp(z[order[0]]) + std::exp(z[order[1]]);
    std::vector<double> y(h, 0.0);
    for (int j = 0; j < k; ++j) {
      int ex = order[j];
      double weight = std::exp(z[ex]) / sum;
      std::vector<double> hidden(w);
      for (int64_t i = 0; i < w; ++i) {
        double g = W[gateUpBias][ex * 2 * w + 2 * i],
               u = W[gateUpBias][ex * 2 * w + 2 * i + 1];
        for (int64_t c = 0; c < h; ++c) {
          g += row[c] * W[gateUp][(ex * h + c) * 2 * w + 2 * i];
          u += row[c] * W[gateUp][(ex * h + c) * 2 * w + 2 * i + 1];
        }
        g = std::min(g, limit);
        u = std::clamp(u, -limit, limit);
        hidden[i] = (u + 1) * g / (1 + std::exp(-alpha * g));
      }
      for (int64_t c = 0; c < h; ++c) {
        double v = W[downBias][ex * h + c];
        for (int64_t i = 0; i < w; ++i)
          v += hidden[i] * W[down][(ex * w + i) * h + c];
        y[c] += weight * v;
      }
    }
    expected.push_back(y);
  }
  expectMatches(runChunks(*prepared(model), ids, {5}), expected, 1e-5);
}

TEST(CpuOps, SeparateSiluExpertsWithScaledSigmoidRouter) {
  int64_t h = 8, e = 5, k = 2, w = 6;
  OpHarness t(h);
  PlanBuilder &b = t.b;
  int router = b.linear(e, h);
  int gate = b.random({e, w, h}, 0.8f), up = b.random({e, w, h}, 0.8f),
      down = b.random({e, h, w}, 0.8f);
  int routed = b.op(plan::Module::Router,
                    plan::CreateRouter(b.fb, e, k, plan::RouterScoring::sigmoid,
                                       plan::RouterSelection::greedy, 1, 1,
                                       false, 2.0, router),
                    {t.embedding}, 2, 0);
  int out = b.op(plan::Module::Experts,
                 plan::CreateExperts(
                     b.fb, e, w, plan::ExpertActivation::silu_gated,
                     plan::ExpertLayout::separate, 0, 0, gate, up, -1, down),
                 {t.embedding, routed, routed + 1}, 1, 0);
  TestModel model = t.finish(out);
  std::vector<int32_t> ids{1, 6, 11, 19};
  const auto &W = model.weights;
  Matrix expected;
  for (const std::vector<double> &row : inputs(model, t.table, ids, h)) {
    std::vector<double> z = project(W[router], nullptr, row, e);
    std::vector<int> order(e);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int a, int c) { return z[a] > z[c]; });
    std::vector<double> y(h, 0.0);
    for (int j = 0; j < k; ++j) {
      int ex = order[j];
      double weight = 2.0 / (1 + std::exp(-z[ex]));
      std::vector<double> hidden(w);
      for (int64_t i = 0; i < w; ++i) {
        double g = 0, u = 0;
        for (int64_t c = 0; c < h; ++c) {
          g += W[gate][(ex * w + i) * h + c] * row[c];
          u += W[up][(ex * w + i) * h + c] * row[c];
        }
        hidden[i] = g / (1 + std::exp(-g)) * u;
      }
      for (int64_t c = 0; c < h; ++c)
        for (int64_t i = 0; i < w; ++i)
          y[c] += weight * W[down][(ex * h + c) * w + i] * hidden[i];
    }
    expected.push_back(y);
  }
  expectMatches(runChunks(*prepared(model), ids, {4}), expected, 1e-5);
}

TEST(CpuOps, GatedSharedExpertAndResidualScales) {
  // Qwen2-MoE's shared expert: down(silu(gate x) ⊙ up x) · σ(g·x), then a
  // residual with MiniMax-style scales.
  int64_t h = 8, w = 6;
  OpHarness t(h);
  PlanBuilder &b = t.b;
  int gate = b.linear(w, h), up = b.linear(w, h), down = b.linear(h, w),
      outputGate = b.linear(1, h);
  int m = b.op(plan::Module::MLP,
               plan::CreateMLP(b.fb, w, gate, up, down, outputGate, true),
               {t.embedding}, 1, 0);
  int out = b.op(plan::Module::Residual, plan::CreateResidual(b.fb, 1.5, 0.5),
                 {t.embedding, m}, 1, 0);
  TestModel model = t.finish(out);
  std::vector<int32_t> ids{4, 1, 16};
  const auto &W = model.weights;
  Matrix expected;
  for (const std::vector<double> &row : inputs(model, t.table, ids, h)) {
    std::vector<double> g = project(W[gate], nullptr, row, w),
                        u = project(W[up], nullptr, row, w);
    for (int64_t i = 0; i < w; ++i)
      g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    std::vector<double> y = project(W[down], nullptr, g, h);
    double s = 1 / (1 + std::exp(-project(W[outputGate], nullptr, row, 1)[0]));
    for (int64_t c = 0; c < h; ++c)
      y[c] = 1.5 * row[c] + 0.5 * s * y[c];
    expected.push_back(y);
  }
  expectMatches(runChunks(*prepared(model), ids, {3}), expected, 1e-5);
}

} // namespace
} // namespace moe
